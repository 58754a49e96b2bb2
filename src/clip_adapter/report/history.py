"""Training records (``result.json``'s ``history``, a ``log.csv``) as curves and a table.

The records' fields differ by method and version, so nothing is assumed beyond
"a list of flat records": the x axis is ``epoch`` (or ``step``) when the records have
one, else the one searched hyper-parameter that varies (α for CLIP-Adapter), else the
record number. Fields naming an accuracy and fields naming a loss get a panel each; the
searched hyper-parameters that do not form the x axis split the lines.
"""

from __future__ import annotations

from typing import Any, Sequence

from . import figures
from .html import esc, table

X_KEYS = ("epoch", "step", "iteration")
MAX_ROWS = 80  # table rows shown; longer histories are summarised by their curves
MAX_LINES = 12


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _panel(name: str) -> str | None:
    low = name.lower()
    if "acc" in low:
        return "accuracy"
    if "loss" in low:
        return "loss"
    return None


def x_axis(records: Sequence[dict[str, Any]], grid_keys: Sequence[str]) -> str | None:
    """The field to plot against (``None``: the record number).

    Example:
        >>> x_axis([{"epoch": 1, "loss": 2.0}], ["alpha"]), x_axis([{"alpha": 0.2}, {"alpha": 0.4}], ["alpha", "lr"])
        ('epoch', 'alpha')
    """
    for key in X_KEYS:
        if all(_numeric(r.get(key)) for r in records):
            return key
    varying = [k for k in grid_keys if all(_numeric(r.get(k)) for r in records) and len({r[k] for r in records}) > 1]
    return varying[0] if len(varying) == 1 else None


def curves(records: Sequence[dict[str, Any]], grid_keys: Sequence[str]) -> tuple[bytes | None, str]:
    """A PNG of the records' accuracy and loss fields (``None`` when they have none) and the x label."""
    x = x_axis(records, grid_keys)
    split_by = [k for k in grid_keys if k != x and any(k in r for r in records)]
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for n, record in enumerate(records):
        xv = record[x] if x else n + 1
        group = ", ".join(f"{k}={record.get(k)}" for k in split_by if len({str(r.get(k)) for r in records}) > 1)
        for name, value in record.items():
            panel = _panel(name)
            if panel and _numeric(value) and name not in grid_keys:
                label = f"{name} ({group})" if group else name
                series.setdefault(panel, {}).setdefault(label, []).append((float(xv), float(value)))
    for panel in list(series):
        if len(series[panel]) > MAX_LINES:
            series[panel] = dict(list(series[panel].items())[:MAX_LINES])
    if not series:
        return None, x or "record"
    return figures.curves_png(series, x or "record"), x or "record"


def records_table(records: Sequence[dict[str, Any]]) -> str:
    """Every field of the records as a table (first ``MAX_ROWS`` rows), numbers rounded for reading."""
    keys: list[str] = []
    for record in records:
        keys += [k for k in record if k not in keys]
    rows = [[_cell(r.get(k)) for k in keys] for r in records[:MAX_ROWS]]
    numeric = [i for i, k in enumerate(keys) if all(_numeric(r.get(k)) for r in records if k in r)]
    more = f'<p class="note">{len(records) - MAX_ROWS} more records not shown.</p>' if len(records) > MAX_ROWS else ""
    return table(keys, rows, numeric) + more


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return ""
    return str(value)


def history_section(records: Any, grid_keys: Sequence[str], source: str) -> str:
    """HTML for one list of records: curves (when plottable) and the table; a note when empty."""
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        return f'<p class="note">{esc(source)}: no records.</p>'
    png, xlabel = curves(records, grid_keys)
    from .html import figure

    fig = figure(png, f"{source}: accuracy and loss against {xlabel}", f"{source} curves") if png else ""
    return f"<h3>{esc(source)} ({len(records)} records)</h3>{fig}{records_table(records)}"
