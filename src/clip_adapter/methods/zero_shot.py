"""Zero-shot CLIP: the class-prompt embeddings are the classifier. Nothing is trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.config import Config
from .base import FewShotData, FitResult, Head, Method, cosine_logits, register, selection_record


@dataclass
class ZeroShotConfig(Config):
    """Zero-shot has no options; prompts come from the run's templates."""


class ZeroShotHead(Head):
    """``logit_scale · cos(f, W) + logit_bias`` with ``W`` the (ensembled) class-prompt embeddings.

    ``logit_bias`` is SigLIP's learned bias (its logits are read through a sigmoid); 0 for CLIP.
    """

    def __init__(self, config: Config, meta: dict[str, Any]) -> None:
        super().__init__(config, meta)
        self.register_buffer("text", torch.zeros(meta["num_classes"], meta["embed_dim"]))
        self.logit_scale = float(meta["logit_scale"])
        self.logit_bias = float(meta.get("logit_bias", 0.0))  # older artifacts have none

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return cosine_logits(features, self.text, self.logit_scale) + self.logit_bias

    def for_classes(
        self, text: torch.Tensor, text_raw: torch.Tensor | None, classnames: list[str], backbone: Any
    ) -> "ZeroShotHead":
        head = ZeroShotHead(self.config, {**self.meta, "num_classes": len(classnames)})
        head.text.copy_(text)
        return head.eval()


def base_meta(data: FewShotData) -> dict[str, Any]:
    """The shape-fixing facts every head records (SigLIP's logit bias only where there is one)."""
    meta = {"num_classes": data.num_classes, "embed_dim": data.embed_dim, "logit_scale": data.logit_scale}
    bias = float(getattr(data.backbone, "logit_bias", 0.0) or 0.0)
    return {**meta, "logit_bias": bias} if bias else meta


@register("zero-shot")
class ZeroShot(Method):
    """Zero-shot CLIP (Radford et al., 2021).

    Example:
        >>> import torch
        >>> data = FewShotData(torch.randn(2, 1, 4), torch.tensor([0, 1]), torch.randn(0, 4),
        ...                    torch.zeros(0, dtype=torch.long), torch.eye(2, 4), 100.0, ["a", "b"])
        >>> ZeroShot().fit(data).head(torch.tensor([[1.0, 0, 0, 0]])).argmax().item()
        0
    """

    Config = ZeroShotConfig
    Head = ZeroShotHead

    def fit(self, data: FewShotData) -> FitResult:
        head = ZeroShotHead(self.config, base_meta(data))
        head.text.copy_(data.text)
        return FitResult(head.eval(), selection_record(data.protocol, {}, {}))
