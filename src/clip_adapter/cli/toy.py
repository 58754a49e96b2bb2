"""``clip-adapter toy``: the built-in world — pretrain the tiny CLIP, write downstream task datasets and OOD images."""

from __future__ import annotations

import argparse
import sys

from ..core.outputs import claim_output_dir, mark_output_dir
from .common import add_config_options, config_from_args
from .parsing import count_int, name_list, positive_int, seed_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..toyworld import DOMAINS, TASKS, PretrainConfig

    p = sub.add_parser(
        "toy", help="the built-in toy world: pretrain the tiny CLIP, write task datasets", description=__doc__
    )
    toy_sub = p.add_subparsers(dest="toy_command", metavar="TOY_COMMAND")
    pre = toy_sub.add_parser("pretrain", help="pretrain the tiny CLIP (symmetric InfoNCE on generated scenes)")
    add_config_options(pre, PretrainConfig, aliases={"out_dir": "--out"})
    pre.set_defaults(func=pretrain_main)
    ds = toy_sub.add_parser("dataset", help="write a downstream task as an ImageFolder + CoOp split JSON")
    ds.add_argument("--task", default="shape", choices=sorted(TASKS), help="classification task (default: %(default)s)")
    ds.add_argument("--domain", default="photo", choices=DOMAINS, help="rendering style (default: %(default)s)")
    ds.add_argument(
        "--out",
        required=True,
        help="output folder (images/ + split.json): new, empty, or a toy dataset with --overwrite",
    )
    ds.add_argument("--overwrite", action="store_true", help="replace a toy dataset this tool wrote earlier at --out")
    ds.add_argument("--train", type=count_int, default=32, help="training images per class (default: %(default)s)")
    ds.add_argument("--val", type=count_int, default=8, help="validation images per class (default: %(default)s)")
    ds.add_argument("--test", type=count_int, default=32, help="test images per class (default: %(default)s)")
    ds.add_argument("--seed", type=seed_int, default=0, help="rendering seed (default: %(default)s)")
    ds.set_defaults(func=dataset_main)
    ood = toy_sub.add_parser(
        "ood",
        help="write images outside a task's classes (for out-of-distribution detection)",
        description="Draw images that show no class of the task: objects of held-out classes "
        "(novel) or scenes with no object (empty). Writes images/<source>/*.png and "
        "ood.json (each image's objects).",
    )
    ood.add_argument(
        "--task", default="shape", choices=sorted(TASKS), help="classification task (default: %(default)s)"
    )
    ood.add_argument("--domain", default="photo", choices=DOMAINS, help="rendering style (default: %(default)s)")
    ood.add_argument("--n", type=positive_int, default=64, help="number of images (default: %(default)s)")
    ood.add_argument("--seed", type=seed_int, default=0, help="rendering seed (default: %(default)s)")
    ood.add_argument(
        "--source",
        default="auto",
        choices=("auto", "novel", "empty"),
        help="novel: objects of no task class (needs --holdout for the built-in tasks, which use every "
        "value they could); empty: no object; auto: novel when possible, else empty (default)",
    )
    ood.add_argument(
        "--holdout",
        metavar="CLASSES",
        help="comma-separated task classes treated as unknown: novel draws "
        "show only these (train on the other classes)",
    )
    ood.add_argument(
        "--out",
        required=True,
        help="output folder (images/ + ood.json): new, empty, or one this tool wrote, with --overwrite",
    )
    ood.add_argument("--overwrite", action="store_true", help="replace an OOD folder this tool wrote earlier at --out")
    ood.set_defaults(func=ood_main)
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

    out = write_task_dataset(
        args.task, args.domain, args.out, args.train, args.val, args.test, args.seed, overwrite=args.overwrite
    )
    print(f"wrote {args.task} ({args.domain}) to {out}: images/ and split.json (CoOp format)", file=sys.stderr)
    return 0


def ood_main(args: argparse.Namespace) -> int:
    from ..toyworld.tasks import holdout_task, resolve_ood_source, write_ood_images

    task = holdout_task(args.task, name_list(args.holdout, "--holdout")) if args.holdout is not None else args.task
    source = resolve_ood_source(task, args.source)
    out = write_ood_images(task, args.domain, args.out, args.n, args.seed, source, overwrite=args.overwrite)
    print(
        f"wrote {args.n} out-of-distribution images ({source}) for {args.task} in {args.domain} to {out}: "
        f"images/{source}/ and ood.json",
        file=sys.stderr,
    )
    # Say why "auto" gave blank scenes: a user expecting unseen objects should learn about --holdout here.
    if source == "empty" and args.source == "auto":
        print(
            f"note: they show no object: every object the toy world draws is one of {args.task}'s classes "
            "(hold classes out with --holdout for unseen objects)",
            file=sys.stderr,
        )
    return 0
