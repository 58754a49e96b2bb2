"""Result JSONs → a long CSV, a summary CSV (mean ± std over seeds) and Markdown tables.

Besides accuracy, every run since calibration was recorded carries
``test.calibration`` and ``zero_shot_test_calibration``
(:func:`clip_adapter.trust.calibration.calibration_report`): their ECE, NLL,
Brier score and AURC become columns of the CSVs (empty for older run files)
and ``table_calibration_<protocol>.md`` sits beside the accuracy table.
"""

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

from ..core.files import atomic_write_bytes, quoted

PROTOCOL_TITLES = {
    "val": "hyper-parameters chosen on the few-shot validation split",
    "full-val": "hyper-parameters chosen on the full validation split of each dataset",
    "none": "fixed default hyper-parameters (no selection)",
    "oracle": "ORACLE: hyper-parameters chosen on the TEST split (not a fair comparison)",
}
ZERO_SHOT = "zero-shot"
# The calibration measures taken from each run's record, and the range a well-formed value lies in
# (fractions for ECE and AURC, nats for NLL, the multi-class Brier score in [0, 2]).
CALIBRATION_METRICS: dict[str, tuple[float, float]] = {
    "ece": (0.0, 1.0),
    "nll": (0.0, math.inf),
    "brier": (0.0, 2.0),
    "aurc": (0.0, 1.0),
}
ZERO_SHOT_PREFIX = "zero_shot_"
RESULT_FIELDS = [
    "protocol",
    "dataset",
    "method",
    "shots",
    "seed",
    "accuracy",
    "zero_shot_accuracy",
    "fit_seconds",
    "chosen",
    *CALIBRATION_METRICS,
    *(ZERO_SHOT_PREFIX + m for m in CALIBRATION_METRICS),
    "ece_bins",
]
SUMMARY_FIELDS = [
    "protocol",
    "dataset",
    "method",
    "shots",
    "mean",
    "std",
    "n",
    *(f"{m}_{stat}" for m in CALIBRATION_METRICS for stat in ("mean", "std")),
    "calibration_n",
]


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """One row per readable result file: dataset, method label, shots, seed, accuracies, timings, calibration.

    A run file that is not valid JSON, or whose fields are missing or of the wrong
    type (edited by hand, written by another tool), is left out with one warning
    naming it, never a crash of the whole table.

    Calibration (``ece``, ``nll``, ``brier``, ``aurc`` of the method and the same
    with a ``zero_shot_`` prefix, and ``ece_bins``) is ``None`` where the run file
    has no calibration record (written before it existed). A calibration record
    that is malformed counts as missing, with one warning: the run's accuracy
    still counts.
    """
    rows = []
    for path in paths:
        try:
            r = json.loads(Path(path).read_text())
        except (OSError, ValueError, RecursionError):
            continue
        row = _row(r)
        if row is None:
            warnings.warn(
                f"bench run file {quoted(path)} is malformed (a missing or mistyped field); left out of the tables",
                stacklevel=2,
            )
            continue
        calibration, malformed = calibration_fields(r)
        if malformed:
            warnings.warn(
                f"bench run file {quoted(path)}: {', '.join(malformed)} malformed; its calibration cells are left "
                "empty",
                stacklevel=2,
            )
        rows.append({**row, **calibration})
    return rows


