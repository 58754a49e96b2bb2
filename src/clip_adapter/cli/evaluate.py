"""``clip-adapter eval``: accuracy, per-class accuracy and confusion matrix of an artifact on a split.

``--split all`` evaluates every image of the folder (a separate held-out folder, say); the
default ``test`` is the test part of the dataset's train/val/test split. The summary, the
per-class accuracies and the confusion matrix go to stdout (``--json``: the full report,
its confusion matrix labelled by class). The report is :func:`clip_adapter.api.evaluate_artifact`'s, the
one ``AdaptedCLIP.evaluate`` returns, plus the artifact, split, method and class names.
"""

from __future__ import annotations

import argparse
import sys

from ..api import evaluate_artifact
from ..core.files import atomic_write_json
from ..core.files import to_json as json_text
from ..core.outputs import claim_output_file
from .artifact_args import add_artifact_backbone_options, load_artifact_and_backbone
from .common import add_data_options, cache_dir_from_args
from .parsing import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate an artifact on a dataset split", description=__doc__)
    p.add_argument("artifact", help="artifact directory written by `clip-adapter train`")
    add_data_options(p)
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test", "all"),
        help="split to evaluate; all: every image of the dataset (default: %(default)s)",
    )
    add_artifact_backbone_options(p)
    p.add_argument("--cache-dir", default="", help="feature cache directory")
    p.add_argument("--batch-size", type=positive_int, default=64, help="encoder batch size")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out and list them")
    p.add_argument("--out", help="write the full metrics JSON here (a new file; --overwrite replaces an existing one)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print the full metrics JSON to stdout")
    p.add_argument(
        "--ood-data",
        default=None,
        metavar="DIR",
        help="images of none of the classes (any folder layout): AUROC and FPR at 95%% TPR of the artifact's "
        "OOD score (MCM without `clip-adapter ood`)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.out:
        claim_output_file(
            args.out,
            overwrite=args.overwrite,
            inputs=[args.artifact, args.data, args.split_file, args.classnames, args.ood_data],
        )
    cache_dir = cache_dir_from_args(args, [args.data, args.split_file])
    clf, backbone = load_artifact_and_backbone(args.artifact, args)
    report = evaluate_artifact(
        clf,
        backbone,
        args.data,
        args.split,
        split_file=args.split_file,
        classnames=args.classnames,
        skip_bad=args.skip_bad,
        ood_data=args.ood_data,
        cache_dir=cache_dir,
        batch_size=args.batch_size,
    )
    report.update(
        {"artifact": str(args.artifact), "split": args.split, "method": clf.method, "classnames": list(clf.classnames)}
    )
    report["confusion_matrix"] = {
        "rows": "true class",
        "columns": "predicted class",
        "labels": list(clf.classnames),
        "counts": report["confusion_matrix"],
    }
    if report["absent_classes"]:
        print(absent_note(report), file=sys.stderr)
    if args.out:
        atomic_write_json(args.out, report)
    sys.stdout.write(json_text(report) if args.json else format_report(report))
    return 0


def absent_note(report: dict) -> str:
    """Which of the artifact's classes the evaluated images do not cover (they still compete in every prediction)."""
    absent, total = report["absent_classes"], len(report["classnames"])
    shown = ", ".join(repr(n) for n in absent[:10]) + (f", … ({len(absent) - 10} more)" if len(absent) > 10 else "")
    images = "images" if report["split"] == "all" else f"{report['split']} images"
    return (
        f"note: {len(absent)} of the artifact's {total} classes have no {images} here ({shown}); "
        f"per-class accuracy covers the {total - len(absent)} present, predictions still range over all {total}"
    )


def format_report(report: dict) -> str:
    """The summary line, per-class accuracy and the confusion matrix as plain text."""
    lines = [
        f"{report['method']} on {report['split']} ({report['num_images']} images): "
        f"accuracy {100 * report['accuracy']:.2f}%, "
        f"mean per-class {100 * report['mean_per_class_accuracy']:.2f}%",
        "",
        "per-class accuracy:",
    ]
    width = max(len(name) for name in report["classnames"])
    for name, acc in report["per_class_accuracy"].items():
        lines.append(f"  {name:<{width}}  {'n/a' if acc is None else f'{100 * acc:6.2f}%'}")
    matrix = report["confusion_matrix"]
    lines += ["", "confusion matrix (rows: true class, columns: predicted, in class order):"]
    lines += [
        f"  {name:<{width}}  " + " ".join(f"{n:4d}" for n in row)
        for name, row in zip(matrix["labels"], matrix["counts"])
    ]
    return "\n".join(lines + trust_lines(report)) + "\n"


def trust_lines(report: dict) -> list[str]:
    """Calibration (and, when the artifact has them, conformal sets and OOD figures) as text."""
    cal = report.get("calibration")
    lines = (
        [
            "",
            f"calibration (15-bin top-label ECE): ECE {100 * cal['ece']:.2f}%, NLL {cal['nll']:.3f}, "
            f"Brier {cal['brier']:.3f}, AURC {100 * cal['aurc']:.2f}%, "
            f"mean confidence {100 * cal['mean_confidence']:.2f}%",
        ]
        if cal
        else []
    )
    if report.get("uncalibrated"):
        raw = report["uncalibrated"]
        lines.append(f"  before the artifact's calibration: ECE {100 * raw['ece']:.2f}%, NLL {raw['nll']:.3f}")
    if report.get("conformal"):
        c = report["conformal"]
        lines += [
            f"conformal sets ({c['score']}{', class-conditional' if c['class_conditional'] else ''}, "
            f"α = {c['alpha']:g}, {c['n_calibration']} calibration images): "
            f"coverage {100 * c['coverage']:.2f}% (target ≥ {100 * c['target_coverage']:.0f}%), "
            f"mean set size {c['mean_set_size']:.2f}, "
            f"class-conditional coverage gap {100 * c['class_coverage_gap_mean']:.2f} points "
            f"(max {100 * c['class_coverage_gap_max']:.2f})",
            "  set sizes: " + ", ".join(f"{size}: {n}" for size, n in enumerate(c["set_size_histogram"]) if n),
        ]
    if report.get("ood"):
        o = report["ood"]
        lines.append(
            f"out of distribution ({o['score']}; {o['num_in_distribution']} in, {o['num_out_of_distribution']} out): "
            f"AUROC {100 * o['auroc']:.2f}%, FPR at 95% TPR {100 * o['fpr_at_95_tpr']:.2f}%"
        )
        if "threshold" in o:
            lines.append(
                f"  at the artifact's threshold: {100 * o['accepted_in_distribution']:.2f}% of in-distribution and "
                f"{100 * o['accepted_out_of_distribution']:.2f}% of out-of-distribution images accepted"
            )
    return lines
