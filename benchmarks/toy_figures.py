"""Figures of the toy CLIP: zero-shot in-domain and under shift, linear probe and a CLIP-Adapter check.

Writes every task as a real image folder + CoOp split (``write_task_dataset``),
reads the files back with the library's preprocessing (resize the shortest side,
centre crop, normalise), and prints one table.

Usage:
    python benchmarks/toy_figures.py                       # the shipped checkpoint
    python benchmarks/toy_figures.py --checkpoint runs/toy-pretrain --json figures.json

Targets (issue): in-domain zero-shot ≥ 95 % on shape and shape-color; sketch
zero-shot on shape ≥ 30 points below in-domain; a 16-shot method beating
zero-shot by ≥ 15 points on at least two shifted tasks.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clip_adapter.io import atomic_write_json, read_json
from clip_adapter.toyworld import DOMAINS, ToyClipBackbone, write_task_dataset
from clip_adapter.toyworld.evaluate import class_embeddings, few_shot_subset, linear_probe_accuracy

SHOTS = 16
SEEDS = (1, 2, 3)
PER_CLASS = {"shape": (32, 8, 50), "color": (32, 8, 50), "shape-color": (24, 4, 10)}  # train pool, val, test
ROWS = [(task, domain) for task in PER_CLASS for domain in DOMAINS]
ALPHAS = (0.2, 0.4, 0.6, 0.8)  # CLIP-Adapter residual ratios, selected on validation
ADAPTER_EPOCHS, ADAPTER_LR, ADAPTER_REDUCTION = 200, 1e-3, 4


def preprocess_file(path: Path, bb: ToyClipBackbone) -> torch.Tensor:
    """What the library's feature extractor does: shortest side → size, centre crop, normalise."""
    from torchvision import transforms as T

    p = bb.preprocess
    modes = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR, "nearest": T.InterpolationMode.NEAREST}
    pipeline = T.Compose([T.Resize(p.image_size, modes[p.interpolation]), T.CenterCrop(p.image_size), T.ToTensor(), T.Normalize(p.mean, p.std)])
    with Image.open(path) as image:
        return pipeline(image.convert("RGB"))


def split_features(root: Path, bb: ToyClipBackbone) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """L2-normalised features and labels of each split listed in ``root/split.json``."""
    out = {}
    for split, entries in read_json(root / "split.json", "split file").items():
        pixels = torch.stack([preprocess_file(root / "images" / rel, bb) for rel, _, _ in entries])
        feats = torch.cat([bb.encode_images(pixels[i : i + 256]) for i in range(0, len(pixels), 256)])
        out[split] = (F.normalize(feats, dim=-1), np.array([label for _, label, _ in entries]))
    return out


def clip_adapter_accuracy(train, val, test, text: torch.Tensor, scale: float, seed: int) -> float:
    """A minimal CLIP-Adapter: bottleneck MLP on image features, trained at α = 0.5; α for
    inference is then picked on val. A quick check of the figures, not the library's method."""
    torch.manual_seed(seed)
    dim = text.shape[1]
    adapter = torch.nn.Sequential(
        torch.nn.Linear(dim, dim // ADAPTER_REDUCTION, bias=False), torch.nn.ReLU(),
        torch.nn.Linear(dim // ADAPTER_REDUCTION, dim, bias=False), torch.nn.ReLU(),
    )
    opt = torch.optim.AdamW(adapter.parameters(), lr=ADAPTER_LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, ADAPTER_EPOCHS)
    logits = lambda x, a: scale * F.normalize(a * adapter(x) + (1 - a) * x, dim=-1) @ text.T  # noqa: E731
    x, y, train_alpha = train[0], torch.as_tensor(train[1]), 0.5
    with torch.enable_grad():
        for _ in range(ADAPTER_EPOCHS):
            loss = F.cross_entropy(logits(x, train_alpha), y)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    with torch.no_grad():
        acc = lambda split, a: float(100 * np.mean(logits(split[0], a).argmax(1).numpy() == split[1]))  # noqa: E731
        alpha = max(ALPHAS, key=lambda a: acc(val, a))
        return acc(test, alpha)


def evaluate_row(bb: ToyClipBackbone, task: str, domain: str, work: Path) -> dict[str, float]:
    root = write_task_dataset(task, domain, work / f"{task}-{domain}", *PER_CLASS[task], seed=0)
    feats = split_features(root, bb)
    text = class_embeddings(bb, task)
    test_x, test_y = feats["test"]
    row = {"zero_shot": float(100 * np.mean((test_x @ text.T).argmax(1).numpy() == test_y))}
    probes, adapters = [], []
    for seed in SEEDS:
        idx = few_shot_subset(feats["train"][1], SHOTS, seed)
        train = (feats["train"][0][idx], feats["train"][1][idx])
        probes.append(linear_probe_accuracy(train, feats["val"], feats["test"]))
        adapters.append(clip_adapter_accuracy(train, feats["val"], feats["test"], text, bb.logit_scale, seed))
    row["linear_probe"], row["clip_adapter"] = float(np.mean(probes)), float(np.mean(adapters))
    return row


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="shipped", help="shipped, a toy_clip.safetensors file or its directory")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    bb = ToyClipBackbone(args.checkpoint, precision=args.precision)
    start, results = time.perf_counter(), {}
    print(f"backbone {bb.id} precision {bb.precision}\n")
    print(f"{'task':<12} {'domain':<8} {'zero-shot':>9} {f'LP@{SHOTS}':>7} {f'adapter@{SHOTS}':>11} {'gain':>6}")
    with tempfile.TemporaryDirectory() as work:
        for task, domain in ROWS:
            row = results[f"{task}/{domain}"] = evaluate_row(bb, task, domain, Path(work))
            gain = row["clip_adapter"] - row["zero_shot"]
            print(f"{task:<12} {domain:<8} {row['zero_shot']:9.1f} {row['linear_probe']:7.1f} {row['clip_adapter']:11.1f} {gain:+6.1f}", flush=True)
    print(f"\n(LP and adapter: mean of seeds {SEEDS}; {time.perf_counter() - start:.0f} s)")
    _print_targets(results)
    if args.json:
        atomic_write_json(args.json, {"backbone": bb.id, "precision": bb.precision, "results": results})
    return results


def _print_targets(r: dict[str, dict[str, float]]) -> None:
    drop = r["shape/photo"]["zero_shot"] - r["shape/sketch"]["zero_shot"]
    wins = [k for k, v in r.items() if not k.endswith("/photo") and v["clip_adapter"] - v["zero_shot"] >= 15]
    checks = [
        (f"in-domain zero-shot shape {r['shape/photo']['zero_shot']:.1f} >= 95", r["shape/photo"]["zero_shot"] >= 95),
        (f"in-domain zero-shot shape-color {r['shape-color/photo']['zero_shot']:.1f} >= 95", r["shape-color/photo"]["zero_shot"] >= 95),
        (f"sketch drop on shape {drop:.1f} >= 30 points", drop >= 30),
        (f"shifted tasks where the adapter gains >= 15 points: {len(wins)} >= 2 ({', '.join(wins)})", len(wins) >= 2),
    ]
    print("\ntargets:")
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {text}")


if __name__ == "__main__":
    main()
