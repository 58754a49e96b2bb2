"""``clip-adapter train``: few-shot data + backbone + method → artifact directory + result JSON."""

from __future__ import annotations

import argparse
import sys

from ..methods import get_method, list_methods
from ..pipeline import RunConfig, run_few_shot
from .common import (
    add_backbone_options,
    add_data_options,
    add_feature_options,
    backbone_from_args,
    dataset_from_args,
    features_from_args,
    parse_assignments,
)

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
    group.add_argument("--epochs", type=int, help="training epochs")
    group.add_argument("--lr", type=float, help="learning rate")
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any method option (see `clip-adapter methods`)")
    run = p.add_argument_group("run")
    run.add_argument("--shots", type=int, default=16, help="training images per class (default: %(default)s)")
    run.add_argument("--seed", type=int, default=1, help="sampling and training seed (default: %(default)s)")
    run.add_argument("--protocol", default="val", choices=("val", "none", "oracle"), help="choose hyper-parameters on: val (default), none, oracle (TEST; labelled)")
    run.add_argument("--template", action="append", default=[], help="prompt template with {} (repeat to ensemble; 'imagenet-ensemble' for the 7)")
    p.add_argument("--out", required=True, help="artifact directory to write")
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
    if len(args.template) == 1:
        from ..data import resolve_templates

        return resolve_templates(args.template[0])
    return tuple(args.template)


def main(args: argparse.Namespace) -> int:
    run = RunConfig(method=args.method, shots=args.shots, seed=args.seed, protocol=args.protocol, templates=templates_from_args(args))
    method_config = method_config_from_args(args)
    dataset = dataset_from_args(args)
    backbone = backbone_from_args(args)
    clf, result, split = run_few_shot(backbone, dataset, run, method_config, features_from_args(args))
    clf.save_pretrained(args.out, {"result.json": result, "split.json": split.to_json()})
    print(summary_line(result), file=sys.stderr)
    print(f"artifact written to {args.out} (config.json, model.safetensors, result.json, split.json)", file=sys.stderr)
    return 0


def summary_line(result: dict) -> str:
    acc, zs = result["test"]["accuracy"], result["zero_shot_test_accuracy"]
    chosen = result["selection"].get("chosen", {})
    chosen_text = ", ".join(f"{k}={v}" for k, v in chosen.items()) or "defaults"
    protocol = result["protocol"] + (" — chosen on TEST" if result["protocol"] == "oracle" else "")
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    return (f"{result['method']} {result['run']['shots']}-shot seed {result['run']['seed']}: test {fmt(acc)} "
            f"(zero-shot {fmt(zs)}); chosen {chosen_text} [protocol {protocol}]")
