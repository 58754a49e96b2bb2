"""``clip-adapter train``: few-shot data + backbone + method → artifact directory + result JSON.

``--config runs/a`` replays the run recorded in an artifact (``runs/a/config.json`` and the
``result.json`` beside it): the same method and options, shots, seed, protocol, prompts, feature
options and backbone; an option given on the command line overrides its recorded value.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.files import quoted, read_json
from ..core.outputs import ARTIFACT_FORMAT, claim_output_dir
from ..methods import get_method, list_methods
from ..methods.base import PROTOCOLS
from ..pipeline import FeatureConfig, RunConfig, epoch_log_csv, run_few_shot, shots_text
from .common import (
    add_backbone_options,
    add_config_option,
    add_data_options,
    add_feature_options,
    add_overwrite_option,
    backbone_from_args,
    data_inputs,
    dataset_from_args,
    features_from_args,
    given_options,
    parse_assignments,
    read_recorded_config,
    recorded,
    track_given_options,
)
from .parsing import count_int, positive_int, seed_int

SHORTCUTS = ("variant", "alpha", "ratio", "epochs", "lr")
# The method's options as asked for (preset, --set and shortcuts applied, before any search on validation),
# kept in result.json so that --config replays the run; config.json holds the values the search chose.
REQUESTED = "requested_method_config"
RECORD = "the config.json of an artifact written by `clip-adapter train`"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a few-shot classifier and write an artifact", description=__doc__)
    add_data_options(p)
    add_backbone_options(p)
    add_feature_options(p)
    group = p.add_argument_group("method")
    group.add_argument(
        "--method", default="clip-adapter", help=f"one of: {', '.join(list_methods())} (default: %(default)s)"
    )
    group.add_argument("--preset", default=None, help="named recipe, e.g. clip-adapter: fast (default) or official")
    group.add_argument("--variant", help="CLIP-Adapter: visual, text or both")
    group.add_argument("--ratio", help="CLIP-Adapter: fixed, learned or network")
    group.add_argument("--alpha", type=float, help="residual ratio (CLIP-Adapter) or blend weight")
    group.add_argument("--epochs", type=positive_int, help="training epochs")
    group.add_argument("--lr", type=float, help="learning rate")
    group.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any method option (see `clip-adapter methods`)"
    )
    run = p.add_argument_group("run")
    run.add_argument("--shots", type=count_int, default=16, help="training images per class (default: %(default)s)")
    run.add_argument("--seed", type=seed_int, default=1, help="sampling and training seed (default: %(default)s)")
    run.add_argument(
        "--protocol",
        default="val",
        choices=PROTOCOLS,
        help="choose hyper-parameters on: val (the few-shot validation split; default), full-val (the dataset's whole "
        "validation split, as Tip-Adapter's official code), none (defaults), oracle (TEST; labelled)",
    )
    run.add_argument(
        "--template",
        action="append",
        default=[],
        help="prompt template with {} (repeat to ensemble; 'imagenet-ensemble' for the 7)",
    )
    run.add_argument(
        "--allow-unknown-words",
        action="store_true",
        help="train even if the backbone's tokenizer cannot read some class names (they are still reported)",
    )
    p.add_argument(
        "--out", required=True, help="artifact directory to write (new, empty, or an artifact with --overwrite)"
    )
    add_overwrite_option(p, "an artifact")
    add_config_option(p, "an artifact's config.json (and the result.json beside it)")
    track_given_options(p)  # last: every option above must say whether it was typed
    p.set_defaults(func=main)


def method_config_from_args(args: argparse.Namespace):
    """The method's config: a preset (or, replaying, the recorded options) with ``--set`` and the shortcuts on top."""
    method = get_method(args.method)
    overrides = parse_assignments(args.set, method.Config)
    for name in SHORTCUTS:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    base = getattr(args, "recorded_method_config", None)
    if base is not None:
        return method.make_config(None, **{**base, **overrides})
    return method.make_config(args.preset, **overrides)


