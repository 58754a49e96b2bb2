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

from typing import Sequence

import numpy as np
import torch

from ..features.rendered import Encoder, encode_arrays, encode_captions, zero_shot_accuracy
from ..toyworld.tasks import get_task, task_images
from .toydata import Item

RENDER_BATCH = 256  # renders per encoder call while validating

__all__ = ["Encoder", "RENDER_BATCH", "pair_accuracy", "task_set", "zero_shot_accuracy"]


@torch.no_grad()
def pair_accuracy(encoder: Encoder, items: Sequence[Item], image_emb: torch.Tensor | None = None) -> float:
    """Share of items whose true caption is more similar to the image than every negative (ties count as wrong).

    ``image_emb`` skips encoding the images when the image tower is frozen.
    """
    if not items:
        return float("nan")
    images = image_emb if image_emb is not None else encode_arrays(encoder, [it.image for it in items], RENDER_BATCH)
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
