"""Problems found while reading data: raised at once when strict, collected when validating.

The dataset readers report every problem through one of these, so the strict
path (training stops at the first error) and ``clip-adapter validate`` (which
reports everything in one pass) share the same checks.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core.errors import DataError
from ..core.files import one_line
from ..core.files import quoted as show  # noqa: F401  (the data readers' name for it)
from ..core.progress import progress

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Issue:
    """One problem: a kind (for grouping), a severity, a one-line message, the file at fault."""

    kind: str
    severity: str
    message: str
    path: str | None = None


@dataclass
class Issues:
    """A collector. ``strict=True`` raises DataError for errors and ignores the rest.

    Example:
        >>> issues = Issues(strict=False)
        >>> issues.add("empty-class", "class folder x has no images")
        >>> [i.kind for i in issues.items]
        ['empty-class']
    """

    strict: bool = True
    items: list[Issue] = field(default_factory=list)

    def add(self, kind: str, message: str, path: object = None, severity: str = "error") -> None:
        message = one_line(message)
        if self.strict:
            if severity == "error":
                raise DataError(message)
            return
        self.items.append(Issue(kind, severity, message, None if path is None else str(path)))

    def count(self, severity: str) -> int:
        return sum(1 for item in self.items if item.severity == severity)


def check_files(
    paths: list[Path],
    check_one: Callable[[Path], tuple[Path, str | None, list[tuple[str, str, str]]]],
    issues: Issues,
    workers: int,
    desc: str,
    unit: str,
) -> dict[Path, str]:
    """Run ``check_one`` over ``paths`` in threads; record its findings in ``issues``; return the good files' hashes."""
    hashes: dict[Path, str] = {}
    bar = progress(total=len(paths), desc=desc, unit=unit)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for path, digest, found in pool.map(check_one, paths):
            for kind, severity, message in found:
                issues.add(kind, message, path, severity)
            if digest:
                hashes[path] = digest
            bar.update(1)
    bar.close()
    return hashes
