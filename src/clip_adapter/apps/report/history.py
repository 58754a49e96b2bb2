"""Training records (``result.json``'s ``history``, a ``log.csv``) as curves and compact tables.

A run trains one candidate per searched setting (α, lr, …) and records for each a
summary (selection accuracy, best epoch, …) and, for trained methods, per-epoch
records. The page shows them as figures plus small tables: per-epoch curves with a
line per candidate, the candidates against the searched hyper-parameter that varies,
one table row per candidate (its summary and final per-epoch values), and the chosen
candidate's per-epoch records folded away. A whole per-epoch list is never one table
cell: printed as a Python list it made a 24-image run's page 21,000 px tall.

The records' fields differ by method and version, so nothing is assumed beyond "lists
of records": only string and finite number fields are shown; the x axis is ``epoch``
(or ``step``) when the records have one, else the one searched hyper-parameter that
varies (α for CLIP-Adapter), else the record number. Fields naming an accuracy and
fields naming a loss get a panel each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from . import figures
from .fields import number, scalar, shown
from .html import esc, figure, note, table

X_KEYS = ("epoch", "step", "iteration")
MAX_ROWS = 80  # per-epoch rows of the (folded) table; longer histories are summarised by their curves
MAX_LINES = 12
MAX_CANDIDATES = 40  # rows of the candidate table
MAX_COLUMNS = 14  # of the candidate table, so it stays readable without scrolling sideways


@dataclass
class Candidate:
    """One trained setting: a display name, its summary fields and its per-epoch records (scalars only)."""

    name: str
    fields: dict[str, Any]
    epochs: list[dict[str, Any]]


def _numeric(value: Any) -> bool:
    return number(value)


def _panel(name: str) -> str | None:
    low = name.lower()
    if "acc" in low:
        return "accuracy"
    if "loss" in low:
        return "loss"
    return None


def _scalars(record: dict[str, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in record.items() if scalar(v)}


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
        group = " ".join(f"{k}={shown(record.get(k))}" for k in split_by if len({shown(r.get(k)) for r in records}) > 1)
        for name, value in record.items():
            panel = _panel(str(name))
            if panel and _numeric(value) and name not in grid_keys:
                label = f"{name} ({group})" if group else str(name)
                series.setdefault(panel, {}).setdefault(label, []).append((float(xv), float(value)))
    return _draw(series, x or "record")


def _draw(series: dict[str, dict[str, list[tuple[float, float]]]], xlabel: str) -> tuple[bytes | None, str]:
    for panel in list(series):
        if len(series[panel]) > MAX_LINES:
            series[panel] = dict(list(series[panel].items())[:MAX_LINES])
    if not series:
        return None, xlabel
    return figures.curves_png(series, xlabel), xlabel


def candidates_from_history(records: Sequence[dict[str, Any]], grid_keys: Sequence[str]) -> list[Candidate]:
    """``result.json``'s history: one candidate per record, its ``epochs`` list (if any) as per-epoch records."""
    out = []
    for n, record in enumerate(records, 1):
        epochs = record.get("epochs")
        per_epoch = [_scalars(e) for e in epochs if isinstance(e, dict)] if isinstance(epochs, list) else []
        summary = _scalars(record)
        name = " ".join(f"{k}={shown(summary[k])}" for k in grid_keys if k in summary)
        out.append(Candidate(name or f"#{n}", summary, per_epoch))
    return out


def candidates_from_log(rows: Sequence[dict[str, Any]]) -> list[Candidate]:
    """A ``log.csv``: its rows grouped by the ``candidate`` column (``alpha=0.2 lr=0.001``), in order of appearance."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        name = shown(row.get("candidate"))
        groups.setdefault(name, []).append({k: v for k, v in _scalars(row).items() if k != "candidate"})
    return [Candidate(name or "all rows", {}, epochs) for name, epochs in groups.items()]


def chosen_index(candidates: Sequence[Candidate], chosen: dict[str, Any], grid_keys: Sequence[str]) -> int | None:
    """The candidate the run kept: the one whose searched values are ``chosen``'s (the only one, if just one)."""
    keys = [k for k in grid_keys if k in chosen]
    for i, candidate in enumerate(candidates):
        tokens = set(candidate.name.split())
        named = [k for k in keys if k in candidate.fields or any(t.startswith(f"{k}=") for t in tokens)]
        if named and all(
            candidate.fields.get(k) == chosen[k] if k in candidate.fields else f"{k}={chosen[k]}" in tokens
            for k in named
        ):
            return i
    return 0 if len(candidates) == 1 else None


def _epoch_x(epochs: Sequence[dict[str, Any]]) -> str | None:
    return next((k for k in X_KEYS if epochs and all(_numeric(e.get(k)) for e in epochs)), None)


def epoch_curves(candidates: Sequence[Candidate], pick: int | None) -> tuple[bytes | None, str]:
    """Per-epoch accuracy and loss, a line per candidate (the chosen one first, so it is always drawn)."""
    order = sorted(range(len(candidates)), key=lambda i: i != pick)
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    xlabel = "record"
    for i in order:
        candidate = candidates[i]
        x = _epoch_x(candidate.epochs)
        xlabel = x or xlabel
        for n, record in enumerate(candidate.epochs):
            for name, value in record.items():
                panel = _panel(name)
                if panel and _numeric(value) and name not in X_KEYS:
                    label = f"{name} ({candidate.name})" if len(candidates) > 1 else name
                    series.setdefault(panel, {}).setdefault(label, []).append(
                        (float(record[x]) if x else n + 1.0, float(value))
                    )
    return _draw(series, xlabel)