def calibration_fields(result: Any) -> tuple[dict[str, Any], list[str]]:
    """The calibration columns of one run record, and the names of the malformed parts (each ``None`` then).

    ``None`` for what the record lacks (an older run file, an empty test split);
    a value of the wrong type or out of its range is ``None`` too, and named.

    Example:
        >>> cal = {"ece": 0.05, "nll": 0.4, "brier": 0.2, "aurc": 0.1, "n_bins": 15}
        >>> result = {"test": {"calibration": cal}, "zero_shot_test_calibration": {"ece": "high"}}
        >>> calibration_fields(result)  # doctest: +NORMALIZE_WHITESPACE
        ({'ece': 0.05, 'nll': 0.4, 'brier': 0.2, 'aurc': 0.1, 'zero_shot_ece': None, 'zero_shot_nll': None,
          'zero_shot_brier': None, 'zero_shot_aurc': None, 'ece_bins': 15}, ['zero_shot_test_calibration.ece'])
    """
    result = result if isinstance(result, dict) else {}
    test = result.get("test")
    blocks = {
        "": ("test.calibration", test.get("calibration") if isinstance(test, dict) else None),
        ZERO_SHOT_PREFIX: ("zero_shot_test_calibration", result.get("zero_shot_test_calibration")),
    }
    out: dict[str, Any] = {}
    malformed: list[str] = []
    bins: set[int] = set()
    for prefix, (name, block) in blocks.items():
        if block is not None and not isinstance(block, dict):
            malformed.append(name)
        block = block if isinstance(block, dict) else {}
        for metric, (low, high) in CALIBRATION_METRICS.items():
            value = block.get(metric)
            ok = value is None or (_number(value) and low <= value <= high)
            out[prefix + metric] = value if ok and value is not None else None
            if not ok:
                malformed.append(f"{name}.{metric}")
        n_bins = block.get("n_bins")
        if isinstance(n_bins, int) and not isinstance(n_bins, bool) and n_bins >= 1:
            bins.add(n_bins)
        elif n_bins is not None:
            malformed.append(f"{name}.n_bins")
    out["ece_bins"] = bins.pop() if len(bins) == 1 else None  # the two records of a run use the same bins
    return out, malformed


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _row(r: Any) -> dict[str, Any] | None:
    try:
        row = {
            "protocol": r["protocol"],
            "dataset": r["data"]["dataset"],
            "method": r["bench"]["label"],
            "shots": r["run"]["shots"],
            "seed": r["run"]["seed"],
            "accuracy": r["test"]["accuracy"],
            "zero_shot_accuracy": r["zero_shot_test_accuracy"],
            "fit_seconds": r["timings"]["fit_seconds"],
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


def summarise_calibration(
    rows: list[dict[str, Any]],
) -> dict[tuple[str, str, int], dict[str, tuple[float, float, int]]]:
    """``(dataset, method, shots) → {metric: (mean, std, n)}`` over the seeds whose run recorded it.

    As :func:`summarise`: zero-shot comes from the ``zero_shot_*`` columns every run
    records, once per (dataset, shots, seed). Rows without calibration (older run
    files) are left out; a cell no run calibrated is absent.

    Example:
        >>> rows = [
        ...     {"dataset": "d", "method": "m", "shots": 1, "seed": s, "ece": e, "zero_shot_ece": 0.1}
        ...     for s, e in ((1, 0.2), (2, 0.4))
        ... ]
        >>> cal = summarise_calibration(rows)
        >>> [round(v, 6) for v in cal[("d", "m", 1)]["ece"][:2]], cal[("d", "zero-shot", 1)]["ece"]
        ([0.3, 0.141421], (0.1, 0.0, 2))
    """
    groups: dict[tuple[str, str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    zero_shot: dict[tuple[str, int, int], dict[str, float]] = {}
    for row in rows:
        key = (row["dataset"], row["method"], row["shots"])
        if row["method"] != ZERO_SHOT:
            for metric in CALIBRATION_METRICS:
                if row.get(metric) is not None:
                    groups[key][metric].append(row[metric])
        recorded = {
            m: row[ZERO_SHOT_PREFIX + m] for m in CALIBRATION_METRICS if row.get(ZERO_SHOT_PREFIX + m) is not None
        }
        if recorded:
            zero_shot[(row["dataset"], row["shots"], row["seed"])] = recorded
    for (dataset, shots, _), recorded in zero_shot.items():
        for metric, value in recorded.items():
            groups[(dataset, ZERO_SHOT, shots)][metric].append(value)
    return {key: {m: _stats(v) for m, v in metrics.items()} for key, metrics in groups.items() if metrics}


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
        lines.append(
            f"| {method} | "
            + " | ".join(f"{100 * average[(method, s)]:.2f}" if (method, s) in average else "–" for s in shots)
            + " |"
        )
    return "\n".join(lines) + "\n"


# How each calibration measure is shown in the Markdown table: (heading, scale, decimals).
CALIBRATION_SHOWN = {"ece": ("ECE (%)", 100.0, 2), "nll": ("NLL (nats)", 1.0, 3)}


def calibration_markdown(calibration: dict, protocol: str, rows: list[dict[str, Any]] | None = None) -> str:
    """Per dataset, ECE (%) and NLL tables laid out as the accuracy table (mean ± std over seeds); zero-shot first.

    ``rows`` (the runs) let the header say which binning the ECE used and how many
    runs recorded no calibration (older run files).

    Example:
        >>> cells = {("d", "m", 1): {"ece": (0.05, 0.01, 2), "nll": (0.3, 0.0, 1)}}
        >>> print(calibration_markdown(cells, "val").splitlines()[10])
        | m | 5.00 ± 1.00 |
    """
    rows = rows or []
    bins = sorted({r["ece_bins"] for r in rows if r.get("ece_bins") is not None and r.get("ece") is not None})
    binning = (
        f"{bins[0]} equal-width confidence bins"
        if len(bins) == 1
        else f"MIXED binnings ({', '.join(map(str, bins))} bins): not comparable across runs"
        if bins
        else "equal-width confidence bins"
    )
    lines = [
        f"# Calibration — protocol `{protocol}`: {PROTOCOL_TITLES[protocol]}",
        "",
        (
            f"ECE: top-label expected calibration error in %, {binning}. NLL: mean negative log-likelihood of the true "
            "class, in nats. Both on the test split, mean ± std over seeds; lower is better. Zero-shot: CLIP with the "
            "run's prompts, as every run records it."
        ),
        "",
    ]
    calibrated = sum(1 for r in rows if any(r.get(m) is not None for m in CALIBRATION_METRICS))
    if rows and calibrated < len(rows):
        lines += [
            (
                f"{len(rows) - calibrated} of {len(rows)} runs recorded no calibration (run files written before it "
                "was recorded, or a malformed record) and are left out of these tables."
            ),
            "",
        ]
    if not calibration:
        return "\n".join(lines + ["No run recorded calibration.", ""])
    shots = sorted({s for _, _, s in calibration})
    methods = _method_order({m for _, m, _ in calibration})
    datasets = sorted({d for d, _, _ in calibration})
    shown = {
        m: (f"ECE (%, {bins[0]} bins)" if m == "ece" and len(bins) == 1 else h, scale, digits)
        for m, (h, scale, digits) in CALIBRATION_SHOWN.items()
    }
    for dataset in datasets:
        lines += [f"## {dataset}", ""]
        for metric, (heading, scale, digits) in shown.items():
            lines += [f"### {heading}", "", _header(shots)]
            for method in methods:
                cells = [
                    _scaled_cell(calibration.get((dataset, method, s), {}).get(metric), scale, digits) for s in shots
                ]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
    if len(datasets) > 1:
        lines += ["## Average over datasets", ""]
        for metric, (heading, scale, digits) in shown.items():
            per_metric = {key: cell[metric] for key, cell in calibration.items() if metric in cell}
            average = dataset_average(per_metric) if per_metric else {}
            if {d for d, _, _ in per_metric} != set(datasets):
                average = {}  # a dataset without this measure: no average over all datasets
            lines += [f"### {heading}", "", _header(shots)]
            for method in methods:
                lines.append(
                    f"| {method} | "
                    + " | ".join(
                        f"{scale * average[(method, s)]:.{digits}f}" if (method, s) in average else "–" for s in shots
                    )
                    + " |"
                )
            lines.append("")
    return "\n".join(lines)


def _scaled_cell(stats: tuple[float, float, int] | None, scale: float, digits: int) -> str:
    if stats is None:
        return "–"
    mean, std, n = stats
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}" if n > 1 else f"{scale * mean:.{digits}f}"


def _method_order(methods: set[str]) -> list[str]:
    return sorted(methods, key=lambda m: (m != ZERO_SHOT, m))


def _header(shots: list[int]) -> str:
    return (
        "| method | "
        + " | ".join(f"{s} shot{'s' if s != 1 else ''}" for s in shots)
        + " |\n|---|"
        + "---|" * len(shots)
    )


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
    """Write ``results_<protocol>.csv``, ``summary_<protocol>.csv``, ``table_<protocol>.md`` and
    ``table_calibration_<protocol>.md`` under ``out``.

    The CSVs' calibration columns come after the accuracy ones (fractions, as
    accuracy; NLL in nats), empty where no run of the row recorded calibration.
    """
    rows = sorted(load_results(result_paths), key=lambda r: (r["dataset"], r["method"], r["shots"], r["seed"]))
    summary, calibration = summarise(rows), summarise_calibration(rows)
    long_csv, summary_csv, table = (
        out / f"results_{protocol}.csv",
        out / f"summary_{protocol}.csv",
        out / f"table_{protocol}.md",
    )
    calibration_table = out / f"table_calibration_{protocol}.md"
    write_csv(long_csv, rows, RESULT_FIELDS)
    summary_rows = [
        {
            "protocol": protocol,
            "dataset": d,
            "method": m,
            "shots": s,
            "mean": round(v[0], 6),
            "std": round(v[1], 6),
            "n": v[2],
            **_calibration_columns(calibration.get((d, m, s), {})),
        }
        for (d, m, s), v in sorted(summary.items())
    ]
    write_csv(summary_csv, summary_rows, SUMMARY_FIELDS)
    atomic_write_bytes(table, markdown(summary, protocol).encode())
    atomic_write_bytes(calibration_table, calibration_markdown(calibration, protocol, rows).encode())
    return {
        "results_csv": long_csv,
        "summary_csv": summary_csv,
        "table": table,  # type: ignore[dict-item]
        "calibration_table": calibration_table,
        "summary": summary,
        "calibration": calibration,
    }


def _calibration_columns(cell: dict[str, tuple[float, float, int]]) -> dict[str, Any]:
    """A summary row's calibration cells: empty strings where no run of the cell recorded the measure."""
    out: dict[str, Any] = {}
    for metric in CALIBRATION_METRICS:
        stats = cell.get(metric)
        out[f"{metric}_mean"] = round(stats[0], 6) if stats else ""
        out[f"{metric}_std"] = round(stats[1], 6) if stats else ""
    out["calibration_n"] = max(stats[2] for stats in cell.values()) if cell else ""
    return out
