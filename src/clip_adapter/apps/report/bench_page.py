"""The page for a ``clip-adapter bench`` (or ``demo``) output folder.

What the bench wrote is shown as it wrote it: ``table_<protocol>.md`` (few-shot),
``table_calibration_<protocol>.md`` (ECE and NLL of the same runs, shown in the
protocol's section), ``table_dg_*.md`` / ``table_b2n_*.md`` (transfer protocols)
and ``plots/*.png``. Where the tables or plots are missing but the per-run JSONs
are there, they are rebuilt from the runs in memory (nothing is written into the
bench folder); runs written before calibration was recorded have no calibration
table, and the page says so.
The chosen hyper-parameters of every CLIP-Adapter run (α, β) are gathered from
the run JSONs.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from ...core.files import quoted
from . import figures
from .fields import count, fraction, number, scalar_map, shown, text
from .html import figure, key_values, note, page, table
from .markdown import markdown_to_html
from .run_files import is_artifact_dir

MAX_PNG_BYTES = 20_000_000
MAX_MD_BYTES = 5_000_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROTOCOL_NAME = re.compile(r"^table_(?P<name>(?:dg_|b2n_)?[\w-]+?)\.md$")
CALIBRATION_PREFIX = "calibration_"  # table_calibration_<protocol>.md: the calibration table of a few-shot protocol
TRANSFER_RUNS = ("b2n-", "dg-")  # runs/<setting>-<protocol>: transfer runs, tabled by table_dg_* / table_b2n_*


def is_bench_dir(path: Path) -> bool:
    """A folder with the bench's outputs: run JSONs, summary CSVs or tables."""
    return path.is_dir() and (
        (path / "runs").is_dir() or any(path.glob("summary_*.csv")) or any(path.glob("table_*.md"))
    )


