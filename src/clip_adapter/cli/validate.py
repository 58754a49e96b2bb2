"""``clip-adapter validate``: report every problem of a dataset in one pass.

Exit status: 0 when nothing stops training (warnings and notes may be
printed), 1 when errors were found, 2 when the dataset cannot be read at all.
With ``--strict`` warnings count as errors (exit 1). So
``clip-adapter validate --data D && clip-adapter train --data D …`` goes on
for a healthy small folder and stops for a broken one.

Class names are checked against ``--backbone``'s tokenizer (default: ``train``'s,
the toy CLIP) and the prompts ``--template``/``--method``/``--allow-unknown-words``
give, exactly as ``train`` checks them: names it cannot read and classes whose
prompts come out identical are errors where ``train`` would refuse them.

``--videos DIR`` checks a video dataset instead: a folder per class
(``DIR/<class>/<video>``) or a folder of split CSVs (``train.csv``/``val.csv``/
``test.csv`` with ``relative/path,label`` rows and ``classmap.json``); every
frame of every video is decoded.
"""

from __future__ import annotations

import argparse

from ..apps.validate import format_report, validate_dataset, validate_videos
from ..core.errors import ConfigError
from ..methods import list_methods
from ..pipeline import RunConfig
from .common import add_backbone_options, add_data_options, backbone_from_args, print_json
from .parsing import count_int, positive_int
from .train import templates_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check a dataset for problems",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_options(p, required=False)
    videos = p.add_argument_group("videos (instead of --data)")
    videos.add_argument(
        "--videos", default=None, metavar="DIR", help="a video dataset: DIR/<class>/<video>, or a folder of split CSVs"
    )
    videos.add_argument(
        "--classmap", default=None, metavar="FILE", help="class map JSON of split CSVs (default: DIR/classmap.json)"
    )
    videos.add_argument(
        "--video-root", default=None, metavar="DIR", help="what CSV paths are relative to (default: DIR)"
    )
    videos.add_argument(
        "--frames",
        type=positive_int,
        default=8,
        help="note videos shorter than this many frames (default: %(default)s)",
    )
    add_backbone_options(p)
    prompts = p.add_argument_group("prompts (checked as `train` checks them)")
    prompts.add_argument(
        "--method", default=RunConfig().method, help=f"one of: {', '.join(list_methods())} (default: %(default)s)"
    )
    prompts.add_argument("--template", action="append", default=[], help="prompt template with {} (as for train)")
    prompts.add_argument(
        "--allow-unknown-words",
        action="store_true",
        help="report unreadable class names as warnings, as train then does",
    )
    p.add_argument(
        "--shots", type=count_int, default=16, help="warn for classes with fewer training images (default: %(default)s)"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 for warnings too")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if (args.data is None) == (args.videos is None):
        raise ConfigError(
            "validate: give --data (images) or --videos (a video dataset)"
            if args.data is None
            else "validate: give --data or --videos, not both"
        )
    if args.videos is not None:
        report = validate_videos(args.videos, args.video_root, args.classmap, args.frames)
    else:
        run = RunConfig(
            method=args.method,
            shots=args.shots,
            templates=templates_from_args(args),
            allow_unknown_words=args.allow_unknown_words,
        )
        report = validate_dataset(
            args.data,
            args.split_file,
            args.shots,
            classnames=args.classnames,
            backbone=lambda: backbone_from_args(args),
            run=run,
        )
    if args.json:
        print_json(report.to_dict())
    else:
        print(format_report(report, unit="videos" if args.videos is not None else "images"))
    failed = report.errors or (args.strict and report.warnings)
    return 1 if failed else 0
