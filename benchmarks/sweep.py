"""A protocol sweep on synthetic features with the real datasets' sizes: total wall time and peak memory.

Usage: python benchmarks/sweep.py [--datasets all|name,...] [--shots 1,2,4,8,16] [--seeds 1,2,3]
                                  [--methods clip-adapter,tip-adapter-f,linear-probe,clap,gda] [--dim 1024]
                                  [--extrapolate]

Each cell is ``synthetic_world.make_world`` with the dataset's class count and
test-set size (CoOp splits), K shots × 10 views, min(K, 4) validation shots;
every method runs with its default config as the pipeline resolves it for that dataset
(Tip-Adapter's official per-dataset settings included) and its validation search. Prints one
line per dataset, the total and the peak RSS. The full grid, measured: 1 h 46 min on a 2-core
AVX-512-BF16 EPYC, peak RSS 5.5 GiB (``RESULTS.md`` §3).

``--extrapolate`` (when the full grid cannot run in the time at hand) projects it: every
cell is run for the first seed only and counted once per seed (a fit's cost does not depend
on the seed), and in cells of more than ``FULL_RUN_LIMIT`` training images the slow reference
recipes (Tip-Adapter-F, CLAP, linear probe) run the short versions of
``synthetic_world.SHORT_RUNS`` scaled to their full length (upper bounds).
The table then says "projected".
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_adapter.methods import get_method  # noqa: E402
from clip_adapter.methods.base import for_dataset  # noqa: E402
from machine import describe_machine  # noqa: E402
from synthetic_world import SHORT_RUNS, make_world  # noqa: E402

# (classes, test images) of the CoOp splits.
DATASETS = {
    "imagenet": (1000, 50000),
    "caltech101": (100, 2465),
    "oxford_pets": (37, 3669),
    "stanford_cars": (196, 8041),
    "oxford_flowers": (102, 2463),
    "food101": (101, 30300),
    "fgvc_aircraft": (100, 3333),
    "sun397": (397, 19850),
    "dtd": (47, 1692),
    "eurosat": (10, 8100),
    "ucf101": (101, 3783),
}
# With --extrapolate, cells with more training images than this run the slow recipes short. 0: every
# cell (the linear probe's full C search is hours on a CPU even at 100 classes × 16 shots).
FULL_RUN_LIMIT = 0
METHODS = ("clip-adapter", "tip-adapter-f", "linear-probe", "clap", "gda")


def fit_seconds(method: str, data, extrapolate: bool, dataset: str) -> float:
    """Seconds to fit ``method`` as the pipeline would for ``dataset`` (its per-dataset settings included).

    When extrapolating, the slow recipes in large cells run their short version, scaled by
    the full run's epochs over the short run's (e.g. Tip-Adapter-F's 100 official epochs on
    EuroSAT) or, for the linear probe, by the fixed factor of ``SHORT_RUNS``.
    """
    m = get_method(method)
    full = for_dataset(method, m.Config(), dataset)
    short = extrapolate and method in SHORT_RUNS and len(data.train_labels) > FULL_RUN_LIMIT
    overrides, factor, _ = SHORT_RUNS[method] if short else ({}, 1, "")
    config = full.replace(**overrides)
    if short and "epochs" in overrides:
        factor = full.epochs / overrides["epochs"]
    t = time.perf_counter()
    m(config).fit(data)
    return (time.perf_counter() - t) * factor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="all")
    parser.add_argument("--shots", default="1,2,4,8,16")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument(
        "--extrapolate", action="store_true", help="run seed 1 and short slow recipes; project the grid"
    )
    args = parser.parse_args()
    names = list(DATASETS) if args.datasets == "all" else args.datasets.split(",")
    shots, seeds, methods = (
        [int(s) for s in args.shots.split(",")],
        [int(s) for s in args.seeds.split(",")],
        args.methods.split(","),
    )
    print(describe_machine())
    print(
        f"{len(names)} datasets × shots {shots} × seeds {seeds} × {methods}, D={args.dim}"
        + (" (PROJECTED: seed 1 measured × seeds, slow recipes from short runs)" if args.extrapolate else "")
        + "\n"
    )
    print(
        "| dataset | classes | "
        + " | ".join(f"{m} s" for m in methods)
        + " | total s |\n|---|---|"
        + "---|" * (len(methods) + 1)
    )
    start, grand = time.perf_counter(), 0.0
    for name in names:
        classes, test = DATASETS[name]
        per_method = dict.fromkeys(methods, 0.0)
        for k in shots:
            for seed in seeds[:1] if args.extrapolate else seeds:
                data, _, _ = make_world(classes, k, dim=args.dim, test_per_class=math.ceil(test / classes), seed=seed)
                data.seed = seed
                cell = {m: fit_seconds(m, data, args.extrapolate, name) for m in methods}
                for m in methods:
                    per_method[m] += cell[m] * (len(seeds) if args.extrapolate else 1)
                print(
                    f"  {name} {k}-shot seed {seed}: " + ", ".join(f"{m} {v:.1f} s" for m, v in cell.items()),
                    file=sys.stderr,
                    flush=True,
                )
        grand += sum(per_method.values())
        print(
            f"| {name} | {classes} | "
            + " | ".join(f"{per_method[m]:.1f}" for m in methods)
            + f" | {sum(per_method.values()):.1f} |",
            flush=True,
        )
    total = "projected total (sum of the table)" if args.extrapolate else "total wall"
    print(
        f"\n{total}: {grand:.1f} s; measured wall {time.perf_counter() - start:.1f} s; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
