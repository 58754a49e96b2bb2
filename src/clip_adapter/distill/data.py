"""Image–caption batches for distillation: the toy scene stream, or a user's caption file.

Batches are raw (uint8 images ``[B, S, S, 3]`` and caption strings), so teacher
and student each apply their own preprocessing and tokenizer. Both sources are
a function of ``(seed, step)``: every run with the same seed sees the same
batches, which is what makes "CLIP loss alone" and each KD loss comparable at
the same number of steps.

A caption file is a JSON list of ``{"image": path, "caption": text}`` with
paths relative to the file; its images are decoded once (centre square crop,
resized to ``size``) and every step draws a batch without replacement within
an epoch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from ..core.errors import DataError
from ..core.files import quoted, read_json
from ..data.images import load_rgb
from ..toyworld.pretrain import render_batch

Batch = tuple[int, np.ndarray, list[str]]  # step, images, captions


class ToyStream(torch.utils.data.IterableDataset):
    """``(step, images, captions)`` of freshly rendered toy scenes (``toyworld.pretrain.render_batch``).

    Example:
        >>> step, images, texts = next(iter(ToyStream(0, 1, 4)))
        >>> step, images.shape, len(texts)
        (0, (4, 64, 64, 3), 4)
    """

    def __init__(self, seed: int, steps: int, batch_size: int) -> None:
        super().__init__()
        self.seed, self.steps, self.batch_size = seed, steps, batch_size

    def __iter__(self) -> Iterator[Batch]:
        for step in range(self.steps):
            yield (step, *render_batch(self.seed, step, self.batch_size))


class CaptionFile:
    """A user's image–caption pairs, decoded once and served in seeded shuffled batches."""

    def __init__(self, path: str | os.PathLike, size: int) -> None:
        path = Path(path)
        entries = read_json(path, "caption file", DataError)
        if not isinstance(entries, list) or len(entries) < 2:
            raise DataError(
                f'caption file {quoted(path)} must be a JSON list of at least 2 {{"image", "caption"}} objects'
            )
        images, self.captions = [], []
        for i, entry in enumerate(entries):
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("image"), str)
                or not isinstance(entry.get("caption"), str)
                or not entry["caption"].strip()
            ):
                raise DataError(
                    f'caption file {quoted(path)}: entry {i} needs a string "image" and a non-empty string "caption"'
                )
            image, _ = load_rgb(path.parent / entry["image"])  # names the file at fault
            images.append(_square(image, size))
            self.captions.append(entry["caption"])
        self.images = np.stack(images)
        self.path = path

    def __len__(self) -> int:
        return len(self.captions)

    def batches(self, seed: int, steps: int, batch_size: int) -> Iterator[Batch]:
        """``steps`` batches; a batch larger than the file is the whole file."""
        batch_size = min(batch_size, len(self))
        rng, order, at = np.random.default_rng(seed), np.zeros(0, dtype=np.int64), 0
        for step in range(steps):
            if at + batch_size > len(order):  # a new epoch: reshuffle
                order, at = rng.permutation(len(self)), 0
            pick = order[at : at + batch_size]
            at += batch_size
            yield step, self.images[pick], [self.captions[i] for i in pick]


def _square(image: Image.Image, size: int) -> np.ndarray:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return np.asarray(square, dtype=np.uint8)


def toy_batches(seed: int, steps: int, batch_size: int, workers: int = 1) -> Iterator[Batch]:
    """The toy stream, rendered ahead in a worker process when ``workers`` is 1 (the same batches either way)."""
    stream = ToyStream(seed, steps, batch_size)
    if workers == 0:
        return iter(stream)
    return iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=1, prefetch_factor=4))
