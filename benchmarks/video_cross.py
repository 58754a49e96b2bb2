"""Zero-shot cross-dataset on the toy world in motion: train on one set of actions, test on a disjoint set.

The protocol of Open-VCLIP/FROSTER/STDD (K400 -> UCF101/HMDB51, mean ± std over
the official splits), in the toy world: the source dataset holds the six base
actions (appearing, disappearing, growing, moving left/right, shrinking; 16
training and 4 validation clips each); each target "split" holds the five
novel actions (changing color, moving up/down, rotating clockwise /
counterclockwise: two time-reversed pairs), test clips only, rendered from its
own seed. Every row is evaluated by :func:`clip_adapter.video.cross.evaluate_cross_dataset`
(each target split over its own five classes) and reported as mean ± std
(population) of top-1 over the target splits — after averaging over the
training seeds for trained rows — plus accuracy within the time-reversed
pairs (a clip against its own reversal; 50 % = blind to time). Top-5 is not a
column: with five target classes it is 100 % by construction.

Rows: frame averaging (the frozen toy video CLIP, ``frame-mean`` over
templates); frozen + STDD's prompt-level matching over the descriptions;
STDD-style (space-time attention + FROSTER distillation + description prompts)
trained on the source actions; and the three ablations. Trained rows are
scored as trained (the official STDD score: ``prompt-match`` over the descriptions, else ``frame-mean``).

Usage: python benchmarks/video_cross.py --pretrained runs/toy-video-clip [--out DIR] [--steps 150] [--seeds 1 2 3]
(about 8 minutes on one thread: 150 steps of 8 clips, only the last ViT block trained, seeds 1-3)

``--out`` must be new, empty, or a folder this benchmark wrote (its marker file says so); the
datasets inside are named by a digest of their settings, so a run with other settings writes
new ones instead of reusing stale clips.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")

import torch  # noqa: E402

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.core.files import atomic_write_json  # noqa: E402
from clip_adapter.core.outputs import MARKER, mark_output_dir, marker_kind  # noqa: E402
from clip_adapter.finetune.trainer import TrainerConfig  # noqa: E402
from clip_adapter.video import load_video_dataset  # noqa: E402
from clip_adapter.video.bench import plot as bench_plot  # noqa: E402
from clip_adapter.video.bench import trained_loader
from clip_adapter.video.cross import STD_NOTE, evaluate_cross_dataset, load_eval_sets, summarise  # noqa: E402
from clip_adapter.video.stdd import SpaceTimeConfig  # noqa: E402
from clip_adapter.video.toyclips import BASE, write_toy_videos  # noqa: E402
from clip_adapter.video.train import VideoTrainConfig, train_video, training_scorer  # noqa: E402
from clip_adapter.video.zeroshot import VideoZeroShotConfig, text_side  # noqa: E402

BENCH_KIND = "video-cross-bench"  # the marker this benchmark leaves in its --out folder
SOURCE = {"train": 16, "val": 4, "test": 0, "frames": 16, "size": 64, "seed": 0, "actions": "base"}

VARIANTS = {
    "STDD-style": {"stdd": True, "descriptions": True, "distill": 2.0},
    "- space-time attention": {"stdd": False, "descriptions": True, "distill": 2.0},
    "- description prompts": {"stdd": True, "descriptions": False, "distill": 2.0},
    "- distillation": {"stdd": True, "descriptions": True, "distill": 0.0},
}


def claim_out(out: Path) -> None:
    """Use ``out`` only if it is new, empty, or marked as this benchmark's; refuse anything else in one line."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} is a file; choose a new folder")
    if out.is_dir() and marker_kind(out) != BENCH_KIND and any(p.name != MARKER for p in out.iterdir()):
        raise SystemExit(f"error: --out {out} holds files this benchmark did not write; choose a new or empty folder")
    mark_output_dir(out, BENCH_KIND)


