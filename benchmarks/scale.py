"""ImageNet-scale few-shot training on cached features: wall time, accuracy, achieved FLOP/s.

Usage: python benchmarks/scale.py [--classes 1000] [--shots 16] [--dim 1024] [--baseline-ref REF] [--skip-slow]

The data: ``benchmarks/synthetic_world.py`` (class prototypes, a domain shift
shared by all classes plus a small per-class one, per-view noise; zero-shot
far from perfect), 16 shots × 10 views, 4 validation and 10 test images per
class. Every method runs through the Python API with its default config and
validation search. "Today" is the code at ``--baseline-ref`` (a git commit,
run from ``git archive`` in a subprocess) on a shortened run, extrapolated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


from heldout import run  # noqa: E402
from machine import describe_machine, matmul_rates  # noqa: E402
from synthetic_world import SHORT_RUNS, make_world  # noqa: E402

BASELINE_REF = "38c498428ff88e44c1270f99d3ea632b85c2d071"  # the code before this benchmark's changes
BASELINE_SNIPPET = """
import json, sys, time, torch
sys.path.insert(0, {bench!r})
from synthetic_world import make_world
from clip_adapter.methods import get_method
data, tx, ty = make_world({classes}, {shots}, dim={dim})
m = get_method({method!r})
t = time.perf_counter(); m(m.make_config(**{overrides!r})).fit(data)
print(json.dumps({{"seconds": time.perf_counter() - t}}))
"""


def baseline(ref: str, method: str, overrides: dict, args) -> float:
    """Seconds for ``method`` with ``overrides`` under the code at git ``ref`` (a fresh subprocess)."""
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", ref, "src"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        code = BASELINE_SNIPPET.format(
            bench=str(Path(__file__).resolve().parent),
            classes=args.classes,
            shots=args.shots,
            dim=args.dim,
            method=method,
            overrides=overrides,
        )
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def adapter_flops(data, candidate_epochs: int, reduction: int = 4) -> float:
    """Arithmetic of the stacked CLIP-Adapter search: forward + backward of adapter and logits, summed over
    candidates.
    """
    n, d, c = data.train.shape[0], data.embed_dim, data.num_classes
    h = d // reduction
    per_sample = (
        2 * (2 * d * h) + 2 * (3 * d * h) + 2 * (2 * d * c)
    )  # fwd adapter, bwd adapter, logits fwd + input grad
    return per_sample * n * candidate_epochs


class _Rows(list):
    """Table rows, each printed as soon as it is measured (a long run shows progress)."""

    def append(self, row) -> None:
        if not self:
            print("\n| method | wall s | test acc % | note |\n|---|---|---|---|")
        name, seconds, acc, note = row
        print(f"| {name} | {seconds:.1f} | {'' if acc != acc else f'{acc:.1f}'} | {note} |", flush=True)
        super().append(row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="git commit whose code is 'today' ('' to skip)")
    parser.add_argument(
        "--skip-slow", action="store_true", help="extrapolate Tip-Adapter-F, CLAP and the linear probe from short runs"
    )
    args = parser.parse_args()
    print(describe_machine())
    rates = matmul_rates()
    print("matmul 2048² (TFLOP/s): " + ", ".join(f"{k} {v:.3f}" for k, v in rates.items()))
    data, test_x, test_y = make_world(args.classes, args.shots, dim=args.dim)
    n = data.train.shape[0]
    print(
        f"\nworld: {args.classes} classes × {args.shots} shots × {data.train.shape[1]} views, D={args.dim}, "
        f"{len(data.val_labels)} val, {len(test_y)} test images"
    )
    rows = _Rows()
    zs = run("zero-shot", data, test_x, test_y)
    rows.append(("zero-shot", zs["seconds"], zs["accuracy"], ""))

    ca = run("clip-adapter", data, test_x, test_y)
    trained = [h for h in ca["history"] if h.get("steps")]
    runs = sorted((h["epochs_run"] for h in trained), reverse=True)
    flops = adapter_flops(data, sum(runs))
    note = (
        f"α={ca['chosen'].get('alpha')}, {len(trained)} α trained, "
        f"epochs per candidate {runs} (the race keeps the best), "
        f"{flops / ca['seconds'] / 1e12:.3f} TFLOP/s achieved"
    )
    rows.append(("clip-adapter (default)", ca["seconds"], ca["accuracy"], note))
    if args.baseline_ref:
        one_epoch = baseline(args.baseline_ref, "clip-adapter", {"epochs": 1, "alpha_grid": ()}, args)
        today = one_epoch * 60 * 5
        rows.append(
            (
                "clip-adapter, today's default (extrapolated)",
                today,
                float("nan"),
                f"1 α × 1 epoch measured: {one_epoch:.1f} s; × 5 α × 60 epochs",
            )
        )
        print(f"\nCLIP-Adapter speed-up over today's default: {today / ca['seconds']:.1f}×")

    tip = run("tip-adapter", data, test_x, test_y)
    rows.append(
        (
            "tip-adapter (α/β search)",
            tip["seconds"],
            tip["accuracy"],
            f"α={tip['chosen']['alpha']:.2f} β={tip['chosen']['beta']:.2f}",
        )
    )
    if args.baseline_ref:
        two = baseline(args.baseline_ref, "tip-adapter", {"beta_steps": 2}, args)
        rows.append(("tip-adapter, today (extrapolated)", two * 100, float("nan"), f"2 β measured: {two:.1f} s; × 100"))
        print(f"Tip-Adapter speed-up over today: {two * 100 / tip['seconds']:.1f}×")
    gda = run("gda", data, test_x, test_y)
    rows.append(("gda", gda["seconds"], gda["accuracy"], ""))
    for name, (short, scale, what) in SHORT_RUNS.items():
        if args.skip_slow:
            r = run(name, data, test_x, test_y, **short)
            rows.append((f"{name} (extrapolated)", r["seconds"] * scale, float("nan"), what))
        else:
            r = run(name, data, test_x, test_y)
            rows.append((name, r["seconds"], r["accuracy"], ""))
    print(f"\n(n = {n} training images) peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