def candidate_table(candidates: Sequence[Candidate], pick: int | None) -> str:
    """One row per candidate: summary fields (not those in its name), epochs recorded, final accuracy/loss values."""
    named = {t.split("=", 1)[0] for c in candidates for t in c.name.split() if "=" in t}
    keys: list[str] = []
    for c in candidates:
        keys += [k for k in c.fields if k not in keys and k not in named]
    metrics: list[str] = []
    for name in (k for c in candidates for e in c.epochs for k in e):
        if _panel(name) and name not in metrics and name not in keys:
            metrics.append(name)
    columns = [*keys, *(["epochs"] if any(c.epochs for c in candidates) else []), *(f"final {m}" for m in metrics)]
    visible = columns[:MAX_COLUMNS]
    values = [_row(c, metrics) for c in candidates[:MAX_CANDIDATES]]
    rows = [
        [c.name, "✓" if i == pick else "", *(shown(v.get(k)) for k in visible)]
        for i, (c, v) in enumerate(zip(candidates, values))
    ]
    numeric = [i + 2 for i, k in enumerate(visible) if all(v.get(k) is None or _numeric(v.get(k)) for v in values)]
    more, hidden = len(candidates) - MAX_CANDIDATES, columns[MAX_COLUMNS:]
    return (
        table(["candidate", "chosen", *visible], rows, numeric)
        + (note(f"{more} more candidates not shown (see the curves).") if more > 0 else "")
        + (
            note(f"{len(hidden)} more fields not shown: {', '.join(hidden[:8])}{', …' if len(hidden) > 8 else ''}.")
            if hidden
            else ""
        )
    )


def _row(candidate: Candidate, metrics: Sequence[str]) -> dict[str, Any]:
    """A candidate's cells by column: its summary, how many epochs it recorded, its last epoch's metrics."""
    last = candidate.epochs[-1] if candidate.epochs else {}
    return {**candidate.fields, "epochs": len(candidate.epochs) or None, **{f"final {m}": last.get(m) for m in metrics}}


def records_table(records: Sequence[dict[str, Any]]) -> str:
    """Every field of flat records as a table (first ``MAX_ROWS`` rows), numbers rounded for reading."""
    keys: list[str] = []
    for record in records:
        keys += [k for k in record if k not in keys]
    rows = [[shown(r.get(k)) for k in keys] for r in records[:MAX_ROWS]]
    numeric = [i for i, k in enumerate(keys) if all(_numeric(r.get(k)) for r in records if k in r)]
    more = note(f"{len(records) - MAX_ROWS} more records not shown.") if len(records) > MAX_ROWS else ""
    return table(keys, rows, numeric) + more


def history_section(records: Any, grid_keys: Sequence[str], source: str, chosen: dict[str, Any] | None = None) -> str:
    """HTML for ``result.json``'s history: curves and the compact tables; a note when there is nothing to show."""
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        return note(f"{source}: no records.")
    return render(candidates_from_history(records, grid_keys), grid_keys, chosen or {}, source)


def log_section(
    rows: Sequence[dict[str, Any]], grid_keys: Sequence[str], source: str, chosen: dict[str, Any] | None = None
) -> str:
    """HTML for a ``log.csv`` (per-epoch rows of every candidate)."""
    if not rows:
        return note(f"{source}: no records.")
    return render(candidates_from_log(rows), grid_keys, chosen or {}, source)


def render(candidates: list[Candidate], grid_keys: Sequence[str], chosen: dict[str, Any], source: str) -> str:
    """Curves, the candidate table, and the chosen candidate's per-epoch records (folded)."""
    pick = chosen_index(candidates, chosen, grid_keys)
    epochs = sum(len(c.epochs) for c in candidates)
    parts = [f"<h3>{esc(source)}: {len(candidates)} candidate(s), {epochs} per-epoch record(s)</h3>"]
    png, xlabel = epoch_curves(candidates, pick) if epochs else (None, "")
    if png:
        parts.append(
            figure(
                png,
                f"{source}: accuracy and loss against {xlabel}, one line per candidate",
                f"{source} per-epoch curves",
            )
        )
    summaries = [c.fields for c in candidates if c.fields]
    if len(summaries) > 1:
        png, xlabel = curves(summaries, grid_keys)
        if png:
            parts.append(
                figure(
                    png,
                    f"{source}: each candidate's recorded accuracy and loss against {xlabel}",
                    f"{source} candidates",
                )
            )
    parts.append(candidate_table(candidates, pick))
    if pick is not None and candidates[pick].epochs:
        chosen_epochs = candidates[pick].epochs
        parts.append(
            f"<details><summary>per-epoch records of the chosen candidate ({esc(candidates[pick].name)}, "
            f"{len(chosen_epochs)} records)</summary>{records_table(chosen_epochs)}</details>"
        )
    elif epochs:
        parts.append(
            note(
                "The chosen candidate is not recorded, so no per-epoch table is shown "
                "(the curves show every candidate)."
            )
        )
    return "".join(parts)
