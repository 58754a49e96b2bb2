"""``clip-adapter index``: encode a folder of images (through the feature cache) into a search index.

The index folder holds ``features.safetensors`` (L2-normalised image features), ``index.json``
(paths relative to FOLDER, the backbone, the artifact) and, with ``--faiss``, an approximate
FAISS index. ``--artifact`` also stores the artifact's adapted features (CLIP-Adapter), so
``clip-adapter search`` must then be given that same artifact (``--artifact``), which needs no
recomputation (and can use ``--faiss``). ``index.json`` records the sha256 of every file of the
index and a digest of its own fields, so a changed or swapped file is refused by ``search``.
Search it with ``clip-adapter search INDEX "a text query"`` (or an image file's path).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..apps.retrieval import APPROXIMATE_KINDS, INDEX_FILE, adaptation_for, build_index
from ..artifacts import load_with_backbone
from ..core.errors import DataError
from ..core.files import quoted, read_json
from ..core.outputs import claim_output_dir
from ..features import default_cache_dir
from .common import add_backbone_options, backbone_from_args, cache_dir_from_args
from .parsing import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build an image search index from a folder", description=__doc__)
    p.add_argument("folder", help="folder of images (searched recursively)")
    p.add_argument(
        "--out", required=True, help="index folder to write (new or empty; --overwrite replaces our own index)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an index this tool wrote earlier at --out")
    p.add_argument(
        "--artifact", default=None, help="also store this artifact's adapted features (its backbone is used)"
    )
    p.add_argument(
        "--faiss",
        nargs="?",
        const="hnsw",
        default=None,
        choices=APPROXIMATE_KINDS,
        help="also write an approximate FAISS index (hnsw, the default, or ivf); needs faiss-cpu",
    )
    add_backbone_options(p, default=None, default_help="toy, or the artifact's backbone with --artifact")
    p.add_argument(
        "--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)"
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="encoder batch size (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out and list them")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if not Path(args.folder).is_dir():
        raise DataError(f"folder not found: {quoted(args.folder)} (index takes a folder of images)")
    claim_output_dir(args.out, "index", overwrite=args.overwrite, inputs=[args.folder])  # before any work
    cache_dir = cache_dir_from_args(args, [args.folder]) or default_cache_dir()
    adaptation = None
    if args.artifact:
        precision = None if args.precision == "auto" else args.precision
        clf, backbone = load_with_backbone(args.artifact, args.backbone, args.pretrained, precision, args.device)
        adaptation = adaptation_for(clf, args.artifact)
    else:
        args.backbone = args.backbone or "toy"
        backbone = backbone_from_args(args)
    out = build_index(
        backbone,
        args.folder,
        cache_dir,
        args.out,
        adaptation,
        args.faiss,
        args.batch_size,
        args.skip_bad,
        args.overwrite,
    )
    record = read_json(out / INDEX_FILE, "index record")
    for item in record["skipped"]:
        print(f"skipped {quoted(item['path'])}: {item['reason']}", file=sys.stderr)
    skipped = f" ({len(record['skipped'])} skipped)" if record["skipped"] else ""
    print(f"indexed {len(record['paths'])} images with {backbone.id} into {quoted(out)}{skipped}")
    return 0
