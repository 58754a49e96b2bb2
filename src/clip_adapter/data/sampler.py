"""The CoOp few-shot protocol: K train and min(K, 4) validation images per class, by seed.

Sampling reproduces Dassl's ``generate_fewshot_dataset`` exactly, so seeds 1–3 on
CoOp's ``split_zhou_*.json`` files give CoOp's own shots: Python's ``random`` seeded
with the seed; classes taken in order of first appearance in the split's list, each
class's images in list order; ``random.sample(items, K)`` per class for train, then,
continuing the same generator, ``min(K, 4)`` per class for validation; a class with
fewer images keeps all of them (no random draw). Where a dataset has no validation
split (ImageNet in CoOp's layout), CoOp validates on the test set; here validation
shots come from training images not sampled for training, so test data never
selects anything.

The sampled split is plain data and is written as JSON (CoOp's split format
plus a ``meta`` block), so a run can be reproduced and shared.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from .dataset import Dataset, Sample

MAX_VAL_SHOTS = 4  # CoOp: num_shots_val = min(num_shots, 4)


@dataclass
class FewShotSplit:
    """A sampled few-shot task; ``short_classes`` names classes that had fewer than K images."""

    dataset: Dataset
    shots: int
    seed: int
    short_classes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def train(self) -> list[Sample]:
        return self.dataset.split("train")

    @property
    def val(self) -> list[Sample]:
        return self.dataset.split("val")

    @property
    def test(self) -> list[Sample]:
        return self.dataset.split("test")

    def meta(self) -> dict[str, Any]:
        meta = {
            "shots": self.shots,
            "seed": self.seed,
            "val_shots": val_shots(self.shots),
            "short_classes": self.short_classes,
        }
        return {**meta, **({"templates": list(self.dataset.templates)} if self.dataset.templates else {})}

    def to_json(self) -> dict[str, Any]:
        """The sampled split as CoOp JSON, with how it was sampled under ``"meta"``."""
        return {**self.dataset.to_coop(), "meta": self.meta()}


def val_shots(shots: int) -> int:
    return min(shots, MAX_VAL_SHOTS)


def sample_few_shot(dataset: Dataset, shots: int, seed: int) -> FewShotSplit:
    """Sample K train and min(K, 4) val images per class; the test split is kept whole.

    A class with fewer than K images uses all it has, and the split records it
    in ``short_classes`` (the caller warns). Without a val split, validation
    shots come from training images not sampled for training. ``shots=0`` keeps nothing for
    training (zero-shot).

    Example:
        >>> from pathlib import Path
        >>> items = [Sample(Path(f"/d/{c}{i}.jpg"), c) for c in range(2) for i in range(6)]
        >>> ds = Dataset("d", ["a", "b"], Path("/d"), {"train": items, "val": items, "test": items})
        >>> split = sample_few_shot(ds, shots=2, seed=1)
        >>> len(split.train), len(split.val), len(split.test)
        (4, 4, 12)
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
        raise ConfigError(f"shots must be a non-negative integer, got {shots!r}")
    rng = random.Random(seed)
    short: dict[str, dict[str, int]] = {}
    train = _sample_per_class(dataset, dataset.split("train"), "train", shots, rng, short)
    # A dataset without a validation split (ImageNet in CoOp's layout) gives
    # validation shots from the training images not sampled for training.
    chosen = set(train)
    val_pool = dataset.split("val") or [s for s in dataset.split("train") if s not in chosen]
    val = _sample_per_class(dataset, val_pool, "val", val_shots(shots), rng, short)
    splits = {"train": train, "val": val, "test": dataset.split("test")}
    sampled = Dataset(dataset.name, dataset.classnames, dataset.root, splits, dataset.templates)
    return FewShotSplit(sampled, shots, seed, short)


def _sample_per_class(
    dataset: Dataset, pool: list[Sample], split: str, k: int, rng: random.Random, short: dict
) -> list[Sample]:
    # Dassl's split_dataset_by_label: labels in order of first appearance, items in list order.
    # (The readers list an ImageFolder in sorted order, so its listing order never matters.)
    by_label: dict[int, list[Sample]] = {}
    for sample in pool:
        by_label.setdefault(sample.label, []).append(sample)
    for label in range(dataset.num_classes):
        by_label.setdefault(label, [])  # a class absent from the pool: recorded as short below
    chosen: list[Sample] = []
    for label, items in by_label.items():
        if len(items) < k:
            short.setdefault(dataset.classnames[label], {})[split] = len(items)
            chosen += items
        else:
            chosen += rng.sample(items, k)
    return chosen
