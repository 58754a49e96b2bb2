"""``clip-adapter finetune``: fine-tune a backbone's encoders with a remedy for CLIP's bag-of-words behaviour.

Recipes: ``negclip`` (hard-negative captions and nearest-neighbour images),
``labclip`` (a linear map on text embeddings, folded into the text
projection), ``negation`` (NegationCLIP: the text encoder on captions that deny
absent objects). Training data is the toy world (default) or ``--data``, a JSON
list of ``{"image": path, "caption": text, "negatives": [texts], "labels": [names]}``
(paths relative to the file). The output folder holds a backbone checkpoint
every command loads with ``--pretrained`` (the command to use is printed), the
CSV training log and the recipe, base weights, steps and wall time in its JSON.
``--set KEY=VALUE`` changes any recipe option; ``--list-options`` shows them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .common import parse_assignments
from .parsing import seed_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a backbone (NegCLIP, LABCLIP, NegationCLIP) into a new checkpoint", description=__doc__)
    p.add_argument("--recipe", required=True, help="negclip, labclip or negation")
    p.add_argument("--backbone", default="toy", help="toy (default) or an open_clip architecture, e.g. ViT-B-32")
    p.add_argument("--pretrained", default=None, help="weights to start from: open_clip tag, checkpoint path, or none (toy default: the shipped checkpoint)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--init-seed", type=seed_int, default=0, help="seed for --pretrained none (default: %(default)s)")
    p.add_argument("--precision", default=None, choices=("auto", "bf16", "fp32"), help="autocast while training (default: auto, bf16 where fast)")
    p.add_argument("--out", default=None, help="output folder (new or empty; --overwrite replaces our own earlier fine-tuning output)")
    p.add_argument("--data", default=None, help="captions JSON (default: the toy world)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE", help="a recipe option (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace a fine-tuning output this tool wrote earlier at --out")
    p.add_argument("--list-options", action="store_true", help="print the recipe's options and defaults, then exit")
    p.set_defaults(func=finetune_main)


def finetune_main(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..finetune import RECIPES, finetune

    recipe = RECIPES.get(args.recipe)
    if args.list_options:
        _list_options(recipe)
        return 0
    if not args.out:
        raise ConfigError("finetune: --out is required (the folder to write the checkpoint to)")
    values = parse_assignments(args.assignments, recipe.config_cls)
    if args.precision:
        values["precision"] = args.precision
    result = finetune(args.recipe, args.backbone, args.pretrained, args.out, args.data, values, args.overwrite,
                      args.device, args.init_seed, command=" ".join(["clip-adapter", *sys.argv[1:]]) if sys.argv[1:] else None)
    s = result.summary
    scores = ", ".join(f"{k} {v:.3f}" for k, v in s["validation_selected"].items())
    print(f"{args.recipe}: kept step {s['selected_step']} of {s['steps']} (validation: {scores}) in {s['wall_time_s']:.0f} s")
    print(f"checkpoint written to {result.out}; use it with: {result.usage}")
    return 0


def _list_options(recipe) -> None:
    defaults = recipe.config_cls()
    print(f"{recipe.name}: {recipe.summary}")
    for f in dataclasses.fields(recipe.config_cls):
        print(f"  {f.name} = {getattr(defaults, f.name)!r}  {f.metadata.get('help', '')}")
