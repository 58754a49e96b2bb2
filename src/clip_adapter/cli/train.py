"""``clip-adapter train``: few-shot data + backbone + method → artifact directory + result JSON."""

from __future__ import annotations

import argparse
import sys

from ..methods import get_method, list_methods
from ..methods.base import PROTOCOLS
from ..outputs import claim_output_dir
from ..pipeline import RunConfig, epoch_log_csv, run_few_shot, shots_text
from .common import (
    add_backbone_options,
    add_data_options,
    add_feature_options,
    add_overwrite_option,
    backbone_from_args,
    data_inputs,
    dataset_from_args,
    features_from_args,
    parse_assignments,
)
from .parsing import count_int, positive_int, seed_int

SHORTCUTS = ("variant", "alpha", "ratio", "epochs", "lr")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a few-shot classifier and write an artifact", description=__doc__)
    add_data_options(p)
    add_backbone_options(p)
    add_feature_options(p)
    group = p.add_argument_group("method")
    group.add_argument("--method", default="clip-adapter", help=f"one of: {', '.join(list_methods())} (default: %(default)s)")
    group.add_argument("--preset", default=None, help="named recipe, e.g. clip-adapter: fast (default) or official")
    group.add_argument("--variant", help="CLIP-Adapter: visual, text or both")
    group.add_argument("--ratio", help="CLIP-Adapter: fixed, learned or network")
    group.add_argument("--alpha", type=float, help="residual ratio (CLIP-Adapter) or blend weight")
    group.add_argument("--epochs", type=positive_int, help="training epochs")
    group.add_argument("--lr", type=float, help="learning rate")
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any method option (see `clip-adapter methods`)")
    run = p.add_argument_group("run")
    run.add_argument("--shots", type=count_int, default=16, help="training images per class (default: %(default)s)")
    run.add_argument("--seed", type=seed_int, default=1, help="sampling and training seed (default: %(default)s)")
    run.add_argument("--protocol", default="val", choices=PROTOCOLS,
                     help="choose hyper-parameters on: val (the few-shot validation split; default), full-val (the dataset's whole "
                          "validation split, as Tip-Adapter's official code), none (defaults), oracle (TEST; labelled)")
    run.add_argument("--template", action="append", default=[], help="prompt template with {} (repeat to ensemble; 'imagenet-ensemble' for the 7)")
    run.add_argument("--allow-unknown-words", action="store_true",
                     help="train even if the backbone's tokenizer cannot read some class names (they are still reported)")
    p.add_argument("--out", required=True, help="artifact directory to write (new, empty, or an artifact with --overwrite)")
    add_overwrite_option(p, "an artifact")
    p.set_defaults(func=main)


def method_config_from_args(args: argparse.Namespace):
    method = get_method(args.method)
    overrides = parse_assignments(args.set, method.Config)
    for name in SHORTCUTS:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return method.make_config(args.preset, **overrides)


def templates_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """``--template`` values, checked at once (a named set such as imagenet-ensemble expands)."""
    from ..data import resolve_templates

    return resolve_templates(args.template) if args.template else ()


def main(args: argparse.Namespace) -> int:
    # Every check on options and paths comes before the first image is encoded.
    claim_output_dir(args.out, "artifact", overwrite=args.overwrite, inputs=data_inputs(args))
    run = RunConfig(method=args.method, shots=args.shots, seed=args.seed, protocol=args.protocol,
                    templates=templates_from_args(args), allow_unknown_words=args.allow_unknown_words)
    method_config = method_config_from_args(args)
    dataset = dataset_from_args(args)
    claim_output_dir(args.out, "artifact", overwrite=args.overwrite, inputs=data_inputs(args, dataset))
    preset_crop = getattr(get_method(args.method), "preset_crop_scale", {}).get(args.preset or "")
    features = features_from_args(args, data_inputs(args, dataset), crop_scale=preset_crop)
    backbone = backbone_from_args(args)
    if get_method(args.method).needs_backbone:
        print(f"{args.method} runs the text encoder at every training step (not only cached features): "
              "expect minutes where cached-feature methods take seconds", file=sys.stderr)
    clf, result, split = run_few_shot(backbone, dataset, run, method_config, features)
    files = {"result.json": result, "split.json": split.to_json(), "log.csv": epoch_log_csv(result.get("history", []))}
    clf.save_pretrained(args.out, files, overwrite=args.overwrite)
    print(summary_line(result), file=sys.stderr)
    print(f"prompts: {' | '.join(result['templates'])} ({result['templates_source']})", file=sys.stderr)
    print(f"artifact written to {args.out} (config.json, model.safetensors, result.json, split.json, log.csv)", file=sys.stderr)
    return 0


def summary_line(result: dict) -> str:
    """One line for stderr; the shots are those used (``10-shot (64 requested)``), never only those asked for."""
    acc, zs = result["test"]["accuracy"], result["zero_shot_test_accuracy"]
    chosen = result["selection"].get("chosen", {})
    chosen_text = ", ".join(f"{k}={v}" for k, v in chosen.items()) or "defaults"
    protocol = result["protocol"] + {"oracle": " — chosen on TEST", "full-val": " — chosen on the full validation split"}.get(result["protocol"], "")
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    return (f"{result['method']} {shots_text(result)} seed {result['run']['seed']}: test {fmt(acc)} "
            f"(zero-shot {fmt(zs)}); chosen {chosen_text} [protocol {protocol}]")
