"""Multi-label heads on cached features: zero-shot, CLIP-Adapter, Unmix-CLIP.

Every head scores class ``j`` by how much closer an image is to the class's
positive prompt than to its negative one, ``s·(cos(x, t⁺ⱼ) − cos(x, t⁻ⱼ))``
(a logit: ``σ`` of it is the probability that ``j`` is present), and holds
its class text features as buffers, so a saved head needs no text encoder.

Unmix-CLIP follows the paper's equations (Rawlekar et al., 2025, later titled
DCLIP); no official code could be found, so the projector architecture, the
identity initialisation and the aggregation are this module's choices, each
said where it is made.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..methods.clip_adapter import bottleneck
from .config import MultiLabelConfig


def contrast_logits(image: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale·(cos(image, pos) − cos(image, neg))`` over the last dimension; ``[..., N]``."""
    image = F.normalize(image, dim=-1)
    return scale * (image @ F.normalize(pos, dim=-1).T - image @ F.normalize(neg, dim=-1).T)


class TextHead(nn.Module):
    """Holds the unit CLIP text features of the positive and negative prompts."""

    dense = False

    def __init__(self, text_pos: torch.Tensor, text_neg: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.register_buffer("text_pos", F.normalize(text_pos.float(), dim=-1))
        self.register_buffer("text_neg", F.normalize(text_neg.float(), dim=-1))
        self.scale = scale

    def class_text(self) -> torch.Tensor:
        """The class (positive) text features the head scores with, ``[N, d']``."""
        return self.text_pos


class ZeroShotHead(TextHead):
    """CLIP's positive-vs-negative prompt scoring on pooled features; nothing to train.

    Example:
        >>> head = ZeroShotHead(torch.eye(2, 4), torch.ones(2, 4), 10.0)
        >>> head(torch.tensor([[1.0, 0, 0, 0]])).argmax().item()
        0
    """

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return contrast_logits(pooled, self.text_pos, self.text_neg, self.scale)


class AdapterHead(TextHead):
    """CLIP-Adapter's visual adapter (official: bottleneck D→D/4→D with ReLUs, ratio 0.2) with multi-label scoring.

    Example:
        >>> head = AdapterHead(torch.eye(2, 8), torch.ones(2, 8), 10.0, MultiLabelConfig(method="clip-adapter"))
        >>> head(torch.randn(3, 8)).shape
        torch.Size([3, 2])
    """

    def __init__(self, text_pos: torch.Tensor, text_neg: torch.Tensor, scale: float, cfg: MultiLabelConfig) -> None:
        super().__init__(text_pos, text_neg, scale)
        self.adapter = bottleneck(text_pos.shape[1], cfg.adapter_reduction, final_relu=True)
        self.ratio = cfg.adapter_ratio

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = F.normalize(pooled, dim=-1)
        x = self.ratio * self.adapter(x) + (1 - self.ratio) * x
        return contrast_logits(x, self.text_pos, self.text_neg, self.scale)


class Projector(nn.Module):
    """``d → d'`` applied to the last dimension (every location of a grid alike).

    The linear map starts as the identity (truncated or zero-padded when
    ``d' ≠ d``), so training starts from CLIP's own alignment rather than a
    random one; ``mlp`` adds a residual bottleneck MLP whose output layer
    starts at zero.
    """

    def __init__(self, dim: int, out_dim: int, kind: str) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, out_dim, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(out_dim, dim))
        self.mlp = bottleneck(dim, 4, final_relu=False) if kind == "mlp" else None
        if self.mlp is not None:
            nn.init.zeros_(self.mlp[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x + self.mlp(x) if self.mlp is not None else x)


class UnmixHead(TextHead):
    """Unmix-CLIP: projected dense image features scored against projected positive/negative text features.

    An image projector keeps the grid (``H·W×d → H·W×d'``), a text projector
    maps ``d → d'``; at every location the cosine similarity to each class's
    projected positive and negative text feature gives a local logit
    ``s·(S⁺ − S⁻)``; locations are aggregated into one logit per class
    (default: weighted by a softmax over locations of ``s·S⁺``, DualCoOp's
    class-specific region aggregation).

    Example:
        >>> head = UnmixHead(torch.eye(3, 8), torch.ones(3, 8), 10.0, MultiLabelConfig())
        >>> head(torch.randn(2, 16, 8)).shape, head.projected_text()[0].shape
        (torch.Size([2, 3]), torch.Size([3, 8]))
    """

    dense = True

    def __init__(self, text_pos: torch.Tensor, text_neg: torch.Tensor, scale: float, cfg: MultiLabelConfig) -> None:
        super().__init__(text_pos, text_neg, scale)
        dim = text_pos.shape[1]
        out = cfg.proj_dim or dim
        self.image_proj = Projector(dim, out, cfg.projector)
        self.text_proj = Projector(dim, out, cfg.projector)
        self.aggregation = cfg.aggregation

    def projected_text(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected positive and negative text features ``[N, d']`` (not normalised: MFI reads their norms)."""
        return self.text_proj(self.text_pos), self.text_proj(self.text_neg)

    def class_text(self) -> torch.Tensor:
        return self.projected_text()[0]

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.image_proj(F.normalize(dense, dim=-1)), dim=-1)  # [B, HW, d']
        pos, neg = (F.normalize(t, dim=-1) for t in self.projected_text())
        s_pos = z @ pos.T  # [B, HW, N]
        local = self.scale * (s_pos - z @ neg.T)
        if self.aggregation == "mean":
            return local.mean(1)
        if self.aggregation == "max":
            return local.max(1).values
        weights = torch.softmax(self.scale * s_pos, dim=1)
        return (weights * local).sum(1)


def build_head(cfg: MultiLabelConfig, text_pos: torch.Tensor, text_neg: torch.Tensor, scale: float) -> TextHead:
    """The head of ``cfg.method``, its trainable weights seeded with ``cfg.seed``.

    Example:
        >>> build_head(MultiLabelConfig(method="zero-shot"), torch.eye(2), torch.ones(2, 2), 1.0).dense
        False
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.method == "zero-shot":
            return ZeroShotHead(text_pos, text_neg, scale)
        if cfg.method == "clip-adapter":
            return AdapterHead(text_pos, text_neg, scale, cfg)
        return UnmixHead(text_pos, text_neg, scale, cfg)
