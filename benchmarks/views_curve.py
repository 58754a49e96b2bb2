"""How many cached views an official (Dassl) preset needs to reach what fresh crops reach.

Usage:
    python benchmarks/views_curve.py                 # CLIP-Adapter official, the toy world's shifted 8-way tasks
    VIEWS_CURVE_METHODS=clip-adapter,coop python benchmarks/views_curve.py

Dassl (CoOp, CoCoOp, CLIP-Adapter's official code) draws a fresh random resized crop at scale (0.08, 1)
of every training image at every epoch; this toolkit encodes ``V`` crops per image once and each epoch
samples one of them per image at random. For each task and seed the script encodes ``EPOCHS`` views per
training image at scale (0.08, 1) (view ``i`` is the same whatever the view count, so ``V`` views are the
first ``V`` of them), trains the method's ``official`` preset on the first ``V`` views for
``V`` in ``VIEWS`` with the default random view order, and once with ``view_order="distinct"`` on all
``EPOCHS`` views: every epoch a crop the image never showed before, i.e. exactly Dassl's fresh crops.
It prints the mean test accuracy (%) over tasks × seeds per ``V`` and the fresh-crop figure.

Settings: 16 shots, seeds 1–3, the official preset as it is (200 epochs at 16 shots, so the fresh-crop
reference encodes 200 views per image), on two 8-way toy tasks in held-out renderings (colour/night,
shape/sketch). Encoding is the cost (the toy encoder ran at 25–55 views/s on the shared 2-core AVX2
machine), so each task's training pool is exactly 16 images per class: every seed trains on the same
128 images (seeds differ in initialisation, batch order and views drawn), and 25,600 views per task are
encoded once. Measured there (load 7–8): 1,825 s in all, 1,750 of them encoding the first seed's views
of each task; a second run reads the cache and takes about a minute and a half. CoOp is left out by
default: one 50-epoch official run took 99 s there (the text encoder runs at each step), 63 runs at
200 epochs would take hours. ``VIEWS_CURVE_METHODS=clip-adapter,coop``,
``VIEWS_CURVE_EPOCHS`` (fewer epochs, and fresh-crop views), ``VIEWS_CURVE_SEEDS`` and
``VIEWS_CURVE_TASKS`` (``task/domain,…``) change the grid.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")

import torch  # noqa: E402

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.data import load_dataset  # noqa: E402
from clip_adapter.methods import FewShotData, get_method  # noqa: E402
from clip_adapter.pipeline import FeatureConfig, RunConfig, few_shot_data, prepare  # noqa: E402
from clip_adapter.toyworld import write_task_dataset  # noqa: E402

WORK = Path(os.environ.get("VIEWS_CURVE_DIR", "views-curve"))
PER_CLASS = (16, 8, 40)  # train pool (= the shots: every seed the same images), val, test images per class
TASKS = tuple(os.environ.get("VIEWS_CURVE_TASKS", "color/night,shape/sketch").split(","))
SEEDS = tuple(int(x) for x in os.environ.get("VIEWS_CURVE_SEEDS", "1,2,3").split(","))
METHODS = tuple(os.environ.get("VIEWS_CURVE_METHODS", "clip-adapter").split(","))
EPOCHS = int(os.environ.get("VIEWS_CURVE_EPOCHS", "200"))
VIEWS = (1, 2, 5, 10, 20, 50)
SHOTS = 16
DASSL_CROP = (0.08, 1.0)


def dataset(name: str):
    task, domain = name.split("/")
    root = WORK / "data" / f"{task}-{domain}-{PER_CLASS[0]}"
    if not (root / "split.json").is_file():
        write_task_dataset(task, domain, root, *PER_CLASS, seed=0)
    return load_dataset(root, name=name)


def accuracy(method: str, data: FewShotData, test: tuple[torch.Tensor, torch.Tensor], **overrides) -> float:
    """Test accuracy (%) of ``method``'s official preset trained on ``data``."""
    cls = get_method(method)
    head = (
        cls(
            cls.make_config("official", epochs=EPOCHS, epochs_by_shots=(), **overrides)
            if method in ("coop", "cocoop")
            else cls.make_config("official", epochs=EPOCHS, **overrides)
        )
        .fit(data)
        .head
    )
    return 100.0 * (head.predict_logits(test[0]).argmax(1) == test[1]).float().mean().item()


def with_views(data: FewShotData, views: int) -> FewShotData:
    """``data`` restricted to its first ``views`` cached views per training image."""
    return dataclasses.replace(data, train=data.train[:, :views].contiguous())


def run_cell(backbone, method: str, name: str, seed: int) -> dict[str, float]:
    run = RunConfig(method=method, shots=SHOTS, seed=seed)
    features = FeatureConfig(views=max(EPOCHS, *VIEWS), crop_scale=DASSL_CROP, cache_dir=str(WORK / "cache"))
    prepared = prepare(backbone, dataset(name), run, features)
    feats = prepared.features
    data = few_shot_data(feats, backbone, prepared.dataset.classnames, prepared.templates, run)
    test = (feats.test, feats.test_labels)
    zero_shot = get_method("zero-shot")().fit(data).head
    row = {"zero-shot": 100.0 * (zero_shot.predict_logits(test[0]).argmax(1) == test[1]).float().mean().item()}
    row.update({f"V={v}": accuracy(method, with_views(data, v), test) for v in VIEWS})
    row["fresh"] = accuracy(method, with_views(data, EPOCHS), test, view_order="distinct")
    return row


def main() -> int:
    torch.manual_seed(0)
    backbone = create_backbone("toy")
    start = time.perf_counter()
    columns = ["zero-shot"] + [f"V={v}" for v in VIEWS] + ["fresh"]
    print(
        f"official presets, {EPOCHS} epochs, {SHOTS} shots, crop scale {DASSL_CROP}, seeds {SEEDS}, "
        f"tasks {', '.join(TASKS)}"
    )
    print("mean test accuracy (%) over tasks × seeds; fresh = a new crop per image per epoch (distinct views)\n")
    print("| method | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for method in METHODS:
        rows = []
        for name in TASKS:
            for seed in SEEDS:
                t0 = time.perf_counter()
                rows.append(run_cell(backbone, method, name, seed))
                print(
                    f"  [{method} {name} seed {seed}: {time.perf_counter() - t0:.0f} s] "
                    + " ".join(f"{k} {v:.1f}" for k, v in rows[-1].items()),
                    file=sys.stderr,
                    flush=True,
                )
        mean = {c: statistics.fmean(r[c] for r in rows) for c in columns}
        print(f"| {method} | " + " | ".join(f"{mean[c]:.2f}" for c in columns) + " |", flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
