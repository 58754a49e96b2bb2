"""In-memory images (toy renders, generated arrays): one way to encode them, and zero-shot accuracy on them.

Every evaluation of rendered images (the compositionality bench, the fine-tuning
guard, the distillation table) goes through :func:`encode_arrays`, which applies
the backbone's real evaluation transform (:func:`~clip_adapter.features.transforms.eval_view`),
so their numbers are comparable on any backbone, 64 px or 224 px. Arrays already
at the model's input side take a batched path that gives the same tensors.

Example:
    >>> import numpy as np
    >>> from PIL import Image
    >>> from clip_adapter.backbones.base import PreprocessConfig
    >>> pre = PreprocessConfig(image_size=8)
    >>> arrays = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    >>> slow = torch.stack([eval_view(Image.fromarray(a), pre) for a in arrays])
    >>> torch.equal(eval_pixels(arrays, pre), slow)
    True
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..backbones.base import PreprocessConfig, normalise_arrays
from .transforms import eval_view


class Encoder(Protocol):
    """What encoding needs of a model: a backbone, or a model being trained with the same two methods."""

    preprocess: Any

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


def eval_pixels(images: np.ndarray | Sequence[np.ndarray], pre: PreprocessConfig) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` arrays → the evaluation transform's ``[B, 3, S, S]`` (``S = pre.image_size``)."""
    if len(images) and all(a.shape[:2] == (pre.image_size, pre.image_size) for a in images):
        return normalise_arrays(np.stack(list(images)), pre)  # nothing to resize or crop: batched, same floats
    return torch.stack([eval_view(Image.fromarray(np.asarray(a), mode="RGB"), pre) for a in images])


@torch.no_grad()
def encode_arrays(encoder: Encoder, images: np.ndarray | Sequence[np.ndarray], batch_size: int = 64) -> torch.Tensor:
    """L2-normalised image embeddings ``[N, D]`` of uint8 ``[H, W, 3]`` arrays, on the CPU.

    Example:
        >>> from clip_adapter.backbones import create_backbone
        >>> bb = create_backbone("toy", pretrained="none", precision="fp32")
        >>> encode_arrays(bb, np.zeros((3, 64, 64, 3), dtype=np.uint8)).shape == (3, bb.embed_dim)
        True
    """
    out = [
        encoder.encode_images(eval_pixels(images[i : i + batch_size], encoder.preprocess)).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    embed_dim = getattr(encoder, "embed_dim", 0)
    return F.normalize(torch.cat(out), dim=-1) if out else torch.empty(0, embed_dim)


@torch.no_grad()
def encode_captions(encoder: Encoder, texts: Sequence[str]) -> torch.Tensor:
    """L2-normalised text embeddings ``[N, D]``, on the CPU."""
    return F.normalize(encoder.encode_texts(list(texts)).float().cpu(), dim=-1)


@torch.no_grad()
def zero_shot_accuracy(
    encoder: Encoder,
    images: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray,
    prompts: Sequence[str],
    image_emb: torch.Tensor | None = None,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy of classifying ``images`` by their most similar prompt (``image_emb``: already encoded).

    Example:
        >>> from clip_adapter.backbones import create_backbone
        >>> bb = create_backbone("toy", precision="fp32")
        >>> from clip_adapter.toyworld.tasks import get_task, task_images
        >>> images, labels = task_images("shape", "photo", 5, seed=1)
        >>> zero_shot_accuracy(bb, images, labels, get_task("shape").prompts()) > 0.5
        True
    """
    emb = image_emb if image_emb is not None else encode_arrays(encoder, images, batch_size)
    predicted = (emb @ encode_captions(encoder, prompts).T).argmax(1).numpy()
    return float((predicted == np.asarray(labels)).mean())
