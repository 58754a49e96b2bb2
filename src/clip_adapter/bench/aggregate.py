"""Result JSONs → a long CSV, a summary CSV (mean ± std over seeds) and Markdown tables."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from ..io import atomic_write_bytes, quoted

PROTOCOL_TITLES = {
    "val": "hyper-parameters chosen on the few-shot validation split",
    "full-val": "hyper-parameters chosen on the full validation split of each dataset",
    "none": "fixed default hyper-parameters (no selection)",
    "oracle": "ORACLE: hyper-parameters chosen on the TEST split (not a fair comparison)",
}
ZERO_SHOT = "zero-shot"


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """One row per readable result file: dataset, method label, shots, seed, accuracies, timings.

    A run file that is not valid JSON, or whose fields are missing or of the wrong
    type (edited by hand, written by another tool), is left out with one warning
    naming it, never a crash of the whole table.
    """
    rows = []
    for path in paths:
        try:
            r = json.loads(Path(path).read_text())
        except (OSError, ValueError, RecursionError):
            continue
        row = _row(r)
        if row is None:
            warnings.warn(f"bench run file {quoted(path)} is malformed (a missing or mistyped field); left out of the tables",
                          stacklevel=2)
            continue
        rows.append(row)
    return rows


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _row(r: Any) -> dict[str, Any] | None:
    try:
        row = {
            "protocol": r["protocol"], "dataset": r["data"]["dataset"], "method": r["bench"]["label"],
            "shots": r["run"]["shots"], "seed": r["run"]["seed"], "accuracy": r["test"]["accuracy"],
            "zero_shot_accuracy": r["zero_shot_test_accuracy"], "fit_seconds": r["timings"]["fit_seconds"],
            "chosen": json.dumps(r["selection"].get("chosen", {}), sort_keys=True),
        }
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
    texts = all(isinstance(row[k], str) for k in ("protocol", "dataset", "method"))
    counts = all(isinstance(row[k], int) and not isinstance(row[k], bool) for k in ("shots", "seed"))
    numbers = _number(row["accuracy"]) and _number(row["fit_seconds"])
    zero_shot = row["zero_shot_accuracy"] is None or _number(row["zero_shot_accuracy"])
    return row if texts and counts and numbers and zero_shot else None


def summarise(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], tuple[float, float, int]]:
    """``(dataset, method, shots) → (mean, std, n)`` of accuracy over seeds; zero-shot added per dataset."""
    groups: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    zero_shot: dict[tuple[str, int, int], float] = {}  # every run records it; count each (dataset, shots, seed) once
    for row in rows:
        if row["method"] != ZERO_SHOT:
            groups[(row["dataset"], row["method"], row["shots"])].append(row["accuracy"])
        if row["zero_shot_accuracy"] is not None:
            zero_shot[(row["dataset"], row["shots"], row["seed"])] = row["zero_shot_accuracy"]
    for (dataset, shots, _), value in zero_shot.items():
        groups[(dataset, ZERO_SHOT, shots)].append(value)
    return {key: _stats(values) for key, values in groups.items()}


def _stats(values: list[float]) -> tuple[float, float, int]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def dataset_average(summary: dict) -> dict[tuple[str, int], float]:
    """Mean over datasets of the per-dataset means, where every dataset has the cell."""
    datasets = sorted({d for d, _, _ in summary})
    out = {}
    for method, shots in sorted({(m, s) for _, m, s in summary}):
        values = [summary[(d, method, shots)][0] for d in datasets if (d, method, shots) in summary]
        if len(values) == len(datasets):
            out[(method, shots)] = statistics.fmean(values)
    return out


def markdown(summary: dict, protocol: str) -> str:
    """One table per dataset (mean ± std over seeds, %) and one averaged over datasets."""
    shots = sorted({s for _, _, s in summary})
    methods = _method_order({m for _, m, _ in summary})
    lines = [f"# Few-shot accuracy (%) — protocol `{protocol}`: {PROTOCOL_TITLES[protocol]}", ""]
    for dataset in sorted({d for d, _, _ in summary}):
        lines += [f"## {dataset}", "", _header(shots)]
        for method in methods:
            cells = [_cell(summary.get((dataset, method, s))) for s in shots]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    if len({d for d, _, _ in summary}) < 2:
        return "\n".join(lines)
    average = dataset_average(summary)
    lines += ["## Average over datasets", "", _header(shots)]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(f"{100 * average[(method, s)]:.2f}" if (method, s) in average else "–" for s in shots) + " |")
    return "\n".join(lines) + "\n"


def _method_order(methods: set[str]) -> list[str]:
    return sorted(methods, key=lambda m: (m != ZERO_SHOT, m))


def _header(shots: list[int]) -> str:
    return "| method | " + " | ".join(f"{s} shot{'s' if s != 1 else ''}" for s in shots) + " |\n|---|" + "---|" * len(shots)


def _cell(stats: tuple[float, float, int] | None) -> str:
    if stats is None:
        return "–"
    mean, std, n = stats
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def write_reports(out: Path, protocol: str, result_paths: Iterable[Path]) -> dict[str, Path]:
    """Write ``results_<protocol>.csv``, ``summary_<protocol>.csv`` and ``table_<protocol>.md`` under ``out``."""
    rows = sorted(load_results(result_paths), key=lambda r: (r["dataset"], r["method"], r["shots"], r["seed"]))
    summary = summarise(rows)
    long_csv, summary_csv, table = out / f"results_{protocol}.csv", out / f"summary_{protocol}.csv", out / f"table_{protocol}.md"
    write_csv(long_csv, rows, ["protocol", "dataset", "method", "shots", "seed", "accuracy", "zero_shot_accuracy", "fit_seconds", "chosen"])
    summary_rows = [
        {"protocol": protocol, "dataset": d, "method": m, "shots": s, "mean": round(v[0], 6), "std": round(v[1], 6), "n": v[2]}
        for (d, m, s), v in sorted(summary.items())
    ]
    write_csv(summary_csv, summary_rows, ["protocol", "dataset", "method", "shots", "mean", "std", "n"])
    atomic_write_bytes(table, markdown(summary, protocol).encode())
    return {"results_csv": long_csv, "summary_csv": summary_csv, "table": table, "summary": summary}  # type: ignore[dict-item]
