"""``clip-adapter compose-bench``: is a CLIP a bag of words? Attribution, relation, order, negation, biases, probes.

``--write-toy-suites DIR`` writes the toy world's four suites as files (``DIR/attribution``,
``relation``, ``order``, ``negation``: each ``images/`` plus ``items.json``, a JSON list of
``{"image", "true_caption", "false_captions"}``; fixed seeds ≥ 1000). ``--suites DIR``
(repeatable; a suite folder or a folder of suites, e.g. your own Visual Genome Attribution
in the same format) with ``--out`` scores one or several models: accuracy = how often the
true caption gets the highest cosine with the image (ties count as a coin toss). Each
``--model LABEL=PRETRAINED`` (repeatable, all on ``--backbone``) is one row of the table;
without it, ``--pretrained`` is the one model, ``base``. Beside the suites: the multi-object
biases (image side follows the larger object? text side the first-mentioned one?), binding
probes (colour of the object of a given shape, from frozen image or text embeddings vs the
cross-modal cosine), and for toy backbones zero-shot accuracy on the toy tasks shape and
colour (what a remedy costs). ``--out`` (a new or empty folder, or our own earlier output
with ``--overwrite``) receives ``compose.json``, ``compose.md`` and ``suites.png``,
``bias.png``, ``probes.png``.
"""

from __future__ import annotations

import argparse
import sys

from ..backbones import create_backbone
from ..compose.bench import ComposeConfig, StudiesConfig, markdown_tables
from ..compose.run import compose_bench, parse_models, summary_line
from ..compose.toy_suites import ITEMS_PER_SUITE
from .common import add_backbone_options, add_config_options, config_from_args
from .parsing import positive_int

__all__ = ["add_parser", "main", "parse_models"]  # parse_models: benchmarks/compose_toy.py imports it from here


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compose-bench",
        description=__doc__,
        help="compositionality benchmarks: attribution, relation, order, negation, biases, probes",
    )
    p.add_argument(
        "--write-toy-suites", metavar="DIR", default=None, help="write the toy suites as files into DIR (new or empty)"
    )
    p.add_argument(
        "--items-per-suite",
        type=positive_int,
        default=ITEMS_PER_SUITE,
        help="items per toy suite (default: %(default)s)",
    )
    p.add_argument(
        "--suites",
        action="append",
        default=[],
        metavar="DIR",
        help="a suite folder, or a folder of suites (repeatable)",
    )
    p.add_argument("--out", default=None, help="folder for compose.json, compose.md and the plots (new or empty)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace our own earlier output at --out / --write-toy-suites"
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="LABEL=PRETRAINED",
        help="a model to score (repeatable; same --backbone): e.g. base=shipped negclip=runs/negclip",
    )
    add_backbone_options(p)
    studies = p.add_argument_group("studies")
    add_config_options(studies, StudiesConfig)
    add_config_options(studies, ComposeConfig, exclude=("bias", "probes", "batch_size"))
    p.add_argument(
        "--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)"
    )
    add_config_options(p, ComposeConfig, exclude=("bias", "probes", "zero_shot", "zero_shot_per_class"))
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    models = parse_models(args.model, args.pretrained)
    # args.bias / args.probes are the studies' switches (StudiesConfig), not ComposeConfig's study configs.
    config = config_from_args(StudiesConfig, args).apply(config_from_args(ComposeConfig, args, bias=None, probes=None))
    make = lambda p: create_backbone(args.backbone, p, args.precision, args.device, args.init_seed)  # noqa: E731
    result = compose_bench(
        models,
        make,
        args.backbone,
        config,
        suite_dirs=args.suites,
        toy_dir=args.write_toy_suites,
        items_per_suite=args.items_per_suite,
        out=args.out,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
        log=print,
    )
    if result is not None:
        sys.stdout.write(markdown_tables(result))
        print(f"\n{summary_line(result, args.out)}")
    return 0
