"""Backbones: one interface, one module per provider, one factory.

``create_backbone("toy")`` gives the built-in tiny CLIP, ``hf:<folder or repo
id>`` a Hugging Face CLIP/SigLIP model (needs ``transformers``); any other name
is an open_clip architecture. Named backbones such as ``toy`` come from
:data:`BACKBONES`, where their providers register themselves.
"""

from __future__ import annotations

from typing import Callable

from ..core.config import SEED_MAX, check_seed
from ..core.registry import Registry
from .base import Backbone, PreprocessConfig
from .precision import cpu_has_fast_bf16, resolve_device, resolve_precision

# Named backbones: name → factory(pretrained=, precision=, device=, seed=). A provider registers its names
# when imported; the one listed here is imported on its names' first lookup, so neither this package nor
# a caller has to import it (the toy world sits beside the backbones, and builds on their interface).
_TOY_PROVIDER = "clip_adapter.toyworld.backbone"
BACKBONES: Registry[Callable[..., Backbone]] = Registry(
    "backbone", providers={"toy": _TOY_PROVIDER, "toy-cnn": _TOY_PROVIDER}
)


def create_backbone(
    name: str = "toy",
    pretrained: str | None = None,
    precision: str = "auto",
    device: str = "auto",
    seed: int = 0,
) -> Backbone:
    """Build a frozen backbone.

    Args:
        name: ``toy`` (the built-in tiny CLIP), ``hf:<folder or repo id>`` (a
            Hugging Face CLIP or SigLIP model) or an open_clip architecture name.
        pretrained: open_clip tag, checkpoint path, or ``none`` for seeded random
            weights; ``None`` means the shipped checkpoint for ``toy`` and
            ``none`` otherwise. ``hf:`` models take their weights from the folder.
        precision: ``auto`` (bf16 where the hardware is fast at it), ``bf16`` or ``fp32``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` …
        seed: seed for random initialisation (``--init-seed``), in ``0..2**32-1``.

    Example:
        >>> bb = create_backbone("toy", precision="fp32")
        >>> bb.provider, bb.embed_dim > 0
        ('toy', True)
    """
    seed = check_seed("--init-seed", seed)
    resolve_device(device)  # a missing GPU or a typo is reported before any weights are read
    if name in BACKBONES:
        return BACKBONES.get(name)(pretrained=pretrained, precision=precision, device=device, seed=seed)
    if name.startswith("hf:"):
        from .hf import HFClipBackbone

        return HFClipBackbone(name, pretrained=pretrained, precision=precision, device=device)
    from .openclip import OpenClipBackbone

    return OpenClipBackbone(name, pretrained=pretrained or "none", precision=precision, device=device, seed=seed)


__all__ = [
    "BACKBONES",
    "SEED_MAX",
    "Backbone",
    "PreprocessConfig",
    "check_seed",
    "cpu_has_fast_bf16",
    "create_backbone",
    "resolve_device",
    "resolve_precision",
]
