"""Scores a fine-tuning run selects on: caption-pair accuracy and zero-shot accuracy.

Both take an ``encoder`` with ``encode_images(pixels)`` and
``encode_texts(texts)`` (a :class:`~clip_adapter.backbones.Backbone`, a
:class:`~.trainable.TrainableClip`, or LABCLIP's transformed view) and work
under ``torch.no_grad``.

Example:
    >>> from clip_adapter.backbones import create_backbone
    >>> from clip_adapter.finetune.toydata import make_items
    >>> bb = create_backbone("toy", precision="fp32")
    >>> 0.0 <= pair_accuracy(bb, make_items("attribution-color", 0, 4, role=1)) <= 1.0
    True
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..toyworld.tasks import get_task, task_images
from .toydata import Item, pixels


class Encoder(Protocol):
    preprocess: Any

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


@torch.no_grad()
def encode_rendered(encoder: Encoder, images: np.ndarray | Sequence[np.ndarray], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised image embeddings of uint8 renders, on the CPU (where every measure and the k-NN run)."""
    out = [encoder.encode_images(pixels(images[i : i + batch_size], encoder.preprocess)).float().cpu()
           for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def encode_captions(encoder: Encoder, texts: Sequence[str]) -> torch.Tensor:
    """L2-normalised text embeddings, on the CPU."""
    return F.normalize(encoder.encode_texts(list(texts)).float().cpu(), dim=-1)


@torch.no_grad()
def pair_accuracy(encoder: Encoder, items: Sequence[Item], image_emb: torch.Tensor | None = None) -> float:
    """Share of items whose true caption is more similar to the image than every negative (ties count as wrong).

    ``image_emb`` skips encoding the images when the image tower is frozen.
    """
    if not items:
        return float("nan")
    images = image_emb if image_emb is not None else encode_rendered(encoder, [it.image for it in items])
    texts = [it.caption for it in items] + [neg for it in items for neg in it.negatives]
    emb = encode_captions(encoder, texts)
    true = (images * emb[: len(items)]).sum(-1)
    correct, start = 0, len(items)
    for i, item in enumerate(items):
        negs = emb[start : start + len(item.negatives)]
        start += len(item.negatives)
        correct += bool(len(item.negatives) == 0 or true[i] > (negs @ images[i]).max())
    return correct / len(items)


def task_set(task: str, n_per_class: int, seed: int, split: str = "test") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels and class prompts of a toy zero-shot task (photo rendering)."""
    images, labels = task_images(task, "photo", n_per_class, seed=seed, split=split)
    return images, labels, get_task(task).prompts()


@torch.no_grad()
def zero_shot_accuracy(encoder: Encoder, images: np.ndarray, labels: np.ndarray, prompts: Sequence[str],
                       image_emb: torch.Tensor | None = None) -> float:
    """Top-1 accuracy of classifying ``images`` by their most similar prompt."""
    emb = image_emb if image_emb is not None else encode_rendered(encoder, images)
    predicted = (emb @ encode_captions(encoder, prompts).T).argmax(1).numpy()
    return float((predicted == labels).mean())
