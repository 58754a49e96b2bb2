"""Extraction speed: our extractor against a plain open_clip fp32 loop, on the same JPEGs in the same run.

Usage: python benchmarks/extraction.py [--images 64] [--models ViT-B-32,ViT-B-16,RN50] [--memory 500,5000]

The plain loop is the one open_clip's README shows: ``create_model_and_transforms``,
PIL open + ``preprocess`` per image, batches of 32, ``encode_image`` under
``no_grad``, fp32, eager. Ours is ``extract_images`` (decode of the next chunk
overlapped with encoding, precision ``auto``, features written to a fresh
cache). Both include decoding; weights are random (same seed for both), which
does not change the speed. Also printed: the cosine between our features and
the plain loop's, the fraction of the matmul bound reached (FLOPs from torch's
flop counter, the attention fast path off so that it sees every product; the bound: the matmul rate of
our precision on all threads, measured in the same run), and peak RSS of a run over N vs 10·N images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from machine import describe_machine, matmul_rates  # noqa: E402

MEMORY_SNIPPET = """
import json, resource, sys, tempfile
from pathlib import Path
sys.path.insert(0, {bench!r})
from extraction import make_jpegs
from clip_adapter.backbones import create_backbone
from clip_adapter.features import extract_images, image_store
with tempfile.TemporaryDirectory() as tmp:
    paths = make_jpegs(Path(tmp) / "img", {n}, size=(96, 72))
    bb = create_backbone("toy", "none", precision="fp32")
    extract_images(bb, paths, image_store(bb, Path(tmp) / "cache"))
print(json.dumps({{"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def make_jpegs(folder: Path, n: int, size: tuple[int, int] = (500, 375)) -> list[Path]:
    """``n`` smooth random JPEGs (ImageNet's typical 500×375), quality 90."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = rng.random((size[1] // 8, size[0] // 8, 3)) * 255
        img = Image.fromarray(small.astype(np.uint8)).resize(size, Image.BILINEAR)
        path = folder / f"{i:05d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def plain_loop(name: str, paths: list[Path]) -> tuple[torch.Tensor, float]:
    import open_clip

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    model.eval()
    start, out = time.perf_counter(), []
    for i in range(0, len(paths), 32):
        images = torch.stack([preprocess(Image.open(p)) for p in paths[i : i + 32]])
        with torch.no_grad():
            out.append(model.encode_image(images))
    return torch.cat(out), time.perf_counter() - start


def ours(name: str, paths: list[Path]) -> tuple[torch.Tensor, float, str]:
    from clip_adapter.backbones import create_backbone
    from clip_adapter.features import extract_images, image_store

    backbone = create_backbone(name, "none", precision="auto")
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        features, _, _ = extract_images(backbone, paths, image_store(backbone, cache))
        return features, time.perf_counter() - start, backbone.precision


def image_flops(name: str) -> float:
    """FLOPs of one image through the image tower, by torch's flop counter with the attention fast path off.

    ``nn.MultiheadAttention``'s inference fast path (``_native_multi_head_attention``) is invisible to the
    counter: with it on, ViT-B-32 counts 5.9 GFLOP, the MLPs only; with it off, 8.7 (the analytic count is
    8.8), the same arithmetic the fast path does.
    """
    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    model = open_clip.create_model(name, pretrained=None).eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.encode_image(torch.randn(1, 3, size, size))
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    return float(counter.get_total_flops())


def peak_rss(n: int) -> float:
    code = MEMORY_SNIPPET.format(bench=str(Path(__file__).resolve().parent), n=n)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["rss_mib"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--models", default="ViT-B-32,ViT-B-16,RN50")
    parser.add_argument(
        "--memory", default="500,5000", help="N,10N images for the peak-RSS check (toy backbone, '' to skip)"
    )
    args = parser.parse_args()
    print(describe_machine())
    rates = matmul_rates()
    bound = {  # the matmul rate of each precision on all threads: what an encoder in that precision can reach
        precision: rates[f"{precision} {torch.get_num_threads()}t"] for precision in ("fp32", "bf16")
    }
    print("matmul (TFLOP/s): " + ", ".join(f"{k} {v:.4f}" for k, v in rates.items()) + " (bf16 at 512²)")
    print(
        "\n| model | plain open_clip fp32 img/s | ours img/s (precision) | speed-up | cosine min / mean | GFLOP/img | "
        "ours, % of the matmul bound of its precision |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        for name in args.models.split(","):
            ref, plain_s = plain_loop(name, paths)
            feats, our_s, precision = ours(name, paths)
            cos = torch.nn.functional.cosine_similarity(feats.float(), ref.float(), dim=-1)
            flops = image_flops(name)
            ips, plain_ips = len(paths) / our_s, len(paths) / plain_s
            print(
                f"| {name} | {plain_ips:.1f} | {ips:.1f} ({precision}) | {ips / plain_ips:.2f}× | "
                f"{cos.min():.5f} / {cos.mean():.5f} | "
                f"{flops / 1e9:.1f} | {100 * ips * flops / (bound[precision] * 1e12):.0f} % |",
                flush=True,
            )
    if args.memory:
        small, large = (int(v) for v in args.memory.split(","))
        a, b = peak_rss(small), peak_rss(large)
        print(
            f"\npeak RSS, toy backbone: {small} images {a:.0f} MiB, {large} images {b:.0f} MiB "
            f"({100 * (b / a - 1):+.1f} %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
