"""An adapted feature space: how a trained head maps normalised image and text features.

Retrieval searches in it and the modality-gap analysis measures it; the maps
themselves are the head's own (a CLIP-Adapter head's ``adapted_image_features``
and ``adapted_text_features``), so the blend is written once, in its method.

Example:
    >>> import torch
    >>> space = identity_space({"method": "zero-shot"})
    >>> space.image(torch.tensor([[3.0, 4.0]]))
    tensor([[0.6000, 0.8000]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F


@dataclass
class Adaptation:
    """Maps features into an adapted space (``image`` and ``text``: ``[N, D] → [N, D]``, normalised)."""

    image: Callable[[torch.Tensor], torch.Tensor]
    text: Callable[[torch.Tensor], torch.Tensor]
    fingerprint: dict[str, Any]


def normalised(features: torch.Tensor) -> torch.Tensor:
    """Unit rows in float32."""
    return F.normalize(features.float(), dim=-1)


def identity_space(fingerprint: dict[str, Any]) -> Adaptation:
    """CLIP's own space (a zero-shot model adapts nothing)."""
    return Adaptation(normalised, normalised, fingerprint)


def adapts_features(head: Any) -> bool:
    """Whether ``head`` exposes adapted features (CLIP-Adapter's interface)."""
    return callable(getattr(head, "adapted_image_features", None)) and callable(
        getattr(head, "adapted_text_features", None)
    )


def head_space(head: Any, fingerprint: dict[str, Any]) -> Adaptation:
    """The space of a head with adapted features; queries' network ratios are evaluated on the query itself."""
    head.eval()

    @torch.no_grad()
    def image(features: torch.Tensor) -> torch.Tensor:
        return normalised(head.adapted_image_features(features))

    @torch.no_grad()
    def text(features: torch.Tensor) -> torch.Tensor:
        return normalised(head.adapted_text_features(features))

    return Adaptation(image, text, fingerprint)
