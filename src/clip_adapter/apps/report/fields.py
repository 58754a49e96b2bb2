"""The fields of an artifact's JSON files, each checked before the page uses it.

A report is often made of files someone sent: any value of ``config.json`` or
``result.json`` may be of any JSON type. Every value the page reads goes through
:meth:`Fields.get` with a check of its type and range; a wrong one becomes
:data:`MALFORMED` (shown as "malformed" on the page and listed in one warning)
instead of an exception in the middle of a table or a figure. An absent or
``null`` field is simply unknown (the default).

Example:
    >>> problems = []
    >>> result = Fields({"test": {"accuracy": "high"}, "run": 5}, "result.json", problems)
    >>> result.get("test.accuracy", fraction), result.get("run.shots", count, "?"), problems
    (malformed, malformed, ['result.json test.accuracy', 'result.json run'])
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

MAX_COUNT = 10**12  # no image count, epoch or confusion cell is larger; beyond it a value is garbage
MAX_TEXT = 300  # characters of a recorded string shown in a cell
MAX_MAGNITUDE = 1e15  # beyond any loss, lr or count; near 1e308 matplotlib's tick arithmetic overflows
MAX_BINS = 1000  # reliability-diagram bins: the bench records 15; beyond this a record is garbage


class Malformed:
    """A field that is present but not what the page needs; it prints as "malformed"."""

    _instance: "Malformed | None" = None

    def __new__(cls) -> "Malformed":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __str__(self) -> str:
        return "malformed"

    __repr__ = __str__


MALFORMED = Malformed()
_MISSING = object()
Check = Callable[[Any], bool]


def number(value: Any) -> bool:
    """A finite int or float (not a bool) of a magnitude a record can have (and an axis can be scaled to)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and abs(value) <= MAX_MAGNITUDE
    except OverflowError:  # an int of hundreds of digits
        return False


def fraction(value: Any) -> bool:
    """A number in 0..1 (an accuracy)."""
    return number(value) and 0 <= value <= 1


