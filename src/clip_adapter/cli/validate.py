"""``clip-adapter validate``: report every problem of a dataset in one pass.

Exit status: 0 when nothing stops training (warnings and notes may be
printed), 1 when errors were found, 2 when the dataset cannot be read at all.
With ``--strict`` warnings count as errors (exit 1). So
``clip-adapter validate --data D && clip-adapter train --data D …`` goes on
for a healthy small folder and stops for a broken one.

``--videos DIR`` checks a video dataset instead: a folder per class
(``DIR/<class>/<video>``) or a folder of split CSVs (``train.csv``/``val.csv``/
``test.csv`` with ``relative/path,label`` rows and ``classmap.json``); every
frame of every video is decoded.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..validate import format_report, validate_dataset, validate_videos
from .common import add_data_options, print_json
from .parsing import count_int, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a dataset for problems", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, required=False)
    videos = p.add_argument_group("videos (instead of --data)")
    videos.add_argument("--videos", default=None, metavar="DIR", help="a video dataset: DIR/<class>/<video>, or a folder of split CSVs")
    videos.add_argument("--classmap", default=None, metavar="FILE", help="class map JSON of split CSVs (default: DIR/classmap.json)")
    videos.add_argument("--video-root", default=None, metavar="DIR", help="what CSV paths are relative to (default: DIR)")
    videos.add_argument("--frames", type=positive_int, default=8, help="note videos shorter than this many frames (default: %(default)s)")
    p.add_argument("--shots", type=count_int, default=16, help="warn for classes with fewer training images (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="exit 1 for warnings too")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if (args.data is None) == (args.videos is None):
        raise ConfigError("validate: give --data (images) or --videos (a video dataset)" if args.data is None else
                          "validate: give --data or --videos, not both")
    if args.videos is not None:
        report = validate_videos(args.videos, args.video_root, args.classmap, args.frames)
    else:
        report = validate_dataset(args.data, args.split_file, args.shots, classnames=args.classnames)
    if args.json:
        print_json(report.to_dict())
    else:
        print(format_report(report, unit="videos" if args.videos is not None else "images"))
    failed = report.errors or (args.strict and report.warnings)
    return 1 if failed else 0
