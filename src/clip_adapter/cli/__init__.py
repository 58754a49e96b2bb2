"""The ``clip-adapter`` command: thin subcommands over the library.

Every failure ends in one line on stderr and a non-zero exit status:

====  ==========================================================================
 2    a problem with an input: a file, folder, option, dataset or artifact
 3    the operating system refused (disk full, permission, file too large, …)
 4    out of memory
 5    an internal error (a bug: please report it, with ``--debug`` output)
130   interrupted (finished work is kept; re-run to resume)
====  ==========================================================================

``--debug`` (or ``CLIP_ADAPTER_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import codecs
import importlib
import logging
import os
import sys
import traceback
import warnings
from typing import NoReturn

from .._version import __version__
from ..core.errors import ClipAdapterError
from ..core.files import one_line
from ..core.threads import apply_thread_setting

# The order of `clip-adapter --help`; any other module here with an ``add_parser`` joins after them.
SUBCOMMANDS = ("train", "evaluate", "predict", "extract", "methods_cmd", "demo", "toy", "bench", "validate", "cache")
EXIT_INPUT, EXIT_OS, EXIT_MEMORY, EXIT_BUG, EXIT_INTERRUPTED = 2, 3, 4, 5, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one ``error:`` line (the usage is a ``--help`` away).

    Descriptions come from module docstrings; their reST literal quotes
    (````x````) are shown as plain backquotes in ``--help``.
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("description"):
            kwargs["description"] = kwargs["description"].replace("``", "`")
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"error: {self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="clip-adapter",
        description="Few-shot adaptation of a frozen CLIP: CLIP-Adapter and the methods it is compared against.",
    )
    parser.add_argument("--version", action="version", version=f"clip-adapter {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of a failure (also: CLIP_ADAPTER_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in subcommand_modules():
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def subcommand_modules() -> list[str]:
    """The modules of this package that define a subcommand: the known order, then the rest sorted."""
    import pkgutil

    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    helpers = {"common", "parsing", "artifact_args"}
    rest = sorted(found - set(SUBCOMMANDS) - helpers)
    return [
        *SUBCOMMANDS,
        *(name for name in rest if hasattr(importlib.import_module(f"{__name__}.{name}"), "add_parser")),
    ]


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {one_line(str(message))}", file=sys.stderr)


def _file_name_bytes(error: UnicodeError) -> tuple[str | bytes, int]:
    """Encoding error handler: undecodable file-name bytes go out as they came in, anything else escaped."""
    bad = error.object[error.start : error.end]  # type: ignore[attr-defined]
    if all(0xDC80 <= ord(c) <= 0xDCFF for c in bad):
        return bytes(ord(c) - 0xDC00 for c in bad), error.end  # type: ignore[attr-defined]
    return codecs.backslashreplace_errors(error)  # type: ignore[arg-type]


codecs.register_error("clip_adapter_names", _file_name_bytes)


def _tolerant_streams() -> None:
    # A file name that is not valid UTF-8 (or a terminal that is not UTF-8)
    # must not turn a finished run into a UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="clip_adapter_names")


def _describe(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, ClipAdapterError):
        return str(exc), exc.exit_code
    if isinstance(exc, MemoryError):
        return "out of memory (try a smaller --batch-size, fewer --views, or a smaller dataset)", EXIT_MEMORY
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc.__class__.__name__}{where}", EXIT_OS
    detail = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
    return f"internal error ({detail}); re-run with --debug for the traceback and please report it", EXIT_BUG


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    _tolerant_streams()
    warnings.showwarning = _one_line_warnings
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad option (already printed as one line)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_INPUT
    debug = args.debug or os.environ.get("CLIP_ADAPTER_DEBUG", "") not in ("", "0")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_INPUT
    try:
        apply_thread_setting()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(
            getattr(args, "interrupted_message", "interrupted; finished work is kept (re-run to resume)"),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # every failure becomes one line (the traceback behind --debug)
        if debug:
            traceback.print_exc()
        message, code = _describe(exc)
        print(f"error: {one_line(message)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
