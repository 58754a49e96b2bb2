"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a key-value cache of the few shots.

Keys are the few-shot image features (the mean of each image's augmented
views, L2-normalised), values their one-hot labels over the true number of
classes. ``logits = s·cos(f, W) + α·(s/100)·exp(−β(1 − f̂·Kᵀ))·L`` with ``s``
the backbone's logit scale: at CLIP's s = 100 this is the official formula,
and α keeps its meaning on backbones with another scale.

Settings (option ``settings``). The official code ships one config per
dataset (``tip_official.json`` holds them, with the commit they come from):
the search range ``β ∈ [0.1, β_max)`` in ``β_steps`` and ``α ∈ [0.1, α_max)``
in ``α_steps`` (``search_scale``/``search_step``: β_max 7–50, α_max 3–50, 200 ×
20 steps), the starting ``init_alpha`` (1.17–10) and ``init_beta`` (1) —
Tip-Adapter-F trains with the cache term weighted by them, and protocol
``none`` uses them — and Tip-Adapter-F's epochs (20; 100 for EuroSAT).
``settings="auto"`` (the default) takes the official values when the
dataset's name is one of the 11 standard datasets (CoOp's folder and
``split_zhou_*`` names included), else the generic ones (α = β = 1, both ranges
up to 10, 200 × 20 steps, 20 epochs), which are this toolkit's and not the
official code's (origin not recorded; not checked on held-out data); a
dataset key or ``generic`` chooses explicitly, and any of
``alpha``, ``beta``, ``alpha_max``, ``beta_max``, ``alpha_steps``,
``beta_steps``, ``epochs`` set explicitly wins over the settings.

The search is the official grid (β outer loop, α inner) scored on the
selection split. Where the default differs from the official code, and why:

