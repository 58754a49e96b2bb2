"""Tables for the two transfer protocols: domain generalisation and base-to-new.

Domain generalisation: one row per method (and shot count), one column for the source
and one per target, plus the targets' average — the papers' layout. Base-to-new: base,
new and harmonic mean per dataset and averaged over datasets; a method that cannot
classify unseen classes shows "n/a".
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from ..core.files import atomic_write_bytes
from .aggregate import PROTOCOL_TITLES, write_csv


def _load(paths: Iterable[Path], setting: str) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        try:
            result = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        transfer = result.get("transfer", {})
        if transfer.get("setting") == setting:
            rows.append(
                {
                    "result": result,
                    "transfer": transfer,
                    "method": result["bench"]["label"],
                    "shots": result["run"]["shots"],
                    "seed": result["run"]["seed"],
                }
            )
    return rows


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present and len(present) == len(values) else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def dg_rows(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Per (method, shots): mean over seeds of the source accuracy, each target's and their average.

    Zero-shot comes first, from the zero-shot numbers every run records (it needs no shots).
    """
    results = _load(paths, "domain-generalization")
    if not results:
        return []
    targets = sorted(results[0]["transfer"]["targets"])
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in results:
        groups[(row["method"], row["shots"])].append(row)
    out = [_dg_record("zero-shot", 0, results, targets, "zero_shot_accuracy", "zero_shot_test_accuracy")]
    for (method, shots), rows in sorted(groups.items()):
        if method != "zero-shot":
            out.append(_dg_record(method, shots, rows, targets, "accuracy", None))
    return out


def _dg_record(
    method: str, shots: int, rows: list[dict], targets: list[str], key: str, source_key: str | None
) -> dict[str, Any]:
    source = [r["result"][source_key] if source_key else r["result"]["test"]["accuracy"] for r in rows]
    record: dict[str, Any] = {
        "method": method,
        "shots": shots,
        "seeds": len({r["seed"] for r in rows}),
        "source": _mean(source),
    }
    for name in targets:
        record[name] = _mean([r["transfer"]["targets"][name][key] for r in rows])
    record["target_average"] = _mean([record[n] for n in targets])
    return record


def dg_markdown(rows: list[dict[str, Any]], protocol: str, source: str) -> str:
    if not rows:
        return "# Domain generalisation: no results\n"
    targets = [k for k in rows[0] if k not in ("method", "shots", "seeds", "source", "target_average")]
    lines = [
        f"# Domain generalisation (%): trained on {source}, tested on each target — protocol `{protocol}`: "
        f"{PROTOCOL_TITLES[protocol]}",
        "",
        "| method | shots | " + " | ".join([f"{source} (source)", *targets, "target average"]) + " |",
        "|---|---|" + "---|" * (len(targets) + 2),
    ]
    for r in rows:
        cells = [_pct(r["source"]), *(_pct(r[t]) for t in targets), _pct(r["target_average"])]
        lines.append(f"| {r['method']} | {r['shots'] or '–'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def b2n_rows(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Per (dataset, method, shots): base, new and harmonic mean, each the mean over seeds."""
    groups: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for row in _load(paths, "base-to-new"):
        dataset = row["result"]["data"]["dataset"].rsplit(":", 1)[0]
        groups[(dataset, row["method"], row["shots"])].append(row)
    out = []
    for (dataset, method, shots), rows in sorted(groups.items()):
        t = [r["transfer"] for r in rows]
        out.append(
            {
                "dataset": dataset,
                "method": method,
                "shots": shots,
                "seeds": len(rows),
                "base": _mean([x["base_accuracy"] for x in t]),
                "new": _mean([x["new_accuracy"] for x in t]),
                "harmonic_mean": _mean([x["harmonic_mean"] for x in t]),
            }
        )
    return out


def b2n_markdown(rows: list[dict[str, Any]], protocol: str) -> str:
    lines = [
        f"# Base-to-new generalisation (%) — protocol `{protocol}`: {PROTOCOL_TITLES[protocol]}",
        "",
        "Base: the first half of the classes (trained on); new: the second half (never seen); HM: harmonic mean.",
        "",
    ]
    datasets = sorted({r["dataset"] for r in rows})
    for dataset in datasets + (["average over datasets"] if len(datasets) > 1 else []):
        lines += [f"## {dataset}", "", "| method | shots | base | new | HM |", "|---|---|---|---|---|"]
        for method, shots in sorted({(r["method"], r["shots"]) for r in rows}):
            cell = _b2n_cell(rows, dataset, method, shots, datasets)
            lines.append(
                f"| {method} | {shots} | " + " | ".join(_pct(cell[k]) for k in ("base", "new", "harmonic_mean")) + " |"
            )
        lines.append("")
    return "\n".join(lines)


def _b2n_cell(rows, dataset, method, shots, datasets) -> dict[str, float | None]:
    chosen = [
        r
        for r in rows
        if r["method"] == method and r["shots"] == shots and (r["dataset"] == dataset or dataset not in datasets)
    ]
    if dataset not in datasets and len(chosen) != len(datasets):
        return {"base": None, "new": None, "harmonic_mean": None}
    return {k: _mean([r[k] for r in chosen]) for k in ("base", "new", "harmonic_mean")}


def write_transfer_reports(
    out: Path, setting: str, protocol: str, paths: Iterable[Path], source: str = ""
) -> dict[str, Path]:
    """Write the CSV and Markdown table of a transfer protocol under ``out``; return their paths."""
    paths = list(paths)
    tag = "dg" if setting == "domain-generalization" else "b2n"
    rows = dg_rows(paths) if tag == "dg" else b2n_rows(paths)
    text = dg_markdown(rows, protocol, source) if tag == "dg" else b2n_markdown(rows, protocol)
    csv_path, table = out / f"summary_{tag}_{protocol}.csv", out / f"table_{tag}_{protocol}.md"
    write_csv(csv_path, rows, list(rows[0]) if rows else ["method"])
    atomic_write_bytes(table, text.encode())
    return {"summary_csv": csv_path, "table": table}
