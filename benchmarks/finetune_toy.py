"""Train each compositional remedy on the shipped toy CLIP and compare it with the base model.

    python benchmarks/finetune_toy.py [--out runs/finetune-toy] [--recipes negclip,labclip,negation]
                                      [--set negclip.lr=3e-5] [--base runs/toy-binding]

For the base model and each remedy (its default recipe, trained with
``clip_adapter.finetune.finetune`` into ``<out>/<recipe>`` and loaded back
through ``--pretrained``), prints and writes (``<out>/results.json``,
``<out>/table.md``):

- attribution: colour swapped between the two objects ("a red circle and a
  blue square" vs "a blue circle and a red square"), share of images whose
  true caption scores higher;
- relation: objects swapped around a relation;
- negation: "a red circle and no blue square" vs "no red circle and a blue square";
- zero-shot accuracy on the toy ``shape`` and ``color`` tasks (photo rendering),
  what the remedy costs.

Every measured item is drawn at seeds >= 1000 (training and validation use
seeds below 1000). This small measuring function stands in until the
``compose-bench`` package scores these checkpoints itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from clip_adapter.backbones import create_backbone
from clip_adapter.core.files import atomic_write_bytes, atomic_write_json
from clip_adapter.finetune import RECIPES, finetune
from clip_adapter.finetune.evaluate import pair_accuracy, task_set, zero_shot_accuracy
from clip_adapter.finetune.toydata import TRAIN_SEED_LIMIT, make_items

BENCH_SEED = TRAIN_SEED_LIMIT  # 1000: never drawn by training or validation
MEASURES = {"attribution": "attribution-color", "relation": "relation", "negation": "negation-benchmark"}
TARGETS = "NegCLIP, LABCLIP: attribution >= +15 points, zero-shot drop <= 2 points; negation: negation >= +15 points"


def measure(backbone, n_items: int, zs_per_class: int) -> dict[str, float]:
    """Pair accuracies and zero-shot accuracies in percent, on benchmark seeds."""
    out = {
        name: 100 * pair_accuracy(backbone, make_items(kind, BENCH_SEED, n_items)) for name, kind in MEASURES.items()
    }
    for task in ("shape", "color"):
        images, labels, prompts = task_set(task, zs_per_class, BENCH_SEED, split="test")
        out[f"zs_{task}"] = 100 * zero_shot_accuracy(backbone, images, labels, prompts)
    return out


def overrides(pairs: list[str], recipe: str) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        name, _, field = key.partition(".")
        if name == recipe:
            out[field] = json.loads(value) if value[:1] in "0123456789-tf[" else value
    return out


def table(rows: list[dict]) -> str:
    cols = ["model", "attribution", "relation", "negation", "zs_shape", "zs_color", "train_s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [row["model"]] + [
            f"{row[c]:.1f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in cols[1:]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/finetune-toy")
    parser.add_argument("--recipes", default=",".join(("negclip", "labclip", "negation")))
    parser.add_argument("--items", type=int, default=500, help="benchmark items per measure")
    parser.add_argument("--zs-per-class", type=int, default=50)
    parser.add_argument("--set", action="append", default=[], metavar="RECIPE.KEY=VALUE")
    parser.add_argument(
        "--base", default="shipped", help="toy checkpoint the remedies start from (default: the shipped one)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    base_model = create_backbone("toy", pretrained=args.base, precision="fp32")
    rows = [{"model": f"base ({args.base})", **measure(base_model, args.items, args.zs_per_class)}]
    print(table(rows), flush=True)
    for recipe in [r for r in args.recipes.split(",") if r]:
        RECIPES.get(recipe)
        start = time.perf_counter()
        result = finetune(
            recipe,
            pretrained=args.base,
            out=out / recipe,
            config=overrides(args.set, recipe),
            overwrite=True,
            command=f"benchmarks/finetune_toy.py --recipes {recipe} --base {args.base}",
        )
        wall = time.perf_counter() - start
        tuned = create_backbone("toy", pretrained=str(result.out), precision="fp32")
        rows.append(
            {
                "model": recipe,
                **measure(tuned, args.items, args.zs_per_class),
                "train_s": round(wall, 1),
                "selected_step": result.summary["selected_step"],
            }
        )
        print(table(rows[-1:]).split("\n")[-1], flush=True)
    base = rows[0]
    for row in rows[1:]:
        row["delta"] = {
            k: round(row[k] - base[k], 1) for k in ("attribution", "relation", "negation", "zs_shape", "zs_color")
        }
    text = table(rows)
    print("\n" + text + f"\n\ntargets: {TARGETS}\ndeltas: " + json.dumps({r["model"]: r["delta"] for r in rows[1:]}))
    atomic_write_json(
        out / "results.json",
        {"rows": rows, "bench_seed": BENCH_SEED, "items": args.items, "zs_per_class": args.zs_per_class},
    )
    atomic_write_bytes(out / "table.md", (text + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
