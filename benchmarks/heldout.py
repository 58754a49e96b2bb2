"""Every method and ``auto`` on the development and held-out synthetic worlds, side by side.

Usage:
    python benchmarks/heldout.py                      # every world, every method that fits the time
    python benchmarks/heldout.py --worlds ho-imagenet --methods clip-adapter
    python benchmarks/heldout.py --worlds ho-500x8 --methods linear-probe --set search=full
    python benchmarks/heldout.py --reference          # also run CLIP-Adapter's slow reference recipe
                                                      # (minutes to ~20 min per world) and store it

The worlds are ``benchmarks/worlds.py``: defaults may be chosen on the ``dev``
worlds only; the ``heldout`` worlds are reported and never used to choose.
Each method runs through the Python API with its default config and its
validation search (protocol ``val``: hyper-parameters chosen on the few-shot
validation split, min(shots, 4) images per class); test accuracy is on the
world's own test images, which no method sees.

CLIP-Adapter's *reference* is the slow recipe its large-N default replaced:
batch 32, lr 1e-3, 60 epochs, α in {0.1, 0.2, 0.4, 0.6, 0.8}, chosen on
validation, run once through the stacked engine. Its accuracy per world is
stored in ``benchmarks/heldout_reference.json`` (with the machine it ran on)
so the table can show the default's gap to it without re-running it.

Times: wall seconds and the process's CPU seconds. The heads train on one
thread, so on a machine shared with other jobs the CPU seconds are the better
estimate of the wall time on an idle one (not exact: the other jobs still
share caches and memory bandwidth).

Methods whose default recipe takes hours at a world's size on a CPU
(``SLOW``: Tip-Adapter-F, CLAP, the linear probe, and ``auto``, which fits
them in every fold) are skipped above ``--slow-limit`` training images and
printed as ``skipped``; the "Scale II" issue is about those.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_adapter.methods import get_method  # noqa: E402
from machine import describe_machine  # noqa: E402
from worlds import DEV, HELDOUT, WORLDS, build  # noqa: E402

METHODS = ("zero-shot", "clip-adapter", "gda", "tip-adapter", "tip-adapter-f", "clap", "linear-probe", "auto")
SLOW = ("tip-adapter-f", "clap", "linear-probe", "auto")
SLOW_LIMIT = 2_000  # training images above which SLOW methods are skipped by default
REFERENCE_FILE = Path(__file__).resolve().parent / "heldout_reference.json"
REFERENCE = {"alpha_grid": (0.1, 0.2, 0.4, 0.6, 0.8), "batch_size": 32, "lr": 1e-3, "epochs": 60, "max_passes": 0}


def run(method: str, data, test_x, test_y, **overrides) -> dict:
    """Fit ``method`` (default config + ``overrides``) on ``data``; its test accuracy, wall time and choice."""
    m = get_method(method)
    start, cpu = time.perf_counter(), time.process_time()
    result = m(m.make_config(**overrides)).fit(data)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    accuracy = (result.head.predict_logits(test_x).argmax(1) == test_y).float().mean().item()
    chosen = result.selected.get("chosen", {})
    return {
        "accuracy": round(100 * accuracy, 2),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "chosen": {k: v for k, v in chosen.items() if k != "epochs"},
        "history": result.history,
    }


def load_reference() -> dict:
    return json.loads(REFERENCE_FILE.read_text()) if REFERENCE_FILE.is_file() else {}


def store_reference(world: str, row: dict, machine: str) -> None:
    """Add one world's reference row to the JSON file (written whole, then renamed)."""
    table = load_reference()
    table[world] = {**row, "recipe": REFERENCE, "machine": machine}
    tmp = REFERENCE_FILE.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    tmp.replace(REFERENCE_FILE)


def parse_overrides(pairs: list[str]) -> dict:
    """``["search=full", "max_iter=1000"]`` -> ``{"search": "full", "max_iter": 1000}`` (JSON values, else text)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def cell(row: dict | None) -> str:
    if row is None:
        return "skipped"
    note = ", ".join(f"{k}={v}" for k, v in row.get("chosen", {}).items() if isinstance(v, (int, float, str)))
    cpu = f", CPU {row['cpu_seconds']:.0f} s" if "cpu_seconds" in row else ""
    return f"{row['accuracy']:.1f} ({row['seconds']:.0f} s{cpu}{'; ' + note if note else ''})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="all", help="comma-separated names from worlds.py, or all")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--slow-limit", type=int, default=SLOW_LIMIT, help="skip SLOW methods above this many training images"
    )
    parser.add_argument(
        "--reference", action="store_true", help="run CLIP-Adapter's slow reference recipe and store it"
    )
    parser.add_argument("--json", help="also write every row to this JSON file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every method run (repeatable; the value is parsed as JSON, else kept as text)",
    )
    parser.add_argument("--history", action="store_true", help="keep each fit's history in the --json rows")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    names = [s.name for s in (*DEV, *HELDOUT)] if args.worlds == "all" else args.worlds.split(",")
    methods = args.methods.split(",")
    machine = describe_machine()
    print(machine)
    reference = load_reference()
    rows: dict[str, dict[str, dict | None]] = {}
    for name in names:
        spec = WORLDS[name]
        data, test_x, test_y = build(spec)
        n = data.train.shape[0]
        print(f"\n{name} ({spec.role}): {spec.size}, {n} training images", flush=True)
        rows[name] = {}
        for method in methods:
            if method in SLOW and n > args.slow_limit:
                rows[name][method] = None
                continue
            rows[name][method] = run(method, data, test_x, test_y, **overrides)
            if not args.history:
                rows[name][method].pop("history")
            print(f"  {method}: {cell(rows[name][method])}", flush=True)
        if args.reference and "clip-adapter" in methods:
            ref = run("clip-adapter", data, test_x, test_y, **REFERENCE)
            ref.pop("history")
            store_reference(name, ref, machine)
            reference = load_reference()
            print(f"  clip-adapter reference recipe: {cell(ref)}", flush=True)
    print_table(names, methods, rows, reference)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def print_table(names: list[str], methods: list[str], rows: dict, reference: dict) -> None:
    """Dev worlds then held-out worlds as columns; one row per method; CLIP-Adapter's gap to its reference."""
    order = [n for n in names if WORLDS[n].role == "dev"] + [n for n in names if WORLDS[n].role == "heldout"]
    print("\ntest accuracy % (wall s; choice), protocol val: chosen on the few-shot validation split\n")
    print("| method | " + " | ".join(f"{n} ({WORLDS[n].role})" for n in order) + " |")
    print("|---|" + "---|" * len(order))
    for method in methods:
        print(f"| {method} | " + " | ".join(cell(rows[n].get(method)) for n in order) + " |")
    if "clip-adapter" not in methods:
        return
    refs = [reference.get(n) for n in order]
    print("| clip-adapter reference (slow recipe) | " + " | ".join(cell(r) if r else "not run" for r in refs) + " |")
    gaps = []
    for n, r in zip(order, refs):
        mine = rows[n].get("clip-adapter")
        if r and mine:
            key = "cpu_seconds" if "cpu_seconds" in r and "cpu_seconds" in mine else "seconds"
            speed = r[key] / max(mine[key], 0.1)
            clock = "CPU" if key == "cpu_seconds" else "wall"
            gaps.append(f"{mine['accuracy'] - r['accuracy']:+.2f} pt, {speed:.1f}× faster ({clock} time)")
        else:
            gaps.append("")
    print("| default − reference | " + " | ".join(gaps) + " |")


if __name__ == "__main__":
    sys.exit(main())
