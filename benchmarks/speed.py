"""Speed figures: feature extraction (images/s, fp32 vs bf16) and adapter training on cached features.

Usage: python benchmarks/speed.py [--backbone ViT-B-32] [--images 96] [--classes 100]
Prints a table; nothing here downloads (random-initialised weights, generated JPEGs).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.features import AugmentConfig, extract_images, image_store  # noqa: E402
from clip_adapter.methods import FewShotData, get_method  # noqa: E402


def make_jpegs(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = (rng.random((300, 400, 3)) * 255).astype(np.uint8)
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def extraction(name: str, paths: list[Path], precision: str, views: int | None) -> tuple[float, float]:
    backbone = create_backbone(name, "none", precision=precision)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        augment = AugmentConfig(views=views) if views else None
        _, _, stats = extract_images(backbone, paths, image_store(backbone, cache), augment, 0, 64)
        wall = time.perf_counter() - start
    return stats.images_per_second, stats.encoded / wall


def training(dim: int, classes: int, shots: int, views: int, preset: str | None, variant: str) -> tuple[float, int]:
    gen = torch.Generator().manual_seed(0)
    n = classes * shots
    data = FewShotData(
        torch.randn(n, views, dim, generator=gen),
        torch.arange(classes).repeat_interleave(shots),
        torch.randn(classes * 4, dim, generator=gen),
        torch.arange(classes).repeat_interleave(4),
        torch.nn.functional.normalize(torch.randn(classes, dim, generator=gen), dim=1),
        100.0,
        [str(i) for i in range(classes)],
    )
    method = get_method("clip-adapter")
    config = method.make_config(preset, variant=variant)
    start = time.perf_counter()
    result = method(config).fit(data)
    steps = sum(h.get("steps", 0) for h in result.history)
    return time.perf_counter() - start, steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--classes", type=int, default=100, help="classes for the training benchmark (16 shots each)")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 fast: "
        f"{__import__('clip_adapter.backbones', fromlist=['x']).cpu_has_fast_bf16()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        print(f"\nExtraction, {args.backbone} (random init), {len(paths)} JPEGs 400x300")
        print(
            "| precision | views | encoder images/s | end-to-end images/s (decode+augment+encode) |\n|---|---|---|---|"
        )
        for precision in ("fp32", "bf16"):
            for views in (None, 4):
                enc, e2e = extraction(args.backbone, paths, precision, views)
                print(
                    f"| {precision} | {'1 (centre)' if views is None else f'{views} augmented'} | "
                    f"{enc:.1f} | {e2e:.1f} |"
                )
    dim = create_backbone(args.backbone, "none", precision="fp32").embed_dim
    print(
        f"\nCLIP-Adapter training on cached features: D={dim}, {args.classes} classes x 16 shots x 10 views, "
        "alpha/lr grid searched on validation (protocol val)"
    )
    print("| recipe | variant | wall seconds | optimiser steps (whole search) |\n|---|---|---|---|")
    for preset in ("fast", "official"):
        for variant in ("visual", "both"):
            seconds, steps = training(dim, args.classes, 16, 10, preset, variant)
            print(f"| {preset} | {variant} | {seconds:.1f} | {steps} |")
    print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
