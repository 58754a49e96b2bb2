"""What a CLIP-Adapter head did: the ratios it uses and how far it moved features from CLIP's.

Measured only through what the head exposes (``config``, ``ratios``, ``visual``,
``textual``, ``text``), the blends of :mod:`clip_adapter.methods.clip_adapter`:
``f' = α·A_v(f) + (1−α)·f`` for test image features and ``W' = β·A_t(W) + (1−β)·W``
for the class embeddings. A cosine of 1 means the adapter left a feature's direction
(all the classifier sees) unchanged; lower means it moved it further.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def _stats(values: torch.Tensor) -> dict[str, float]:
    values = values.float().flatten()
    return {
        "mean": float(values.mean()),
        "min": float(values.min()),
        "p10": float(torch.quantile(values, 0.1)),
        "max": float(values.max()),
        "count": int(values.numel()),
    }


def ratio_values(head: Any, features: torch.Tensor | None) -> dict[str, Any]:
    """α and β as the head applies them: constants, learned scalars, or per-image (network) mean ± std."""
    probe = features if features is not None and len(features) else head.text[:1]  # network ratios need an input
    alpha, beta = head.ratios(probe)
    out: dict[str, Any] = {}
    for name, value in (("alpha", alpha), ("beta", beta)):
        if torch.is_tensor(value) and value.numel() > 1 and features is not None:
            out[name] = float(value.mean())
            out[f"{name}_std"] = float(value.std()) if value.numel() > 1 else 0.0
        else:
            out[name] = float(value)
    return out


@torch.no_grad()
def adapter_effect(head: Any, features: torch.Tensor | None) -> dict[str, Any]:
    """Ratios and cosine statistics of adapted vs original features (image side needs ``features``).

    Example:
        >>> import torch
        >>> from clip_adapter.methods.clip_adapter import ClipAdapterConfig, ClipAdapterHead
        >>> head = ClipAdapterHead(
        ...     ClipAdapterConfig(variant="both", alpha=0.0, beta=0.0),
        ...     {"num_classes": 3, "embed_dim": 8, "logit_scale": 10.0},
        ... )
        >>> _ = head.text.copy_(torch.randn(3, 8))
        >>> effect = adapter_effect(head, torch.randn(5, 8))
        >>> round(effect["image_cosine"]["mean"], 4), round(effect["text_cosine"]["mean"], 4)
        (1.0, 1.0)
    """
    config = head.config
    out: dict[str, Any] = {
        "variant": getattr(config, "variant", "?"),
        "ratio_mode": getattr(config, "ratio", "?"),
        "reduction": getattr(config, "reduction", None),
        **ratio_values(head, features),
    }
    if getattr(head, "visual", None) is not None and features is not None and len(features):
        raw = head.visual(features)
        adapted = head.adapted_image_features(features)
        out["image_cosine"] = _stats(F.cosine_similarity(adapted, features, dim=-1))
        out["image_cosine_values"] = F.cosine_similarity(adapted, features, dim=-1).tolist()
        out["adapter_output_cosine"] = _stats(F.cosine_similarity(raw, features, dim=-1))
    if getattr(head, "textual", None) is not None:
        probe = features if features is not None and len(features) else head.text[:1]
        adapted_text = head.adapted_text_features(head.text, probe)  # a per-image β: its mean, for one summary
        out["text_cosine"] = _stats(F.cosine_similarity(adapted_text, head.text, dim=-1))
        out["text_cosine_per_class"] = F.cosine_similarity(adapted_text, head.text, dim=-1).tolist()
    return out


def is_clip_adapter(head: Any) -> bool:
    """Heads with the CLIP-Adapter interface (the method, or a subclass of its head)."""
    return all(
        hasattr(head, name)
        for name in ("ratios", "visual", "textual", "text", "adapted_image_features", "adapted_text_features")
    )
