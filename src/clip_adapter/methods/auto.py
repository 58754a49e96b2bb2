"""``auto``: choose the method for the user, by cross-validation over every labelled shot.

With a handful of shots the few-shot validation split (≤ 4 images per class) is too small
to rank methods: one image flips a ranking. So ``auto`` pools the training and validation
images and runs stratified k-fold cross-validation over the pool (k = the smallest
number of images any class has, at most ``max_folds``; 2 folds at 1 shot, where each
image takes its turn as the held-out one). The k-fold split is dealt ``min_deals`` times
(2), and more often while some class has been held out fewer than ``min_held_out`` times
(4 deals at 1 shot); each deal is a fresh seeded order, and averaging deals removes the
luck of one split. Candidates race: after each deal, one whose mean trails the leader's
by more than ``race_margin`` (15 points) is dropped, so the repeated deals cost what the
contenders cost (zero-shot, free, is never dropped).

In each fold every candidate is fitted with its own default recipe and validation search
and scored on the held-out images. Two things make that score a fair preview of the test
split:

- **Held-out images are seen as test images are.** A held-out training image is scored on
  its centre view (``FewShotData.train_centre``, which the pipeline encodes), as test
  images are; validation images are centre views already. Without centre views (a
  constructor that gave none) the mean of its augmented views stands in, and the result
  record says so (``held_out_views``). The view mean is not a test image: on the toy
  world's sketches zero-shot scored 40–41 % on view means where it scores 63 % on test
  images, so candidates trained on augmented views looked better than they are.
- **A candidate never chooses its hyper-parameters on the fold it is scored on.** From 3
  folds on (``inner_selection="separate"``) its validation search (CLIP-Adapter's α and
  epoch, GDA's α, Tip-Adapter-F's α, β and epoch, the linear probe's C) runs on the next
  fold of the deal and it trains on the others; scoring on the fold it chose on made the
  methods with the largest searches look 4–12 points better than they test. With 2 folds
  (1 shot) there is no third part: the search runs on the scored fold (recorded in
  ``inner_selection``); choosing on the training fold instead was measured worse.

The candidate with the best mean held-out accuracy wins; near-ties (within
``tie_margin``) go to the candidate listed earlier, and a learned candidate must beat
zero-shot by more than ``zero_shot_margin`` (0 by default). The default order is zero-shot
first (a method that does not help the task is not chosen), then the learned methods from
the most conservative: CLIP-Adapter (its residual ratio α is searched from 0, so its worst
case is zero-shot), GDA and Tip-Adapter-F (zero-shot plus a weighted correction), CLAP, and
the linear probe last (it discards the text classifier, so it needs the most shots). The
winner is then fitted on the original split as usual and saved as an ordinary artifact
of that method; the result records every candidate's fold scores and why the winner was
chosen.

Where the defaults come from, and what was measured held out
(``python benchmarks/toy_protocols.py auto`` prints both): the defaults were chosen
looking only at the toy world's six development worlds (color, shape and shape-color
tasks drawn as sketches and at night, dataset seed 0). Cross-validation estimate minus
test accuracy there, mean over cells (seeds 1–2, five of the six worlds), at 1 / 4 / 16
shots: zero-shot scored on view means −7.5 / −5.5 / −9.2 points, on centre views
+0.6 / −0.9 / −1.2; CLIP-Adapter with its search on the scored fold +7.0 / +7.6 / +4.0,
on another fold +0.9 / −1.3 (4 / 16 shots); the linear probe +11.7 / +12.2 / +5.0, then
−0.1 / −2.5. Auto's test accuracy minus the best single method's (means over those
worlds) went from +0.09 / +0.91 / +0.00 (view means, one deal) to −0.22 / +1.32 / +1.16
(centre views, separate search, two deals); a zero-shot margin of 1–2 points changed
nothing or cost up to 0.2. Held out (dataset seeds ≥ 5000, never used to choose):
shape/sketch@5007, color/night@5011 and four colours in pixel style @5003, few-shot seeds
1–2, run once with these defaults frozen: auto 76.5 / 80.1 / 83.2 % against the best single
method's 75.9 (CLIP-Adapter) / 79.1 (GDA) / 82.2 (GDA), never below zero-shot on any seed
(target: ≥ best − 1 point, ≥ zero-shot − 1 point on every seed; met at every shot count).
Per world it still trails the best method there by 4.7 points once (color/night@5011 at
4 shots, behind GDA: one seed picked CLIP-Adapter). The price is time: about 8 fits per
candidate, 7.2× the sum of the candidates' own fit times on the held-out worlds (measured in
one sitting on a shared 2-core CPU); ``min_deals=1`` halves it from 4 shots on.

At large N (``single_fold_above``: more than 4,000 pooled images) a pool is scored on **one fold of one
deal**: each candidate is fitted once, trained on half the pool with its own search on the next fold, and
scored on the first fold (over 1,000 images, so the score is precise to about a point, where the
candidates differ by several) instead of about 8 times; the winner is then fitted on the original split as
always. The threshold was set before any run, from that fold size. Measured (``python
benchmarks/heldout.py --methods ...,auto``, ``benchmarks/RESULTS.md`` "Scale II: auto"): on the dev world
dev-250x16 (5,000 pooled images) the same choice as full cross-validation (CLIP-Adapter, 96.9 %) in 156 CPU s
instead of 712; on dev-1000x16-noisy (20,000) GDA, the best single method (95.7 %), in 212 CPU s. Held out,
run once afterwards: ho-500x8 the same choice as full cross-validation (GDA, 99.9 %; the best single method
100.0) in 136 CPU s instead of 879; ho-imagenet CLAP, the best single method (73.7 %), in 299 CPU s. That is
1.5–3.2× the most expensive candidate's own fit and below the sum of the candidates' fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..core.config import Config, check_choice, check_range, option
from ..core.errors import ConfigError
from .base import FewShotData, FitResult, Head, Method, evaluate_head, for_dataset, get_method, register

CANDIDATES = ("zero-shot", "clip-adapter", "gda", "tip-adapter-f", "clap", "linear-probe")
HELD_OUT_VIEWS = ("centre", "mean")
INNER_SELECTION = ("separate", "held-out")
# Pooled images above which one fold is scored (module docstring, "At large N"): a fold of a 4-fold deal then
# holds over 1,000 images. Set before any run, from that fold size; measured on dev and held-out worlds after.
SINGLE_FOLD_ABOVE = 4_000


@dataclass
class AutoConfig(Config):
    """What ``auto`` chooses among, and how."""

    candidates: tuple[str, ...] = option(
        CANDIDATES, "methods to choose among, most conservative first (ties go to the earlier)"
    )
    max_folds: int = option(4, "at most this many cross-validation folds")
    min_held_out: int = option(8, "repeat the k-fold split until every class has been held out this many times")
    min_deals: int = option(2, "deal the k-fold split at least this many times (each deal in a fresh seeded order)")
    held_out_view: str = option(
        "centre",
        "held-out training images scored on: centre (their centre view, as test images are seen, "
        "when the data carries it; else the mean of their augmented views, recorded) or mean",
    )
    inner_selection: str = option(
        "separate",
        "where a candidate's own validation search runs inside a fold: separate (another fold "
        "than the one it is scored on, from 3 folds on) or held-out (the scored fold itself)",
    )
    zero_shot_margin: float = option(
        0.0, "a learned candidate must beat zero-shot's mean held-out accuracy by more than this"
    )
    tie_margin: float = option(0.005, "candidates within this mean accuracy of the best count as tied")
    race_margin: float = option(
        0.15, "after each deal, candidates this far below the leader's mean accuracy are dropped (1 = never)"
    )
    single_fold_above: int = option(
        SINGLE_FOLD_ABOVE,
        "pools (training + validation images) larger than this are scored on one fold of one deal, not cross-validated",
    )
    dataset: str = option(
        "", "the dataset's name, passed to candidates with per-dataset settings (set by the pipeline)"
    )

    def validate(self) -> None:
        check_range("max_folds", self.max_folds, 2, 20)
        check_range("min_held_out", self.min_held_out, 1, 100)
        check_range("min_deals", self.min_deals, 1, 20)
        check_choice("held_out_view", self.held_out_view, HELD_OUT_VIEWS)
        check_choice("inner_selection", self.inner_selection, INNER_SELECTION)
        check_range("zero_shot_margin", self.zero_shot_margin, 0.0, 1.0)
        check_range("tie_margin", self.tie_margin, 0.0, 1.0)
        check_range("race_margin", self.race_margin, 0.0, 1.0)
        check_range("single_fold_above", self.single_fold_above, 0, 10**9)
        if not self.candidates:
            raise ConfigError("auto: candidates must not be empty")
        if len(set(self.candidates)) != len(self.candidates):
            raise ConfigError(f"auto: candidates must not repeat a method; got {', '.join(self.candidates)}")
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
        cfg: AutoConfig = self.config
        pool = _Pool.from_data(data, cfg.held_out_view)
        folds = pool.folds(cfg.max_folds, data.seed, cfg.min_held_out, cfg.min_deals)
        k, _ = _deal_shape(folds, len(pool.labels))
        single = self.scores_one_fold(len(pool.labels), k)
        if single:
            folds = folds[:k]  # one deal, of which only the first fold is scored
        scores = self._race(pool, folds, data, scored=1 if single else k)
        means = {name: sum(s) / len(s) if s else 0.0 for name, s in scores.items()}  # no folds: the first candidate
        finalists = [name for name in cfg.candidates if len(scores[name]) == (1 if single else len(folds))]
        chosen, why = self._choose(means, finalists)
        result = self._candidate(chosen).fit(data)
        chosen_on = (
            f"one fold of a {k}-fold split ({len(folds[0])} held-out images; a pool above "
            f"{cfg.single_fold_above} images is scored once)"
            if single
            else _describe(folds, len(pool.labels))
        )
        selected = {
            "protocol": data.protocol,
            "chosen_on": f"{chosen_on} over the training and validation shots",
            "chosen": {"method": chosen, **result.selected.get("chosen", {})},
            "held_out_views": pool.point_source,
            "inner_selection": _inner_words(cfg.inner_selection, k, len(folds)),
            "cross_validation": {
                name: {"mean": round(means[name], 6), "folds": [round(s, 6) for s in scores[name]]} for name in scores
            },
            "why": why
            + (
                f"; dropped after a deal for trailing by > {100 * cfg.race_margin:.0f} points: "
                + ", ".join(n for n in cfg.candidates if n not in finalists)
                if len(finalists) < len(scores)
                else ""
            ),
            "inner": result.selected,
        }
        return FitResult(result.head, selected, result.val_accuracy, result.history, method=chosen)

    def scores_one_fold(self, pool_size: int, k: int) -> bool:
        """Whether a pool of ``pool_size`` images, dealt into ``k`` folds, is scored on one fold only.

        Above ``single_fold_above`` pooled images, with a fold to score, another for the candidates' own
        searches and at least one to train on (``k >= 3``).

        Example:
            >>> auto = Auto(Auto.make_config())
            >>> auto.scores_one_fold(4_000, 4), auto.scores_one_fold(4_001, 4), auto.scores_one_fold(4_001, 2)
            (False, True, False)
        """
        return pool_size > self.config.single_fold_above and k >= 3

    def _choose(self, means: dict[str, float], finalists: list[str]) -> tuple[str, str]:
        """The winner among ``finalists`` and why, in words."""
        cfg: AutoConfig = self.config
        best = max(means[name] for name in finalists)
        chosen = next(name for name in finalists if means[name] >= best - cfg.tie_margin)
        why = (
            f"best mean held-out accuracy {100 * means[chosen]:.2f}% (best overall {100 * best:.2f}%, "
            f"ties within {100 * cfg.tie_margin:.1f} points go to the earlier candidate)"
        )
        if (
            chosen != "zero-shot"
            and "zero-shot" in finalists
            and means[chosen] <= means["zero-shot"] + cfg.zero_shot_margin
        ):
            why = (
                f"zero-shot kept: the best learned candidate, {chosen} ({100 * means[chosen]:.2f}%), "
                f"does not beat zero-shot ({100 * means['zero-shot']:.2f}%) "
                f"by more than {100 * cfg.zero_shot_margin:.1f} points"
            )
            chosen = "zero-shot"
        return chosen, why

    def _race(self, pool: "_Pool", folds: list[torch.Tensor], data: FewShotData, scored: int) -> dict[str, list[float]]:
        """Every candidate's held-out accuracy per fold, deal by deal (the first ``scored`` folds of each deal).

        After each complete deal (every image held out once), a candidate whose mean so far
        trails the leader's by more than ``race_margin`` is not fitted again: at 1–2 shots the
        later deals then cost only what the contenders cost (the linear probe, far behind
        there, is the slowest candidate). A dropped candidate cannot be chosen. Zero-shot is
        never dropped: it costs nothing to score, and ``zero_shot_margin`` compares with it.
        """
        k, _ = _deal_shape(folds, len(pool.labels))
        separate = self.config.inner_selection == "separate" and k >= 3
        scores: dict[str, list[float]] = {name: [] for name in self.config.candidates}
        alive = list(self.config.candidates)
        for start in range(0, len(folds), k):
            deal = folds[start : start + k]
            splits = [(held_out, deal[(i + 1) % k] if separate else None) for i, held_out in enumerate(deal)][:scored]
            for name in alive:
                scores[name] += [
                    self._fold_score(self._candidate(name), pool, held_out, inner_val, data)
                    for held_out, inner_val in splits
                ]
            lead = max(sum(scores[n]) / len(scores[n]) for n in alive)
            alive = [
                n
                for n in alive
                if n == "zero-shot" or sum(scores[n]) / len(scores[n]) >= lead - self.config.race_margin
            ]
        return scores

    @staticmethod
    def _fold_score(
        method: Method, pool: "_Pool", held_out: torch.Tensor, inner_val: torch.Tensor | None, data: FewShotData
    ) -> float:
        inner = pool.fold_data(held_out, data, inner_val)
        head = method.fit(inner).head
        return evaluate_head(head, pool.point[held_out], pool.labels[held_out])[0]


@dataclass
class _Pool:
    """Every labelled shot: training views ``[N, V, D]``, one evaluation feature each, labels.

    ``point`` is what an image is scored (or validated) on when held out: the centre view
    for validation images, and for training images their centre view when the data carries
    it (``point_source`` says which was used).
    """

    views: torch.Tensor
    point: torch.Tensor
    labels: torch.Tensor
    n_val: int  # the last n_val entries are the validation images
    point_source: str = "centre views"

    @classmethod
    def from_data(cls, data: FewShotData, held_out_view: str = "centre") -> "_Pool":
        """The pool of ``data``'s training and validation images (``held_out_view``: see :class:`AutoConfig`).

        Example:
            >>> x = torch.randn(4, 3, 8)
            >>> y = torch.tensor([0, 0, 1, 1])
            >>> data = FewShotData(x, y, x[:, 0], y, torch.eye(2, 8), 10.0, ["a", "b"], train_centre=x[:, 1])
            >>> _Pool.from_data(data).point_source
            'centre views'
            >>> _Pool.from_data(replace(data, train_centre=None)).point_source
            'mean of the augmented views (the data carries no centre views of its training images)'
        """
        check_choice("held_out_view", held_out_view, HELD_OUT_VIEWS)
        v = data.train.shape[1]
        views = torch.cat([data.train, data.val.unsqueeze(1).expand(-1, v, -1)])
        centre = data.centre_views() if held_out_view == "centre" else None
        if centre is not None:
            train_point, source = centre, "centre views"
        else:
            train_point = data.train.mean(dim=1)
            source = (
                "mean of the augmented views (asked for: held_out_view=mean)"
                if held_out_view == "mean"
                else "mean of the augmented views (the data carries no centre views of its training images)"
            )
        point = torch.cat([train_point, data.val])
        return cls(views, point, torch.cat([data.train_labels, data.val_labels]), len(data.val_labels), source)

    def folds(self, max_folds: int, seed: int, min_held_out: int = 1, min_deals: int = 1) -> list[torch.Tensor]:
        """Stratified folds (index tensors): each class's images dealt round-robin in a seeded order.

        The deal is repeated (each time in a fresh seeded order) until every class has
        been held out ``min_held_out`` times, and at least ``min_deals`` times. A class
        with a single labelled image cannot be both trained on and held out: then the
        only fold is the given validation split (as plain validation would do).
        """
        counts = torch.bincount(self.labels)
        smallest = int(counts[counts > 0].min().item())
        if smallest < 2:
            n_train = len(self.labels) - self.n_val
            return [torch.arange(n_train, len(self.labels))] if self.n_val else []
        k = min(max_folds, smallest)
        repeats = max(1, min_deals, math.ceil(min_held_out / smallest))
        generator = torch.Generator().manual_seed(seed)
        return [fold for _ in range(repeats) for fold in self._deal(k, generator)]

    def _deal(self, k: int, generator: torch.Generator) -> list[torch.Tensor]:
        assignment = torch.empty_like(self.labels)
        for label in self.labels.unique():
            members = (self.labels == label).nonzero().flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            assignment[members] = torch.arange(len(members)) % k
        return [(assignment == f).nonzero().flatten() for f in range(k)]

    def fold_data(
        self, held_out: torch.Tensor, data: FewShotData, inner_val: torch.Tensor | None = None
    ) -> FewShotData:
        """What a candidate learns from in a fold: every image but ``held_out`` (and ``inner_val``).

        Its own validation search runs on ``inner_val`` when given (so it never sees the
        images it is scored on), else on ``held_out``.
        """
        keep = torch.ones(len(self.labels), dtype=torch.bool)
        keep[held_out] = False
        val = held_out if inner_val is None else inner_val
        keep[val] = False
        return replace(
            data,
            train=self.views[keep],
            train_labels=self.labels[keep],
            val=self.point[val],
            val_labels=self.labels[val],
            protocol="val",
            selection_override=None,
            train_centre=self.point[keep] if self.point_source == "centre views" else None,
        )


def _deal_shape(folds: list[torch.Tensor], pool_size: int) -> tuple[int, int]:
    """(folds per deal, deals) of :meth:`_Pool.folds`'s output (each deal holds out every image once)."""
    repeats = max(1, round(sum(len(f) for f in folds) / pool_size)) if folds else 1
    return max(1, len(folds) // repeats), repeats


def _inner_words(inner_selection: str, k: int, n_folds: int) -> str:
    """Where the candidates' own validation searches ran, in words (recorded with the result)."""
    if n_folds == 0:
        return "no cross-validation"
    if n_folds == 1:
        return "on the validation split it is scored on (no cross-validation)"
    if inner_selection == "separate" and k >= 3:
        return "on the next fold of the deal, never on the fold scored"
    reason = "asked for (inner_selection=held-out)" if inner_selection == "held-out" else f"only {k} folds"
    return f"on the fold scored ({reason})"


def _describe(folds: list[torch.Tensor], pool_size: int) -> str:
    """'4-fold cross-validation', or '2-fold cross-validation repeated 4 times'."""
    if not folds:
        return "no cross-validation (a class has a single labelled image; the first candidate)"
    if len(folds) == 1:
        return "the validation split (a class has a single labelled image, so no cross-validation)"
    k, repeats = _deal_shape(folds, pool_size)
    return f"{k}-fold cross-validation" + (f" repeated {repeats} times" if repeats > 1 else "")
