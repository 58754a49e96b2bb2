"""Where the page may be written: never over, or into, what the report reads.

``report`` reads the artifact or bench folder it describes and the dataset of
``--data``. An ``--out`` that is one of the folder's files (``config.json``,
``runs/…/x.json``) would replace the record with HTML, and one inside the dataset
would add a file that later runs read as data; both are refused with one line
before any work. A new file inside the reported folder is allowed (a bench folder
holds its ``report.html``), and so is replacing this tool's own earlier page
there (with ``--overwrite``), recognised by its ``generator`` tag.
"""

from __future__ import annotations

import os
from pathlib import Path

from .html import GENERATOR

PAGE_HEAD_BYTES = 2048  # the generator tag is in the page's first few hundred bytes


def is_report_page(path: Path) -> bool:
    """True for a regular file that is a page this command wrote (not a link to one: that could be anything)."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(PAGE_HEAD_BYTES)
    except OSError:
        return False
    return head.startswith(b"<!DOCTYPE html>") and (
        f'content="{GENERATOR}"'.encode() in head
        or b"<title>clip-adapter run report" in head
        or b"<title>clip-adapter benchmark report" in head
    )  # pages written before the tag


def report_inputs(directory: str | os.PathLike, data: str | os.PathLike | None) -> list[Path]:
    """What the report reads: every entry of the reported folder (but an earlier page) and the dataset."""
    folder = Path(directory)
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        entries = []  # an unreadable folder is reported by its reader
    inputs = [entry for entry in entries if not is_report_page(entry)]
    if data is not None:
        inputs.append(Path(data))
        if Path(data).is_file():  # a split JSON: its images lie beside it (``images/`` or the folder itself)
            inputs.append(Path(data).parent)
    return inputs


def check_output(target: str | os.PathLike, directory: str | os.PathLike, data: str | os.PathLike | None) -> None:
    """Refuse (a one-line OutputError) an ``--out`` that is, or is inside, something the report reads.

    Example:
        >>> import tempfile, pathlib
        >>> run = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (run / "config.json").write_text("{}")
        >>> try:
        ...     check_output(run / "config.json", run, None)
        ... except Exception as exc:
        ...     print(str(exc).endswith("write outputs elsewhere"))
        True
    """
    from ...core.outputs import check_not_in_inputs

    check_not_in_inputs(Path(target), report_inputs(directory, data), "--out")