def toy_set(out: Path, prefix: str, settings: dict) -> Path:
    """The toy dataset of ``settings`` under ``out``, named by their digest: reused only when written with the
    same ones.
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    path = out / f"{prefix}-{digest}"
    if not path.exists():  # write_toy_videos installs the folder atomically: present means complete
        write_toy_videos(path, **settings)
    return path


def make_data(out: Path, targets: list[int], test: int) -> tuple[Path, list[Path]]:
    """The source set (base actions) and one target split per seed (novel actions)."""
    source = toy_set(out, "source", SOURCE)
    paths = [
        toy_set(
            out,
            f"target-{seed}",
            {
                "train": 0,
                "val": 0,
                "test": test,
                "frames": SOURCE["frames"],
                "size": SOURCE["size"],
                "seed": seed,
                "actions": "novel",
            },
        )
        for seed in targets
    ]
    return source, paths


def cross(backbone, eval_sets, scorer: str, descriptions, frames: int, cache: str) -> dict:
    result = evaluate_cross_dataset(
        backbone,
        eval_sets,
        VideoZeroShotConfig(frames=frames, scorer=scorer),
        list(BASE),
        descriptions=descriptions,
        cache_dir=cache,
    )
    return {s["name"]: {"top1": s["top1"], "pairs": s["time_reversed_pairs"]} for s in result["splits"]}


def train_variant(args, source, spec: dict, seed: int, out: Path, cache: str) -> tuple[object, float, str]:
    backbone = create_backbone("toy", args.pretrained, precision="fp32")
    descriptions = source.root / "descriptions.json" if spec["descriptions"] else None
    prompts, mask, _ = text_side(backbone, list(BASE), source.templates, descriptions, cache)
    cfg = VideoTrainConfig(
        frames=args.frames,
        batch_clips=args.batch_clips,
        shots=16,
        distill_weight=spec["distill"],
        precision="fp32",
        unfreeze=args.unfreeze,
        scorer=training_scorer(descriptions is not None),
    )
    trainer = TrainerConfig(
        steps=args.steps, lr=args.lr, warmup_steps=args.steps // 10, val_every=args.val_every, seed=seed
    )
    space = SpaceTimeConfig(enabled=spec["stdd"])
    record = train_video(backbone, source, cfg, space, trainer, out, prompts, mask, overwrite=True)
    return trained_loader("toy")(out), record["clips_per_s"], record["train_config"]["scorer"]


def table_row(runs: list[dict]) -> dict:
    """Per target split: the mean over training seeds; then mean ± std over the splits, as
    ``video cross-dataset`` summarises.
    """
    per_split = [
        {
            "top1": statistics.fmean(run[name]["top1"] for run in runs),
            "time_reversed_pairs": statistics.fmean(run[name]["pairs"] for run in runs),
        }
        for name in runs[0]
    ]
    summary = summarise(per_split)
    return {
        key: {**{k: summary[field][k] for k in ("mean", "std")}, "per_split": [row[field] for row in per_split]}
        for key, field in (("top1", "top1"), ("pairs", "time_reversed_pairs"))
    }


def plot(table: dict, path: Path) -> None:
    """Bars of top-1 and time-reversed-pair accuracy (mean ± std over the target splits) per row, with chance lines."""
    order = [
        "frame averaging (frozen)",
        "frozen + prompt-match (descriptions)",
        *VARIANTS,
    ]  # results.json sorts its keys
    rows = {n: table[n] for n in sorted(table, key=lambda n: order.index(n) if n in order else len(order))}
    bench_plot(
        rows,
        {n: n for n in rows},
        path,
        "toy world in motion: zero-shot cross-dataset (6 base actions -> 5 novel; 3 target splits; dotted: chance)",
        bars={"top1": "top-1 (5 unseen actions)", "pairs": "time-reversed pairs"},
        chance={"top1": 20, "pairs": 50},
        ylabel="accuracy (%)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", default="runs/toy-video-clip", help="the toy video CLIP (`video toy-pretrain`)")
    parser.add_argument("--out", default="runs/video-cross-bench")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-clips", type=int, default=8)
    parser.add_argument("--val-every", type=int, default=25)
    parser.add_argument(
        "--unfreeze", default="image-last-1", help="what trains (the base-to-novel benchmark's best: the last block)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="training seeds")
    parser.add_argument(
        "--targets", type=int, nargs="+", default=[101, 102, 103], help="rendering seeds of the target splits"
    )
    parser.add_argument("--test", type=int, default=8, help="test clips per target class and split")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--replot", action="store_true", help="only redraw cross_dataset.png from --out's results.json")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads((Path(args.out) / "results.json").read_text())["table"], Path(args.out) / "cross_dataset.png")
        return
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    out = Path(args.out)
    claim_out(out)
    cache = str(out / "cache")
    source_dir, target_dirs = make_data(out, args.targets, args.test)
    source = load_video_dataset(None, source_dir)
    eval_sets = load_eval_sets(target_dirs)
    descriptions = target_dirs[0] / "descriptions.json"
    frozen = create_backbone("toy", args.pretrained, precision="fp32")
    runs = {
        "frame averaging (frozen)": [cross(frozen, eval_sets, "frame-mean", None, args.frames, cache)],
        "frozen + prompt-match (descriptions)": [
            cross(frozen, eval_sets, "prompt-match", descriptions, args.frames, cache)
        ],
    }
    speeds = {}
    for name in args.variants:
        spec = VARIANTS[name]
        for seed in args.seeds:
            t0 = time.perf_counter()
            run_dir = out / f"run-{name.strip('- ').replace(' ', '-')}-{seed}"
            tuned, speed, scorer = train_variant(args, source, spec, seed, run_dir, cache)
            result = cross(
                tuned, eval_sets, scorer, descriptions if spec["descriptions"] else None, args.frames, cache
            )  # as trained
            runs.setdefault(name, []).append(result)
            speeds.setdefault(name, []).append(speed)
            print(
                f"{name} seed {seed}: "
                + "  ".join(f"{Path(k).name} {100 * v['top1']:.1f}" for k, v in result.items())
                + f"  ({time.perf_counter() - t0:.0f} s, {speed} clips/s)",
                flush=True,
            )
    table = {name: table_row(r) for name, r in runs.items()}
    lines = [f"| model | top-1 % ({len(eval_sets)} target splits) | time-reversed pairs % |", "|---|---|---|"]
    for name, row in table.items():
        cell = lambda k: f"{100 * row[k]['mean']:.1f} ± {100 * row[k]['std']:.1f}"  # noqa: E731
        lines.append(f"| {name} | {cell('top1')} | {cell('pairs')} |")
    print("\n".join(lines))
    elapsed = round(time.perf_counter() - started, 1)
    print(
        f"{elapsed} s in all; chance: top-1 20.0, pairs 50.0; training clips/s: "
        + ", ".join(f"{k} {statistics.fmean(v):.1f}" for k, v in speeds.items())
    )
    atomic_write_json(
        out / "results.json",
        {"runs": runs, "table": table, "clips_per_s": speeds, "seconds": elapsed, "args": vars(args), "std": STD_NOTE},
    )
    plot(table, out / "cross_dataset.png")


if __name__ == "__main__":
    main()
