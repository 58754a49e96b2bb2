"""``clip-adapter toy``: the built-in world — pretrain the tiny CLIP, write downstream task datasets."""

from __future__ import annotations

import argparse
import sys

from ..outputs import claim_output_dir, mark_output_dir
from .common import add_config_options, config_from_args
from .parsing import count_int, seed_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..toyworld import DOMAINS, TASKS, PretrainConfig

    p = sub.add_parser("toy", help="the built-in toy world: pretrain the tiny CLIP, write task datasets", description=__doc__)
    toy_sub = p.add_subparsers(dest="toy_command", metavar="TOY_COMMAND")
    pre = toy_sub.add_parser("pretrain", help="pretrain the tiny CLIP (symmetric InfoNCE on generated scenes)")
    add_config_options(pre, PretrainConfig, aliases={"out_dir": "--out"})
    pre.set_defaults(func=pretrain_main)
    ds = toy_sub.add_parser("dataset", help="write a downstream task as an ImageFolder + CoOp split JSON")
    ds.add_argument("--task", default="shape", choices=sorted(TASKS), help="classification task (default: %(default)s)")
    ds.add_argument("--domain", default="photo", choices=DOMAINS, help="rendering style (default: %(default)s)")
    ds.add_argument("--out", required=True, help="output folder (images/ + split.json): new, empty, or a toy dataset with --overwrite")
    ds.add_argument("--overwrite", action="store_true", help="replace a toy dataset this tool wrote earlier at --out")
    ds.add_argument("--train", type=count_int, default=32, help="training images per class (default: %(default)s)")
    ds.add_argument("--val", type=count_int, default=8, help="validation images per class (default: %(default)s)")
    ds.add_argument("--test", type=count_int, default=32, help="test images per class (default: %(default)s)")
    ds.add_argument("--seed", type=seed_int, default=0, help="rendering seed (default: %(default)s)")
    ds.set_defaults(func=dataset_main)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def pretrain_main(args: argparse.Namespace) -> int:
    from ..toyworld import PretrainConfig, pretrain

    config = config_from_args(PretrainConfig, args)
    claim_output_dir(config.out_dir, "toy-pretrain", resume=True, option="--out-dir")
    mark_output_dir(config.out_dir, "toy-pretrain")
    path = pretrain(config)
    print(f"checkpoint written to {path}", file=sys.stderr)
    return 0


def dataset_main(args: argparse.Namespace) -> int:
    from ..toyworld import write_task_dataset

    out = write_task_dataset(args.task, args.domain, args.out, args.train, args.val, args.test, args.seed, overwrite=args.overwrite)
    print(f"wrote {args.task} ({args.domain}) to {out}: images/ and split.json (CoOp format)", file=sys.stderr)
    return 0
