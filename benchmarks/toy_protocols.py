"""The toy world's transfer protocols and the `auto` method, measured through the library.

Usage:
    python benchmarks/toy_protocols.py            # all three sections
    python benchmarks/toy_protocols.py dg b2n     # some of them (dg, b2n, auto)
    TOY_PROTOCOLS_SEEDS=1 TOY_PROTOCOLS_SHOTS=1,2 python benchmarks/toy_protocols.py auto   # a quick look

(DG) domain generalisation: train on the `photo` rendering of a task (16 shots), test the same
classifier on every other domain; one column per target and their average (mean of seeds 1–3).
(B2N) base-to-new (CoCoOp's protocol) on shifted tasks: base, new and harmonic mean (16 shots).
(AUTO) `--method auto` against every single method it chooses among, on six shifted task × domain
pairs at 1/2/4/8/16 shots, seeds 1–3, with the issue's target checked: at every shot count auto's
mean ≥ the best single method's mean − 1 point, and never > 1 point below zero-shot on any cell.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.bench import BenchPlan, MethodSpec, run_bench  # noqa: E402
from clip_adapter.bench.aggregate import load_results  # noqa: E402
from clip_adapter.bench.base_to_new import run_base_to_new  # noqa: E402
from clip_adapter.bench.protocol_tables import b2n_markdown, b2n_rows, dg_markdown, dg_rows  # noqa: E402
from clip_adapter.bench.transfer import align_target, run_domain_generalization  # noqa: E402
from clip_adapter.data import load_dataset  # noqa: E402
from clip_adapter.methods.auto import CANDIDATES  # noqa: E402
from clip_adapter.pipeline import FeatureConfig  # noqa: E402
from clip_adapter.toyworld import DOMAINS, write_task_dataset  # noqa: E402

WORK = Path(os.environ.get("TOY_PROTOCOLS_DIR", "toy-protocols"))
PER_CLASS = {"shape": (32, 8, 40), "color": (32, 8, 40), "shape-color": (20, 4, 8)}  # train pool, val, test per class
SEEDS = tuple(int(x) for x in os.environ.get("TOY_PROTOCOLS_SEEDS", "1,2,3").split(","))
DG_METHODS = ("zero-shot", "clip-adapter", "coop", "cocoop", "tip-adapter-f", "linear-probe", "clap", "gda")
B2N_TASKS = [("color", "night"), ("shape", "sketch"), ("shape-color", "night")]
B2N_METHODS = ("zero-shot", "clip-adapter", "coop", "cocoop", "linear-probe", "tip-adapter-f")
AUTO_TASKS = [("color", "sketch"), ("color", "night"), ("shape", "sketch"), ("shape", "night"), ("shape-color", "sketch"), ("shape-color", "night")]
AUTO_SHOTS = tuple(int(x) for x in os.environ.get("TOY_PROTOCOLS_SHOTS", "1,2,4,8,16").split(","))


def dataset(task: str, domain: str):
    root = WORK / "data" / f"{task}-{domain}"
    if not (root / "split.json").is_file():
        write_task_dataset(task, domain, root, *PER_CLASS[task], seed=0)
    return load_dataset(root, name=f"{task}/{domain}")


def specs(names) -> list[MethodSpec]:
    return [MethodSpec(n, n) for n in names]


def domain_generalization(backbone, features: FeatureConfig) -> None:
    for task in ("color", "shape"):
        source = dataset(task, "photo")
        targets = [align_target(source, d, dataset(task, d)) for d in DOMAINS if d != "photo"]
        plan = BenchPlan({f"{task}/photo": source}, specs(DG_METHODS), (16,), SEEDS, "val", (), features)
        report = run_domain_generalization(backbone, plan, targets, WORK / "dg" / task, log=lambda _: None)
        print(dg_markdown(dg_rows(report.results), "val", f"{task}/photo"))


def base_to_new(backbone, features: FeatureConfig) -> None:
    datasets = {f"{t}/{d}": dataset(t, d) for t, d in B2N_TASKS}
    plan = BenchPlan(datasets, specs(B2N_METHODS), (16,), SEEDS, "val", (), features)
    report = run_base_to_new(backbone, plan, WORK / "b2n", log=lambda _: None)
    print(b2n_markdown(b2n_rows(report.results), "val"))


def auto(backbone, features: FeatureConfig) -> int:
    datasets = {f"{t}/{d}": dataset(t, d) for t, d in AUTO_TASKS}
    plan = BenchPlan(datasets, specs((*CANDIDATES, "auto")), AUTO_SHOTS, SEEDS, "val", (), features)
    report = run_bench(backbone, plan, WORK / "auto", log=lambda _: None)
    cells: dict = {}
    for row in load_results(report.results):
        cells.setdefault((row["method"], row["shots"], row["dataset"]), []).append(row["accuracy"])
    mean = {k: 100 * statistics.fmean(v) for k, v in cells.items()}
    methods = [*CANDIDATES, "auto"]
    print(f"(AUTO) mean test accuracy (%) over six shifted task × domain pairs, seeds {', '.join(map(str, SEEDS))}\n")
    print("| method | " + " | ".join(f"{s} shot{'s' * (s > 1)}" for s in AUTO_SHOTS) + " |\n|---|" + "---|" * len(AUTO_SHOTS))
    avg = {(m, s): statistics.fmean(mean[(m, s, d)] for d in datasets) for m in methods for s in AUTO_SHOTS}
    for m in methods:
        print(f"| {m} | " + " | ".join(f"{avg[(m, s)]:.2f}" for s in AUTO_SHOTS) + " |")
    misses = 0
    for s in AUTO_SHOTS:
        best = max(CANDIDATES, key=lambda m: avg[(m, s)])
        gap = avg[("auto", s)] - avg[(best, s)]
        ok = gap >= -1.0
        misses += not ok
        print(f"{s} shots: auto {avg[('auto', s)]:.2f} vs best single ({best}) {avg[(best, s)]:.2f}: {gap:+.2f} points {'OK' if ok else 'MISSED'}")
    worst = min(((mean[("auto", s, d)] - mean[("zero-shot", s, d)]), s, d) for s in AUTO_SHOTS for d in datasets)
    print(f"worst cell against zero-shot: {worst[0]:+.2f} points ({worst[2]}, {worst[1]} shots) {'OK' if worst[0] >= -1.0 else 'MISSED'}")
    chosen: dict = {}
    for path in report.results:
        if path.parent.name == "auto" and path.is_file():
            pick = json.loads(path.read_text())["selection"]["chosen"]["method"]
            chosen[pick] = chosen.get(pick, 0) + 1
    print("auto chose: " + ", ".join(f"{m} ×{n}" for m, n in sorted(chosen.items(), key=lambda kv: -kv[1])))
    return misses + (worst[0] < -1.0)


def main(argv: list[str]) -> int:
    sections = argv or ["dg", "b2n", "auto"]
    backbone = create_backbone("toy")
    features = FeatureConfig(cache_dir=str(WORK / "cache"))
    start, failures = time.perf_counter(), 0
    for name in sections:
        t0 = time.perf_counter()
        if name == "dg":
            domain_generalization(backbone, features)
        elif name == "b2n":
            base_to_new(backbone, features)
        elif name == "auto":
            failures += auto(backbone, features)
        else:
            raise SystemExit(f"unknown section {name!r}: dg, b2n, auto")
        print(f"[{name}: {time.perf_counter() - t0:.0f} s]\n")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
