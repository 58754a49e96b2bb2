"""Benchmarks: the standard few-shot grid, aggregation, tables and plots."""

from .aggregate import markdown, summarise, write_reports
from .datasets import BENCHMARKS, load_benchmark, resolve_datasets
from .plots import plot_curves, plot_summary
from .runner import BenchPlan, BenchReport, MethodSpec, run_bench

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
