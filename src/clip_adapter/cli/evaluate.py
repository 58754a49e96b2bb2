"""``clip-adapter eval``: accuracy, per-class accuracy and confusion matrix of an artifact on a split.

``--split all`` evaluates every image of the folder (a separate held-out folder, say); the
default ``test`` is the test part of the dataset's train/val/test split. The summary, the
per-class accuracies and the confusion matrix go to stdout (``--json``: the full report,
its confusion matrix labelled by class).
"""

from __future__ import annotations

import argparse
import sys

import torch

from ..errors import DataError
from ..features import default_cache_dir, extract_images, image_store
from ..io import atomic_write_json
from ..metrics import classification_report
from .artifact_args import add_artifact_backbone_options, load_artifact_and_backbone
from ..outputs import claim_output_file
from ..data.dataset import SPLITS
from ..io import to_json as json_text
from .common import add_data_options, cache_dir_from_args, dataset_from_args
from .parsing import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate an artifact on a dataset split", description=__doc__)
    p.add_argument("artifact", help="artifact directory written by `clip-adapter train`")
    add_data_options(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                   help="split to evaluate; all: every image of the dataset (default: %(default)s)")
    add_artifact_backbone_options(p)
    p.add_argument("--cache-dir", default="", help="feature cache directory")
    p.add_argument("--batch-size", type=positive_int, default=64, help="encoder batch size")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out and list them")
    p.add_argument("--out", help="write the full metrics JSON here (a new file; --overwrite replaces an existing one)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print the full metrics JSON to stdout")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.out:
        claim_output_file(args.out, overwrite=args.overwrite)
    cache_dir = cache_dir_from_args(args, [args.data, args.split_file])
    clf, backbone = load_artifact_and_backbone(args.artifact, args)
    dataset = dataset_from_args(args)
    if dataset.classnames != clf.classnames:
        diff = next((i for i, (a, b) in enumerate(zip(dataset.classnames, clf.classnames)) if a != b), min(len(dataset.classnames), len(clf.classnames)))
        got = dataset.classnames[diff] if diff < len(dataset.classnames) else "(none)"
        want = clf.classnames[diff] if diff < len(clf.classnames) else "(none)"
        raise DataError(f"dataset {args.data} has class {got!r} at label {diff} where the artifact has {want!r}")
    samples = [s for split in SPLITS for s in dataset.split(split)] if args.split == "all" else dataset.split(args.split)
    if not samples:
        raise DataError(f"dataset {args.data} has no {args.split} images")
    store = image_store(backbone, cache_dir or default_cache_dir())
    feats, kept, stats = extract_images(backbone, [s.path for s in samples], store, None, 0, args.batch_size, args.skip_bad, args.split)
    labels = torch.tensor([samples[i].label for i in kept])
    report = classification_report(clf.logits(feats), labels, clf.classnames)
    report.update({"artifact": str(args.artifact), "split": args.split, "method": clf.method, "skipped": stats.to_dict()["skipped"],
                   "classnames": list(clf.classnames)})
    report["confusion_matrix"] = {"rows": "true class", "columns": "predicted class", "labels": list(clf.classnames),
                                  "counts": report["confusion_matrix"]}
    if args.out:
        atomic_write_json(args.out, report)
    sys.stdout.write(json_text(report) if args.json else format_report(report))
    return 0


def format_report(report: dict) -> str:
    """The summary line, per-class accuracy and the confusion matrix as plain text."""
    lines = [f"{report['method']} on {report['split']} ({report['num_images']} images): accuracy {100 * report['accuracy']:.2f}%, "
             f"mean per-class {100 * report['mean_per_class_accuracy']:.2f}%", "", "per-class accuracy:"]
    width = max(len(name) for name in report["classnames"])
    for name, acc in report["per_class_accuracy"].items():
        lines.append(f"  {name:<{width}}  {'n/a' if acc is None else f'{100 * acc:6.2f}%'}")
    matrix = report["confusion_matrix"]
    lines += ["", "confusion matrix (rows: true class, columns: predicted, in class order):"]
    lines += [f"  {name:<{width}}  " + " ".join(f"{n:4d}" for n in row) for name, row in zip(matrix["labels"], matrix["counts"])]
    return "\n".join(lines) + "\n"