def run_results(out: Path) -> dict[str, list[dict[str, Any]]]:
    """``{protocol folder: [result, …]}`` for every readable run JSON under ``runs/`` (unreadable ones skipped)."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    runs = out / "runs"
    if not runs.is_dir():
        return {}
    for path in sorted(runs.rglob("*.json")):
        try:
            result = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(result, dict):
            found[path.relative_to(runs).parts[0]].append(result)
    return dict(found)


def bench_report(directory: str | os.PathLike) -> str:
    """The HTML page of a bench output: overview, per-protocol tables and plots, transfer tables, chosen α/β.

    Example:
        >>> html = bench_report("bench-results")  # doctest: +SKIP
    """
    out = Path(directory)
    results = run_results(out)
    tables = _tables(out)
    sections = [("overview", "Overview", _overview(out, results))]
    few_shot = sorted(
        {p.removeprefix(CALIBRATION_PREFIX) for p in tables if not p.startswith(("dg_", "b2n_"))}
        | {p for p in results if not p.startswith(TRANSFER_RUNS)}
    )
    for protocol in few_shot:
        sections.append(
            (
                f"protocol-{protocol}",
                f"Few-shot results — protocol {protocol}",
                _protocol(out, protocol, tables, results),
            )
        )
    transfer = sorted(p for p in tables if p.startswith(("dg_", "b2n_")))
    if transfer:
        sections.append(("transfer", "Transfer protocols", "".join(markdown_to_html(tables[p]) for p in transfer)))
    elif any(p.startswith(TRANSFER_RUNS) for p in results):
        sections.append(
            (
                "transfer",
                "Transfer protocols",
                note("Transfer runs exist under runs/ but no table_dg_*/table_b2n_* was written."),
            )
        )
    sections.append(("adapter", "CLIP-Adapter: chosen ratios", _chosen(results)))
    artifact = out / "artifact"
    if is_artifact_dir(artifact):
        sections.append(
            (
                "artifact",
                "Trained artifact",
                note(
                    f"This folder holds a trained artifact at {quoted(artifact)}: "
                    f"`clip-adapter report {quoted(artifact)}` gives its own page."
                ),
            )
        )
    return page("clip-adapter benchmark report", str(out), sections)


def _tables(out: Path) -> dict[str, str]:
    tables = {}
    for path in sorted(out.glob("table_*.md")):
        match = PROTOCOL_NAME.match(path.name)
        if match and path.stat().st_size <= MAX_MD_BYTES:
            tables[match["name"]] = path.read_text("utf-8", errors="replace")
    return tables


def _overview(out: Path, results: dict[str, list[dict[str, Any]]]) -> str:
    every = [r for rows in results.values() for r in rows]
    if not every:
        return note("No run JSONs under runs/: only the tables and plots the bench left are shown.")
    pick = lambda key: sorted({shown(_get(r, key)) for r in every})  # noqa: E731
    seconds = sum(float(v) for v in (_get(r, "timings.fit_seconds") for r in every) if number(v))
    pairs = [
        ("runs", f"{len(every)} ({', '.join(f'{p}: {len(v)}' for p, v in sorted(results.items()))})"),
        ("datasets", ", ".join(pick("data.dataset"))),
        ("methods", ", ".join(pick("bench.label"))),
        ("shots", ", ".join(sorted(pick("run.shots"), key=_int))),
        ("seeds", ", ".join(sorted(pick("run.seed"), key=_int))),
        (
            "backbones",
            ", ".join(
                f"{n} ({p})"
                for n, p in sorted(
                    {(shown(_get(r, "backbone.name")), shown(_get(r, "backbone.pretrained"))) for r in every}
                )
            ),
        ),
        ("protocols", ", ".join(sorted(results))),
        ("total fit time", f"{seconds:.1f} s"),
    ]
    return key_values(pairs)


def _get(record: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        record = record.get(key) if isinstance(record, dict) else None  # type: ignore[assignment]
    return record


def _int(text: str) -> int:
    return int(text) if text.lstrip("-").isdigit() and len(text) < 20 else 0


def _protocol(out: Path, protocol: str, tables: dict[str, str], results: dict[str, list[dict[str, Any]]]) -> str:
    body = ""
    if protocol == "oracle":
        body += note(
            "ORACLE protocol: hyper-parameters were chosen on the TEST split; not a fair comparison.", warn=True
        )
    if protocol in tables:
        body += markdown_to_html(tables[protocol])
    elif results.get(protocol):
        body += note(
            f"table_{protocol}.md is missing; the table below is rebuilt from the run JSONs."
        ) + markdown_to_html(_rebuilt_table(out, protocol))
    plots = _plots(out, protocol)
    if not plots and results.get(protocol):
        plots = _rebuilt_plots(out, protocol)
    if len(plots) == 2 and any(c.endswith(f"{protocol}_average.png") for c, _ in plots):
        plots = [
            p for p in plots if not p[0].endswith(f"{protocol}_average.png")
        ]  # one dataset: its average is the same plot
    body += '<div class="figs">' + "".join(figure(png, caption, caption) for caption, png in plots) + "</div>"
    body += _calibration(out, protocol, tables, results)
    return body or note("Nothing recorded for this protocol.")


def _calibration(out: Path, protocol: str, tables: dict[str, str], results: dict[str, list[dict[str, Any]]]) -> str:
    """``table_calibration_<protocol>.md`` as written, else rebuilt from the runs that record calibration."""
    name = CALIBRATION_PREFIX + protocol
    if name in tables:
        return markdown_to_html(tables[name])
    if not results.get(protocol):
        return ""
    from ...bench.aggregate import CALIBRATION_METRICS, PROTOCOL_TITLES, calibration_markdown, summarise_calibration

    rows = _rows(out, protocol)
    if not any(row.get(m) is not None for row in rows for m in CALIBRATION_METRICS):
        return note(
            f"No calibration table: table_{name}.md is missing and no run records calibration "
            "(they were written before it was recorded)."
        )
    text_ = calibration_markdown(summarise_calibration(rows), protocol if protocol in PROTOCOL_TITLES else "val", rows)
    return note(
        f"table_{name}.md is missing; the calibration table below is rebuilt from the run JSONs."
    ) + markdown_to_html(text_)


def _rows(out: Path, protocol: str) -> list[dict[str, Any]]:
    return [
        row for path in sorted((out / "runs" / protocol).rglob("*.json")) if (row := _summary_row(path)) is not None
    ]


def _summary(out: Path, protocol: str) -> dict:
    from ...bench.aggregate import summarise

    return summarise(_rows(out, protocol))


def _summary_row(path: Path) -> dict[str, Any] | None:
    """What ``bench.aggregate.load_results`` takes from one run JSON, or ``None`` when a field it needs is malformed.

    The bench's own aggregation trusts the runs it wrote; a report is made from folders that
    may have been edited or received, so a malformed run is left out instead of stopping the page.
    """
    try:
        r = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    checks = {
        "protocol": text,
        "data.dataset": text,
        "bench.label": text,
        "run.shots": count,
        "run.seed": count,
        "test.accuracy": fraction,
        "timings.fit_seconds": number,
    }
    if not isinstance(r, dict) or not all(check(_get(r, key)) for key, check in checks.items()):
        return None
    zero_shot = r.get("zero_shot_test_accuracy")
    if zero_shot is not None and not fraction(zero_shot):
        return None
    from ...bench.aggregate import calibration_fields

    calibration, _ = calibration_fields(r)  # a malformed calibration record counts as none (the bench warns about it)
    return {
        "protocol": r["protocol"],
        "dataset": r["data"]["dataset"],
        "method": r["bench"]["label"],
        "shots": r["run"]["shots"],
        "seed": r["run"]["seed"],
        "accuracy": r["test"]["accuracy"],
        "zero_shot_accuracy": zero_shot,
        "fit_seconds": r["timings"]["fit_seconds"],
        **calibration,
    }


def _rebuilt_table(out: Path, protocol: str) -> str:
    from ...bench.aggregate import PROTOCOL_TITLES, markdown

    return markdown(_summary(out, protocol), protocol if protocol in PROTOCOL_TITLES else "val")


def _plots(out: Path, protocol: str) -> list[tuple[str, bytes]]:
    found = []
    for path in sorted((out / "plots").glob(f"{protocol}_*.png")):
        data = path.read_bytes() if path.stat().st_size <= MAX_PNG_BYTES else b""
        if data.startswith(PNG_SIGNATURE):  # only real PNGs are embedded
            found.append((f"plots/{path.name}", data))
    return found


def _rebuilt_plots(out: Path, protocol: str) -> list[tuple[str, bytes]]:
    from ...bench.aggregate import ZERO_SHOT

    summary, plots = _summary(out, protocol), []
    for dataset in sorted({d for d, _, _ in summary}):
        curves: dict[str, dict[int, float]] = defaultdict(dict)
        for (d, m, s), (mean, _, _) in summary.items():
            if d == dataset and m != ZERO_SHOT:
                curves[m][s] = mean
        zs = [v[0] for (d, m, _), v in summary.items() if d == dataset and m == ZERO_SHOT]
        title = f"{dataset} [{protocol}] (rebuilt from the run JSONs)"
        plots.append((title, figures.shots_png(dict(curves), title, sum(zs) / len(zs) if zs else None)))
    return plots


def _chosen(results: dict[str, list[dict[str, Any]]]) -> str:
    groups: dict[tuple[str, str, str, int], list[str]] = defaultdict(list)
    for protocol, rows in results.items():
        for r in rows:
            if r.get("method") != "clip-adapter":
                continue
            chosen, config = _get(r, "selection.chosen"), r.get("method_config")
            chosen = chosen if scalar_map(chosen) else {}
            config = config if isinstance(config, dict) else {}
            variant = shown(config.get("variant", "?"))
            ratio = _ratio_text(chosen, config, variant)
            label = shown(_get(r, "bench.label"))
            shots = _get(r, "run.shots")
            key = (
                protocol,
                shown(_get(r, "data.dataset")),
                label if variant in label else f"{label} [{variant}]",
                shots if count(shots) else 0,
            )
            groups[key].append(f"seed {shown(_get(r, 'run.seed'))}: {ratio}")
    if not groups:
        return note("No CLIP-Adapter runs in this output.")
    rows = [(p, d, m, s, "; ".join(sorted(v))) for (p, d, m, s), v in sorted(groups.items())]
    return note(
        "The residual ratio chosen per run (α visual, β text; the both variant searches α = β); 0 is zero-shot exactly."
    ) + table(["protocol", "dataset", "method", "shots", "chosen per seed"], rows, numeric=[3])


def _ratio_text(chosen: dict[str, Any], config: dict[str, Any], variant: str) -> str:
    """The chosen ratio named as the variant uses it: the search's ``alpha`` is β for text, α = β for both."""
    if "alpha" not in chosen and "beta" not in chosen:
        return _fixed(config, variant)
    value = chosen.get("alpha", chosen.get("beta"))
    names = {"visual": "α", "text": "β", "both": "α = β"}.get(variant, "α")
    extra = f", β={shown(chosen['beta'])}" if "alpha" in chosen and "beta" in chosen else ""
    return f"{names}={shown(value)}{extra}"


def _fixed(config: dict[str, Any], variant: str) -> str:
    if config.get("ratio", "fixed") != "fixed":
        return f"{shown(config.get('ratio'))} ratio"
    return (
        f"beta={shown(config.get('beta'))} (fixed)"
        if variant == "text"
        else f"alpha={shown(config.get('alpha'))} (fixed)"
    )
