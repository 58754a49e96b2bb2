"""``clip-adapter report``: one self-contained HTML page for a training run or a bench output.

For an artifact (``clip-adapter train --out DIR``): configuration and protocol, test
accuracy against zero-shot, per-class accuracy against zero-shot (which classes the
adapter helped or hurt), the confusion matrix, the worst-classified test images, the
training history and, for CLIP-Adapter, the chosen α/β and how far adapted features
moved from CLIP's. Test images are read only from ``--data`` (its test split; an image
that resolves outside it is skipped with a warning), never from paths the artifact
records, so a received artifact cannot make the page embed other files; without
``--data`` the page shows the recorded results and says what re-evaluation would add.
For a bench output (``clip-adapter bench --out`` or ``demo --out``): the tables per
protocol, the plots, the transfer tables and the chosen ratios. The page needs no
network to be viewed (images embedded, no script). ``--out`` may not be one of the
reported folder's files nor lie inside ``--data``.
"""

from __future__ import annotations

import argparse
import sys

from .parsing import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a self-contained HTML report of a run or bench output", description=__doc__
    )
    p.add_argument("directory", help="artifact directory (clip-adapter train) or bench/demo output folder")
    p.add_argument(
        "--out", help="HTML file to write (default: report.html in a bench folder, else <DIR>.report.html beside it)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--data", help="the run's dataset: the only place test images are read from (re-evaluation, worst images)"
    )
    p.add_argument(
        "--cache-dir",
        default="",
        help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter; never a folder the artifact names)",
    )
    p.add_argument(
        "--worst", type=positive_int, default=12, help="worst-classified test images shown (default: %(default)s)"
    )
    p.add_argument("--device", default="auto", help="device to re-evaluate the artifact on: auto, cpu, cuda ...")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..apps.report import write_report

    path = write_report(
        args.directory,
        args.out,
        overwrite=args.overwrite,
        data=args.data,
        cache_dir=args.cache_dir or None,
        worst=args.worst,
        device=args.device,
    )
    print(f"report written to {path}", file=sys.stderr)
    return 0
