"""Encoding helpers shared by the compositionality measures: in-memory images, texts, cosines, tie-aware wins."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..backbones.base import Backbone
from ..features.transforms import eval_view

TIE = 1e-6  # cosines this close are a tie: a model that cannot tell two captions apart gets half the credit


def encode_arrays(backbone: Backbone, images: np.ndarray | Sequence[np.ndarray], batch_size: int = 64) -> torch.Tensor:
    """L2-normalised image embeddings ``[N, D]`` of uint8 ``[H, W, 3]`` arrays, with the backbone's eval preprocessing.

    Example:
        >>> from clip_adapter.backbones import create_backbone
        >>> bb = create_backbone("toy", pretrained="none", precision="fp32")
        >>> encode_arrays(bb, np.zeros((3, 64, 64, 3), dtype=np.uint8)).shape == (3, bb.embed_dim)
        True
    """
    out = []
    for start in range(0, len(images), batch_size):
        pixels = torch.stack([eval_view(Image.fromarray(a, mode="RGB"), backbone.preprocess) for a in images[start : start + batch_size]])
        out.append(backbone.encode_images(pixels).float().cpu())
    return F.normalize(torch.cat(out), dim=-1) if out else torch.empty(0, backbone.embed_dim)


def encode_captions(backbone: Backbone, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings ``[N, D]``."""
    return F.normalize(backbone.encode_texts(list(texts), batch_size), dim=-1)


def win(better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """Credit of ``better`` over ``worse`` elementwise: 1 if higher, 0.5 if tied (within :data:`TIE`), 0 if lower.

    Example:
        >>> win(torch.tensor([0.5, 0.2, 0.3]), torch.tensor([0.1, 0.2, 0.4])).tolist()
        [1.0, 0.5, 0.0]
    """
    diff = better - worse
    return torch.where(diff.abs() <= TIE, torch.full_like(diff, 0.5), (diff > 0).float())


def rowwise_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``cos(a_i, b_i)`` for normalised rows, summed per row (never a matmul: equal rows give bit-equal cosines)."""
    return (a * b).sum(-1)
