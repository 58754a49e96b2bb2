"""``clip-adapter predict``: top-k classes for image files or folders, as CSV or JSON.

``--format json`` prints the prediction records of :func:`clip_adapter.inference.predict_images`, the
ones the API's ``predict`` returns and ``serve`` answers; CSV has one row per image and rank.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
import tempfile

from ..core.files import atomic_write_bytes, quoted
from ..core.outputs import claim_output_file
from ..data.images import find_images
from ..inference import check_reject, predict_images
from .artifact_args import add_artifact_backbone_options, load_artifact_and_backbone
from .common import cache_dir_from_args
from .parsing import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with an artifact", description=__doc__)
    p.add_argument("artifact", help="artifact directory written by `clip-adapter train`")
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--top-k", type=positive_int, default=5, help="classes per image (default: %(default)s)")
    p.add_argument("--format", default="csv", choices=("csv", "json"), help="output format (default: %(default)s)")
    p.add_argument("--out", help="write here instead of stdout (a new file; --overwrite replaces an existing one)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_artifact_backbone_options(p)
    p.add_argument("--cache-dir", default="", help="feature cache directory")
    p.add_argument(
        "--no-cache", action="store_true", help="do not keep these images' features (a temporary cache, removed after)"
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="encoder batch size")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out and list them on stderr")
    p.add_argument(
        "--reject",
        action="store_true",
        help="label images below the artifact's out-of-distribution threshold 'unknown' (needs `clip-adapter ood`)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.out:
        claim_output_file(args.out, overwrite=args.overwrite, inputs=[args.artifact, *args.images])
    cache_dir = cache_dir_from_args(args, [])
    clf, backbone = load_artifact_and_backbone(args.artifact, args)
    check_reject(clf, args.reject)
    paths = find_images(args.images)  # every path checked before any image is encoded, --skip-bad or not
    with (
        tempfile.TemporaryDirectory(prefix="clip-adapter-predict-")
        if args.no_cache
        else contextlib.nullcontext(cache_dir) as where
    ):
        records = predict_images(
            clf,
            backbone,
            paths,
            top_k=args.top_k,
            reject=args.reject,
            skip_bad=args.skip_bad,
            cache_dir=where,
            batch_size=args.batch_size,
        )
    text = render(records, args.format)
    if args.out:
        # File names that are not valid UTF-8 are written back as the bytes they are.
        atomic_write_bytes(args.out, text.encode("utf-8", "surrogateescape"))
    else:
        sys.stdout.write(text)
    for record in records:
        if "error" in record:
            print(f"skipped {quoted(record['path'])}: {record['error']}", file=sys.stderr)
    return 0


def render(records: list[dict], fmt: str) -> str:
    """``json``: the prediction records as they are (:mod:`clip_adapter.inference`); ``csv``: a row per image and rank.

    Example:
        >>> print(render([{"path": "a.png", "label": "cat", "score": 0.9, "top_k": [["cat", 0.9]]}], "csv"), end="")
        path,rank,class,probability
        a.png,1,cat,0.9
    """
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    return _csv([_row(record, rank) for record in records for rank in range(len(record["top_k"]))])


def _row(record: dict, rank: int) -> dict:
    """One (image, rank) row; the set and the OOD verdict, when the artifact has them, on every row of the image."""
    label, probability = record["top_k"][rank]
    row = {"path": record["path"], "rank": rank + 1, "class": label, "probability": probability}
    if "set" in record:
        row["set"] = ";".join(record["set"])
    if "unknown" in record:
        row.update(label=record["label"], unknown=record["unknown"], ood_score=record["ood_score"])
    return row


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    fields = ["path", "rank", "class", "probability"] + [
        k for k in ("set", "label", "unknown", "ood_score") if rows and k in rows[0]
    ]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
