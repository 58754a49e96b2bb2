"""Rebuilding the backbone an artifact was trained on."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..artifacts import Classifier
from ..backbones import Backbone, create_backbone
from ..io import read_json
from ..errors import ArtifactError
from .parsing import SEED_MAX


def add_artifact_backbone_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backbone (default: the one recorded in the artifact)")
    group.add_argument("--backbone", default=None, help="override the recorded backbone name")
    group.add_argument("--pretrained", default=None, help="override the recorded weights (tag or path)")
    group.add_argument("--precision", default=None, choices=("auto", "bf16", "fp32"), help="default: the precision used in training")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda ...")


def _recorded_seed(info: dict[str, Any], directory: str) -> int:
    """The init seed in a ``…/random-init:<seed>`` backbone id (0 for real weights), range-checked."""
    weights = str(info.get("id", "")).rsplit("/", 1)[-1]
    if not weights.startswith("random-init:"):
        return 0
    seed = weights.split(":", 1)[1]
    if not seed.isdigit() or int(seed) > SEED_MAX:
        raise ArtifactError(f"artifact {directory}/config.json: backbone.id {info.get('id')!r} has no valid init seed")
    return int(seed)


def load_artifact_and_backbone(directory: str, args: argparse.Namespace) -> tuple[Classifier, Backbone]:
    """The classifier and a backbone matching it; a different backbone is refused by id."""
    config = read_json(Path(directory) / "config.json", "artifact config", ArtifactError)
    info = config.get("backbone", {}) if isinstance(config, dict) else {}
    if not isinstance(info, dict) or "name" not in info:
        raise ArtifactError(f"artifact {directory}/config.json records no backbone")
    backbone = create_backbone(
        args.backbone or info["name"],
        args.pretrained or info.get("pretrained"),
        args.precision or info.get("precision", "auto"),
        args.device,
        _recorded_seed(info, directory),
    )
    return Classifier.from_pretrained(directory, backbone=backbone), backbone
