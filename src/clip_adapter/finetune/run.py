"""``finetune()``: a recipe, a backbone and data in; a backbone checkpoint out.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "neg"
    >>> r = finetune("negation", out=out, config={"steps": 2, "train_items": 8, "plain_items": 8,
    ...              "plain_batch": 4, "batch_size": 4, "val_items": 4, "zero_shot_per_class": 1})  # doctest: +SKIP
    >>> r.weights.name  # doctest: +SKIP
    'toy_clip.safetensors'
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backbones import create_backbone
from ..backbones.base import Backbone
from ..core.config import Config
from ..core.errors import ConfigError
from ..core.files import atomic_dir
from ..core.outputs import claim_output_dir, is_own_output, mark_output_dir
from ..core.threads import torch_threads
from .checkpoint import LOG_NAME, OUTPUT_KIND, usage, write_backbone_checkpoint
from .recipes import RECIPES, Recipe


@dataclass
class FinetuneResult:
    """Where the checkpoint went, how to load it, and what training did."""

    out: Path
    weights: Path
    usage: str
    summary: dict


def recipe_config(recipe: str, values: dict[str, Any] | Config | None = None) -> Config:
    """The recipe's config with ``values`` applied (a ConfigError names a bad or unknown key)."""
    cls = RECIPES.get(recipe).config_cls
    if isinstance(values, cls):
        return values
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"recipe {recipe} has no option {', '.join(unknown)} "
            f"(see clip-adapter finetune --recipe {recipe} --list-options)"
        )
    try:
        return cls.from_dict(values, where=f"{recipe} options")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{recipe} options: {exc}") from None


def finetune(
    recipe: str,
    backbone: str = "toy",
    pretrained: str | None = None,
    out: str | Path = "runs/finetune",
    data: str | Path | None = None,
    config: dict[str, Any] | Config | None = None,
    overwrite: bool = False,
    device: str = "auto",
    init_seed: int = 0,
    command: str | None = None,
) -> FinetuneResult:
    """Run ``recipe`` on ``backbone`` (toy world, or the captions file ``data``); write the checkpoint to ``out``."""
    runner: Recipe = RECIPES.get(recipe)()
    cfg = recipe_config(recipe, config)
    if backbone.startswith("hf:"):  # refused before any weights are read
        raise ConfigError(f"fine-tuning supports the toy and open_clip backbones, not {backbone}")
    out = claim_output_dir(out, OUTPUT_KIND, overwrite=overwrite, inputs=[data, pretrained])
    entries = None
    if data is not None:
        from .captions_data import read_caption_file

        entries = read_caption_file(data)  # every entry checked before any model is built
    model = create_backbone(backbone, pretrained, precision="fp32", device=device, seed=init_seed)
    check_backbone(model)
    base_id = model.id
    items = runner.file_items(entries, model.preprocess, cfg) if entries is not None else None
    start = time.perf_counter()
    with (
        torch_threads(cfg.threads or None),
        atomic_dir(out, may_replace=lambda p: overwrite and is_own_output(p, OUTPUT_KIND)) as tmp,
    ):
        mark_output_dir(tmp, OUTPUT_KIND)
        result, info = runner.train(model, cfg, items, str(data) if data else "toy-world", tmp / LOG_NAME)
        summary = {
            "recipe": recipe,
            "recipe_config": cfg.to_dict(),
            "base_weights": base_id,
            "base_pretrained": pretrained,
            "steps": cfg.steps,
            "wall_time_s": round(time.perf_counter() - start, 1),
            "command": command or f"clip-adapter finetune --recipe {recipe} --backbone {backbone}",
            **result.summary(),
            **info,
        }
        weights = write_backbone_checkpoint(model, tmp, summary)
    final = out / weights.name
    return FinetuneResult(out, final, usage(model, final), summary)


def check_backbone(model: Backbone) -> None:
    """Only backbones with a trainable module can be fine-tuned."""
    if model.provider not in ("toy", "open_clip"):
        raise ConfigError(f"fine-tuning supports the toy and open_clip backbones, not {model.id}")
