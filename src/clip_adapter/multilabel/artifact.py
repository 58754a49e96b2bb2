"""Saving and loading a multi-label model: ``config.json`` + ``model.safetensors`` (+ ``result.json``, ``split.json``).

No pickle: the head's weights and text buffers are safetensors, everything
else JSON, all written atomically into a folder that replaces the old one in
one step. Loading rebuilds the head from the config and refuses any missing,
extra or mis-shaped tensor, or a backbone other than the one trained on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._version import __version__
from ..backbones.base import Backbone
from ..core.errors import ArtifactError, ConfigError
from ..core.files import atomic_dir, atomic_write_json, load_tensors, quoted, read_json, save_tensors
from ..core.outputs import is_own_output, mark_output_dir
from .config import MultiLabelConfig
from .heads import build_head
from .kinds import ARTIFACT_KIND
from .pipeline import MultiLabelModel

FORMAT = "clip-adapter-multilabel"
FORMAT_VERSION = 1


def save_model(
    out_dir: str | os.PathLike,
    model: MultiLabelModel,
    result: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (and the run's result and shots) to ``out_dir`` atomically.

    Example:
        >>> # save_model("runs/unmix", model, result, shots.to_json(dataset))
    """
    out_dir = Path(out_dir)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "method": model.config.method,
        "config": model.config.to_dict(),
        "classes": list(model.classes),
        "backbone": model.backbone,
        "threshold": model.threshold,
        "scale": model.head.scale,
    }
    with atomic_dir(out_dir, may_replace=lambda p: overwrite and is_own_output(p, ARTIFACT_KIND)) as tmp:
        mark_output_dir(tmp, ARTIFACT_KIND)
        save_tensors(tmp / "model.safetensors", model.head.state_dict())
        atomic_write_json(tmp / "config.json", config)
        if result is not None:
            atomic_write_json(tmp / "result.json", {**result, "records": model.records})
        if split is not None:
            atomic_write_json(tmp / "split.json", split)
    return out_dir


def load_model(path: str | os.PathLike, backbone: Backbone | None = None) -> MultiLabelModel:
    """Read a model saved by :func:`save_model`; with ``backbone``, check it is the one trained on.

    Example:
        >>> # model = load_model("runs/unmix", create_backbone("toy"))
    """
    path = Path(path)
    meta = read_json(path / "config.json", "multi-label artifact config", error=ArtifactError)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{quoted(path)} is not a multi-label artifact (no {FORMAT} config.json)")
    try:
        cfg = MultiLabelConfig.from_dict(meta["config"], where=str(path / "config.json"))
        classes, info = tuple(meta["classes"]), dict(meta["backbone"])
        threshold, scale, dim = float(meta["threshold"]), float(meta["scale"]), int(info["embed_dim"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise ArtifactError(f"{quoted(path / 'config.json')} is malformed ({exc})") from None
    if backbone is not None and backbone.id != info.get("id"):
        raise ArtifactError(f"{quoted(path)} was trained on backbone {info.get('id')}, not {backbone.id}")
    import torch

    head = build_head(cfg, torch.zeros(len(classes), dim), torch.zeros(len(classes), dim), scale)
    expected = {name: tuple(t.shape) for name, t in head.state_dict().items()}
    tensors = load_tensors(path / "model.safetensors", "multi-label weights", expected)
    head.load_state_dict(tensors)
    head.eval()
    return MultiLabelModel(cfg, classes, info, head, threshold)
