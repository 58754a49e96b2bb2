"""``clip-adapter multilabel``: multi-label recognition (Unmix-CLIP and its baselines).

``toy-dataset`` writes a toy task (scenes of 2–3 shapes, labelled with the shapes present) as PNG
files and a ``labels.json``. ``train`` samples at least ``--shots`` images per label, trains
``--method`` (``unmix``: Unmix-CLIP on dense features; ``clip-adapter``: a visual adapter trained
with the asymmetric loss; ``zero-shot``: positive-vs-negative prompts), chooses the F1 threshold on
validation shots, evaluates on the test split and writes an artifact (``config.json``,
``model.safetensors``, ``result.json``, ``split.json``). ``evaluate`` scores an artifact on a split.
``--data`` is a multi-label JSON or CSV file (or a folder holding ``labels.json``/``labels.csv``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..backbones import Backbone, create_backbone
from ..core.errors import ArtifactError, ConfigError
from ..core.files import quoted
from ..core.outputs import claim_output_dir
from ..core.threads import torch_threads
from .common import add_backbone_options, backbone_from_args, cache_dir_from_args, parse_assignments, print_json
from .parsing import count_int, positive_int, seed_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..multilabel.config import METHODS

    p = sub.add_parser(
        "multilabel",
        help="multi-label recognition: Unmix-CLIP, zero-shot and CLIP-Adapter baselines",
        description=__doc__,
    )
    ml_sub = p.add_subparsers(dest="multilabel_command", metavar="MULTILABEL_COMMAND")
    _toy_parser(ml_sub)
    tr = ml_sub.add_parser("train", help="train a multi-label head on few shots and evaluate it on the test split")
    tr.add_argument(
        "--data", required=True, help="multi-label JSON/CSV file, or a folder with labels.json or labels.csv"
    )
    tr.add_argument("--method", default="unmix", choices=METHODS, help="(default: %(default)s)")
    tr.add_argument(
        "--shots",
        type=positive_int,
        default=16,
        help="at least this many training images per label (default: %(default)s)",
    )
    tr.add_argument("--seed", type=seed_int, default=1, help="seed of the shots and of training (default: %(default)s)")
    tr.add_argument(
        "--positive-template", default=None, help="prompt for 'class present' (default: the data's, else the method's)"
    )
    tr.add_argument(
        "--negative-template", default=None, help="prompt for 'class absent' (default: the data's, else the method's)"
    )
    tr.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any option of the method (repeatable)"
    )
    tr.add_argument("--out", required=True, help="artifact folder (new or empty; --overwrite replaces our own)")
    tr.add_argument(
        "--overwrite", action="store_true", help="replace a multi-label artifact this tool wrote earlier at --out"
    )
    _common_options(tr)
    add_backbone_options(tr)
    tr.set_defaults(func=train_main)
    ev = ml_sub.add_parser("evaluate", help="mAP, F1 and text similarity of a multi-label artifact on a split")
    ev.add_argument("artifact", help="folder written by `multilabel train`")
    ev.add_argument(
        "--data", required=True, help="multi-label JSON/CSV file, or a folder with labels.json or labels.csv"
    )
    ev.add_argument("--split", default="test", choices=("train", "val", "test"), help="(default: %(default)s)")
    ev.add_argument("--json", action="store_true", help="print the full metrics JSON to stdout instead of the summary")
    _common_options(ev)
    add_backbone_options(ev, default=None)
    ev.set_defaults(func=evaluate_main)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def _toy_parser(ml_sub: argparse._SubParsersAction) -> None:
    from ..toyworld import DOMAINS

    ds = ml_sub.add_parser(
        "toy-dataset", help="write the toy multi-label task (2–3 shapes per image) as PNGs + labels.json"
    )
    ds.add_argument(
        "--out", required=True, help="output folder: new, empty, or a toy multi-label dataset with --overwrite"
    )
    ds.add_argument(
        "--overwrite", action="store_true", help="replace a toy multi-label dataset this tool wrote earlier at --out"
    )
    ds.add_argument("--domain", default="photo", choices=DOMAINS, help="rendering style (default: %(default)s)")
    ds.add_argument("--train", type=count_int, default=240, help="training images (default: %(default)s)")
    ds.add_argument("--val", type=count_int, default=120, help="validation images (default: %(default)s)")
    ds.add_argument("--test", type=count_int, default=400, help="test images (default: %(default)s)")
    ds.add_argument("--seed", type=seed_int, default=0, help="rendering seed (default: %(default)s)")
    ds.set_defaults(func=toy_main)


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)"
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="encoder batch size (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=count_int,
        default=1,
        help="torch threads while training heads (default: %(default)s; 0: leave as is)",
    )


def toy_main(args: argparse.Namespace) -> int:
    from ..multilabel.toy import write_toy_multilabel

    out = write_toy_multilabel(
        args.out, args.domain, args.train, args.val, args.test, args.seed, overwrite=args.overwrite
    )
    print(f"wrote the toy multi-label task ({args.domain}) to {quoted(out)}: images/ and labels.json", file=sys.stderr)
    return 0


def _config(args: argparse.Namespace, prompts: dict[str, str]) -> Any:
    from ..multilabel.config import MultiLabelConfig

    values = {**prompts, **parse_assignments(args.set, MultiLabelConfig), "method": args.method, "seed": args.seed}
    for key in ("positive_template", "negative_template"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    return MultiLabelConfig.from_dict(values, where="options")


def _warn_unknown(backbone: Backbone, prompts: list[str]) -> None:
    unknown = backbone.unknown_words(prompts)
    if unknown:
        words = sorted({w for ws in unknown.values() for w in ws})
        print(
            f"warning: backbone {backbone.name} cannot read {', '.join(map(repr, words[:5]))} in the prompts "
            "(they become <unk>); pass --positive-template/--negative-template it can read",
            file=sys.stderr,
        )


def train_main(args: argparse.Namespace) -> int:
    from ..multilabel.artifact import save_model
    from ..multilabel.data import read_multilabel
    from ..multilabel.kinds import ARTIFACT_KIND
    from ..multilabel.pipeline import evaluate, fit

    dataset = read_multilabel(args.data)
    cfg = _config(args, dataset.prompts)  # option errors before any work
    claim_output_dir(args.out, ARTIFACT_KIND, overwrite=args.overwrite, inputs=[args.data, dataset.source.parent])
    cache_dir = cache_dir_from_args(args, [dataset.source.parent])
    backbone = backbone_from_args(args)
    _warn_unknown(backbone, [p for ps in cfg.prompts(dataset.classes[:1]) for p in ps])
    with torch_threads(args.threads or None):
        model, shots = fit(backbone, dataset, cfg, args.shots, args.seed, cache_dir or None, args.batch_size)
        result = evaluate(model, backbone, dataset, "test", cache_dir or None, args.batch_size)
    result.update(shots=args.shots, seed=args.seed, backbone=backbone.describe(), data=str(dataset.source))
    out = save_model(args.out, model, result, shots.to_json(dataset), overwrite=args.overwrite)
    sys.stdout.write(summary(result))
    print(f"artifact written to {quoted(out)}", file=sys.stderr)
    return 0


def _recorded_seed(info: dict[str, Any], artifact: str) -> int:
    """The init seed in a recorded backbone id ``…/random-init:SEED`` (0 for pretrained weights).

    The artifact's config.json may have been edited by hand: a seed that is not an
    integer is the artifact's fault, named in one line.

    Example:
        >>> _recorded_seed({"id": "toy/none/random-init:7"}, "runs/a")
        7
        >>> _recorded_seed({"id": "toy/none/random-init:x"}, "runs/a")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ArtifactError: runs/a/config.json: backbone id 'toy/none/random-init:x'
        has a seed that is not an integer ('x')
    """
    backbone_id = str(info.get("id", ""))
    weights = backbone_id.rsplit("/", 1)[-1]
    if not weights.startswith("random-init:"):
        return 0
    seed = weights.split(":", 1)[1]
    try:
        return int(seed)
    except ValueError:
        where = quoted(Path(artifact) / "config.json")
        raise ArtifactError(
            f"{where}: backbone id {backbone_id!r} has a seed that is not an integer ({seed!r})"
        ) from None


def _backbone_for(args: argparse.Namespace, info: dict[str, Any]) -> Backbone:
    """The backbone named on the command line, else the one the artifact records."""
    if args.backbone:
        return backbone_from_args(args)
    seed = _recorded_seed(info, args.artifact)
    name = "toy" if info.get("provider") == "toy" else str(info.get("name"))
    return create_backbone(name, info.get("pretrained"), args.precision, args.device, seed)


def evaluate_main(args: argparse.Namespace) -> int:
    from ..core.files import read_json
    from ..multilabel.artifact import load_model
    from ..multilabel.data import read_multilabel

    dataset = read_multilabel(args.data)
    cache_dir = cache_dir_from_args(args, [dataset.source.parent])
    meta = read_json(Path(args.artifact) / "config.json", "multi-label artifact config", error=ArtifactError)
    if not isinstance(meta, dict) or not isinstance(meta.get("backbone"), dict):
        raise ArtifactError(f"{quoted(args.artifact)} is not a multi-label artifact")
    backbone = _backbone_for(args, meta["backbone"])
    model = load_model(args.artifact, backbone)
    from ..multilabel.pipeline import evaluate

    with torch_threads(args.threads or None):
        result = evaluate(model, backbone, dataset, args.split, cache_dir or None, args.batch_size)
    if args.json:
        print_json(result)
    else:
        sys.stdout.write(summary(result) + per_class_table(result))
    return 0


def summary(result: dict[str, Any]) -> str:
    """The numbers the command reports, on one line (as ``eval`` and ``train`` print theirs)."""
    sim = result["text_similarity"]
    run = f" ({result['shots']} shots/label, seed {result['seed']})" if "shots" in result else ""
    return (
        f"{result['method']} on {result['n_images']} {result['split']} images{run}: "
        f"mAP {result['mAP']:.2f}, OF1 {result['overall_f1']:.2f}, CF1 {result['class_f1']:.2f} "
        f"at threshold {result['threshold']:.3f}; mean off-diagonal text similarity "
        f"{sim['before']:.3f} -> {sim['after']:.3f}\n"
    )


def per_class_table(result: dict[str, Any]) -> str:
    """Average precision per class, as ``eval`` prints per-class accuracy (no positives: n/a)."""
    rows = [f"  {name}: {'n/a' if ap is None else f'{ap:.2f}'}" for name, ap in result["per_class_AP"].items()]
    return "per-class AP:\n" + "\n".join(rows) + "\n"


__all__ = ["add_parser", "ConfigError"]
