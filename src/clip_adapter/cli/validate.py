"""``clip-adapter validate``: report every problem of a dataset in one pass.

Exit status: 0 when nothing stops training (warnings and notes may be
printed), 1 when errors were found, 2 when the dataset cannot be read at all.
With ``--strict`` warnings count as errors (exit 1). So
``clip-adapter validate --data D && clip-adapter train --data D …`` goes on
for a healthy small folder and stops for a broken one.
"""

from __future__ import annotations

import argparse

from ..validate import format_report, validate_dataset
from .common import add_data_options, print_json
from .parsing import count_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a dataset for problems", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p)
    p.add_argument("--shots", type=count_int, default=16, help="warn for classes with fewer training images (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="exit 1 for warnings too")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    report = validate_dataset(args.data, args.split_file, args.shots, classnames=args.classnames)
    if args.json:
        print_json(report.to_dict())
    else:
        print(format_report(report))
    failed = report.errors or (args.strict and report.warnings)
    return 1 if failed else 0