* The split. The official code searches on the dataset's **full validation
  split** (ImageNet, which has none in CoOp's layout, on the **test** split),
  and Tip-Adapter-F also picks its epoch on test. The default protocol
  ``val`` chooses both on the few-shot validation split (min(K, 4) images per
  class), the only labelled data a K-shot user has, so the numbers stay honest
  few-shot numbers; protocol ``full-val`` uses the full validation split (the
  official choice for 10 of the 11 datasets) and ``oracle`` the test split
  (the official choice for ImageNet and for Tip-Adapter-F's epoch), and every
  result records which.
* Ties. The official loop keeps the first grid point reaching the best
  accuracy (strict ``>``): ``tie_break="first"``, set by the ``official``
  preset. The default ``"loss"`` breaks accuracy ties by lower validation
  cross-entropy, the rule every method of this toolkit uses: with ≤ 4
  validation images per class dozens of the 4,000 points tie, and the first
  of them is an artefact of the loop order. The rule is argued, not
  measured: its effect on accuracy was not checked on held-out data.

Speed: the values are one-hot, so ``exp(·) @ L`` is a per-class sum of the
affinities (an ``index_add``, ~15× cheaper than the dense product at 1,000
classes). The search computes the affinities once, derives each β's cache
weights from the previous β's by a multiply, and scores all α of a β in one
pass (see :func:`search_alpha_beta`); the exact scores, cross-entropy
included, are computed only for the points that can win, so the choice is
the official double loop's (``tests/test_fidelity_tip.py`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import Config, Default, check_choice, check_range, defaults, option
from ..core.threads import torch_threads
from .base import FewShotData, FitResult, Head, Method, better, cosine_logits, register, selection_record
from .tip_settings import GENERIC, official_settings, settings_for, settings_values
from .train import TrainConfig, train_head
from .zero_shot import base_meta

CLIP_SCALE = 100.0  # the logit scale α and β were tuned against in the paper
TIE_BREAKS = ("loss", "first")


def resolve_settings(config: "TipAdapterConfig", dataset: str | None = None) -> "TipAdapterConfig":
    """``config`` with its ``settings`` named and every unset (None) option filled from them.

    ``auto`` becomes the dataset's official settings (``dataset`` is a name as
    :func:`~clip_adapter.data.templates.dataset_key` reads it) or ``generic``;
    options set explicitly are kept. Resolving twice changes nothing.

    Example:
        >>> cfg = resolve_settings(TipAdapterConfig(alpha_max=20.0), "eurosat")
        >>> cfg.settings, cfg.alpha_max, cfg.beta_max, cfg.alpha
        ('eurosat', 20.0, 12.0, 2.0)
    """
    name = settings_for(dataset) if config.settings == "auto" else config.settings
    values = settings_values(name)
    unset = {k: v for k, v in values.items() if hasattr(config, k) and getattr(config, k) is None}
    return config.replace(settings=name, **unset)


@dataclass
class TipAdapterConfig(Config):
    """Training-free Tip-Adapter. None = from ``settings`` (official per dataset, or generic;
    see the module docstring)."""

    settings: str = option(
        "auto",
        "official per-dataset values: auto (the dataset's, when it is a standard one; else generic), "
        "generic, or a dataset key",
    )
    alpha: float | None = option(
        None,
        "cache weight α; None: from settings (official init_alpha: Tip-Adapter-F trains with it, "
        "protocol none uses it); after fitting, the chosen α",
    )
    beta: float | None = option(None, "affinity sharpness β; None: from settings (official init_beta; as alpha)")
    alpha_max: float | None = option(
        None, "α search range upper end; None: from settings (official search_scale[1]; generic 10)"
    )
    beta_max: float | None = option(
        None, "β search range upper end; None: from settings (official search_scale[0]; generic 10)"
    )
    alpha_steps: int | None = option(None, "α grid points; None: from settings (official search_step[1]: 20)")
    beta_steps: int | None = option(None, "β grid points; None: from settings (official search_step[0]: 200)")
    tie_break: str = option(
        "loss",
        "accuracy ties on the grid: loss (lower validation cross-entropy) or first (the official loop's first best)",
    )

    def validate(self) -> None:
        check_choice("settings", self.settings, ("auto", "generic", *official_settings()))
        check_choice("tie_break", self.tie_break, TIE_BREAKS)
        limits = {
            "alpha": (0.0, 1e4),
            "beta": (0.0, 1e4),
            "alpha_max": (0.1, 1e4),
            "beta_max": (0.1, 1e4),
            "alpha_steps": (1, 10_000),
            "beta_steps": (1, 10_000),
        }
        for name, (lo, hi) in limits.items():
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), lo, hi)


@dataclass
@defaults(
    lr=Default(1e-3, "learning rate (official: 1e-3)"),
    weight_decay=Default(0.01, "AdamW weight decay (torch default, as the official code)"),
    adam_eps=Default(1e-4, "AdamW epsilon (official: 1e-4)"),
    batch_size=Default(256, "images per step (official: 256)"),
    warmup_epochs=Default(0.0, "warm-up epochs (official: none)"),
)
class TipAdapterFConfig(TrainConfig, TipAdapterConfig):
    """Tip-Adapter-F: the cache keys are fine-tuned."""

    epochs: int | None = option(None, "training epochs; None = from settings (official: 20; 100 for EuroSAT)")  # type: ignore[assignment]

    def validate(self) -> None:
        # epochs may still be unset (filled from `settings` before training): check the rest as if it were.
        TrainConfig.validate(self if self.epochs is not None else self.replace(epochs=int(GENERIC["epochs"])))
        TipAdapterConfig.validate(self)


