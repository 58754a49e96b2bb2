"""``clip-adapter extract``: encode a dataset's few-shot splits into the feature cache, once.

Training images of every requested (shots, seed) get their augmented views;
val and test one centre view each; class prompts are encoded too. A second
run, or a killed run started again, encodes only what is missing.

With ``--ray`` the chunks are encoded by Ray actors (``--ray-workers``, each
with ``--ray-cpus-per-worker`` / ``--ray-gpus-per-worker``) on a new local
instance or the cluster at ``--address``; the shards are the same as a local
run's, so local and Ray runs mix and resume each other.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from ..data.sampler import sample_few_shot
from ..features import ExtractStats
from ..pipeline import encode_split, templates_for
from .common import (
    add_backbone_options,
    add_data_options,
    add_feature_options,
    backbone_from_args,
    data_inputs,
    dataset_from_args,
    features_from_args,
    print_json,
)
from .parsing import SEED_MAX, bounded_int_list
from .ray_options import add_ray_options, backbone_spec_from_args, ray_options_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="encode images and prompts into the feature cache", description=__doc__)
    add_data_options(p)
    add_backbone_options(p)
    add_feature_options(p)
    p.add_argument(
        "--shots",
        default="16",
        help="comma-separated shot counts whose training images to encode (default: %(default)s)",
    )
    p.add_argument("--seeds", default="1,2,3", help="comma-separated few-shot seeds (default: %(default)s)")
    p.add_argument("--template", action="append", default=[], help="prompt template(s) to encode")
    p.add_argument("--no-test", action="store_true", help="skip the test split")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    add_ray_options(p, "the encoding")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    ray_options = ray_options_from_args(args)
    dataset = dataset_from_args(args)
    features = features_from_args(args, data_inputs(args, dataset))
    backbone = backbone_from_args(args)
    templates = templates_for(dataset, args.template[0] if len(args.template) == 1 else tuple(args.template))
    stats = ExtractStats()
    first = True
    shot_counts = bounded_int_list(args.shots, "--shots", 0, 100_000)
    seeds = bounded_int_list(args.seeds, "--seeds", 0, SEED_MAX)
    with contextlib.ExitStack() as stack:
        if ray_options:
            from ..distributed import ray_extraction, ray_session

            ray = stack.enter_context(ray_session(ray_options))
            stack.enter_context(
                ray_extraction(
                    ray, backbone_spec_from_args(args, backbone.precision), ray_options, backbone.encoder_fingerprint
                )
            )
        for shots in shot_counts:
            for seed in seeds:
                split = sample_few_shot(dataset, shots, seed)
                stats.merge(
                    encode_split(backbone, split, templates, features, with_test=first and not args.no_test).stats
                )
                first = False
    report = {
        "backbone": backbone.id,
        "precision": backbone.precision,
        "cache_dir": str(features.cache_path()),
        **stats.to_dict(),
    }
    if args.json:
        print_json(report)
    print(
        f"encoded {stats.encoded} views at {stats.images_per_second:.1f} images/s ({backbone.precision}); "
        f"{stats.cached} were already cached; {len(stats.skipped)} skipped; cache: {features.cache_path()}",
        file=sys.stderr,
    )
    return 0
