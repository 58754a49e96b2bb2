"""Inference: artifact load time, predict latency (batch 1) and throughput (batch 64).

Usage: python benchmarks/inference.py [--classes 1000] [--backbone ViT-B-32] [--images 64]

A CLIP-Adapter trained on synthetic features (``synthetic_world.py``, D of the
backbone) is saved and loaded as an artifact; the head is timed on features,
and the whole predict path (JPEG decode + centre view + encoder + head) with
the backbone's random weights (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from clip_adapter.artifacts import Classifier  # noqa: E402
from clip_adapter.methods import get_method  # noqa: E402
from extraction import make_jpegs  # noqa: E402
from machine import describe_machine  # noqa: E402
from synthetic_world import make_world  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    print(describe_machine())
    from clip_adapter.backbones import create_backbone
    from clip_adapter.data.images import load_rgb
    from clip_adapter.features.transforms import eval_view

    backbone = create_backbone(args.backbone, "none", precision="auto")
    data, test_x, _ = make_world(args.classes, 1, dim=backbone.embed_dim, views=2)
    method = get_method("clip-adapter")
    head = method(method.make_config(epochs=2, alpha_grid=())).fit(data).head
    with tempfile.TemporaryDirectory() as tmp:
        Classifier(
            "clip-adapter", head, data.classnames, data.templates, {"id": backbone.id, "name": args.backbone}, {}
        ).save_pretrained(Path(tmp) / "a")
        load_s = timed(lambda: Classifier.from_pretrained(Path(tmp) / "a"), 5)
        clf = Classifier.from_pretrained(Path(tmp) / "a")
        paths = make_jpegs(Path(tmp) / "img", args.images)
        head_1 = timed(lambda: clf.logits(test_x[:1]), 200)
        head_64 = timed(lambda: clf.logits(test_x[:64]), 50)

        def predict(batch: list[Path]) -> torch.Tensor:
            pixels = torch.stack([eval_view(load_rgb(p)[0], backbone.preprocess) for p in batch])
            return clf.logits(backbone.encode_images(pixels)).softmax(-1).topk(5)

        e2e_1 = timed(lambda: predict(paths[:1]), 5)
        big = min(64, len(paths))
        e2e_64 = timed(lambda: predict(paths[:big]), 1)
    print(
        f"\nartifact: clip-adapter, {args.classes} classes, D={backbone.embed_dim}; "
        f"backbone {args.backbone} ({backbone.precision})"
    )
    print("| what | figure |\n|---|---|")
    print(f"| load artifact (config + safetensors, checks) | {1000 * load_s:.1f} ms |")
    print(f"| head only, batch 1 | {1000 * head_1:.2f} ms |")
    print(f"| head only, batch 64 | {64 / head_64:.0f} images/s |")
    print(f"| predict from JPEG, batch 1 (decode + encoder + head) | {1000 * e2e_1:.0f} ms/image |")
    big = min(64, args.images)
    print(f"| predict from JPEG, batch {big} | {big / e2e_64:.1f} images/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
