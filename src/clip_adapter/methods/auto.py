"""``auto``: choose the method for the user, by cross-validation over every labelled shot.

With a handful of shots the few-shot validation split (≤ 4 images per class) is too small
to rank methods: one image flips a ranking. So ``auto`` pools the training and validation
images and runs stratified k-fold cross-validation over the pool (k = the smallest
number of images any class has, at most ``max_folds``; 2 folds at 1 shot, where each
image takes its turn as the held-out one). When the pool is that small the k-fold split
is repeated with fresh seeded deals until every class has been held out at least
``min_held_out`` times (4 repeats at 1 shot, 2 at 2 shots, 1 from 4 shots on): one
deal of 2 images per class is a coin flip per class, and averaging deals removes that
luck of the draw without costing anything at the shot counts where it is not needed.
Candidates race: after each deal, one whose mean trails the leader's by more than
``race_margin`` (15 points) is dropped, so the repeated deals cost what the contenders cost.

In each fold every candidate is fitted with its own default recipe and validation search
(its inner validation split is the held-out fold, never the test split) and scored on the
held-out images. The candidate with the best mean held-out accuracy wins; near-ties
(within ``tie_margin``) go to the candidate listed earlier. The default order is zero-shot
first (a method that does not help the task is not chosen), then the learned methods from
the most conservative: CLIP-Adapter (its residual ratio α is searched from 0, so its worst
case is zero-shot), GDA and Tip-Adapter-F (zero-shot plus a weighted correction), CLAP, and
the linear probe last (it discards the text classifier, so it needs the most shots). The
winner is then fitted on the original split as usual and saved as an ordinary artifact
of that method; the result records every candidate's fold scores and why the winner was
chosen.

Held-out training images are represented by the mean of their cached augmented views
(their centre view is not cached), validation images by their centre view; a
validation image that lands in a training fold is used as one view, repeated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..config import Config, check_range, option
from ..errors import ConfigError
from .base import FewShotData, FitResult, Head, Method, evaluate_head, for_dataset, get_method, register

CANDIDATES = ("zero-shot", "clip-adapter", "gda", "tip-adapter-f", "clap", "linear-probe")


@dataclass
class AutoConfig(Config):
    """What ``auto`` chooses among, and how."""

    candidates: tuple[str, ...] = option(CANDIDATES, "methods to choose among, most conservative first (ties go to the earlier)")
    max_folds: int = option(4, "at most this many cross-validation folds")
    min_held_out: int = option(8, "repeat the k-fold split until every class has been held out this many times")
    tie_margin: float = option(0.005, "candidates within this mean accuracy of the best count as tied")
    race_margin: float = option(0.15, "after each deal, candidates this far below the leader's mean accuracy are dropped (1 = never)")
    dataset: str = option("", "the dataset's name, passed to candidates with per-dataset settings (set by the pipeline)")

    def validate(self) -> None:
        check_range("max_folds", self.max_folds, 2, 20)
        check_range("min_held_out", self.min_held_out, 1, 100)
        check_range("tie_margin", self.tie_margin, 0.0, 1.0)
        check_range("race_margin", self.race_margin, 0.0, 1.0)
        if not self.candidates:
            raise ConfigError("auto: candidates must not be empty")
        for name in self.candidates:
            if name == "auto":
                raise ConfigError("auto: 'auto' cannot be its own candidate")
            get_method(name)


@register("auto")
class Auto(Method):
    """Cross-validated choice among methods; see the module docstring.

    Example:
        >>> from clip_adapter.methods import get_method
        >>> get_method("auto")().config.candidates[0]
        'zero-shot'
    """

    Config = AutoConfig
    Head = Head

    @classmethod
    def for_dataset(cls, config: AutoConfig, dataset: str | None) -> AutoConfig:
        """``config`` knowing the dataset's name, so Tip-Adapter-F among the candidates gets its official settings."""
        return config.replace(dataset=dataset or "")

    def _candidate(self, name: str) -> Method:
        method = get_method(name)
        return method(for_dataset(name, method.Config(), self.config.dataset or None))

    def fit(self, data: FewShotData) -> FitResult:
        pool = _Pool.from_data(data)
        folds = pool.folds(self.config.max_folds, data.seed, self.config.min_held_out)
        scores = self._race(pool, folds, data)
        means = {name: sum(s) / len(s) if s else 0.0 for name, s in scores.items()}  # no folds: the first candidate
        finalists = [name for name in self.config.candidates if len(scores[name]) == len(folds)]
        best = max(means[name] for name in finalists)
        chosen = next(name for name in finalists if means[name] >= best - self.config.tie_margin)
        result = self._candidate(chosen).fit(data)
        selected = {
            "protocol": data.protocol,
            "chosen_on": f"{_describe(folds, len(pool.labels))} over the training and validation shots",
            "chosen": {"method": chosen, **result.selected.get("chosen", {})},
            "cross_validation": {name: {"mean": round(means[name], 6), "folds": [round(s, 6) for s in scores[name]]} for name in scores},
            "why": f"best mean held-out accuracy {100 * means[chosen]:.2f}% (best overall {100 * best:.2f}%, "
                   f"ties within {100 * self.config.tie_margin:.1f} points go to the earlier candidate)"
                   + (f"; dropped after a deal for trailing by > {100 * self.config.race_margin:.0f} points: "
                      + ", ".join(n for n in self.config.candidates if n not in finalists) if len(finalists) < len(scores) else ""),
            "inner": result.selected,
        }
        return FitResult(result.head, selected, result.val_accuracy, result.history, method=chosen)

    def _race(self, pool: "_Pool", folds: list[torch.Tensor], data: FewShotData) -> dict[str, list[float]]:
        """Every candidate's held-out accuracy per fold, deal by deal.

        After each complete deal (every image held out once), a candidate whose mean so far
        trails the leader's by more than ``race_margin`` is not fitted again: at 1–2 shots the
        later deals then cost only what the contenders cost (the linear probe, far behind
        there, is the slowest candidate). A dropped candidate cannot be chosen.
        """
        k, _ = _deal_shape(folds, len(pool.labels))
        scores: dict[str, list[float]] = {name: [] for name in self.config.candidates}
        alive = list(self.config.candidates)
        for start in range(0, len(folds), k):
            for name in alive:
                scores[name] += [self._fold_score(self._candidate(name), pool, held_out, data) for held_out in folds[start:start + k]]
            lead = max(sum(scores[n]) / len(scores[n]) for n in alive)
            alive = [n for n in alive if sum(scores[n]) / len(scores[n]) >= lead - self.config.race_margin]
        return scores

    @staticmethod
    def _fold_score(method: Method, pool: "_Pool", held_out: torch.Tensor, data: FewShotData) -> float:
        inner = pool.fold_data(held_out, data)
        head = method.fit(inner).head
        return evaluate_head(head, inner.val, inner.val_labels)[0]