def count(value: Any) -> bool:
    """A non-negative int of a plausible size."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def seconds(value: Any) -> bool:
    return number(value) and 0 <= value <= MAX_COUNT


def scalar(value: Any) -> bool:
    """A string or a finite number (bools too): something a cell can show as it is."""
    return isinstance(value, (str, bool)) or number(value)


def text(value: Any) -> bool:
    return isinstance(value, str)


def flag(value: Any) -> bool:
    """A JSON ``true`` or ``false``."""
    return isinstance(value, bool)


def positive(value: Any) -> bool:
    """A number above 0 (a temperature, a logit scale)."""
    return number(value) and value > 0


def nonnegative(value: Any) -> bool:
    """A number of at least 0 (a negative log-likelihood)."""
    return number(value) and value >= 0


def brier(value: Any) -> bool:
    """A multi-class Brier score: a number in 0..2."""
    return number(value) and 0 <= value <= 2


def counts(value: Any) -> bool:
    """A list of counts (calibration images per class)."""
    return isinstance(value, list) and all(count(n) for n in value)


def reliability(value: Any) -> bool:
    """A reliability diagram as ``calibration_report`` records it, consistent enough to draw.

    ``bin_edges``: ``n + 1`` non-decreasing numbers in 0..1; ``count``: ``n`` counts;
    ``accuracy`` and ``mean_confidence``: ``n`` fractions (``null`` for an empty bin);
    ``1 <= n <=`` :data:`MAX_BINS`.

    Example:
        >>> reliability(
        ...     {"bin_edges": [0, 0.5, 1], "count": [0, 2], "accuracy": [None, 0.5], "mean_confidence": [None, 0.7]}
        ... )
        True
        >>> reliability({"bin_edges": [0, 1], "count": [1, 2], "accuracy": [1, 1], "mean_confidence": [1, 1]})
        False
    """
    if not isinstance(value, dict):
        return False
    edges, sizes = value.get("bin_edges"), value.get("count")
    if not isinstance(sizes, list) or not 1 <= len(sizes) <= MAX_BINS or not all(count(n) for n in sizes):
        return False
    if not isinstance(edges, list) or len(edges) != len(sizes) + 1 or not all(fraction(e) for e in edges):
        return False
    if any(b < a for a, b in zip(edges, edges[1:])):
        return False
    per_bin = [value.get("accuracy"), value.get("mean_confidence")]
    return all(
        isinstance(v, list) and len(v) == len(sizes) and all(x is None or fraction(x) for x in v) for v in per_bin
    )


def mapping(value: Any) -> bool:
    return isinstance(value, dict)


def texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def scalar_map(value: Any) -> bool:
    """An object of scalars (chosen hyper-parameters, versions)."""
    return isinstance(value, dict) and all(scalar(v) for v in value.values())


def grid(value: Any) -> bool:
    """An object of lists of scalars (the searched hyper-parameters)."""
    return isinstance(value, dict) and all(isinstance(v, list) and all(scalar(x) for x in v) for v in value.values())


def fraction_map(value: Any) -> bool:
    """Per-class accuracies: an object of fractions (``null`` for a class without test images)."""
    return isinstance(value, dict) and all(v is None or fraction(v) for v in value.values())


def square_counts(size: int) -> Check:
    """A ``size`` × ``size`` matrix of counts (a confusion matrix over the artifact's classes)."""

    def check(value: Any) -> bool:
        return (
            isinstance(value, list)
            and len(value) == size
            and all(isinstance(row, list) and len(row) == size and all(count(n) for n in row) for row in value)
        )

    return check


def records(value: Any) -> bool:
    """A list of objects (training history)."""
    return isinstance(value, list) and all(isinstance(r, dict) for r in value)


class Fields:
    """Checked access to one JSON object; every malformed field is recorded once in ``problems``."""

    def __init__(self, data: Any, file: str, problems: list[str], prefix: str = "") -> None:
        self.data, self.file, self.problems, self.prefix = (
            data if isinstance(data, dict) else {},
            file,
            problems,
            prefix,
        )

    def has(self, dotted: str) -> bool:
        return self._lookup(dotted, record=False) not in (_MISSING, None)

    def get(self, dotted: str, check: Check, default: Any = None) -> Any:
        """The value at ``dotted`` if it passes ``check``; ``default`` if absent or null; else :data:`MALFORMED`."""
        value = self._lookup(dotted)
        if value is _MISSING or value is None:
            return default
        if value is MALFORMED:  # a parent was not an object: recorded as such
            return MALFORMED
        if not check(value):
            self._problem(dotted)
            return MALFORMED
        return value

    def sub(self, dotted: str) -> "Fields":
        """The object at ``dotted`` as Fields (empty, and recorded as malformed, when it is not an object)."""
        return Fields(self.get(dotted, mapping, {}), self.file, self.problems, self._name(dotted) + ".")

    def _lookup(self, dotted: str, record: bool = True) -> Any:
        node: Any = self.data
        parts = dotted.split(".")
        for i, key in enumerate(parts):
            if node is None:
                return _MISSING
            if not isinstance(node, dict):  # a parent of the wanted field is not an object
                if record:
                    self._problem(".".join(parts[:i]))
                return MALFORMED
            node = node.get(key, _MISSING if i == len(parts) - 1 else None)
        return node

    def _name(self, dotted: str) -> str:
        return f"{self.prefix}{dotted}"

    def _problem(self, dotted: str) -> None:
        where = f"{self.file} {self._name(dotted)}"
        if where not in self.problems:
            self.problems.append(where)


def shown(value: Any) -> str:
    """A recorded value as cell text: numbers rounded, long strings cut, lists and objects as short JSON.

    Example:
        >>> shown(0.12345678), shown(0.0), shown(None), shown([1, {"a": 2}]), shown(MALFORMED)
        ('0.1235', '0.0', '', '[1, {"a": 2}]', 'malformed')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = repr(value)  # a recorded 0.0 or 0.001 reads as written; a long float is rounded
        return short if len(short) <= 8 else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        try:
            value = json.dumps(value, ensure_ascii=False, allow_nan=True)
        except (ValueError, TypeError, RecursionError):
            return "malformed"
    text_ = str(value)
    return text_ if len(text_) <= MAX_TEXT else text_[: MAX_TEXT - 1] + "…"
