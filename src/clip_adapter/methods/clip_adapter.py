"""CLIP-Adapter (Gao et al., IJCV 2024): residual bottleneck adapters on frozen CLIP features.

Visual: ``f' = α·A_v(f) + (1−α)·f``; text: ``W' = β·A_t(W) + (1−β)·W``;
``both`` uses the two. ``A = Linear(D, D/r, bias=False) → ReLU →
Linear(D/r, D, bias=False) [→ ReLU]``. Logits are ``logit_scale · cos(f', W')``
and the loss is cross-entropy; only the adapters (and a learned ratio) train.

Code vs paper: the official code ends ``A`` with a ReLU and the paper's
formula does not; ``final_relu=True`` (default) follows the code. The
official code feeds the adapter raw, unnormalised features, as we do.
Because ``A`` has no bias it is positively homogeneous, so the blend and the
cosine are invariant to each feature's scale: normalising first would not
change the function, only the optimiser's effective step size.

Ratios: ``fixed`` (α/β constants, searched on validation by default),
``learned`` (one scalar each, ``sigmoid`` of a trained logit) or ``network``
(the paper's ``α, β = Q(f, W)``: a small MLP on the normalised image feature
and the mean normalised class embedding, giving a per-image α and β in
(0, 1)). The paper gives no architecture for Q; this is our reading.
With ``both`` and fixed ratios, α = β during the validation search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_choice, check_range, option
from .base import FewShotData, FitResult, Head, Method, cosine_logits, register
from .train import TrainConfig, axis, grid_search, train_head
from .zero_shot import base_meta

VARIANTS = ("visual", "text", "both")
RATIO_MODES = ("fixed", "learned", "network")


@dataclass
class ClipAdapterConfig(TrainConfig):
    """CLIP-Adapter options; training fields come from TrainConfig."""

    variant: str = option("visual", "visual, text or both")
    reduction: int = option(4, "bottleneck reduction r: hidden width D/r")
    final_relu: bool = option(True, "ReLU after the second layer (official code); off = paper formula")
    ratio: str = option("fixed", "residual ratio: fixed, learned (scalar) or network (Q(f, W))")
    alpha: float = option(0.2, "visual residual ratio α (initial value when learned)")
    beta: float = option(0.2, "text residual ratio β (initial value when learned)")
    alpha_grid: tuple[float, ...] = option((0.1, 0.2, 0.4, 0.6, 0.8), "α (and β) values searched on validation when fixed")
    # Fast recipe: AdamW on cached features, chosen on the toy world's validation splits.
    lr: float = option(1e-3, "peak learning rate")
    epochs: int = option(60, "passes over the training images")
    batch_size: int = option(32, "images per step")
    weight_decay: float = option(1e-4, "weight decay")

    def validate(self) -> None:
        super().validate()
        check_choice("variant", self.variant, VARIANTS)
        check_choice("ratio", self.ratio, RATIO_MODES)
        check_range("reduction", self.reduction, 1, 4096)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("beta", self.beta, 0.0, 1.0)
        for value in self.alpha_grid:
            check_range("alpha_grid", value, 0.0, 1.0)


def bottleneck(dim: int, reduction: int, final_relu: bool) -> nn.Sequential:
    """The adapter MLP ``A``: D → D/r → D, bias-free, ReLU between (and optionally after)."""
    hidden = max(1, dim // reduction)
    layers: list[nn.Module] = [nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False)]
    return nn.Sequential(*layers, nn.ReLU()) if final_relu else nn.Sequential(*layers)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


class RatioNet(nn.Module):
    """``α, β = Q(f, W)``: per-image ratios from the image and the task's class embeddings."""

    def __init__(self, dim: int, reduction: int, alpha: float, beta: float) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        with torch.no_grad():  # start at the configured ratios, as a fixed-ratio adapter would
            self.net[2].weight.mul_(0.01)
            self.net[2].bias.copy_(torch.tensor([_logit(alpha), _logit(beta)]))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        task = F.normalize(text, dim=-1).mean(dim=0, keepdim=True).expand(image.shape[0], -1)
        ratios = torch.sigmoid(self.net(torch.cat([F.normalize(image, dim=-1), task], dim=-1)))
        return ratios[:, :1], ratios[:, 1:]


