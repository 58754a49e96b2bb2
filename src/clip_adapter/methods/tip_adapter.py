"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a key-value cache of the few shots.

Keys are the few-shot image features (the mean of each image's augmented
views, L2-normalised), values their one-hot labels over the true number of
classes. ``logits = s·cos(f, W) + α·(s/100)·exp(−β(1 − f̂·Kᵀ))·L`` with ``s``
the backbone's logit scale: at CLIP's s = 100 this is the official formula,
and α keeps its meaning on backbones with another scale. α and β are searched
on the selection split over the official grid (``β ∈ [0.1, β_max]`` in 200
steps, ``α ∈ [0.1, α_max]`` in 20).

Tip-Adapter-F fine-tunes the keys (AdamW, lr 1e-3, eps 1e-4, cosine, 20
epochs, batch 256) with α, β fixed at their initial values, then searches
them again. Code vs protocol: the official code picks the epoch and α, β on
the test set (and searches ImageNet's on test); here they are chosen on the
few-shot validation split.

Speed: the values are one-hot, so ``exp(·) @ L`` is a per-class sum of the
affinities (an ``index_add``, ~15× cheaper than the dense product at 1,000
classes). The search computes the affinities once, derives each β's cache
weights from the previous β's by a multiply, and scores all α of a β in one
pass (see :func:`search_alpha_beta`); the exact scores, cross-entropy
included, are computed only for the points that can win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, check_range, option
from ..threads import torch_threads
from .base import FewShotData, FitResult, Head, Method, better, cosine_logits, register, selection_record
from .train import TrainConfig, train_head
from .zero_shot import base_meta

CLIP_SCALE = 100.0  # the logit scale α and β were tuned against in the paper


@dataclass
class TipAdapterConfig(Config):
    """Training-free Tip-Adapter."""

    alpha: float = option(1.0, "cache weight α (initial / protocol-none value)")
    beta: float = option(1.0, "affinity sharpness β (initial / protocol-none value)")
    alpha_max: float = option(10.0, "α search range upper end")
    beta_max: float = option(10.0, "β search range upper end")
    alpha_steps: int = option(20, "α grid points")
    beta_steps: int = option(200, "β grid points")

    def validate(self) -> None:
        for name in ("alpha", "beta"):
            check_range(name, getattr(self, name), 0.0, 1e4)
        for name in ("alpha_max", "beta_max"):
            check_range(name, getattr(self, name), 0.1, 1e4)
        for name in ("alpha_steps", "beta_steps"):
            check_range(name, getattr(self, name), 1, 10_000)


@dataclass
class TipAdapterFConfig(TrainConfig, TipAdapterConfig):
    """Tip-Adapter-F: the cache keys are fine-tuned."""

    optimizer: str = option("adamw", "adamw or sgd")
    lr: float = option(1e-3, "learning rate (official: 1e-3)")
    weight_decay: float = option(0.01, "AdamW weight decay (torch default, as the official code)")
    adam_eps: float = option(1e-4, "AdamW epsilon (official: 1e-4)")
    epochs: int = option(20, "training epochs (official: 20; 100 for EuroSAT)")
    batch_size: int = option(256, "images per step (official: 256)")
    warmup_epochs: float = option(0.0, "warm-up epochs (official: none)")

    def validate(self) -> None:
        TrainConfig.validate(self)
        TipAdapterConfig.validate(self)


class TipAdapterHead(Head):
    """Zero-shot logits plus the cache model's."""

    def __init__(self, config: TipAdapterConfig, meta: dict[str, Any]) -> None:
        super().__init__(config, meta)
        c, d, k = meta["num_classes"], meta["embed_dim"], meta["num_keys"]
        self.logit_scale = float(meta["logit_scale"])
        self.register_buffer("text", torch.zeros(c, d))
        self.register_buffer("values", torch.zeros(k, c))
        self.keys = nn.Parameter(torch.zeros(k, d), requires_grad=bool(meta.get("trainable_keys", False)))

    def affinity(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=-1) @ self.keys.t()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return self.combine(cosine_logits(features, self.text, self.logit_scale), self.affinity(features), cfg.alpha, cfg.beta)

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


def search_alpha_beta(head: TipAdapterHead, data: FewShotData) -> tuple[dict[str, float], tuple[float, float] | None, list]:
    """The official strict grid over (β, α), scored on the selection split.

    Every (β, α) is scored, in two passes. A cheap pass finds, for each
    validation image and β, the interval of α where its true class wins
    (``Δclip + α·Δcache ≥ 0`` against every other class), so the accuracy
    of all 20 α costs one pass over the logits instead of 20, and each β's
    cache weights come from the previous β's by one multiply instead of an
    exp. The points within rounding of the best accuracy are then scored
    exactly (accuracy, then cross-entropy), as the official loop would.
    """
    cfg: TipAdapterConfig = head.config
    x, y = data.selection
    if data.protocol == "none" or len(y) == 0:
        return {"alpha": cfg.alpha, "beta": cfg.beta}, None, []
    betas = [0.1 + i * (cfg.beta_max - 0.1) / cfg.beta_steps for i in range(cfg.beta_steps)]
    alphas = [0.1 + j * (cfg.alpha_max - 0.1) / cfg.alpha_steps for j in range(cfg.alpha_steps)]
    scale = head.logit_scale / CLIP_SCALE
    with torch.no_grad():
        clip_logits, affinity = cosine_logits(x, head.text, head.logit_scale), head.affinity(x)
        lo, hi = _winning_intervals(clip_logits, affinity, head, betas, y, scale)
        alpha_t = torch.tensor(alphas, dtype=lo.dtype)
        approx = ((lo[:, :, None] <= alpha_t) & (alpha_t <= hi[:, :, None])).float().mean(1)  # [β, α]
        slack = 3.0 / len(y)  # rows on a rounding boundary: rescored exactly below
        best, best_score = None, None
        for bi, beta in enumerate(betas):
            if approx[bi].max() < approx.max() - slack:
                continue
            cache = head.cache_logits(affinity, beta) * scale
            for ai, alpha in enumerate(alphas):
                if approx[bi, ai] < approx.max() - slack:
                    continue
                logits = clip_logits + alpha * cache
                score = ((logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item())
                if better(score, best_score):
                    best, best_score = {"alpha": alpha, "beta": beta}, score
    return best, best_score, [{"alpha_range": [alphas[0], alphas[-1]], "beta_range": [betas[0], betas[-1]]}]


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
    return {"alpha": [0.1, cfg.alpha_max, cfg.alpha_steps], "beta": [0.1, cfg.beta_max, cfg.beta_steps]}


def _meta(data: FewShotData, trainable: bool) -> dict[str, Any]:
    return {**base_meta(data), "num_keys": data.train.shape[0], "trainable_keys": trainable}


@register("tip-adapter")
class TipAdapter(Method):
    """Tip-Adapter: training-free cache model, α and β searched on validation.

    Example:
        >>> TipAdapter.make_config().beta_steps
        200
    """

    Config = TipAdapterConfig
    Head = TipAdapterHead
    trainable_keys = False

    def fit(self, data: FewShotData) -> FitResult:
        torch.manual_seed(data.seed)
        head = TipAdapterHead(self.config, _meta(data, self.trainable_keys))
        build_cache(head, data)
        with torch_threads(1):
            trained = self.train_keys(head, data)
            chosen, score, history = search_alpha_beta(head, data)
        head.config = self.config.replace(**chosen)
        epoch = {"best_epoch": trained["best_epoch"]} if trained else {}
        record = selection_record(data.protocol, _grid(self.config), {**chosen, **epoch})
        return FitResult(head.eval(), record, score[0] if score else None, [trained, *history] if trained else history)

    def train_keys(self, head: TipAdapterHead, data: FewShotData) -> dict[str, Any]:
        """Nothing to train: the cache is the model."""
        return {}


@register("tip-adapter-f")
class TipAdapterF(TipAdapter):
    """Tip-Adapter-F: cache keys fine-tuned, epoch and α, β chosen on validation.

    Example:
        >>> TipAdapterF.make_config().lr
        0.001
    """

    Config = TipAdapterFConfig
    trainable_keys = True

    def train_keys(self, head: TipAdapterHead, data: FewShotData) -> dict[str, Any]:
        """Fine-tune the keys with α, β fixed at their initial values (the official procedure)."""
        return train_head(head, data, self.config, data.seed)
