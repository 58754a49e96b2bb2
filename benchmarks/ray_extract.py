"""``extract --ray`` against local extraction: images/s with 1 and 2 Ray workers, and whether features match.

Usage: python benchmarks/ray_extract.py [--backbone toy|ViT-B-32] [--images 600] [--workers 1,2]

One command: generates the images, starts a local Ray instance (loopback, as many CPUs as the
machine has), and extracts the same images into a fresh cache each time: locally (torch's default
threads), locally with one thread (a 1-CPU worker's setting), then on Ray with each worker count
(1 CPU, 1 thread per worker). Prints images/s of the extraction call (end to end: decoding,
encoding, committing shards; the actors' start-up is shown apart), the ratios, and whether each
Ray run's features equal the local ones bit for bit. Nothing is downloaded (random-init weights
for open_clip models, the shipped toy checkpoint otherwise).
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.core.threads import torch_threads  # noqa: E402
from clip_adapter.distributed import BackboneSpec, RayOptions, ray_extraction  # noqa: E402
from clip_adapter.features import extract_images, image_store  # noqa: E402
from clip_adapter.features.extract import content_id  # noqa: E402


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def local(backbone, paths: list[Path], cache: Path, threads: int | None) -> tuple[torch.Tensor, float]:
    with torch_threads(threads):
        start = time.perf_counter()
        features, _, _ = extract_images(backbone, paths, image_store(backbone, cache))
        return features, len(paths) / (time.perf_counter() - start)


def on_ray(
    ray, backbone, spec: BackboneSpec, paths: list[Path], cache: Path, workers: int
) -> tuple[torch.Tensor, float, float]:
    options = RayOptions(workers=workers, cpus_per_worker=1)
    with ray_extraction(ray, spec, options, backbone.encoder_fingerprint) as runner:
        start = time.perf_counter()
        runner.start()  # actors load the backbone: a one-off cost, reported apart
        started = time.perf_counter()
        features, _, _ = extract_images(backbone, paths, image_store(backbone, cache))
        return features, len(paths) / (time.perf_counter() - started), started - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="toy")
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    import ray

    pretrained = None if args.backbone == "toy" else "none"
    backbone = create_backbone(args.backbone, pretrained, "fp32", "cpu")
    spec = BackboneSpec(args.backbone, pretrained, "fp32", "cpu", 0)
    with tempfile.TemporaryDirectory(prefix="ray-bench-", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        paths = make_images(tmp / "images", args.images, 2 * backbone.preprocess.image_size)
        for path in paths:  # hash once up front: the driver remembers hashes, so the first run would pay alone
            content_id(path)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, _temp_dir=str(tmp / "ray"))
        rows = []
        reference, rate = local(backbone, paths, tmp / "local", None)
        rows.append((f"local, {torch.get_num_threads()} threads", rate, None, True))
        single, rate = local(backbone, paths, tmp / "local1", 1)
        rows.append(("local, 1 thread", rate, None, torch.equal(single, reference)))
        for workers in (int(w) for w in args.workers.split(",")):
            features, rate, startup = on_ray(ray, backbone, spec, paths, tmp / f"ray{workers}", workers)
            rows.append(
                (
                    f"Ray, {workers} worker(s) x 1 CPU",
                    rate,
                    startup,
                    (torch.equal(features, reference), torch.equal(features, single)),
                )
            )
        ray.shutdown()
    print(f"{args.images} images, {args.backbone} fp32, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print(
        "| run | images/s | actor start-up (s) | features equal to local (default threads / 1 thread) |\n"
        "|---|---|---|---|"
    )
    for name, rate, startup, equal in rows:
        same = equal if isinstance(equal, bool) else f"{'yes' if equal[0] else 'no'} / {'yes' if equal[1] else 'no'}"
        print(
            f"| {name} | {rate:.1f} | {'' if startup is None else f'{startup:.1f}'} | "
            f"{same if isinstance(same, str) else ('yes' if same else 'no')} |"
        )
    ray_rates = {name: rate for name, rate, startup, _ in rows if startup is not None}
    base = rows[0][1]
    print("\nratios: " + ", ".join(f"{name} / local = {rate / base:.2f}" for name, rate in ray_rates.items()))
    rates = list(ray_rates.values())
    if len(rates) >= 2:
        print(f"Ray {args.workers.split(',')[-1]} workers / {args.workers.split(',')[0]}: {rates[-1] / rates[0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
