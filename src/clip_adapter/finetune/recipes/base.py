"""What every remedy shares: its config fields, its training data, its validation, its registry.

A recipe turns a backbone into a fine-tuned backbone. Its data is the toy
world (items drawn from training seeds, validation items from ``val_seed``,
both below 1000) or a user's captions file (a seeded ``val_fraction`` of it
held out). Validation scores the recipe's own pair accuracy on held-out items
and, on the toy world, guards what the remedy costs: a validated step whose
zero-shot accuracy on the toy ``shape`` or ``color`` task (validation images)
fell more than ``max_zero_shot_drop`` points below the starting weights' can
never be the saved one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ...backbones.base import Backbone
from ...core.config import check_choice, check_range, option
from ...core.registry import Registry
from ...features.rendered import encode_arrays
from ..evaluate import RENDER_BATCH, Encoder, pair_accuracy, task_set, zero_shot_accuracy
from ..toydata import ROLE_VAL, Item, check_train_seed, make_items, plain_items
from ..trainer import TrainerConfig, TrainResult

RECIPES: Registry = Registry("recipe")
ZERO_SHOT_TASKS = ("shape", "color")


@dataclass
class RecipeConfig(TrainerConfig):
    """Fields every recipe has (each recipe sets its own defaults).

    The origin of these base values (the validation sizes, the 1-point zero-shot
    guard, the pool sizes) is not recorded; they were not checked on held-out data.
    """

    unfreeze: str = option("all", "what trains: all, text, image, last-N, text-last-N, image-last-N")
    precision: str = option("auto", "autocast precision while training: auto (bf16 where fast), bf16 or fp32")
    batch_size: int = option(32, "hard-negative items per step")
    plain_batch: int = option(64, "ordinary image-caption pairs mixed into each step (keeps zero-shot skills)")
    train_items: int = option(3000, "toy training items (scenes with hard-negative captions)")
    plain_items: int = option(3000, "toy ordinary pretraining pairs in the mixing pool")
    val_seed: int = option(999, "seed of the toy validation items (below 1000, unlike the benchmarks')")
    val_items: int = option(300, "toy validation items per scored kind")
    val_fraction: float = option(0.1, "share of a captions file held out for validation")
    max_zero_shot_drop: float = option(1.0, "toy: largest zero-shot drop (points) a saved step may have")
    zero_shot_per_class: int = option(20, "toy validation images per class for the zero-shot guard")

    def validate(self) -> None:
        super().validate()
        check_choice("precision", self.precision, ("auto", "bf16", "fp32"))
        check_range("batch_size", self.batch_size, 2)
        check_range("plain_batch", self.plain_batch, 0)
        check_range("train_items", self.train_items, 4)
        check_range("plain_items", self.plain_items, 0)
        check_range("val_items", self.val_items, 1)
        check_range("val_fraction", self.val_fraction, 0.01, 0.5)
        check_range("max_zero_shot_drop", self.max_zero_shot_drop, 0.0, 100.0)
        check_range("zero_shot_per_class", self.zero_shot_per_class, 1)
        check_train_seed(self.val_seed, "val_seed")
        check_train_seed(self.seed, "seed")
        if self.seed == self.val_seed:
            raise ValueError("seed and val_seed must differ (validation items must be held out)")
        if self.plain_batch > self.plain_items:
            raise ValueError("plain_batch must not exceed plain_items")


@dataclass
class TrainingData:
    """Training items, ordinary pairs to mix in, and validation items by kind (with the zero-shot guard's tasks)."""

    items: list[Item]
    plain: list[Item]
    val: dict[str, list[Item]]
    zero_shot: list[tuple[str, np.ndarray, np.ndarray, list[str]]]
    source: str


def toy_data(cfg: RecipeConfig, train_kinds: Sequence[str], val_kinds: Sequence[str]) -> TrainingData:
    """Toy-world items: ``train_items`` split over ``train_kinds``, validation at ``val_seed``."""
    per_kind = cfg.train_items // len(train_kinds)
    items = [it for kind in train_kinds for it in make_items(kind, cfg.seed, per_kind)]
    val = {kind: make_items(kind, cfg.val_seed, cfg.val_items, role=ROLE_VAL) for kind in val_kinds}
    zero_shot = [
        (task, *task_set(task, cfg.zero_shot_per_class, cfg.val_seed, split="val")) for task in ZERO_SHOT_TASKS
    ]
    return TrainingData(items, plain_items(cfg.seed, cfg.plain_items), val, zero_shot, "toy-world")


def file_data(items: list[Item], cfg: RecipeConfig, kind: str, source: str) -> TrainingData:
    """A captions file's items: a seeded ``val_fraction`` held out; no ordinary pairs, no zero-shot guard."""
    if len(items) < 4:
        from ...core.errors import DataError

        raise DataError(
            f"{source}: {len(items)} entries; fine-tuning needs at least 4 (some are held out for validation)"
        )
    order = np.random.default_rng([cfg.seed, 29]).permutation(len(items))
    n_val = max(1, int(round(cfg.val_fraction * len(items))))
    val, train = [items[i] for i in order[:n_val]], [items[i] for i in order[n_val:]]
    return TrainingData(train, [], {kind: val}, [], source)


class Validator:
    """``__call__`` scores the current weights: pair accuracy per kind, zero-shot accuracy, and the guarded ``score``.

    ``frozen_images``: the image tower does not train, so image embeddings are encoded once.
    """

    def __init__(self, encoder: Encoder, data: TrainingData, max_drop_points: float, frozen_images: bool) -> None:
        self.encoder, self.data, self.max_drop = encoder, data, max_drop_points / 100
        self.frozen, self.cache, self.base = frozen_images, {}, None

    def _images(self, key: str, images: Callable[[], Any]) -> torch.Tensor | None:
        if not self.frozen:
            return None
        if key not in self.cache:
            self.cache[key] = encode_arrays(self.encoder, images(), RENDER_BATCH)
        return self.cache[key]

    def __call__(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, items in self.data.val.items():
            out[kind] = pair_accuracy(
                self.encoder, items, self._images(kind, lambda items=items: [it.image for it in items])
            )
        for task, images, labels, prompts in self.data.zero_shot:
            out[f"zero_shot_{task}"] = zero_shot_accuracy(
                self.encoder, images, labels, prompts, self._images(task, lambda images=images: images)
            )
        zs = {k: v for k, v in out.items() if k.startswith("zero_shot_")}
        self.base = self.base or zs
        within = all(self.base[k] - v <= self.max_drop + 1e-9 for k, v in zs.items())
        out["score"] = float(np.mean([out[k] for k in self.data.val])) if within else -1.0
        return out


class Recipe:
    """A remedy: ``config_cls`` and ``train(backbone, cfg, items, log_path)`` → (result, info for the checkpoint
    JSON)."""

    name: str = ""
    config_cls: type[RecipeConfig] = RecipeConfig
    summary: str = ""

    def train(
        self, backbone: Backbone, cfg: Any, items: list[Item] | None, source: str, log_path: Path | None
    ) -> tuple[TrainResult, dict]:
        raise NotImplementedError

    def file_items(self, entries: list, preprocess: Any, cfg: Any) -> list[Item]:
        from ..captions_data import entries_to_items

        return entries_to_items(entries, preprocess, cfg.seed)
