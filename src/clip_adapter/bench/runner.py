"""The benchmark grid: datasets × methods × shots × seeds, on cached features.

One result JSON per run under ``<out>/runs/<protocol>/<dataset>/<method>/``,
and the sampled split of each (dataset, shots, seed) under ``<out>/splits/``.
A run whose JSON exists with the same spec (method config, shots, seed,
protocol, templates, feature settings, backbone id) is skipped, so a second
invocation does no work and an interrupted one resumes where it stopped;
features come from the cache either way.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .._version import __version__
from ..backbones import Backbone
from ..core.errors import ConfigError
from ..core.files import atomic_write_bytes, atomic_write_json
from ..data import Dataset
from ..methods import get_method
from ..methods.base import PROTOCOLS
from ..pipeline import FeatureConfig, RunConfig, epoch_log_csv, fit_and_evaluate, prepare


@dataclass(frozen=True)
class MethodSpec:
    """A method under a label, with config overrides: ``label=method:key=value:key=value``."""

    label: str
    method: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        """``"clip-adapter"`` or ``"ca-both=clip-adapter:variant=both"``.

        Example:
            >>> MethodSpec.parse("ca-text=clip-adapter:variant=text").overrides
            (('variant', 'text'),)
        """
        label, sep, rest = text.partition("=")
        if not sep or ":" in label:
            label, rest = "", text
        method, *pairs = rest.split(":")
        overrides = []
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq:
                raise ConfigError(f"method spec {text!r}: expected key=value after ':', got {pair!r}")
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
            overrides.append((key.strip(), tuple(parsed) if isinstance(parsed, list) else parsed))
        get_method(method.strip())
        label = label.strip() or method.strip() + (f"[{','.join(pairs)}]" if pairs else "")
        return cls(label, method.strip(), tuple(overrides))

    def config(self):
        return get_method(self.method).make_config(**dict(self.overrides))


@dataclass
class BenchPlan:
    """What to run."""

    datasets: dict[str, Dataset]
    methods: list[MethodSpec]
    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    seeds: tuple[int, ...] = (1, 2, 3)
    protocol: str = "val"
    templates: tuple[str, ...] = ()
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"method labels must be unique: {labels}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}")


@dataclass
class BenchReport:
    ran: int = 0
    skipped: int = 0
    seconds: float = 0.0
    results: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # runs that failed for good (a Ray sweep reports them and goes on)


def result_path(out: Path, protocol: str, dataset: str, label: str, shots: int, seed: int) -> Path:
    return out / "runs" / protocol / dataset / label / f"shots{shots}_seed{seed}.json"


def run_spec(
    backbone: Backbone, plan: BenchPlan, spec: MethodSpec, dataset: str, shots: int, seed: int
) -> dict[str, Any]:
    """Everything that determines a run's number (the skip key)."""
    features = {k: v for k, v in plan.features.to_dict().items() if k in ("views", "aug_seed", "flip", "crop_scale")}
    return {
        "library": __version__,  # another version may compute differently: its results are redone
        "backbone": backbone.id,
        "precision": backbone.precision,
        "dataset": dataset,
        "method": spec.method,
        "method_config": spec.config().to_dict(),
        "shots": shots,
        "seed": seed,
        "protocol": plan.protocol,
        "templates": list(plan.templates),
        "features": features,
    }


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def is_done(path: Path, digest: str) -> bool:
    try:
        return json.loads(path.read_text()).get("bench", {}).get("spec_hash") == digest
    except (OSError, ValueError, AttributeError):
        return False  # missing or torn: run it (again)


def run_bench(backbone: Backbone, plan: BenchPlan, out: str | Path, log: Callable[[str], None] = print) -> BenchReport:
    """Run every missing cell of the grid; return what was run and skipped.

    Example:
        >>> # plan = BenchPlan({"pets": ds}, [MethodSpec.parse("clip-adapter")])
        >>> # run_bench(create_backbone("toy"), plan, "bench-out")
    """
    out, report, start = Path(out), BenchReport(), time.perf_counter()
    for name, dataset in plan.datasets.items():
        for shots in plan.shots:
            for seed in plan.seeds:
                _run_cell(backbone, plan, out, name, dataset, shots, seed, report, log)
    report.seconds = time.perf_counter() - start
    return report


