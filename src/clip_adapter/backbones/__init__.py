"""Backbones: one interface, one module per provider, one factory.

``create_backbone("toy")`` gives the built-in tiny CLIP; any other name is an
open_clip architecture.
"""

from __future__ import annotations

from .base import Backbone, PreprocessConfig
from .precision import cpu_has_fast_bf16, resolve_device, resolve_precision

TOY_NAMES = ("toy", "toy-cnn")  # "toy-cnn" is the architecture name artifacts record


def create_backbone(
    name: str = "toy",
    pretrained: str | None = None,
    precision: str = "auto",
    device: str = "auto",
    seed: int = 0,
) -> Backbone:
    """Build a frozen backbone.

    Args:
        name: ``toy`` (the built-in tiny CLIP) or an open_clip architecture name.
        pretrained: open_clip tag, checkpoint path, or ``none`` for seeded random
            weights; ``None`` means the shipped checkpoint for ``toy`` and
            ``none`` otherwise.
        precision: ``auto`` (bf16 where the hardware is fast at it), ``bf16`` or ``fp32``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` …
        seed: seed for random initialisation.

    Example:
        >>> bb = create_backbone("toy", precision="fp32")
        >>> bb.provider, bb.embed_dim > 0
        ('toy', True)
    """
    if name in TOY_NAMES:
        from ..toyworld.backbone import ToyClipBackbone

        return ToyClipBackbone(pretrained=pretrained or "shipped", precision=precision, device=device, seed=seed)
    from .openclip import OpenClipBackbone

    return OpenClipBackbone(name, pretrained=pretrained or "none", precision=precision, device=device, seed=seed)


__all__ = ["Backbone", "PreprocessConfig", "cpu_has_fast_bf16", "create_backbone", "resolve_device", "resolve_precision"]
