"""``clip-adapter methods``: list the methods and their options."""

from __future__ import annotations

import argparse
import dataclasses

from ..methods import get_method, list_methods


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list methods and their options", description=__doc__)
    p.add_argument("name", nargs="?", help="show the options of one method")
    p.set_defaults(func=main)


def summary(method: type) -> str:
    """The first paragraph of the method's module docstring (what it is), on one line."""
    import sys

    doc = (sys.modules[method.__module__].__doc__ or method.__doc__ or "").strip().replace("``", "`")
    return " ".join(doc.split("\n\n")[0].split())


def main(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else list_methods()
    for name in names:
        method = get_method(name)
        print(f"{name}: {summary(method) if args.name else (method.__doc__ or '').strip().splitlines()[0]}")
        if not args.name:
            continue
        print(
            f"  runs the text encoder while training: {'yes' if method.needs_backbone else 'no (cached features only)'}"
        )
        for preset, values in method.presets.items():
            shown = ", ".join(f"{k}={v}" for k, v in values.items()) or "the defaults below"
            print(f"  preset {preset}: {shown}")
        print("  options (--set KEY=VALUE):")
        for field in dataclasses.fields(method.Config):
            default = getattr(method.Config(), field.name)
            print(f"    {field.name} = {default!r}  — {field.metadata.get('help', '')}")
    return 0
