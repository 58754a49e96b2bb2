"""The toy world in motion, zero-shot: frame averaging with the shipped toy CLIP, and clips/s.

One command: writes the toy action dataset (real mp4 files), runs the three
frozen-CLIP scorers on its test split, prints top-1 overall and accuracy within
the time-reversed pairs against chance, then measures decode+encode throughput
of the library's extraction (TSN-sampled frames, batched encoding, cache
cleared) against a plain per-frame loop (decode every frame with PyAV, encode
each sampled frame on its own).

The shipped toy CLIP was pretrained on still scenes: its vocabulary has no
motion words, so the class prompts' motion words become ``<unk>`` (listed
below, from the toy tokenizer's ``unknown_words``), and frame averaging cannot
see frame order anyway. The numbers are the floor STDD's later stage must beat.

Usage: python benchmarks/video_toy.py [--out DIR] [--frames 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.features.transforms import eval_view  # noqa: E402
from clip_adapter.video import load_video_dataset  # noqa: E402
from clip_adapter.video.decode import segment_indices  # noqa: E402
from clip_adapter.video.features import extract_clip_features, frame_store  # noqa: E402
from clip_adapter.video.toyclips import write_toy_videos  # noqa: E402
from clip_adapter.video.zeroshot import VideoZeroShotConfig, evaluate_zero_shot  # noqa: E402


def plain_loop(backbone, paths: list[Path], frames: int) -> float:
    """Seconds for the naive loop: decode every frame with PyAV, encode the T sampled ones one at a time."""
    import av

    started = time.perf_counter()
    for path in paths:
        with av.open(str(path)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        for i in segment_indices(len(decoded), frames):
            backbone.encode_images(eval_view(Image.fromarray(decoded[i]), backbone.preprocess)[None])
    return time.perf_counter() - started


def library(backbone, paths: list[Path], frames: int) -> float:
    """Seconds for extract_clip_features into an empty cache (TSN decoding that stops early, batched encoding)."""
    cache = Path(tempfile.mkdtemp(prefix="video-bench-cache-"))
    try:
        started = time.perf_counter()
        extract_clip_features(backbone, paths, frame_store(backbone, cache), frames=frames)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="where to write the toy dataset (default: a temporary folder)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="video-toy-"))
    out = Path(args.out) if args.out else work / "toy-videos"
    started = time.perf_counter()
    write_toy_videos(out)
    print(f"wrote the toy video dataset to {out} in {time.perf_counter() - started:.1f} s")
    backbone = create_backbone("toy", precision="fp32")
    dataset = load_video_dataset(split_dir=out)
    prompts = [t.format(c) for c in dataset.classnames for t in dataset.templates]
    unknown = sorted({w for ws in backbone.unknown_words(prompts).values() for w in ws})
    print(f"toy tokenizer: {len(unknown)} words of the class prompts become <unk>: {', '.join(unknown)}")
    print("\n| scorer | text | top-1 % | top-5 % | time-reversed pairs % | chance top-1 / pairs |")
    print("|---|---|---|---|---|---|")
    for scorer, desc in (("frame-mean", None), ("embed-mean", None), ("prompt-match", out / "descriptions.json")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the <unk> words are listed above
            result = evaluate_zero_shot(
                backbone,
                dataset,
                "test",
                VideoZeroShotConfig(frames=args.frames, scorer=scorer),
                descriptions=desc,
                cache_dir=work / "cache",
            )
        m = result["metrics"]
        print(
            f"| {scorer} | {'descriptions' if desc else 'template'} | {100 * m['top1']:.2f} | {100 * m['top5']:.2f} | "
            f"{100 * m['time_reversed_pairs']['accuracy']:.2f} | {100 * m['chance_top1']:.2f} / 50.00 |"
        )
    paths = [s.path for s in dataset.split("test")]
    library(backbone, paths[:4], args.frames)  # warm up (first-call allocations)
    lib, plain = library(backbone, paths, args.frames), plain_loop(backbone, paths, args.frames)
    print(f"\ndecode+encode, {len(paths)} clips x {args.frames} frames, toy CLIP fp32, {args.threads} thread(s):")
    print(f"  clip-adapter extraction: {len(paths) / lib:.1f} clips/s ({lib:.2f} s)")
    print(f"  plain per-frame loop:    {len(paths) / plain:.1f} clips/s ({plain:.2f} s)   speed-up {plain / lib:.2f}x")
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
