"""``clip-adapter validate``: report every problem of a dataset in one pass. Exit 0 clean, 1 problems found."""

from __future__ import annotations

import argparse

from ..validate import format_report, validate_dataset
from .common import add_data_options, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a dataset for problems", description=__doc__)
    add_data_options(p)
    p.add_argument("--shots", type=int, default=16, help="warn for classes with fewer training images (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    report = validate_dataset(args.data, args.split_file, args.shots)
    if args.json:
        print_json(report.to_dict())
    else:
        print(format_report(report))
    return 0 if report.clean else 1
