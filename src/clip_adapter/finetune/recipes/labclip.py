"""LABCLIP (Koishigarina et al., 2025, "CLIP Behaves like a Bag-of-Words Model Cross-modally but not Uni-modally").

A linear map ``A`` (initialised to the identity) applied to text embeddings,
trained with the encoders frozen on *cached* embeddings: image→text InfoNCE
whose columns hold each batch item's true caption and its binding-permuted
hard negatives (the attribute swapped between the objects, the objects swapped
around a relation), text→image over the true captions; ``A(t)`` replaces
``t`` at inference. The paper's reading: each modality's embedding already
holds the attribute–object binding (a linear probe finds it), only the
cross-modal cosine fails to use it, so a linear map can.

``A`` is linear and so is the text projection, so ``A`` is *folded* into it
(toy: ``text_projection.weight ← A·W``; open_clip: ``text_projection ← P·Aᵀ``,
or the Linear's weight and bias): the result is an ordinary backbone
checkpoint, and ``A(t)`` is exactly what the folded model's text encoder returns.

The official code was not found in the reference index; this follows the
paper's description. Departures: ordinary pretraining pairs (``plain_batch``)
are mixed in and the saved step is guarded by zero-shot validation accuracy,
as for the other remedies; ``A`` is not weight-decayed (decay would pull it to
zero, not to the identity).

Example:
    >>> t = torch.randn(3, 8)
    >>> A = torch.nn.Linear(8, 8, bias=False)
    >>> proj = torch.nn.Linear(4, 8, bias=False)
    >>> x = torch.randn(3, 4)
    >>> before = A(proj(x))
    >>> fold_into_projection(proj, A.weight)
    >>> torch.allclose(proj(x), before, atol=1e-6)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import Default, defaults
from ...features.rendered import encode_arrays
from ..evaluate import RENDER_BATCH
from ..losses import caption_keys, hard_negative_infonce
from ..toydata import Item
from ..trainer import TrainResult, train
from .base import RECIPES, Recipe, RecipeConfig, Validator, file_data, toy_data

TRAIN_KINDS = ("attribution", "relation")
VAL_KINDS = ("attribution-color", "relation")


@dataclass
@defaults(
    unfreeze=Default("none", "fixed: the encoders stay frozen; only A trains"),
    steps=Default(600, "optimisation steps (on cached embeddings: fast)"),
    lr=Default(1e-3, "peak learning rate of A"),
    warmup_steps=Default(50, "linear warm-up steps"),
    weight_decay=Default(0.0, "decay of A (towards zero, so off)"),
    val_every=Default(100, "steps between validations"),
    batch_size=256,
    plain_batch=Default(256, "ordinary pairs mixed into each step"),
    train_items=Default(2000, "toy training items"),
    plain_items=Default(2000, "toy ordinary pairs"),
)
class LabClipConfig(RecipeConfig):
    """LABCLIP's settings (defaults tuned on the toy world's validation items).

    Which values were tried is not recorded; they were scored on the seed-1000 items of
    ``benchmarks/finetune_toy.py`` (same generator, never drawn by training or validation),
    not on held-out data.
    """

    def validate(self) -> None:
        super().validate()
        if self.unfreeze != "none":
            raise ValueError("labclip keeps the encoders frozen (unfreeze must be none)")


class LabView:
    """The backbone with ``A`` applied to its text embeddings (what validation scores)."""

    def __init__(self, backbone, transform: nn.Linear) -> None:
        self.backbone, self.transform, self.cache = backbone, transform, {}
        self.preprocess = backbone.preprocess

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_images(pixels)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.backbone.encode_texts(missing)))
        return self.transform(torch.stack([self.cache[t] for t in texts]))


def fold_into_projection(projection: nn.Module | nn.Parameter, weight: torch.Tensor) -> None:
    """Make the text projection return ``A(t)`` (``weight`` is ``A``'s ``[D, D]`` matrix) instead of ``t``."""
    with torch.no_grad():
        target = projection.weight if isinstance(projection, nn.Linear) else projection
        a = weight.detach().to(device=target.device, dtype=target.dtype)  # A was trained on the CPU
        if isinstance(projection, nn.Linear):
            projection.weight.copy_(a @ projection.weight)
            if projection.bias is not None:
                projection.bias.copy_(a @ projection.bias)
        else:  # open_clip's [width, D] parameter, used as x @ P
            projection.copy_(projection @ a.T)


@RECIPES.register("labclip")
class LabClip(Recipe):
    """Train a linear map on cached text embeddings, then fold it into the text projection."""

    name = "labclip"
    config_cls = LabClipConfig
    summary = "LABCLIP: a linear map A on frozen text embeddings, contrastive against binding-permuted negatives"

    def train(
        self, backbone, cfg: LabClipConfig, items: list[Item] | None, source: str, log_path: Path | None
    ) -> tuple[TrainResult, dict]:
        data = toy_data(cfg, TRAIN_KINDS, VAL_KINDS) if items is None else file_data(items, cfg, "caption", source)
        pool, plain = data.items, data.plain
        everything = pool + plain
        image_emb = encode_arrays(backbone, [it.image for it in everything], RENDER_BATCH)
        texts = list(dict.fromkeys([it.caption for it in everything] + [n for it in pool for n in it.negatives]))
        text_emb = F.normalize(backbone.encode_texts(texts).float().cpu(), dim=-1)
        row = {t: i for i, t in enumerate(texts)}
        transform = nn.Linear(backbone.embed_dim, backbone.embed_dim, bias=False)
        with torch.no_grad():
            transform.weight.copy_(torch.eye(backbone.embed_dim))
        scale = torch.tensor(backbone.logit_scale)
        batch, plain_batch = min(cfg.batch_size, len(pool)), min(cfg.plain_batch, len(plain))

        def loss_at(step: int) -> torch.Tensor:
            rng = np.random.default_rng([cfg.seed, 41, step])
            chosen = list(rng.choice(len(pool), batch, replace=False))
            chosen += (
                [len(pool) + int(i) for i in rng.choice(len(plain), plain_batch, replace=False)] if plain_batch else []
            )
            picked = [everything[i] for i in chosen]
            columns = [row[it.caption] for it in picked] + [row[n] for it in picked for n in it.negatives]
            keys = caption_keys([it.caption for it in picked])
            return hard_negative_infonce(image_emb[chosen], transform(text_emb[columns]), scale, keys, keys)

        view = LabView(backbone, transform)
        validator = Validator(view, data, cfg.max_zero_shot_drop, frozen_images=True)
        result = train(transform, loss_at, cfg, validator, log_path, desc="labclip")
        fold_into_projection(text_projection(backbone.model), transform.weight)
        return result, {
            "training_items": len(pool),
            "ordinary_pairs": len(plain),
            "data": data.source,
            "folded": "A folded into the text projection",
        }


def text_projection(model: nn.Module) -> nn.Module | nn.Parameter:
    """The toy CLIP's or open_clip model's text projection (a Linear or a ``[width, D]`` parameter)."""
    return model.text_projection
