"""Rebuilding the backbone an artifact was trained on."""

from __future__ import annotations

import argparse

from ..artifacts import Classifier, load_with_backbone
from ..backbones import Backbone


def add_artifact_backbone_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backbone (default: the one recorded in the artifact)")
    group.add_argument("--backbone", default=None, help="override the recorded backbone name")
    group.add_argument("--pretrained", default=None, help="override the recorded weights (tag or path)")
    group.add_argument(
        "--precision", default=None, choices=("auto", "bf16", "fp32"), help="default: the precision used in training"
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda ...")


def load_artifact_and_backbone(directory: str, args: argparse.Namespace) -> tuple[Classifier, Backbone]:
    """The classifier and a backbone matching it (the recorded one unless overridden); a different one is refused."""
    return load_with_backbone(directory, args.backbone, args.pretrained, args.precision, args.device)
