"""CoOp and CoCoOp at ImageNet scale: time per step measured on a smaller class set, projected to 1,000 classes.

Usage: python benchmarks/prompt_scale.py [--model RN50] [--classes 10] [--target-classes 1000] [--shots 16]

A prompt learner's step runs the frozen text encoder forward and backward over the class prompts
(CoOp: ``C`` prompts per step whatever the batch; CoCoOp: ``C`` prompts per image), so its cost is
linear in the number of classes and the image side is negligible. The benchmark measures one short
epoch of each recipe at ``--classes`` classes (random-initialised text encoder: the speed does not
depend on the weights; synthetic cached image features of the encoder's width), divides by its
steps (or images, for CoCoOp), and projects to ``--target-classes`` × ``--shots`` shots:

* CoOp default: lr searched over 3 values × 40 epochs × ⌈N/64⌉ steps;
* CoOp official on ImageNet: 50 epochs × ⌊N/32⌋ steps (one run);
* CoCoOp default: 3 epochs × N images (batch 8, lr searched over its grid);
* CoCoOp official: 10 epochs × N images (batch 1).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch.nn.functional as F  # noqa: E402

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.methods import get_method  # noqa: E402
from clip_adapter.methods.train import axis  # noqa: E402
from machine import describe_machine, matmul_rates  # noqa: E402
from synthetic_world import make_world  # noqa: E402


def seconds_per_unit(method: str, overrides: dict, data, per_image: bool) -> tuple[float, int]:
    """Training seconds per step (or per image), and the steps measured, for one short run."""
    m = get_method(method)
    cfg = m.make_config(**{"lr_grid": (), "select_epoch": False, "epochs": 1, **overrides})
    result = m(cfg).fit(data)
    info = next(h for h in result.history if h.get("steps"))
    units = len(data.train_labels) if per_image else info["steps"]
    return info["train_seconds"] / units, info["steps"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="RN50")
    parser.add_argument("--classes", type=int, default=10, help="classes the step time is measured at")
    parser.add_argument("--measure-shots", type=int, default=1, help="shots of the measured epoch")
    parser.add_argument("--target-classes", type=int, default=1000)
    parser.add_argument("--shots", type=int, default=16)
    args = parser.parse_args()
    print(describe_machine())
    print("matmul (TFLOP/s): " + ", ".join(f"{k} {v:.4f}" for k, v in matmul_rates().items()))
    backbone = create_backbone(args.model, "none", precision="auto")
    data, _, _ = make_world(args.classes, args.measure_shots, dim=backbone.embed_dim, views=2)
    names = [f"class {i}" for i in range(args.classes)]
    text = F.normalize(backbone.encode_texts([f"a photo of a {n}." for n in names]), dim=-1)
    data = replace(data, backbone=backbone, classnames=names, text=text)
    n, scale = args.target_classes * args.shots, args.target_classes / args.classes
    coop, cocoop = get_method("coop")().config, get_method("cocoop")().config
    coop_lrs, cocoop_lrs = (
        len(axis(coop.lr, coop.lr_grid)),
        len(axis(cocoop.lr, cocoop.lr_grid)),
    )  # runs of the lr search
    official = {"optimizer": "sgd", "lr": 2e-3}
    # (recipe, method, overrides, per image?, runs, epochs, units per epoch at the target size)
    recipes = [
        ("CoOp, default", "coop", {}, False, coop_lrs, coop.epochs, math.ceil(n / coop.batch_size)),
        ("CoOp, official (ImageNet: 50 epochs)", "coop", {**official, "batch_size": 32}, False, 1, 50, n // 32),
        ("CoCoOp, default", "cocoop", {}, True, cocoop_lrs, cocoop.epochs, n),
        ("CoCoOp, official (batch 1)", "cocoop", {**official, "batch_size": 1}, True, 1, 10, n),
    ]
    print(
        f"\nmeasured at {args.classes} classes × {args.measure_shots} shots "
        f"({backbone.name} text encoder, {backbone.precision}); "
        f"projected to {args.target_classes} classes × {args.shots} shots (N = {n}) by × {scale:.0f} "
        "(cost linear in classes)"
    )
    print(
        "\n| recipe | measured s per step (CoCoOp: per image) | steps measured | projected run | "
        "projected s per epoch | projected total |"
    )
    print("|---|---|---|---|---|---|")
    for name, method, overrides, per_image, runs, epochs, units in recipes:
        unit, steps = seconds_per_unit(method, overrides, data, per_image)
        epoch_s = units * unit * scale
        what = f"{runs} lr × {epochs} epochs × {units} {'images' if per_image else 'steps'}"
        print(
            f"| {name} | {unit:.3f} | {steps} | {what} | {epoch_s:,.0f} s | {runs * epochs * epoch_s / 3600:,.1f} h |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
