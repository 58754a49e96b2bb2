"""A fine-tuned backbone on disk: the checkpoint every command accepts with ``--pretrained``.

- toy: ``<out>/toy_clip.safetensors`` + ``toy_clip.json``, the format
  :func:`~clip_adapter.toyworld.backbone.load_toy_clip` reads (its vocab
  included, grown or not), with the recipe, base weights, steps and wall time
  recorded in the JSON. Use: ``--backbone toy --pretrained <out>``.
- open_clip: ``<out>/finetuned.safetensors`` (the model's full float32 state
  dict) + ``finetuned.json`` saying what it is. Use:
  ``--backbone <arch> --pretrained <out>/finetuned.safetensors``.

The whole folder is built beside ``<out>`` and renamed into place when
complete (:func:`~clip_adapter.core.files.atomic_dir`); an existing ``<out>`` is
replaced only when it is an earlier fine-tuning output of this tool and
``overwrite`` is set.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .._version import __version__
from ..backbones.base import Backbone
from ..core.files import atomic_write_json, save_tensors

OUTPUT_KIND = "finetune"
LOG_NAME = "finetune_log.csv"
OPEN_CLIP_STEM = "finetuned"
FORMAT = "clip-adapter-finetuned-backbone"


def write_backbone_checkpoint(backbone: Backbone, out: Path, info: dict) -> Path:
    """Write ``backbone.model`` (float32) and its JSON into the folder ``out``; returns the weights' path.

    Example:
        >>> import tempfile, pathlib
        >>> from clip_adapter.backbones import create_backbone
        >>> bb = create_backbone("toy", pretrained="none", precision="fp32")
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> path = write_backbone_checkpoint(bb, out, {"recipe": "none"})
        >>> create_backbone("toy", pretrained=str(out), precision="fp32").weights_id.startswith("sha256:")
        True
    """
    record = {"base_backbone": backbone.id, "library_version": __version__, **info}
    if backbone.provider == "toy":
        from ..toyworld.pretrain import write_toy_checkpoint

        return write_toy_checkpoint(backbone.model, backbone.tokenizer, out, {"format_note": FORMAT, **record})
    weights = out / f"{OPEN_CLIP_STEM}.safetensors"
    state = {k: v.float().contiguous() if v.is_floating_point() else v for k, v in backbone.model.state_dict().items()}
    # One metadata key: safetensors writes its metadata map in hash order, and equal weights must give equal files.
    save_tensors(weights, state, metadata={"format": FORMAT})
    atomic_write_json(
        out / f"{OPEN_CLIP_STEM}.json",
        {
            "format": FORMAT,
            "provider": backbone.provider,
            "architecture": backbone.name,
            "usage": f"--backbone {backbone.name} --pretrained {weights}",
            "torch_version": torch.__version__,
            **record,
        },
    )
    return weights


def usage(backbone: Backbone, weights: Path) -> str:
    """The options that load the checkpoint in any other command."""
    if backbone.provider == "toy":
        return f"--backbone toy --pretrained {weights.parent}"
    return f"--backbone {backbone.name} --pretrained {weights}"