class ClipAdapterHead(Head):
    """Adapters on the visual and/or text side of a frozen CLIP classifier."""

    def __init__(self, config: ClipAdapterConfig, meta: dict[str, Any]) -> None:
        super().__init__(config, meta)
        dim = meta["embed_dim"]
        self.logit_scale = float(meta["logit_scale"])
        self.register_buffer("text", torch.zeros(meta["num_classes"], dim))
        self.visual = bottleneck(dim, config.reduction, config.final_relu) if config.variant != "text" else None
        self.textual = bottleneck(dim, config.reduction, config.final_relu) if config.variant != "visual" else None
        if config.ratio == "learned":
            self.alpha_logit = nn.Parameter(torch.tensor(_logit(config.alpha)))
            self.beta_logit = nn.Parameter(torch.tensor(_logit(config.beta)))
        self.ratio_net = RatioNet(dim, config.reduction, config.alpha, config.beta) if config.ratio == "network" else None

    def ratios(self, features: torch.Tensor) -> tuple[Any, Any]:
        cfg = self.config
        if cfg.ratio == "learned":
            return torch.sigmoid(self.alpha_logit), torch.sigmoid(self.beta_logit)
        if cfg.ratio == "network":
            return self.ratio_net(features, self.text)
        return cfg.alpha, cfg.beta

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        alpha, beta = self.ratios(features)
        image = features
        if self.visual is not None:
            image = alpha * self.visual(features) + (1 - alpha) * features
        if self.textual is None:
            return cosine_logits(image, self.text, self.logit_scale)
        adapted = self.textual(self.text)
        if not torch.is_tensor(beta) or beta.dim() < 2:  # one β for the whole task
            return cosine_logits(image, beta * adapted + (1 - beta) * self.text, self.logit_scale)
        return _per_image_text_logits(image, self.text, adapted - self.text, beta, self.logit_scale)

    def describe_ratios(self) -> dict[str, float]:
        if self.config.ratio == "learned":
            return {"alpha": float(torch.sigmoid(self.alpha_logit.detach())), "beta": float(torch.sigmoid(self.beta_logit.detach()))}
        return {}


def _per_image_text_logits(image, text, delta, beta, scale) -> torch.Tensor:
    """cos(f_i, W + β_i·Δ) for a per-image β without materialising [B, C, D]."""
    f = F.normalize(image, dim=-1)
    numerator = f @ text.t() + beta * (f @ delta.t())
    norm_sq = (text * text).sum(-1) + 2 * beta * (text * delta).sum(-1) + beta**2 * (delta * delta).sum(-1)
    return scale * numerator / norm_sq.clamp_min(1e-12).sqrt()


@register("clip-adapter")
class ClipAdapter(Method):
    """CLIP-Adapter, every variant of the paper.

    Example:
        >>> cfg = ClipAdapter.make_config(variant="both", epochs=2)
        >>> cfg.variant, cfg.reduction
        ('both', 4)
    """

    Config = ClipAdapterConfig
    Head = ClipAdapterHead
    presets = {
        "fast": {},
        # The official recipe (CoOp/Dassl settings the official code runs under).
        "official": {"optimizer": "sgd", "lr": 2e-3, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 32, "epochs": 200},
    }

    def fit(self, data: FewShotData) -> FitResult:
        cfg: ClipAdapterConfig = self.config
        grid: dict[str, tuple] = {"lr": axis(cfg.lr, cfg.lr_grid)}
        if cfg.ratio == "fixed":
            grid["alpha"] = axis(cfg.alpha if cfg.variant != "text" else cfg.beta, cfg.alpha_grid)

        def fit_one(point: dict[str, Any]) -> tuple[Head, dict[str, Any]]:
            ratio = point.get("alpha", cfg.alpha if cfg.variant != "text" else cfg.beta)
            run_cfg = cfg.replace(lr=point["lr"], alpha=ratio, beta=ratio) if cfg.ratio == "fixed" else cfg.replace(lr=point["lr"])
            torch.manual_seed(data.seed)
            head = ClipAdapterHead(run_cfg, base_meta(data))
            head.text.copy_(data.text)
            info = train_head(head, data, run_cfg, data.seed)
            return head, {**info, **head.describe_ratios()}

        return grid_search(data, grid, fit_one)