@dataclass
class _Pool:
    """Every labelled shot: training views ``[N, V, D]``, one evaluation feature each, labels."""

    views: torch.Tensor
    point: torch.Tensor
    labels: torch.Tensor
    n_val: int  # the last n_val entries are the validation images

    @classmethod
    def from_data(cls, data: FewShotData) -> "_Pool":
        v = data.train.shape[1]
        views = torch.cat([data.train, data.val.unsqueeze(1).expand(-1, v, -1)])
        point = torch.cat([data.train.mean(dim=1), data.val])
        return cls(views, point, torch.cat([data.train_labels, data.val_labels]), len(data.val_labels))

    def folds(self, max_folds: int, seed: int, min_held_out: int = 1) -> list[torch.Tensor]:
        """Stratified folds (index tensors): each class's images dealt round-robin in a seeded order.

        The deal is repeated (each time in a fresh seeded order) until every class has
        been held out ``min_held_out`` times. A class with a single labelled image
        cannot be both trained on and held out: then the only fold is the given
        validation split (as plain validation would do).
        """
        counts = torch.bincount(self.labels)
        smallest = int(counts[counts > 0].min().item())
        if smallest < 2:
            n_train = len(self.labels) - self.n_val
            return [torch.arange(n_train, len(self.labels))] if self.n_val else []
        k = min(max_folds, smallest)
        repeats = max(1, math.ceil(min_held_out / smallest))
        generator = torch.Generator().manual_seed(seed)
        return [fold for _ in range(repeats) for fold in self._deal(k, generator)]

    def _deal(self, k: int, generator: torch.Generator) -> list[torch.Tensor]:
        assignment = torch.empty_like(self.labels)
        for label in self.labels.unique():
            members = (self.labels == label).nonzero().flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            assignment[members] = torch.arange(len(members)) % k
        return [(assignment == f).nonzero().flatten() for f in range(k)]

    def fold_data(self, held_out: torch.Tensor, data: FewShotData) -> FewShotData:
        keep = torch.ones(len(self.labels), dtype=torch.bool)
        keep[held_out] = False
        return replace(data, train=self.views[keep], train_labels=self.labels[keep], val=self.point[held_out],
                       val_labels=self.labels[held_out], protocol="val", selection_override=None)



def _deal_shape(folds: list[torch.Tensor], pool_size: int) -> tuple[int, int]:
    """(folds per deal, deals) of :meth:`_Pool.folds`'s output (each deal holds out every image once)."""
    repeats = max(1, round(sum(len(f) for f in folds) / pool_size)) if folds else 1
    return max(1, len(folds) // repeats), repeats


def _describe(folds: list[torch.Tensor], pool_size: int) -> str:
    """'4-fold cross-validation', or '2-fold cross-validation repeated 4 times'."""
    if not folds:
        return "no cross-validation (a class has a single labelled image; the first candidate)"
    if len(folds) == 1:
        return "the validation split (a class has a single labelled image, so no cross-validation)"
    k, repeats = _deal_shape(folds, pool_size)
    return f"{k}-fold cross-validation" + (f" repeated {repeats} times" if repeats > 1 else "")