def apply_recorded_run(args: argparse.Namespace) -> Path:
    """Fill every option not given on the command line from the run recorded at ``args.config``; return the file.

    The record is the artifact's ``config.json`` (its format and backbone) and the ``result.json`` beside it
    (method, options asked for, shots, seed, protocol, prompts, feature options). Data, cache, device and
    output come from the command line only: they say where, not what. A bad record is one ConfigError (or
    ArtifactError) naming its file.

    Example:
        >>> args = argparse.Namespace(config="/no/such/run")
        >>> apply_recorded_run(args)
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: --config file not found: /no/such/run
    """
    from ..artifacts import checked_backbone_record, recorded_seed

    file, config = read_recorded_config(args.config, ("config.json",), RECORD)
    if config.get("format") != ARTIFACT_FORMAT:
        raise ConfigError(
            f"--config {quoted(file)} is not {RECORD} (its format is {str(config.get('format'))[:60]!r}, "
            f"not {ARTIFACT_FORMAT!r})"
        )
    results = file.parent / "result.json"
    if not results.is_file():
        raise ConfigError(
            f"--config {quoted(file)}: the run's settings (shots, seed, features) are kept in the "
            "result.json beside it, which is missing; only an artifact written by `clip-adapter train` "
            "can be replayed"
        )
    result = read_json(results, "--config result.json", ConfigError)
    if not isinstance(result, dict) or not all(isinstance(result.get(key), dict) for key in ("run", "features")):
        raise ConfigError(f"--config {quoted(results)} records no run settings (its run and features objects)")
    run = recorded(results, lambda: RunConfig.from_dict(result["run"], where="run"))
    kept = {k: v for k, v in result["features"].items() if k != "cache_dir"}  # a place on one machine, not a setting
    features = recorded(results, lambda: FeatureConfig.from_dict(kept, where="features"))
    backbone = checked_backbone_record(config.get("backbone"), str(file))
    given = given_options(args)

    def fill(dest: str, value: Any) -> None:
        if dest not in given:
            setattr(args, dest, value)

    fill("method", run.method)
    for name in ("shots", "seed", "protocol", "allow_unknown_words"):
        fill(name, getattr(run, name))
    fill("template", list(run.templates))
    fill("precision", backbone.get("precision", "auto"))
    if "backbone" not in given:  # the recorded weights belong to the recorded architecture
        fill("backbone", backbone["name"])
        fill("pretrained", backbone.get("pretrained"))
        fill("init_seed", recorded_seed(backbone, str(file)))
    for name in ("views", "aug_seed", "batch_size", "skip_bad"):
        fill(name, getattr(features, name))
    fill("no_flip", not features.flip)
    preset_crop = "preset" in given and getattr(get_method(args.method), "preset_crop_scale", {}).get(args.preset)
    if not preset_crop:  # a preset given now brings its own crop, as it does without --config
        fill("crop_scale", ",".join(repr(float(v)) for v in features.crop_scale))
    if args.method == run.method and "preset" not in given:  # another method, or a preset, starts from its own options
        args.recorded_method_config = _recorded_method_config(file, config, result, run.method)
    return file


def _recorded_method_config(file: Path, config: dict[str, Any], result: dict[str, Any], method: str) -> dict[str, Any]:
    """The method options the recorded run asked for (or, in an older record, those its search chose)."""
    cls = get_method(method).Config
    if isinstance(result.get(REQUESTED), dict):
        requested = result[REQUESTED]
        return recorded(file.parent / "result.json", lambda: cls.from_dict(requested, where=REQUESTED).to_dict())
    if config.get("method") != method:  # `auto` keeps the config of the method it chose, not its own
        warnings.warn(
            f"{quoted(file)} records no options of {method} (written before train kept them): its defaults are used"
        )
        return {}
    warnings.warn(
        f"{quoted(file)} records the hyper-parameters the run chose, not the options it asked for "
        "(written before train kept them): the search on validation starts from the chosen values"
    )
    return recorded(file, lambda: cls.from_dict(config.get("method_config"), where="method_config").to_dict())


def templates_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """``--template`` values, checked at once (a named set such as imagenet-ensemble expands)."""
    from ..data import resolve_templates

    return resolve_templates(args.template) if args.template else ()


def main(args: argparse.Namespace) -> int:
    # Every check on options and paths comes before the first image is encoded.
    replayed = apply_recorded_run(args) if args.config else None
    claim_output_dir(args.out, "artifact", overwrite=args.overwrite, inputs=data_inputs(args))
    run = RunConfig(
        method=args.method,
        shots=args.shots,
        seed=args.seed,
        protocol=args.protocol,
        templates=templates_from_args(args),
        allow_unknown_words=args.allow_unknown_words,
    )
    method_config = method_config_from_args(args)
    dataset = dataset_from_args(args)
    claim_output_dir(args.out, "artifact", overwrite=args.overwrite, inputs=data_inputs(args, dataset))
    preset_crop = getattr(get_method(args.method), "preset_crop_scale", {}).get(args.preset or "")
    features = features_from_args(args, data_inputs(args, dataset), crop_scale=preset_crop)
    backbone = backbone_from_args(args)
    if get_method(args.method).needs_backbone:
        print(
            f"{args.method} runs the text encoder at every training step (not only cached features): "
            "expect minutes where cached-feature methods take seconds",
            file=sys.stderr,
        )
    if replayed is not None:
        print(f"replaying the run recorded in {replayed} (options given here override it)", file=sys.stderr)
    clf, result, split = run_few_shot(backbone, dataset, run, method_config, features)
    result[REQUESTED] = method_config.to_dict()
    files = {"result.json": result, "split.json": split.to_json(), "log.csv": epoch_log_csv(result.get("history", []))}
    clf.save_pretrained(args.out, files, overwrite=args.overwrite)
    print(summary_line(result), file=sys.stderr)
    print(f"prompts: {' | '.join(result['templates'])} ({result['templates_source']})", file=sys.stderr)
    print(
        f"artifact written to {args.out} (config.json, model.safetensors, result.json, split.json, log.csv)",
        file=sys.stderr,
    )
    return 0


def summary_line(result: dict) -> str:
    """One line for stderr; the shots are those used (``10-shot (64 requested)``), never only those asked for."""
    acc, zs = result["test"]["accuracy"], result["zero_shot_test_accuracy"]
    chosen = result["selection"].get("chosen", {})
    chosen_text = ", ".join(f"{k}={v}" for k, v in chosen.items()) or "defaults"
    protocol = result["protocol"] + {
        "oracle": " — chosen on TEST",
        "full-val": " — chosen on the full validation split",
    }.get(result["protocol"], "")
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    return (
        f"{result['method']} {shots_text(result)} seed {result['run']['seed']}: test {fmt(acc)} "
        f"(zero-shot {fmt(zs)}); chosen {chosen_text} [protocol {protocol}]"
    )
