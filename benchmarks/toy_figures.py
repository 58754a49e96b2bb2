"""The toy world's figures, measured through the library exactly as a user's run would go.

Every task is written as real image files + a CoOp split (``write_task_dataset``),
read back by the dataset reader, encoded through the feature cache, and fitted
by the registered methods via the benchmark runner (α and the epoch chosen on
the few-shot validation split; mean of seeds 1–3).

Usage:
    python benchmarks/toy_figures.py                          # the shipped checkpoint
    python benchmarks/toy_figures.py --checkpoint runs/toy    # a `clip-adapter toy pretrain` output
    python benchmarks/toy_figures.py --quick                  # zero-shot table and targets only

Prints: (A) zero-shot in-domain and under each shift; (B) CLIP-Adapter visual /
text / both and the linear probe at 1, 4, 16 shots on shifted tasks; (C)
accuracy against a fixed α; then the issue's targets, checked.
"""

from __future__ import annotations

import argparse
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
from clip_adapter.data import load_dataset  # noqa: E402
from clip_adapter.pipeline import FeatureConfig  # noqa: E402
from clip_adapter.toyworld import DOMAINS, write_task_dataset  # noqa: E402

PER_CLASS = {"shape": (32, 8, 50), "color": (32, 8, 50), "shape-color": (24, 4, 10)}  # train pool, val, test
SHIFTED = [
    ("color", "sketch"),
    ("color", "night"),
    ("shape", "sketch"),
    ("shape", "night"),
    ("shape-color", "sketch"),
    ("shape-color", "night"),
]
ALPHA_TASKS = [("color", "night"), ("shape-color", "sketch")]
ALPHAS = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
SEEDS = (1, 2, 3)
METHODS = [
    MethodSpec("visual", "clip-adapter", (("variant", "visual"),)),
    MethodSpec("text", "clip-adapter", (("variant", "text"),)),
    MethodSpec("both", "clip-adapter", (("variant", "both"),)),
    MethodSpec("linear-probe", "linear-probe"),
]


def dataset(task: str, domain: str, work: Path):
    root = work / "data" / f"{task}-{domain}"
    if not (root / "split.json").is_file():
        write_task_dataset(task, domain, root, *PER_CLASS[task], seed=0)
    return load_dataset(root, name=f"{task}/{domain}")


def run(backbone, plan: BenchPlan, out: Path) -> dict:
    """``{(dataset, label, shots): (mean accuracy %, mean zero-shot %)}`` over seeds."""
    report = run_bench(backbone, plan, out, log=lambda _: None)
    groups: dict = {}
    for row in load_results(report.results):
        groups.setdefault((row["dataset"], row["method"], row["shots"]), []).append(
            (row["accuracy"], row["zero_shot_accuracy"])
        )
    return {
        k: (100 * statistics.fmean(a for a, _ in v), 100 * statistics.fmean(z for _, z in v)) for k, v in groups.items()
    }


def zero_shot_table(backbone, work: Path, features: FeatureConfig) -> dict[str, float]:
    datasets = {f"{t}/{d}": dataset(t, d, work) for t in PER_CLASS for d in DOMAINS}
    plan = BenchPlan(datasets, [MethodSpec("zero-shot", "zero-shot")], (0,), (1,), "val", (), features)
    results = run(backbone, plan, work / "zero-shot")
    table = {name: results[(name, "zero-shot", 0)][0] for name in datasets}
    print("(A) zero-shot accuracy (%)\n| task | " + " | ".join(DOMAINS) + " |\n|---|" + "---|" * len(DOMAINS))
    for task in PER_CLASS:
        print(f"| {task} | " + " | ".join(f"{table[f'{task}/{d}']:.1f}" for d in DOMAINS) + " |")
    return table


def method_table(backbone, work: Path, features: FeatureConfig) -> dict:
    datasets = {f"{t}/{d}": dataset(t, d, work) for t, d in SHIFTED}
    results = run(backbone, BenchPlan(datasets, METHODS, (1, 4, 16), SEEDS, "val", (), features), work / "methods")
    print("\n(B) test accuracy (%), mean of seeds 1–3, α / C / epoch chosen on the few-shot validation split")
    print("| task | zero-shot | " + " | ".join(f"{m.label} @{s}" for s in (1, 4, 16) for m in METHODS) + " |")
    print("|---|---|" + "---|" * (3 * len(METHODS)))
    for name in datasets:
        cells = [f"{results[(name, m.label, s)][0]:.1f}" for s in (1, 4, 16) for m in METHODS]
        print(f"| {name} | {results[(name, 'visual', 1)][1]:.1f} | " + " | ".join(cells) + " |")
    return results


def alpha_table(backbone, work: Path, features: FeatureConfig) -> None:
    datasets = {f"{t}/{d}": dataset(t, d, work) for t, d in ALPHA_TASKS}
    specs = [MethodSpec(f"alpha={a}", "clip-adapter", (("alpha", a), ("alpha_grid", ()))) for a in ALPHAS]
    results = run(backbone, BenchPlan(datasets, specs, (16,), SEEDS, "val", (), features), work / "alpha")
    print("\n(C) visual CLIP-Adapter at a fixed α, 16 shots (epoch chosen on validation), test accuracy (%)")
    print("| task | " + " | ".join(f"α={a}" for a in ALPHAS) + " |\n|---|" + "---|" * len(ALPHAS))
    for name in datasets:
        print(f"| {name} | " + " | ".join(f"{results[(name, f'alpha={a}', 16)][0]:.1f}" for a in ALPHAS) + " |")


def targets(zs: dict[str, float], methods: dict | None) -> bool:
    drop = zs["shape/photo"] - zs["shape/sketch"]
    checks = [
        (f"in-domain zero-shot shape {zs['shape/photo']:.1f} >= 95", zs["shape/photo"] >= 95),
        (f"in-domain zero-shot shape-color {zs['shape-color/photo']:.1f} >= 95", zs["shape-color/photo"] >= 95),
        (f"sketch drop on shape {drop:.1f} >= 30 points", drop >= 30),
    ]
    if methods is not None:
        wins = [f"{t}/{d}" for t, d in SHIFTED if methods[(f"{t}/{d}", "visual", 16)][0] - zs[f"{t}/{d}"] >= 15]
        checks.append(
            (
                f"shifted tasks where CLIP-Adapter@16 beats zero-shot by >= 15 points: "
                f"{len(wins)} >= 2 ({', '.join(wins)})",
                len(wins) >= 2,
            )
        )
    print("\ntargets:")
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {text}")
    return all(ok for _, ok in checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="shipped", help="shipped, or a toy checkpoint file or directory")
    parser.add_argument(
        "--work", default="toy-figures", help="folder for task images, feature cache and result JSONs (reused)"
    )
    parser.add_argument("--quick", action="store_true", help="zero-shot table and targets only")
    args = parser.parse_args(argv)
    backbone = create_backbone("toy", args.checkpoint)
    work, start = Path(args.work), time.perf_counter()
    features = FeatureConfig(cache_dir=str(work / "cache"))
    print(f"backbone {backbone.id} ({backbone.precision})\n")
    zs = zero_shot_table(backbone, work, features)
    methods = None if args.quick else method_table(backbone, work, features)
    if not args.quick:
        alpha_table(backbone, work, features)
    ok = targets(zs, methods)
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
