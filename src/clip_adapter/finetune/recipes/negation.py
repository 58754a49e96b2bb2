"""NegationCLIP (Park et al., ICCV 2025, "Know "No" Better"): fine-tune the text encoder on negation captions.

The paper generates captions that deny an object absent from the image (LLM
and MLLM pipelines on COCO) and fine-tunes CLIP's text encoder on them with
plain symmetric InfoNCE (official ``src/clip_finetune.py``: vision tower and
``ln_final`` frozen, AdamW lr 1e-6, best epoch by validation loss). Here the
captions come from scene metadata — the toy world knows what is absent
(:func:`~clip_adapter.toyworld.captions.absent_object`) — or, for a captions
file, from each entry's ``labels`` and the other entries' labels, through the
templates of :data:`~clip_adapter.finetune.toydata.NEGATION_TEMPLATES`.

The toy CLIP's vocabulary does not hold the negation words; they are added
(new embedding rows start as copies of ``<unk>``, so training starts from the
base model's exact behaviour). Image embeddings are encoded once: the image
tower is frozen.

Departures: ``flip_negatives`` (on by default) adds each caption's
negation-flipped twin as a hard-negative column (NegCLIP's loss) — the paper
relies on batch negatives only (``flip_negatives=false`` is its loss); the
whole text tower trains, ``ln_final`` included; ordinary pairs are mixed in and
the saved step is the best negation accuracy on validation items within the
zero-shot guard, not the lowest validation loss.

Example:
    >>> NegationConfig().unfreeze
    'text'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...core.config import Default, defaults, option
from ...core.errors import ConfigError
from ...features.rendered import encode_arrays
from ...toyworld.captions import NEGATION_WORDS
from ..evaluate import RENDER_BATCH
from ..losses import caption_keys, hard_negative_infonce
from ..toydata import Item
from ..trainable import TrainableClip
from ..trainer import TrainResult, train
from .base import RECIPES, Recipe, RecipeConfig, Validator, file_data, toy_data


@dataclass
@defaults(
    unfreeze=Default("text", "what trains: text or text-last-N (the image tower stays frozen)"),
    lr=Default(5e-5, "peak learning rate (the paper: 1e-6 on ViT-B/32)"),
    batch_size=Default(64, "negation captions per step"),
    plain_batch=Default(64, "ordinary pairs mixed into each step"),
    train_items=Default(2000, "toy training items (scenes with a negation caption and its flipped twin)"),
    plain_items=2000,
)
class NegationConfig(RecipeConfig):
    """NegationCLIP's settings (defaults tuned on the toy world's validation items).

    Which values were tried is not recorded; they were scored on the seed-1000 items of
    ``benchmarks/finetune_toy.py`` (same generator, never drawn by training or validation),
    not on held-out data.
    """

    flip_negatives: bool = option(True, "add each caption's negation-flipped twin as a hard-negative column")

    def validate(self) -> None:
        super().validate()
        if not self.unfreeze.startswith("text"):
            raise ValueError("negation fine-tunes the text encoder only: unfreeze must be text or text-last-N")


@RECIPES.register("negation")
class Negation(Recipe):
    """Teach the text encoder negation from generated captions (see the module docstring)."""

    name = "negation"
    config_cls = NegationConfig
    summary = "NegationCLIP: text-encoder fine-tuning on captions that deny absent objects"

    def file_items(self, entries: list, preprocess, cfg) -> list[Item]:
        from ..captions_data import entries_to_items

        return entries_to_items(entries, preprocess, cfg.seed, negation=True)

    def train(
        self, backbone, cfg: NegationConfig, items: list[Item] | None, source: str, log_path: Path | None
    ) -> tuple[TrainResult, dict]:
        view = TrainableClip(backbone, cfg.unfreeze, cfg.precision)
        added = view.extend_vocab(NEGATION_WORDS)
        if any(p.requires_grad for p in backbone.model.visual.parameters()):
            raise ConfigError("negation: the image tower must stay frozen")
        data = (
            toy_data(cfg, ("negation",), ("negation-benchmark",))
            if items is None
            else file_data(items, cfg, "negation", source)
        )
        pool = data.items + data.plain
        image_emb = encode_arrays(backbone, [it.image for it in pool], RENDER_BATCH)
        n_items, batch, plain_batch = (
            len(data.items),
            min(cfg.batch_size, len(data.items)),
            min(cfg.plain_batch, len(data.plain)),
        )

        def loss_at(step: int) -> torch.Tensor:
            rng = np.random.default_rng([cfg.seed, 43, step])
            chosen = list(rng.choice(n_items, batch, replace=False))
            chosen += (
                [n_items + int(i) for i in rng.choice(len(data.plain), plain_batch, replace=False)]
                if plain_batch
                else []
            )
            picked = [pool[i] for i in chosen]
            hard = [n for it in picked for n in it.negatives] if cfg.flip_negatives else []
            keys = caption_keys([it.caption for it in picked])
            text_emb = view.encode_texts([it.caption for it in picked] + hard)
            return hard_negative_infonce(image_emb[chosen], text_emb, view.logit_scale(), keys, keys)

        validator = Validator(view, data, cfg.max_zero_shot_drop, frozen_images=True)
        result = train(backbone.model, loss_at, cfg, validator, log_path, desc="negation")
        return result, {
            "training_items": n_items,
            "ordinary_pairs": len(data.plain),
            "data": data.source,
            "vocabulary_added": added,
        }
