"""Self-contained HTML reports of a training run (artifact) or a benchmark output.

``clip-adapter report DIR`` writes one HTML page that needs nothing else to be viewed:
figures are embedded PNGs, the style is inline, there is no script, and a
Content-Security-Policy forbids the page any network access.

Example:
    >>> from clip_adapter.apps.report import write_report
    >>> write_report("runs/photos", "photos.html")  # doctest: +SKIP
    PosixPath('photos.html')
"""

from __future__ import annotations

import os
from pathlib import Path

from ...core.errors import ArtifactError
from ...core.files import atomic_write_bytes, quoted
from .artifact_page import artifact_report
from .bench_page import bench_report, is_bench_dir
from .paths import check_output
from .run_files import is_artifact_dir

REPORT_NAME = "report.html"


def report_kind(directory: str | os.PathLike) -> str:
    """``"artifact"`` or ``"bench"``; anything else is a one-line ArtifactError.

    Example:
        >>> report_kind("/no/such/run")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ArtifactError: no such folder: /no/such/run
    """
    path = Path(directory)
    if not path.is_dir():
        raise ArtifactError(f"no such folder: {quoted(path)}")
    if is_artifact_dir(path):
        return "artifact"
    if is_bench_dir(path):
        return "bench"
    raise ArtifactError(
        f"{quoted(path)} is neither a clip-adapter artifact (config.json) nor a bench output "
        "(runs/, summary_*.csv, table_*.md)"
    )


def default_output(directory: str | os.PathLike) -> Path:
    """Where the page goes without ``--out``.

    Inside the folder where its kind of output may hold a ``report.html`` (a bench
    output); otherwise beside it as ``<folder>.report.html``, climbing out of any
    enclosing clip-adapter output (an artifact inside a demo folder gives
    ``<demo>-artifact.report.html`` next to the demo folder): an extra file inside
    one of our outputs would stop ``--overwrite`` or a resume from recognising it.
    """
    from ...core.outputs import kind_pattern, known_kinds, marker_kind

    path = Path(directory).resolve()
    kind = "artifact" if is_artifact_dir(path) else marker_kind(path) or "bench"
    # A marker of a kind nobody registers (a newer version's, a benchmark script's) says nothing of report.html.
    pattern = kind_pattern(kind) if kind in known_kinds() else None
    if pattern is not None and pattern.match(REPORT_NAME):
        return path / REPORT_NAME
    names, folder = [path.name], path.parent
    while folder != folder.parent and (marker_kind(folder) is not None or is_artifact_dir(folder)):
        names.insert(0, folder.name)
        folder = folder.parent
    return folder / f"{'-'.join(names)}.{REPORT_NAME}"


def build_report(
    directory: str | os.PathLike,
    data: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    worst: int = 12,
    device: str = "auto",
) -> str:
    """The page's HTML for an artifact or bench folder (``data``/``cache_dir``/``worst`` apply to artifacts)."""
    if report_kind(directory) == "artifact":
        return artifact_report(directory, data, cache_dir, worst, device)
    return bench_report(directory)


def write_report(
    directory: str | os.PathLike, out: str | os.PathLike | None = None, overwrite: bool = False, **options
) -> Path:
    """Write the page atomically to ``out`` (default :func:`default_output`); an existing file needs ``overwrite``.

    An ``out`` that is one of the reported folder's files or lies inside ``data`` is refused
    before anything is read or evaluated (see :mod:`.paths`).
    """
    from ...core.outputs import claim_output_file

    report_kind(directory)  # a wrong folder is reported before the output path
    target = Path(out) if out else default_output(directory)
    check_output(target, directory, options.get("data"))
    target = claim_output_file(target, overwrite=overwrite)
    atomic_write_bytes(target, build_report(directory, **options).encode("utf-8"))
    return target


__all__ = ["build_report", "default_output", "report_kind", "write_report"]
