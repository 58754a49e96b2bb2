"""Is the toy CLIP a bag of words? The compositionality table of the shipped toy CLIP (and any remedies),
with wall time.

Writes the four toy suites (attribution, relation, order, negation; 240 items each, seeds
1000–1003) as files into a temporary folder, reads them back as ``clip-adapter compose-bench``
does, and scores each model on them, on the multi-object biases, the binding probes and
zero-shot shape/colour accuracy (the cost of a remedy). Images and texts go through a fresh
feature cache, so the time includes every encoding.

Usage:
    python benchmarks/compose_toy.py                                   # the base row (a few minutes on 2 busy cores)
    python benchmarks/compose_toy.py --model negclip=runs/negclip      # add rows for remedy checkpoints
    python benchmarks/compose_toy.py --quick                           # fewer items (a smoke test)

The same as: ``clip-adapter compose-bench --write-toy-suites S --out O --model base=shipped ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")

import torch  # noqa: E402

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.cli.compose import parse_models  # noqa: E402
from clip_adapter.compose.bench import ComposeConfig, bench_models, markdown_tables  # noqa: E402
from clip_adapter.compose.bias import BiasConfig  # noqa: E402
from clip_adapter.compose.probes import ProbeConfig  # noqa: E402
from clip_adapter.compose.suites import read_suite  # noqa: E402
from clip_adapter.compose.toy_suites import SUITES, write_toy_suites  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", action="append", default=[], metavar="LABEL=PRETRAINED", help="extra toy checkpoints to score"
    )
    parser.add_argument("--quick", action="store_true", help="fewer items, pairs and probe scenes (a smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1; the CPU is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = (
        {"base (shipped)": "shipped", **parse_models(args.model, None)} if args.model else {"base (shipped)": "shipped"}
    )
    items = 24 if args.quick else 240
    config = ComposeConfig(
        bias=BiasConfig(pairs=20 if args.quick else 200),
        probes=ProbeConfig(train=40, test=20) if args.quick else ProbeConfig(),
        zero_shot_per_class=10 if args.quick else 100,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        suites_dir = write_toy_suites(Path(work) / "suites", items)
        written = time.perf_counter() - start
        suites = [read_suite(suites_dir / name) for name in SUITES]
        factories = {label: (lambda p=p: create_backbone("toy", p, "fp32")) for label, p in models.items()}
        result = bench_models(factories, suites, Path(work) / "cache", config)
    print(markdown_tables(result))
    seconds = {label: r["seconds"] for label, r in result["models"].items()}
    print(
        f"wall time {time.perf_counter() - start:.0f} s (writing {len(SUITES)}×{items} suite images {written:.0f} s; "
        f"per model: {', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}; {torch.get_num_threads()} thread(s))"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
