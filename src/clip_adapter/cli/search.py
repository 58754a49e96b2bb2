"""``clip-adapter search``: the images of an index most similar to a text query or an image.

A text query is encoded by the backbone's text encoder as typed (raw text), or averaged over
``--template`` prompts (``"a photo of a {}."``; repeatable, or ``imagenet-ensemble``).
``--image FILE`` searches by an image instead. ``--artifact`` maps images and query into a
CLIP-Adapter artifact's adapted space (its visual adapter for images, its text adapter, if
any, for a text query). Search is exact (cosine over every image) unless ``--faiss`` asks for
the approximate index written by ``clip-adapter index --faiss``. The index's backbone is
rebuilt to encode the query; an artifact or override for another backbone is refused.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

from ..artifacts import Classifier
from ..data.templates import resolve_templates
from ..errors import ConfigError
from ..features import default_cache_dir
from ..retrieval import adaptation_for, backbone_for_index, encode_image_query, encode_text_query, load_index, search
from .common import cache_dir_from_args
from .parsing import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search an image index by text or by image", description=__doc__)
    p.add_argument("index", help="index folder written by `clip-adapter index`")
    p.add_argument("query", nargs="?", default=None, help="text query (or use --image)")
    p.add_argument("--image", default=None, help="search by this image file instead of a text query")
    p.add_argument("--artifact", default=None, help="apply this CLIP-Adapter artifact's adaptation to images and query")
    p.add_argument("--template", action="append", default=None, help="prompt template(s) for the text query, each with one {} (default: the raw text)")
    p.add_argument("--top-k", type=positive_int, default=10, help="images to return (default: %(default)s)")
    p.add_argument("--faiss", action="store_true", help="use the index's approximate FAISS index instead of exact search")
    p.add_argument("--format", default="csv", choices=("csv", "json"), help="output format (default: %(default)s)")
    group = p.add_argument_group("backbone (default: the one the index was built with)")
    group.add_argument("--backbone", default=None, help="override the recorded backbone name (must give the same weights)")
    group.add_argument("--pretrained", default=None, help="override the recorded weights (tag or path)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    p.add_argument("--cache-dir", default="", help="feature cache for an --image query")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if (args.query is None) == (args.image is None):
        raise ConfigError("give either a text query or --image FILE (exactly one)")
    if args.image and args.template:
        raise ConfigError("--template applies to a text query, not to --image")
    templates = resolve_templates(args.template) if args.template else ()
    cache_dir = cache_dir_from_args(args, []) or default_cache_dir()
    index = load_index(args.index)
    backbone = backbone_for_index(index, args.backbone, args.pretrained, args.device)
    adaptation = None
    if args.artifact:
        adaptation = adaptation_for(Classifier.from_pretrained(args.artifact, backbone=backbone), args.artifact)
    if args.image:
        query, kind = encode_image_query(backbone, args.image, cache_dir), "image"
    else:
        query, kind = encode_text_query(backbone, args.query, templates), "text"
    hits = search(index, query, args.top_k, adaptation, kind, approximate=args.faiss)
    sys.stdout.write(_render(hits, args.format))
    return 0


def _render(hits: list[tuple[str, float]], fmt: str) -> str:
    rows = [{"rank": r + 1, "path": path, "score": score} for r, (path, score) in enumerate(hits)]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["rank", "path", "score"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
