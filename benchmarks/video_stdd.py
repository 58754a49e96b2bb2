"""STDD-style video fine-tuning on the toy world in motion: base-to-novel, ablations, and training clips/s.

Base-to-novel protocol (as Open-VCLIP/FROSTER/STDD): train on the base actions
(16 clips per class, seeds 1–3), test on the base actions among themselves and
on the novel actions (never seen in training) among themselves; report base,
novel and their harmonic mean, plus accuracy within the time-reversed pairs
(a clip against its own reversal, 50 % = blind to time). Rows:

* frame averaging: the frozen toy video CLIP, ``frame-mean`` over templates;
* frozen + STDD's prompt-level matching over the descriptions (still frame-wise);
* STDD-style: space-time attention + FROSTER distillation + description prompts;
* ablations: without space-time attention, without description prompts
  (templates), without distillation.

Trained models are scored as they were trained (the official STDD score: ``prompt-match`` over the
descriptions, else ``frame-mean``).
The protocol runs through :func:`clip_adapter.video.bench.run_base_to_novel` (``clip-adapter video
base-to-novel``), which writes OUT/base-to-novel/{results.json,table.md,base_to_novel.png}.
Then training throughput: clips/s of one STDD-style step (space-time attention,
frozen teacher, distillation) against a plain per-frame open_clip loop
(per-frame encoding, mean, cross-entropy) on the same random-weight open_clip
architecture, and the toy ViT's clips/s from the runs above. Both timed steps
put a cross-entropy on the mean frame embedding, and the STDD-style step
distils the mean feature; ``video train`` scores and distils every frame
instead, a few small matrix products and B·T projector passes beside the
encoder passes that the comparison times.

Usage: python benchmarks/video_stdd.py --pretrained runs/toy-video-clip [--out DIR] [--steps 150] [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.core.files import atomic_write_json  # noqa: E402
from clip_adapter.finetune.trainable import TrainableClip  # noqa: E402
from clip_adapter.video import load_video_dataset  # noqa: E402
from clip_adapter.video.bench import BaseToNovelConfig, run_base_to_novel, trained_loader  # noqa: E402
from clip_adapter.video.stdd import SpaceTimeConfig, install_space_time  # noqa: E402
from clip_adapter.video.toyclips import CLASS_SETS, write_toy_videos  # noqa: E402
from clip_adapter.video.train import video_features  # noqa: E402

# The script's variant names (kept for --variants) -> the library's.
LEGACY = {
    "STDD-style": "stdd",
    "- space-time attention": "no-space-time",
    "- description prompts": "no-descriptions",
    "- distillation": "no-distill",
}
FROZEN = ("frozen-frame-mean", "frozen-prompt-match")


def throughput(arch: str, frames: int, batch_clips: int, steps: int) -> dict:
    """Training clips/s: a plain per-frame open_clip loop against the STDD-style step, same model and batch."""
    out = {}
    for kind in ("plain per-frame loop", "STDD-style step"):
        torch.manual_seed(0)
        view = TrainableClip(create_backbone(arch, "none", precision="fp32"), unfreeze="image", precision="fp32")
        size = view.preprocess.image_size
        classes = F.normalize(torch.randn(10, view.backbone.embed_dim), dim=-1)
        teacher = copy.deepcopy(view.model.visual).requires_grad_(False) if kind != "plain per-frame loop" else None
        st = install_space_time(view.model.visual, SpaceTimeConfig()) if teacher is not None else None
        proj = torch.nn.Linear(classes.shape[1], classes.shape[1])
        opt = torch.optim.AdamW(
            [p for p in view.model.visual.parameters() if p.requires_grad] + list(proj.parameters()), lr=1e-5
        )
        times = []
        for step in range(steps + 1):  # the first step warms up and is not timed
            pixels = torch.randn(batch_clips * frames, 3, size, size)
            labels = torch.randint(10, (batch_clips,))
            started = time.perf_counter()
            if st is None:
                feats = video_features(view.encode_images(pixels), frames)
                loss = F.cross_entropy(100 * feats @ classes.T, labels)
            else:
                st.randomize = True
                with st.clips(frames):
                    feats = video_features(view.encode_images(pixels), frames)
                with torch.no_grad():
                    target = video_features(teacher(pixels), frames)
                loss = (
                    F.cross_entropy(100 * feats @ classes.T, labels)
                    + 2 * (1 - F.cosine_similarity(feats + 0.1 * proj(feats), target)).mean()
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step:
                times.append(time.perf_counter() - started)
        out[kind] = round(batch_clips / statistics.mean(times), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, help="the toy video CLIP checkpoint folder")
    parser.add_argument("--out", default="runs/video-stdd-bench")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--shots", type=int, default=16, help="training clips per base class (protocol: 16)")
    parser.add_argument(
        "--val-every", type=int, default=25, help="steps between validations (the best validated step is kept)"
    )
    parser.add_argument("--unfreeze", default="image", help="what trains: image, image-last-N (default: %(default)s)")
    parser.add_argument(
        "--channel-fold", type=int, default=32, help="D // fold channels shifted in time (official: 32)"
    )
    parser.add_argument("--batch-clips", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(LEGACY),
        help="trained rows: the old names (STDD-style, "
        "- space-time attention, ...) or the library's (stdd, no-space-time, no-descriptions, no-distill)",
    )
    parser.add_argument(
        "--arch",
        default="ViT-B-16",
        help="open_clip architecture for the clips/s comparison, a patch grid "
        "divisible by 2 as STDD's windows need (ViT-B-16: 14x14; ViT-B-32's 7x7 is refused) ('' skips it)",
    )
    parser.add_argument("--speed-clips", type=int, default=2, help="clips per timed step (default: %(default)s)")
    parser.add_argument(
        "--speed-steps", type=int, default=1, help="timed steps after one warm-up (default: %(default)s)"
    )
    parser.add_argument("--throughput-only", action="store_true", help="only the clips/s comparison")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--classes",
        default="actions",
        choices=CLASS_SETS,
        help="toy class set: novel actions, or novel shape-action combinations (default: %(default)s)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.throughput_only:
        print(json.dumps(throughput(args.arch, args.frames, args.speed_clips, args.speed_steps), indent=1))
        return
    cache = str(out / "cache")
    suffix = "" if args.classes == "actions" else f"-{args.classes}"  # the actions set keeps its old file names
    data = out / f"toy-videos{suffix}"
    if not data.exists():
        write_toy_videos(data, train=16, val=4, test=8, frames=16, size=64, seed=0, classes=args.classes)
    dataset = load_video_dataset(None, data)
    variants = (
        *FROZEN,
        *(LEGACY.get(v, v) for v in args.variants),
    )  # the protocol itself lives in clip_adapter.video.bench
    cfg = BaseToNovelConfig(
        variants=variants,
        seeds=tuple(args.seeds),
        shots=args.shots,
        steps=args.steps,
        lr=args.lr,
        frames=args.frames,
        batch_clips=args.batch_clips,
        val_every=args.val_every,
        unfreeze=args.unfreeze,
        channel_fold=args.channel_fold,
    )
    protocol_dir = out / f"base-to-novel{suffix}"
    bench = run_base_to_novel(
        dataset,
        cfg,
        protocol_dir,
        lambda: create_backbone("toy", args.pretrained, precision="fp32"),
        trained_loader("toy"),
        cache_dir=cache,
        overwrite=True,
        log=lambda m: print(m, flush=True),
    )
    print(bench["markdown"])
    speed = {"toy ViT, STDD-style training (clips/s)": bench["train_clips_per_s"]}
    results = {
        "base_to_novel": str(protocol_dir / "results.json"),
        "table": bench["table"],
        "throughput": speed,
        "args": vars(args),
    }
    summary = out / f"results{suffix}.json"
    atomic_write_json(summary, results)  # before the slow part
    if args.arch:
        speed[f"open_clip {args.arch}, random weights, {args.frames} frames x {args.speed_clips} clips"] = throughput(
            args.arch, args.frames, args.speed_clips, args.speed_steps
        )
        atomic_write_json(summary, results)
    print(json.dumps(speed, indent=1))


if __name__ == "__main__":
    main()
