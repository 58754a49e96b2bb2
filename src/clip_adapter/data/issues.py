"""Problems found while reading data: raised at once when strict, collected when validating.

The dataset readers report every problem through one of these, so the strict
path (training stops at the first error) and ``clip-adapter validate`` (which
reports everything in one pass) share the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DataError
from ..io import one_line
from ..io import quoted as show  # noqa: F401  (the data readers' name for it)

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