def pending_runs(
    plan: BenchPlan,
    report: BenchReport,
    key_of: Callable[[MethodSpec], dict[str, Any]],
    path_of: Callable[[MethodSpec], Path],
) -> list[tuple[MethodSpec, dict[str, Any], Path]]:
    """The cell's ``(spec, key, result path)`` still to run; finished ones are counted as skipped.

    Every setting (few-shot, domain generalisation, base-to-new) skips a run whose
    result file holds the same key, so an interrupted grid resumes where it stopped.
    """
    todo = []
    for spec in plan.methods:
        key, path = key_of(spec), path_of(spec)
        report.results.append(path)
        if is_done(path, spec_hash(key)):
            report.skipped += 1
        else:
            todo.append((spec, key, path))
    return todo


def _run_cell(backbone, plan, out, name, dataset, shots, seed, report, log) -> None:
    todo = cell_runs(backbone, plan, out, name, shots, seed, report)
    if not todo:
        return
    run, prepared = prepare_cell(backbone, plan, out, name, dataset, shots, seed, todo)
    for spec, run_spec_, path in todo:
        result, history = run_one(backbone, prepared, run, spec, run_spec_)
        commit_result(path, result, history, report, log)


def cell_runs(
    backbone: Backbone, plan: BenchPlan, out: Path, name: str, shots: int, seed: int, report: BenchReport
) -> list:
    """The (dataset, shots, seed) cell's runs still to do, as :func:`pending_runs` gives them."""
    return pending_runs(
        plan,
        report,
        lambda spec: run_spec(backbone, plan, spec, name, shots, seed),
        lambda spec: result_path(out, plan.protocol, name, spec.label, shots, seed),
    )


def prepare_cell(
    backbone: Backbone, plan: BenchPlan, out: Path, name: str, dataset: Dataset, shots: int, seed: int, todo: list
) -> tuple[RunConfig, Any]:
    """Sample and encode the cell's split (the first pending run's method checks the prompts) and record the split."""
    run = RunConfig(method=todo[0][0].method, shots=shots, seed=seed, protocol=plan.protocol, templates=plan.templates)
    prepared = prepare(backbone, dataset, run, plan.features)
    split_file = out / "splits" / name / f"shots{shots}_seed{seed}.json"
    atomic_write_json(split_file, prepared.split.to_json())  # the exact shots, to reproduce or share
    return run, prepared


def run_one(
    backbone: Backbone, prepared: Any, run: RunConfig, spec: MethodSpec, key: dict[str, Any]
) -> tuple[dict[str, Any], list]:
    """Fit and evaluate one run of a prepared cell: its result record (with its skip key) and training history."""
    _, result = fit_and_evaluate(backbone, prepared, run.replace(method=spec.method), spec.config())
    history = result.pop("history", None)  # per-grid-point logs stay out of the summary files
    result["bench"] = {"label": spec.label, "spec": key, "spec_hash": spec_hash(key)}
    return result, history or []


def commit_result(
    path: Path, result: dict[str, Any], history: list, report: BenchReport, log: Callable[[str], None]
) -> None:
    """Write a run's log CSV, then its result JSON (which marks it finished), atomically; log its accuracy."""
    atomic_write_bytes(path.with_suffix(".log.csv"), epoch_log_csv(history).encode())
    atomic_write_json(path, result)
    report.ran += 1
    key, acc = result["bench"]["spec"], result["test"]["accuracy"]
    calibration = result["test"].get("calibration") or {}
    ece = calibration.get("ece") if isinstance(calibration, dict) else None
    log(
        f"{key['dataset']} {result['bench']['label']} {key['shots']}-shot seed {key['seed']}: {100 * acc:.2f}% "
        f"(zero-shot {100 * result['zero_shot_test_accuracy']:.2f}%)"
        + (f", ECE {100 * ece:.2f}%" if isinstance(ece, float) else "")
    )
