"""CLAP (Silva-Rodríguez et al., CVPR 2024): a zero-shot-initialised linear probe kept near the prompts.

The class prototypes ``w_k`` start at the class-prompt embeddings ``t_k``
(ZS-LP) and are trained with ``CE + mean_k λ_k·||w_k − t_k||²``; logits are
``s·cos(f, w)``. ``λ_k`` starts at the zero-shot mean probability of the
true class over class k's support views, so classes where zero-shot is
already good are held closer to their prompt. No validation set is used: one
fixed recipe, last epoch, λ computed from the support set alone.

Code vs paper: the released code keeps λ fixed at its initial value
(``constraint="l2"``, the default here); the paper's augmented-Lagrangian
updates are ``constraint="adaptive"``, as the official ``outer_step`` does them:
after each epoch ``λ_k ← max(0, λ_k + ρ_k·h_k)`` then ``ρ_k ← h_k``, with
``h_k = ||w_k − t_k||²`` and a per-class ``ρ`` that starts at 0 (so the first
update leaves λ unchanged). λ starts, as in the official code, from the zero-shot
probabilities computed with the mean of the raw prompt embeddings (the same
anchors the prototypes start from), not from the normalised ensemble. ``constraint="none"``
is plain ZS-LP. As in the official code every cached augmented view is a
training sample (SGD lr 0.1, momentum 0.9, no weight decay, batch 256, 300
epochs, one epoch of constant warm-up at 1e-5), and an epoch is as many batches
as the official image loader has (``⌊N/256⌋``, or 1 when N < 256 images), each
drawn from a fresh shuffle of all the cached views: at 16 shots on 10 classes,
1 step per epoch, not one per 256 views. Prototypes and anchors are the per-class mean of the raw prompt
embeddings, as in the official code: logits normalise the prototypes, so their
norm sets how strongly the penalty pulls against the cross-entropy (with unit
vectors it would be ~||t||² times weaker than the published method).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..core.config import Default, check_choice, defaults, option
from ..core.threads import torch_threads
from .base import FewShotData, FitResult, Head, Method, cosine_logits, register, selection_record
from .train import TrainConfig, train_head
from .zero_shot import base_meta

CONSTRAINTS = ("l2", "adaptive", "none")


@dataclass
@defaults(
    optimizer="sgd",
    lr=Default(0.1, "learning rate"),
    weight_decay=Default(0.0, "weight decay"),
    epochs=Default(300, "passes over all cached views"),
    batch_size=Default(256, "views per step"),
    warmup_epochs=Default(1.0, "warm-up epochs"),
    warmup_type=Default("constant", "warm-up: constant at warmup_lr (official config) or linear"),
    warmup_lr=Default(1e-5, "learning rate of the constant warm-up"),
    drop_last=Default(True, "the official image loader drops a last partial batch (unless it is the only one)"),
    select_epoch=Default(False, "CLAP uses the last epoch; no validation set"),
)
class ClapConfig(TrainConfig):
    """CLAP options; the recipe is the official one (no validation-based choices).

    The optimiser's values are CLAP's released ``configs/trainers/SGD_lr1e-1_B256_ep300.yaml``
    (SGD lr 0.1, batch 256, 300 epochs, one constant warm-up epoch at 1e-5, no weight decay);
    none was chosen on this project's data.
    """

    constraint: str = option("l2", "l2 (fixed λ, official code), adaptive (paper's ALM updates) or none (ZS-LP)")

    def validate(self) -> None:
        super().validate()
        check_choice("constraint", self.constraint, CONSTRAINTS)


class ClapHead(Head):
    """Trainable prototypes anchored to the prompt embeddings by per-class penalties."""

    def __init__(self, config: ClapConfig, meta: dict[str, Any]) -> None:
        super().__init__(config, meta)
        c, d = meta["num_classes"], meta["embed_dim"]
        self.logit_scale = float(meta["logit_scale"])
        self.prototypes = nn.Parameter(torch.zeros(c, d))
        self.register_buffer("anchors", torch.zeros(c, d))
        self.register_buffer("multipliers", torch.zeros(c))
        self.rho = torch.zeros(c)  # official: penalty_parameter = zeros_like(λ), per class

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return cosine_logits(features, self.prototypes, self.logit_scale)

    def deviation(self) -> torch.Tensor:
        return (self.prototypes - self.anchors).pow(2).sum(dim=1)

    def regularizer(self) -> torch.Tensor | float:
        if self.config.constraint == "none":
            return 0.0
        return (self.multipliers * self.deviation()).mean()

    @torch.no_grad()
    def outer_step(self, epoch: int) -> None:
        """The augmented-Lagrangian update of the official code (constraint="adaptive"), per class."""
        h = self.deviation()
        self.multipliers.copy_(torch.clamp(self.multipliers + self.rho * h, min=0))
        self.rho = h.clone()


def initial_multipliers(data: FewShotData) -> torch.Tensor:
    """λ_k: mean zero-shot probability of the true class over class k's support views.

    The zero-shot classifier is the mean of the raw prompt embeddings (``text_raw``), as in
    the official code; with one template it equals the normalised ensemble's direction.
    """
    n, v, d = data.train.shape
    anchors = data.text_raw if data.text_raw is not None else data.text
    probs = torch.softmax(cosine_logits(data.train.reshape(n * v, d), anchors, data.logit_scale), dim=1)
    labels = data.train_labels.repeat_interleave(v)
    true = probs[torch.arange(len(labels)), labels]
    sums = torch.zeros(data.num_classes).index_add_(0, labels, true)
    counts = torch.bincount(labels, minlength=data.num_classes).clamp_min(1)
    return sums / counts


@register("clap")
class Clap(Method):
    """CLAP: class-adaptive linear probe; needs no validation set.

    Example:
        >>> Clap.make_config().constraint
        'l2'
    """

    Config = ClapConfig
    Head = ClapHead

    def fit(self, data: FewShotData) -> FitResult:
        cfg: ClapConfig = self.config
        head = ClapHead(cfg, base_meta(data))
        anchors = data.text_raw if data.text_raw is not None else data.text
        with torch.no_grad():
            head.prototypes.copy_(anchors)
            head.anchors.copy_(anchors)
            head.multipliers.copy_(initial_multipliers(data))
        n, v, d = data.train.shape
        views_as_samples = replace(
            data, train=data.train.reshape(n * v, 1, d), train_labels=data.train_labels.repeat_interleave(v)
        )
        on_epoch = head.outer_step if cfg.constraint == "adaptive" else None
        with torch_threads(1):
            info = train_head(head, views_as_samples, cfg, data.seed, on_epoch=on_epoch, epoch_size=n)
        record = selection_record("none", {}, {"constraint": cfg.constraint})
        record["chosen_on"] = "nothing: CLAP uses a fixed recipe and the last epoch (no validation set)"
        return FitResult(head.eval(), record, None, [info])
