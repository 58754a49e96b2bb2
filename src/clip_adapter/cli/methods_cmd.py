"""``clip-adapter methods``: list the methods and their options."""

from __future__ import annotations

import argparse
import dataclasses

from ..methods import get_method, list_methods


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list methods and their options", description=__doc__)
    p.add_argument("name", nargs="?", help="show the options of one method")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else list_methods()
    for name in names:
        method = get_method(name)
        doc = (method.__doc__ or "").strip().splitlines()[0]
        print(f"{name}: {doc}")
        if args.name:
            presets = ", ".join(method.presets) or "none"
            print(f"  presets: {presets}")
            for field in dataclasses.fields(method.Config):
                default = getattr(method.Config(), field.name)
                print(f"  {field.name} = {default!r}  — {field.metadata.get('help', '')}")
    return 0
