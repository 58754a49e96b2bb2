"""The ``clip-adapter`` command: thin subcommands over the library.

User errors (bad paths, options, data, artifacts) print one line and exit
with status 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from .. import __version__
from ..errors import ClipAdapterError
from ..threads import apply_thread_setting

SUBCOMMANDS = ("train", "evaluate", "predict", "extract", "methods_cmd", "demo", "toy", "bench", "validate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-adapter",
        description="Few-shot adaptation of a frozen CLIP: CLIP-Adapter and the methods it is compared against.",
    )
    parser.add_argument("--version", action="version", version=f"clip-adapter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    warnings.showwarning = _one_line_warnings
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        apply_thread_setting()
        return int(args.func(args) or 0)
    except ClipAdapterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished work is kept (re-run to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