class TipAdapterHead(Head):
    """Zero-shot logits plus the cache model's."""

    def __init__(self, config: TipAdapterConfig, meta: dict[str, Any]) -> None:
        super().__init__(resolve_settings(config), meta)  # a head always has concrete α, β
        c, d, k = meta["num_classes"], meta["embed_dim"], meta["num_keys"]
        self.logit_scale = float(meta["logit_scale"])
        self.register_buffer("text", torch.zeros(c, d))
        self.register_buffer("values", torch.zeros(k, c))
        self.keys = nn.Parameter(torch.zeros(k, d), requires_grad=bool(meta.get("trainable_keys", False)))

    def affinity(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=-1) @ self.keys.t()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return self.combine(
            cosine_logits(features, self.text, self.logit_scale), self.affinity(features), cfg.alpha, cfg.beta
        )

    def combine(self, clip_logits: torch.Tensor, affinity: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
        return clip_logits + alpha * (self.logit_scale / CLIP_SCALE) * self.cache_logits(affinity, beta)

    def cache_logits(self, affinity: torch.Tensor, beta: float) -> torch.Tensor:
        """``exp(−β(1 − A)) · L``: summed per class when the values are one-hot (always, unless edited)."""
        weights = torch.exp(-beta * (1 - affinity))
        labels = self.key_labels()
        if labels is None:
            return weights @ self.values
        return weights.new_zeros(weights.shape[0], self.values.shape[1]).index_add(1, labels, weights)

    def key_labels(self) -> torch.Tensor | None:
        """Each key's class when ``values`` is exactly one-hot, else None (cached per version of ``values``)."""
        version = (self.values._version, self.values.data_ptr())
        if getattr(self, "_labels_for", None) != version:
            v = self.values
            onehot = v.numel() > 0 and bool(((v == 0) | (v == 1)).all()) and bool((v.sum(1) == 1).all())
            self._labels, self._labels_for = (v.argmax(1) if onehot else None), version
        return self._labels


def build_cache(head: TipAdapterHead, data: FewShotData) -> None:
    """Keys = normalised mean of each image's views; values = one-hot labels over all classes."""
    with torch.no_grad():
        head.text.copy_(data.text)
        head.keys.copy_(F.normalize(data.train_means(), dim=-1))
        head.values.copy_(F.one_hot(data.train_labels, data.num_classes).float())


def search_grid(cfg: TipAdapterConfig) -> tuple[list[float], list[float]]:
    """The official grid ``(betas, alphas)``: ``i·(max − 0.1)/steps + 0.1`` for ``i < steps``
    (the end is never reached).

    Example:
        >>> betas, alphas = search_grid(resolve_settings(TipAdapterConfig(beta_steps=4, alpha_steps=2), "dtd"))
        >>> [round(b, 3) for b in betas], alphas
        ([0.1, 3.325, 6.55, 9.775], [0.1, 6.55])
    """
    cfg = resolve_settings(cfg)
    betas = [i * (cfg.beta_max - 0.1) / cfg.beta_steps + 0.1 for i in range(cfg.beta_steps)]
    alphas = [j * (cfg.alpha_max - 0.1) / cfg.alpha_steps + 0.1 for j in range(cfg.alpha_steps)]
    return betas, alphas


def search_alpha_beta(
    head: TipAdapterHead, data: FewShotData
) -> tuple[dict[str, float], tuple[float, float] | None, list]:
    """The official grid over (β, α) in the official order (β outer, α inner), scored on the selection split.

    Every (β, α) is scored, in two passes. A cheap pass finds, for each
    validation image and β, the interval of α where its true class wins
    (``Δclip + α·Δcache ≥ 0`` against every other class), so the accuracy
    of all 20 α costs one pass over the logits instead of 20, and each β's
    cache weights come from the previous β's by one multiply instead of an
    exp. The points within rounding of the best accuracy are then scored
    exactly, in loop order: the best accuracy wins, ties going to lower
    cross-entropy (``tie_break="loss"``) or to the first point reached, as
    the official ``acc > best_acc`` does (``"first"``).
    """
    cfg: TipAdapterConfig = head.config
    x, y = data.selection
    if data.protocol == "none" or len(y) == 0:
        return {"alpha": cfg.alpha, "beta": cfg.beta}, None, []
    betas, alphas = search_grid(cfg)
    wins = better if cfg.tie_break == "loss" else lambda score, best: best is None or score[0] > best[0]
    scale = head.logit_scale / CLIP_SCALE
    with torch.no_grad():
        clip_logits, affinity = cosine_logits(x, head.text, head.logit_scale), head.affinity(x)
        lo, hi = _winning_intervals(clip_logits, affinity, head, betas, y, scale)
        alpha_t = torch.tensor(alphas, dtype=lo.dtype)
        # [β, α]: one α at a time, so the temporary is β × N, not β × N × α (full-val/oracle splits are large)
        approx = torch.stack([((lo <= a) & (a <= hi)).float().mean(1) for a in alpha_t], dim=1)
        floor = approx.max() - 3.0 / len(
            y
        )  # within 3 rows of the best: rows on a rounding boundary are rescored exactly
        best, best_score = None, None
        for bi, beta in enumerate(betas):
            candidates = [ai for ai in range(len(alphas)) if approx[bi, ai] >= floor]
            if not candidates:
                continue
            cache = head.cache_logits(affinity, beta) * scale
            for ai, score in zip(candidates, _exact_scores(clip_logits, cache, [alphas[ai] for ai in candidates], y)):
                if wins(score, best_score):
                    best, best_score = {"alpha": alphas[ai], "beta": beta}, score
    return (
        best,
        best_score,
        [{"alpha_range": [alphas[0], alphas[-1]], "beta_range": [betas[0], betas[-1]], "settings": cfg.settings}],
    )


EXACT_CHUNK = 1 << 22  # logits per exact-scoring pass: all α of a β at once on a small split, one α on a large one


def _exact_scores(
    clip_logits: torch.Tensor, cache: torch.Tensor, alphas: list[float], y: torch.Tensor
) -> list[tuple[float, float]]:
    """``(accuracy, cross-entropy)`` of ``clip_logits + α·cache`` for each α, as many α per pass as fit."""
    n, c = clip_logits.shape
    per_pass = max(1, EXACT_CHUNK // max(1, n * c))
    scores: list[tuple[float, float]] = []
    for start in range(0, len(alphas), per_pass):
        a = torch.tensor(alphas[start : start + per_pass], dtype=cache.dtype)[:, None, None]
        logits = clip_logits + a * cache  # [A, N, C]
        accuracy = (logits.argmax(-1) == y).float().mean(1)
        loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(len(a)), reduction="none").view(len(a), n).mean(1)
        scores += zip(accuracy.tolist(), loss.tolist())
    return scores


ROW_CHUNK = 256  # validation rows per pass: keeps [rows, keys] weights in cache-sized pieces


def _winning_intervals(clip_logits, affinity, head, betas, y, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """``lo, hi`` ``[β, N]``: image i is classified right for α in ``[lo, hi]`` (empty when lo > hi)."""
    labels = head.key_labels()
    sums = _class_summer(labels, head.values)
    step = betas[1] - betas[0] if len(betas) > 1 else 0.0
    n = len(y)
    lo, hi = torch.empty(len(betas), n), torch.empty(len(betas), n)
    for start in range(0, n, ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        a = affinity[rows]
        if labels is not None:
            a = a[:, sums.order]
        weights, ratio = torch.exp(betas[0] * (a - 1)), torch.exp(step * (a - 1))
        for j in range(len(betas)):
            if j:
                weights.mul_(ratio)  # exp(β_j(a − 1)) on an arithmetic β grid
            lo[j, rows], hi[j, rows] = _interval(clip_logits[rows], sums(weights) * scale, y[rows])
    return lo, hi


def _interval(clip_logits: torch.Tensor, cache: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = clip_logits.gather(1, y[:, None]) - clip_logits  # true class's lead, per rival
    e = cache.gather(1, y[:, None]) - cache
    bound = -d / e.where(e != 0, torch.ones_like(e))
    inf = torch.full_like(d, float("inf"))
    lo = torch.where(e > 0, bound, -inf).amax(1)
    hi = torch.where(e < 0, bound, inf).amin(1)
    lost = ((e == 0) & (d < 0)).any(1)  # a rival ahead whatever α
    return lo.where(~lost, inf[:, 0]), hi


class _class_summer:
    """Per-class sums of ``[rows, keys]`` weights: a reshape when every class has as many keys."""

    def __init__(self, labels: torch.Tensor | None, values: torch.Tensor) -> None:
        self.values, self.labels = values, labels
        if labels is None:
            return
        self.order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=values.shape[1])
        self.shots = int(counts[0]) if bool((counts == counts[0]).all()) and int(counts[0]) > 0 else 0
        self.sorted_labels = labels[self.order]

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        if self.labels is None:
            return weights @ self.values
        if self.shots:
            return weights.view(weights.shape[0], -1, self.shots).sum(-1)
        return weights.new_zeros(weights.shape[0], self.values.shape[1]).index_add(1, self.sorted_labels, weights)


def _grid(cfg: TipAdapterConfig) -> dict[str, Any]:
    """The searched grid as the official configs state it: [0.1, search_scale, search_step] per axis."""
    return {"alpha": [0.1, cfg.alpha_max, cfg.alpha_steps], "beta": [0.1, cfg.beta_max, cfg.beta_steps]}


def _meta(data: FewShotData, trainable: bool) -> dict[str, Any]:
    return {**base_meta(data), "num_keys": data.train.shape[0], "trainable_keys": trainable}


@register("tip-adapter")
class TipAdapter(Method):
    """Tip-Adapter: training-free cache model, α and β searched on the selection split.

    Defaults: the official per-dataset search range and starting α, β for the
    11 standard datasets (generic ones elsewhere), searched on the few-shot
    validation split with accuracy ties broken by loss; the official code
    searches the full validation split (ImageNet: test) and keeps the first
    best point: ``--protocol full-val`` (or ``oracle``) with ``--preset
    official``. The module docstring says why the defaults differ.

    Example:
        >>> cfg = TipAdapter.for_dataset(TipAdapter.make_config(), "split_zhou_OxfordFlowers")
        >>> cfg.settings, cfg.beta_max, cfg.alpha_max, cfg.beta_steps, cfg.alpha
        ('oxford_flowers', 50.0, 50.0, 200, 10.0)
    """

    Config = TipAdapterConfig
    Head = TipAdapterHead
    trainable_keys = False
    presets = {"official": {"tie_break": "first"}}  # with protocol full-val (oracle for ImageNet): the official search

    @classmethod
    def for_dataset(cls, config: TipAdapterConfig, dataset: str | None) -> TipAdapterConfig:
        """``config`` with ``settings="auto"`` resolved for the dataset named ``dataset`` (the pipeline calls this)."""
        return resolve_settings(config, dataset)

    def fit(self, data: FewShotData) -> FitResult:
        torch.manual_seed(data.seed)
        config = resolve_settings(self.config)  # still "auto" here: no dataset was named, so generic
        head = TipAdapterHead(config, _meta(data, self.trainable_keys))
        build_cache(head, data)
        with torch_threads(1):
            trained = self.train_keys(head, data)
            chosen, score, history = search_alpha_beta(head, data)
        head.config = config.replace(**chosen)
        epoch = {"best_epoch": trained["best_epoch"]} if trained else {}
        record = selection_record(data.protocol, _grid(config), {**chosen, **epoch})
        return FitResult(head.eval(), record, score[0] if score else None, [trained, *history] if trained else history)

    def train_keys(self, head: TipAdapterHead, data: FewShotData) -> dict[str, Any]:
        """Nothing to train: the cache is the model."""
        return {}


@register("tip-adapter-f")
class TipAdapterF(TipAdapter):
    """Tip-Adapter-F: cache keys fine-tuned, epoch and α, β chosen on the selection split.

    The keys train with the cache term weighted by the settings' ``alpha``,
    ``beta`` (the official init_alpha, init_beta) for their ``epochs``; the
    official code then picks the epoch on test, the default here on the
    few-shot validation split (see :class:`TipAdapter` for the α, β search).

    Example:
        >>> TipAdapterF.for_dataset(TipAdapterF.make_config(), "eurosat").epochs, TipAdapterF.make_config().lr
        (100, 0.001)
    """

    Config = TipAdapterFConfig
    trainable_keys = True

    def train_keys(self, head: TipAdapterHead, data: FewShotData) -> dict[str, Any]:
        """Fine-tune the keys with α, β fixed at their initial values (the official procedure)."""
        return train_head(head, data, head.config, data.seed)
