"""Benchmarks: the standard few-shot grid, aggregation, tables and plots."""

from ..core.outputs import register_kind
from .aggregate import markdown, summarise, write_reports
from .datasets import BENCHMARKS, load_benchmark, resolve_datasets
from .plots import plot_curves, plot_summary
from .runner import BenchPlan, BenchReport, MethodSpec, run_bench

# The output kind of `clip-adapter bench --out`, and the files it may hold (a resumed run adds to them).
register_kind("bench", r"^(runs|splits|plots|(results|summary)_\w+\.csv|table_\w+\.md|report\.html)$")

__all__ = [
    "BENCHMARKS",
    "BenchPlan",
    "BenchReport",
    "MethodSpec",
    "load_benchmark",
    "markdown",
    "plot_curves",
    "plot_summary",
    "resolve_datasets",
    "run_bench",
    "summarise",
    "write_reports",
]
