"""GDA (Wang et al., ICLR 2024): training-free Gaussian discriminant analysis blended with zero-shot.

Each augmented view is L2-normalised and kept as a sample. With class means
``μ_k`` and the covariance ``S`` of the class-centred samples (``N'`` of
them, shared across classes), the precision is the official
empirical-Bayes ridge-type ("KS") estimate
``Σ⁻¹ = D · pinv((N'−1)·S + tr(S)·I)`` (shrinkage towards a scaled
identity, which keeps it defined with fewer samples than dimensions). Then
``W = Σ⁻¹μᵀ``, ``b_k = log(1/K) − ½ μ_k Σ⁻¹ μ_kᵀ`` and
``logits = s·cos(f, W_t) + α·(s/100)·(f̂·W + b)``, α chosen on the selection
split from ``{1e-4, …, 100}`` (official grid). The official code scores α on
the test set for ImageNet; here always on the selection split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..core.config import Config, check_range, option
from .base import FewShotData, FitResult, Head, Method, better, cosine_logits, evaluate_head, register, selection_record
from .tip_adapter import CLIP_SCALE
from .zero_shot import base_meta

ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class GdaConfig(Config):
    """GDA options.

    ``alpha_grid`` is the official code's (``main_few_shots.py``). ``alpha`` (1.0,
    used only with protocol none) has no official counterpart, since the
    official code always searches: origin not recorded; not checked on held-out data.
    """

    alpha: float = option(1.0, "weight of the GDA logits (protocol none)")
    alpha_grid: tuple[float, ...] = option(ALPHAS, "α values searched on validation")

    def validate(self) -> None:
        check_range("alpha", self.alpha, 0.0, 1e6)
        for a in self.alpha_grid:
            check_range("alpha_grid", a, 0.0, 1e6)


class GdaHead(Head):
    """Zero-shot logits plus a linear (shared-covariance Gaussian) classifier."""

    def __init__(self, config: GdaConfig, meta: dict[str, Any]) -> None:
        super().__init__(config, meta)
        c, d = meta["num_classes"], meta["embed_dim"]
        self.logit_scale = float(meta["logit_scale"])
        self.register_buffer("text", torch.zeros(c, d))
        self.register_buffer("weight", torch.zeros(c, d))
        self.register_buffer("bias", torch.zeros(c))

    def gda_logits(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=-1) @ self.weight.t() + self.bias

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        clip = cosine_logits(features, self.text, self.logit_scale)
        return clip + self.config.alpha * (self.logit_scale / CLIP_SCALE) * self.gda_logits(features)


def fit_gaussians(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``[C, D]`` and biases ``[C]`` of the shared-covariance Gaussian classifier (float64 inside)."""
    x = x.double()
    dim = x.shape[1]
    counts = torch.bincount(y, minlength=num_classes).clamp_min(1).double()
    means = torch.zeros(num_classes, dim, dtype=torch.float64).index_add_(0, y, x) / counts[:, None]
    centred = x - means[y]
    n = len(x)
    cov = centred.t() @ centred / max(n - 1, 1)
    precision = dim * torch.linalg.pinv((n - 1) * cov + torch.trace(cov) * torch.eye(dim, dtype=torch.float64))
    weight = means @ precision  # Σ⁻¹ is symmetric: (Σ⁻¹ μᵀ)ᵀ = μ Σ⁻¹
    bias = torch.log(torch.tensor(1.0 / num_classes, dtype=torch.float64)) - 0.5 * (weight * means).sum(dim=1)
    return weight.float(), bias.float()


@register("gda")
class Gda(Method):
    """GDA: training-free Gaussian discriminant analysis on few-shot features.

    Example:
        >>> Gda.make_config().alpha_grid[-1]
        100.0
    """

    Config = GdaConfig
    Head = GdaHead

    def fit(self, data: FewShotData) -> FitResult:
        cfg: GdaConfig = self.config
        n, v, d = data.train.shape
        weight, bias = fit_gaussians(
            F.normalize(data.train.reshape(n * v, d), dim=-1), data.train_labels.repeat_interleave(v), data.num_classes
        )
        head = GdaHead(cfg, base_meta(data))
        head.text.copy_(data.text)
        head.weight.copy_(weight)
        head.bias.copy_(bias)
        alphas = (
            (cfg.alpha,)
            if data.protocol == "none"
            else (cfg.alpha,) + tuple(a for a in cfg.alpha_grid if a != cfg.alpha)
        )
        sel_x, sel_y = data.selection
        best, best_score, history = cfg.alpha, None, []
        for alpha in alphas:
            head.config = cfg.replace(alpha=alpha)
            score = evaluate_head(head, sel_x, sel_y) if len(sel_y) else (0.0, 0.0)
            history.append({"alpha": alpha, "selection_accuracy": score[0], "selection_loss": score[1]})
            if better(score, best_score):
                best, best_score = alpha, score
        head.config = cfg.replace(alpha=best)
        grid = {"alpha": list(alphas)}
        return FitResult(
            head.eval(),
            selection_record(data.protocol, grid, {"alpha": best}),
            best_score[0] if len(sel_y) else None,
            history,
        )
