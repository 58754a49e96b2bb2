"""``clip-adapter gap``: the modality gap of a backbone on a dataset, and how an adapter changes it.

Encodes the images of one split (``--split``, default test) and every class prompt, then writes to
``--out`` (a new or empty folder, or our own earlier gap output with ``--overwrite``): ``gap.json``
(centroid distance of the normalised image and text embeddings, the intra-image, intra-text,
cross-modal and own-class cosine distributions with quantiles and histograms), ``similarities.png``
and ``projection.png`` (joint PCA of both modalities). ``--artifact`` (a CLIP-Adapter or zero-shot
artifact; its backbone is used) adds the same statistics on the adapted features and the change.
``--inversion`` also runs the retrieval comparison on the split: the first ``--queries-per-class``
images of each class are queries, the rest the gallery, same class = relevant; mAP of plain
image→image search against OTI (each query inverted into a pseudo-word prompt, then text→image).
"""

from __future__ import annotations

import argparse
import sys

from ..core.files import quoted
from .common import add_backbone_options, add_config_options, add_data_options, backbone_from_args, config_from_args

INVERSION = (
    "inversion",
    "queries_per_class",
    "inversion_steps",
    "inversion_lr",
    "inversion_template",
    "inversion_batch",
    "inversion_threads",
)  # GapConfig's fields shown in the inversion group


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..gap.run import GapConfig

    p = sub.add_parser(
        "gap", help="measure the modality gap (and inverted retrieval) on a dataset", description=__doc__
    )
    add_data_options(p)
    p.add_argument(
        "--out", required=True, help="folder for gap.json and the PNGs (new or empty; --overwrite replaces our own)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a gap output this tool wrote earlier at --out")
    p.add_argument(
        "--template",
        action="append",
        default=None,
        help="prompt template(s) for the class texts (default: the dataset's)",
    )
    p.add_argument(
        "--artifact", default=None, help="a CLIP-Adapter (or zero-shot) artifact whose adapted features to compare"
    )
    p.add_argument(
        "--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)"
    )
    add_config_options(p, GapConfig, exclude=INVERSION)
    add_backbone_options(p, default=None, default_help="toy, or the artifact's backbone with --artifact")
    inv = p.add_argument_group("modality inversion (retrieval comparison)")
    add_config_options(inv, GapConfig, exclude=tuple(n for n in GapConfig.help_texts() if n not in INVERSION))
    p.set_defaults(func=main)


def _load_backbone(args: argparse.Namespace):
    """The artifact's backbone (the options may only restate it) and its adaptation, or the backbone asked for."""
    from ..apps.retrieval import adaptation_for
    from ..artifacts import load_with_backbone

    if args.artifact:
        precision = None if args.precision == "auto" else args.precision
        clf, backbone = load_with_backbone(args.artifact, args.backbone, args.pretrained, precision, args.device)
        return backbone, adaptation_for(clf, args.artifact)
    args.backbone = args.backbone or "toy"
    return backbone_from_args(args), None


def main(args: argparse.Namespace) -> int:
    from ..gap.run import GapConfig, measure_gap, summary

    config = config_from_args(GapConfig, args)  # option errors before any work
    result = measure_gap(
        config,
        lambda: _load_backbone(args),
        args.data,
        args.out,
        split_file=args.split_file,
        classnames=args.classnames,
        templates=args.template,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
    )
    for path in result["skipped"]:
        print(f"skipped {quoted(path)}", file=sys.stderr)
    sys.stdout.write(summary(result, args.out))
    return 0
