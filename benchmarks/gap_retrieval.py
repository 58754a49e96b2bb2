"""Modality gap and modality inversion on the toy world: intra-modal vs inverted (inter-modal) retrieval, by mAP.

For each toy task × rendering, the test images are written as real files (``write_task_dataset``),
read back and encoded through the feature cache exactly as ``clip-adapter gap`` does. Relevance is
*same class*: same shape for ``shape``, same colour for ``color``, same shape **and** colour for
``shape-color``. The first ``--queries`` images of each class are the queries, the rest the gallery.

* image→image: plain cosine of image embeddings (intra-modal);
* OTI text→image: each query inverted into a pseudo-word prompt ("a photo of {v*}", the official
  settings: 150 AdamW steps, lr 2e-2, weight decay 0.01), then compared with the gallery images;
* random pseudo-token→image: the same prompt with an untrained token (the floor).

The mirror image (``--ovi``, on the 8-class tasks): text→text retrieval among toy captions of the
same scenes (a caption's class is its scene's) against OVI image→text, each query caption inverted
into an optimised 64×64 input image (pixel OVI: 300 AdamW steps, lr 0.05).

Usage:
    python benchmarks/gap_retrieval.py                 # the tables below (about 5 minutes on 2 busy cores)
    python benchmarks/gap_retrieval.py --quick         # one task, fewer images and steps (a smoke test)

Prints one Markdown table per setting and a summary table, whichever way the comparison comes out.
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

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.core.threads import torch_threads  # noqa: E402
from clip_adapter.data import load_dataset  # noqa: E402
from clip_adapter.gap import InversionConfig, gap_statistics  # noqa: E402
from clip_adapter.gap.analyse import dataset_embeddings, inverted_retrieval, query_gallery  # noqa: E402
from clip_adapter.gap.retrieval import text_retrieval_comparison  # noqa: E402
from clip_adapter.toyworld import get_task, write_task_dataset  # noqa: E402
from clip_adapter.toyworld.tasks import SPLITS, task_scene  # noqa: E402
from clip_adapter.toyworld.world import caption  # noqa: E402

SETTINGS = [
    ("shape", "photo"),
    ("color", "photo"),
    ("shape-color", "photo"),
    ("shape", "sketch"),
    ("color", "night"),
    ("shape-color", "sketch"),
]
OVI_SETTINGS = [("shape", "photo"), ("color", "photo")]


def captions(task_name: str, per_class: int, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """Toy captions of the test scenes (the same scenes ``write_task_dataset`` draws), with their class labels."""
    task = get_task(task_name)
    texts, labels = [], []
    for label in range(len(task.classes)):
        for i in range(per_class):
            rng = np.random.default_rng([seed, SPLITS.index("test"), label, i])
            texts.append(caption(task_scene(task, label, rng), np.random.default_rng([seed, 99, label, i])))
            labels.append(label)
    return texts, torch.tensor(labels)


def oti_setting(
    backbone, work: Path, task: str, domain: str, per_class: int, queries: int, config: InversionConfig
) -> dict:
    data = load_dataset(write_task_dataset(task, domain, work / f"{task}-{domain}", 1, 1, per_class))
    emb = dataset_embeddings(backbone, data, "test", work / "cache")
    gap = gap_statistics(emb.image, emb.text, emb.image_labels, emb.text_labels)["gap"]["centroid_distance"]
    start = time.perf_counter()
    out = inverted_retrieval(backbone, emb, queries, config)
    out.update(gap=gap, seconds=round(time.perf_counter() - start, 1))
    return out


def ovi_setting(backbone, task: str, per_class: int, queries: int, config: InversionConfig) -> dict:
    texts, labels = captions(task, per_class)
    feats = backbone.encode_texts(texts)
    q, g = query_gallery(labels, queries)
    start = time.perf_counter()
    out = text_retrieval_comparison(backbone, feats[q], labels[q], feats[g], labels[g], config)
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def print_rows(title: str, out: dict) -> None:
    print(
        f"\n{title} ({out['n_queries']} queries, {out['n_gallery']} gallery, relevant = same class;"
        f" inverted-to-target cosine {out['inversion']['mean_cosine']:.3f}; {out['seconds']} s)"
    )
    print("| mode | mAP | P@1 |\n|---|---|---|")
    for row in out["rows"]:
        print(f"| {row['mode']} | {100 * row['mAP']:.2f} | {100 * row['P@1']:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one task, 8 images per class, 40 steps")
    parser.add_argument("--per-class", type=int, default=12, help="test images per class (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=2, help="queries per class (default: %(default)s)")
    parser.add_argument("--no-ovi", action="store_true", help="skip the text→text / OVI comparison")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: fastest for the toy CLIP on a busy CPU)"
    )
    args = parser.parse_args()
    settings, per_class = (SETTINGS[:1], 8) if args.quick else (SETTINGS, args.per_class)
    oti = InversionConfig(steps=40 if args.quick else 150)
    ovi = InversionConfig(steps=60 if args.quick else 300, lr=0.05)
    backbone = create_backbone("toy", precision="fp32")
    summary = []
    with tempfile.TemporaryDirectory() as tmp, torch_threads(args.threads):
        for task, domain in settings:
            out = oti_setting(backbone, Path(tmp), task, domain, per_class, args.queries, oti)
            print_rows(f"**{task} / {domain}** (modality gap {out['gap']:.3f})", out)
            rows = {r["mode"]: 100 * r["mAP"] for r in out["rows"]}
            summary.append(
                (
                    f"{task} / {domain}",
                    out["gap"],
                    rows["image→image"],
                    rows["OTI text→image"],
                    rows["random pseudo-token→image"],
                )
            )
        ovi_rows = []
        for task, _ in [] if args.no_ovi else OVI_SETTINGS[: 1 if args.quick else None]:
            out = ovi_setting(backbone, task, per_class, args.queries, ovi)
            print_rows(f"**{task} captions: text→text vs OVI**", out)
            rows = {r["mode"]: 100 * r["mAP"] for r in out["rows"]}
            ovi_rows.append((task, rows["text→text"], rows["OVI image→text"]))
    print("\n**Summary: mAP (%) of image retrieval, intra-modal vs OTI-inverted query**\n")
    print(
        "| task / rendering | modality gap | image→image | OTI text→image | random pseudo-token |\n"
        "|---|---|---|---|---|"
    )
    for name, gap, plain, inverted, floor in summary:
        print(f"| {name} | {gap:.3f} | {plain:.2f} | {inverted:.2f} | {floor:.2f} |")
    if ovi_rows:
        print("\n| captions of task | text→text | OVI image→text |\n|---|---|---|")
        for task, plain, inverted in ovi_rows:
            print(f"| {task} | {plain:.2f} | {inverted:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
