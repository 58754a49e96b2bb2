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
from pathlib import Path
from typing import Any

import torch

from ..artifacts import load_with_backbone
from ..backbones import Backbone
from ..errors import ConfigError, DataError
from ..features import default_cache_dir
from ..gap.analyse import (
    KIND,
    SPLIT_CHOICES,
    analyse,
    dataset_embeddings,
    figures,
    inverted_retrieval,
    query_gallery,
    split_samples,
    write_outputs,
)
from ..gap.inversion import InversionConfig
from ..gap.retrieval import format_table
from ..io import quoted
from ..outputs import claim_output_dir, is_own_output
from ..pipeline import templates_for
from ..retrieval import Adaptation, adaptation_for
from ..threads import torch_threads
from .common import (
    add_backbone_options,
    add_data_options,
    backbone_from_args,
    cache_dir_from_args,
    data_inputs,
    dataset_from_args,
)
from .parsing import count_int, positive_int, seed_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gap", help="measure the modality gap (and inverted retrieval) on a dataset", description=__doc__)
    add_data_options(p)
    p.add_argument("--out", required=True, help="folder for gap.json and the PNGs (new or empty; --overwrite replaces our own)")
    p.add_argument("--overwrite", action="store_true", help="replace a gap output this tool wrote earlier at --out")
    p.add_argument("--split", default="test", choices=SPLIT_CHOICES, help="images to measure (default: %(default)s)")
    p.add_argument("--template", action="append", default=None, help="prompt template(s) for the class texts (default: the dataset's)")
    p.add_argument("--artifact", default=None, help="a CLIP-Adapter (or zero-shot) artifact whose adapted features to compare")
    p.add_argument("--bins", type=positive_int, default=50, help="histogram bins on [-1, 1] (default: %(default)s)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of subsampling and of the pseudo-token initialisation")
    add_backbone_options(p, default=None, default_help="toy, or the artifact's backbone with --artifact")
    inv = p.add_argument_group("modality inversion (retrieval comparison)")
    inv.add_argument("--inversion", action="store_true", help="also compare image→image with OTI text→image retrieval")
    inv.add_argument("--queries-per-class", type=positive_int, default=2, help="queries per class (default: %(default)s)")
    defaults = InversionConfig()
    inv.add_argument("--inversion-steps", type=count_int, default=defaults.steps, help="OTI optimisation steps (default: %(default)s, official)")
    inv.add_argument("--inversion-lr", type=float, default=defaults.lr, help="OTI AdamW learning rate (default: %(default)s)")
    inv.add_argument("--inversion-template", default=defaults.template, help="OTI prompt with {} for the pseudo-token (default: %(default)r)")
    inv.add_argument("--inversion-batch", type=positive_int, default=defaults.batch_size, help="queries optimised together (default: %(default)s)")
    inv.add_argument("--inversion-threads", type=count_int, default=0,
                     help="torch threads while inverting (0: leave as is; 1 is fastest for small encoders on a busy CPU)")
    p.add_argument("--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="encoder batch size (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out and list them")
    p.set_defaults(func=main)


def _inversion_config(args: argparse.Namespace) -> InversionConfig:
    try:
        config = InversionConfig(steps=args.inversion_steps, lr=args.inversion_lr, template=args.inversion_template,
                                 batch_size=args.inversion_batch, seed=args.seed)
        config.validate()
    except ConfigError as exc:  # its messages start with the field name: steps, lr, template, batch_size
        message = str(exc)
        message = "batch" + message[len("batch_size"):] if message.startswith("batch_size") else message
        raise ConfigError(f"--inversion-{message}") from None
    return config


def _backbone_and_adaptation(args: argparse.Namespace) -> tuple[Backbone, Adaptation | None]:
    """The artifact's backbone (the options may only restate it) and its adaptation, or the backbone asked for."""
    if not args.artifact:
        args.backbone = args.backbone or "toy"
        return backbone_from_args(args), None
    precision = None if args.precision == "auto" else args.precision
    clf, backbone = load_with_backbone(args.artifact, args.backbone, args.pretrained, precision, args.device)
    return backbone, adaptation_for(clf, args.artifact)


def main(args: argparse.Namespace) -> int:
    if not Path(args.data).exists():
        raise DataError(f"dataset not found: {quoted(args.data)}")
    config = _inversion_config(args)  # option errors before any work
    claim_output_dir(args.out, KIND, overwrite=args.overwrite, inputs=data_inputs(args))
    cache_dir = cache_dir_from_args(args, data_inputs(args)) or default_cache_dir()
    dataset = dataset_from_args(args)
    templates = templates_for(dataset, tuple(args.template) if args.template else None)  # a bad --template before any encoding
    if args.inversion:  # a split too small for queries and a gallery is refused before any encoding
        query_gallery(torch.tensor([s.label for s in split_samples(dataset, args.split)]), args.queries_per_class)
    backbone, adaptation = _backbone_and_adaptation(args)
    emb = dataset_embeddings(backbone, dataset, args.split, cache_dir, templates, args.batch_size, args.skip_bad)
    result = analyse(emb, adaptation, args.bins, args.seed)
    result.update(backbone=backbone.describe(), dataset=str(dataset.root), split=args.split, templates=list(emb.templates),
                  skipped=emb.skipped)
    pngs = figures(emb, result, adaptation)
    if args.inversion:
        with torch_threads(args.inversion_threads or None):
            result["retrieval"] = inverted_retrieval(backbone, emb, args.queries_per_class, config)
    out = write_outputs(Path(args.out), result, pngs, lambda p: args.overwrite and is_own_output(p, KIND))
    for path in emb.skipped:
        print(f"skipped {quoted(path)}", file=sys.stderr)
    sys.stdout.write(summary(result, backbone.id, out))
    return 0


def _dist_line(name: str, stats: dict[str, Any]) -> str:
    if not stats.get("count"):
        return f"  {name:<22} (no pairs)"
    q = stats["quantiles"]
    return f"  {name:<22} {stats['mean']:>7.3f} {q.get('0.05', float('nan')):>7.3f} {q.get('0.5', float('nan')):>7.3f} {q.get('0.95', float('nan')):>7.3f}"


def summary(result: dict[str, Any], backbone_id: str, out: Path) -> str:
    """The one-screen summary printed by the command."""
    raw = result["raw"]
    lines = [f"backbone {backbone_id}; {raw['n_images']} {result['split']} images, {raw['n_texts']} class prompts",
             f"modality gap (distance between the normalised image and text centroids): {raw['gap']['centroid_distance']:.4f}"
             f" (centroid cosine {raw['gap']['centroid_cosine']:.3f})",
             f"  {'cosine similarity':<22} {'mean':>7} {'q05':>7} {'median':>7} {'q95':>7}"]
    names = (("intra_image", "image-image"), ("intra_text", "text-text"), ("cross_modal", "image-text (all)"), ("matched", "image-text (own class)"))
    lines += [_dist_line(label, raw[key]) for key, label in names if key in raw]
    if "adapted" in result:
        ad, change = result["adapted"], result["change"]
        lines.append(f"with the adapter: gap {raw['gap']['centroid_distance']:.4f} -> {ad['gap']['centroid_distance']:.4f}"
                     f" ({change['centroid_distance']:+.4f})")
        lines += [_dist_line(label, ad[key]) for key, label in names if key in ad]
    if "retrieval" in result:
        r = result["retrieval"]
        lines.append(f"retrieval on the {result['split']} split ({r['n_queries']} queries, {r['n_gallery']} gallery images, "
                     f"relevant = {r['relevance']}; OTI mean cosine to its image {r['inversion']['mean_cosine']}):")
        lines.append(format_table(r))
    lines.append(f"wrote {quoted(out / 'gap.json')}, similarities.png, projection.png")
    return "\n".join(lines) + "\n"
