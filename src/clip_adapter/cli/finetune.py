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
``--config OUT`` replays an earlier fine-tuning from the record in its output folder (recipe, options,
base weights, data); an option given on the command line overrides its recorded value.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from ..core.errors import ConfigError
from ..core.files import quoted
from .common import (
    add_config_option,
    given_options,
    parse_assignments,
    read_recorded_config,
    recorded,
    track_given_options,
)
from .parsing import seed_int

# The record a fine-tuning output holds: toy_clip.json (the toy CLIP) or finetuned.json (open_clip).
RECORD_FILES = ("toy_clip.json", "finetuned.json")
RECORD = "the toy_clip.json or finetuned.json of a `clip-adapter finetune` output"
TOY_WORLD = "toy-world"  # what the record says when no --data was given


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a backbone (NegCLIP, LABCLIP, NegationCLIP) into a new checkpoint",
        description=__doc__,
    )
    p.add_argument("--recipe", default=None, help="negclip, labclip or negation (required unless --config)")
    p.add_argument("--backbone", default="toy", help="toy (default) or an open_clip architecture, e.g. ViT-B-32")
    p.add_argument(
        "--pretrained",
        default=None,
        help="weights to start from: open_clip tag, checkpoint path, or none (toy default: the shipped checkpoint)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--init-seed", type=seed_int, default=0, help="seed for --pretrained none (default: %(default)s)")
    p.add_argument(
        "--precision",
        default=None,
        choices=("auto", "bf16", "fp32"),
        help="autocast while training (default: auto, bf16 where fast)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (new or empty; --overwrite replaces our own earlier fine-tuning output)",
    )
    p.add_argument("--data", default=None, help="captions JSON (default: the toy world)")
    p.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recipe option (repeatable)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace a fine-tuning output this tool wrote earlier at --out"
    )
    p.add_argument("--list-options", action="store_true", help="print the recipe's options and defaults, then exit")
    add_config_option(p, "a fine-tuning output's toy_clip.json or finetuned.json")
    track_given_options(p)  # last: every option above must say whether it was typed
    p.set_defaults(func=finetune_main)


def finetune_main(args: argparse.Namespace) -> int:
    from ..finetune import RECIPES, finetune

    base = apply_recorded_finetune(args) if args.config else {}
    if not args.recipe:
        raise ConfigError("finetune: --recipe is required (negclip, labclip or negation), or --config with a record")
    recipe = RECIPES.get(args.recipe)
    if args.list_options:
        _list_options(recipe)
        return 0
    if not args.out:
        raise ConfigError("finetune: --out is required (the folder to write the checkpoint to)")
    values = {**base, **parse_assignments(args.assignments, recipe.config_cls)}
    if args.precision:
        values["precision"] = args.precision
    if args.config:
        print(f"replaying the fine-tuning recorded in {args.config} (options given here override it)", file=sys.stderr)
    result = finetune(
        args.recipe,
        args.backbone,
        args.pretrained,
        args.out,
        args.data,
        values,
        args.overwrite,
        args.device,
        args.init_seed,
        command=" ".join(["clip-adapter", *sys.argv[1:]]) if sys.argv[1:] else None,
    )
    s = result.summary
    scores = ", ".join(f"{k} {v:.3f}" for k, v in s["validation_selected"].items())
    print(
        f"{args.recipe}: kept step {s['selected_step']} of {s['steps']} "
        f"(validation: {scores}) in {s['wall_time_s']:.0f} s"
    )
    print(f"checkpoint written to {result.out}; use it with: {result.usage}")
    return 0


def apply_recorded_finetune(args: argparse.Namespace) -> dict[str, Any]:
    """Fill the options not given on the command line from the fine-tuning recorded at ``args.config``.

    Returns the recorded recipe options (empty when ``--recipe`` names another recipe: its options differ).
    The backbone, its starting weights and init seed come from the record's base weights; the data from its
    ``data`` (the toy world, or the captions file it names). Device and output come from the command line.

    Example:
        >>> apply_recorded_finetune(argparse.Namespace(config="/no/such/run"))
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: --config file not found: /no/such/run
    """
    from ..artifacts import recorded_seed
    from ..finetune import RECIPES
    from ..finetune.checkpoint import FORMAT

    file, record = read_recorded_config(args.config, RECORD_FILES, RECORD)
    if FORMAT not in (record.get("format"), record.get("format_note")):
        written = str(record.get("format_note") or record.get("format"))[:60]
        raise ConfigError(f"--config {quoted(file)} is not {RECORD} (its format is {written!r}, not {FORMAT!r})")
    base_id = record.get("base_weights")
    parts = base_id.split("/") if isinstance(base_id, str) else []
    recipe = record.get("recipe")
    if len(parts) < 3 or not isinstance(recipe, str) or not isinstance(record.get("recipe_config"), dict):
        raise ConfigError(
            f"--config {quoted(file)} records no complete fine-tuning (its recipe, recipe_config and base_weights)"
        )
    given = given_options(args)

    def fill(dest: str, value: Any) -> None:
        if dest not in given:
            setattr(args, dest, value)

    fill("recipe", recipe)
    if "backbone" not in given:  # the recorded weights belong to the recorded architecture
        # open_clip's record names its architecture; the toy CLIP's holds its shapes there, so its id is read:
        # provider/name/weights.
        architecture = record.get("architecture")
        fill("backbone", architecture if isinstance(architecture, str) else "/".join(parts[1:-1]))
        fill("pretrained", record.get("base_pretrained"))
        fill("init_seed", recorded_seed({"id": base_id}, f"--config {quoted(file)}"))
    data = record.get("data")
    fill("data", None if data in (None, TOY_WORLD) else str(data))
    if args.recipe != recipe:
        return {}
    cls = recorded(file, lambda: RECIPES.get(recipe)).config_cls
    return recorded(file, lambda: cls.from_dict(record["recipe_config"], where="recipe_config").to_dict())


def _list_options(recipe) -> None:
    defaults = recipe.config_cls()
    print(f"{recipe.name}: {recipe.summary}")
    for f in dataclasses.fields(recipe.config_cls):
        print(f"  {f.name} = {getattr(defaults, f.name)!r}  {f.metadata.get('help', '')}")
