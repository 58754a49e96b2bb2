"""``clip-adapter search``: the images of an index most similar to a text query or an image.

A query that names an existing file is an image query (``clip-adapter search INDEX more/b.png``);
any other query is text, encoded by the backbone's text encoder as typed (raw text), or averaged
over ``--template`` prompts (``"a photo of a {}."``; repeatable, or ``imagenet-ensemble``).
``--text`` searches the words even when they name a file; ``--image FILE`` is the explicit form
of an image query. A query that looks like an image path (``.png``, ``.jpg``, ...) but names no
file is refused rather than searched as words. ``--artifact`` maps images and query into a
CLIP-Adapter artifact's adapted space (its visual adapter for images, its text adapter, if any,
for a text query); an index built with ``--artifact`` must be searched with that same artifact.
Search is exact (cosine over every image) unless ``--faiss`` asks for the approximate index
written by ``clip-adapter index --faiss``. The index's backbone is rebuilt to encode the query;
an artifact or override for another backbone is refused.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..apps.retrieval import (
    adaptation_for,
    backbone_for_index,
    check_index_adaptation,
    encode_image_query,
    encode_text_query,
    load_index,
    search,
)
from ..artifacts import Classifier
from ..core.errors import ConfigError, DataError
from ..core.files import not_a_file_reason, quoted
from ..data.images import IMAGE_EXTENSIONS
from ..data.templates import resolve_templates
from ..features import default_cache_dir
from .common import cache_dir_from_args
from .parsing import positive_int

if TYPE_CHECKING:
    import torch

    from ..backbones import Backbone


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search an image index by text or by image", description=__doc__)
    p.add_argument("index", help="index folder written by `clip-adapter index`")
    p.add_argument(
        "query",
        nargs="?",
        default=None,
        help="text query, or the path of an image file (an existing file is searched as an image; see --text)",
    )
    p.add_argument("--image", default=None, help="search by this image file (the same as giving its path as the query)")
    p.add_argument("--text", action="store_true", help="search the query as text even if it names a file")
    p.add_argument(
        "--artifact",
        default=None,
        help="apply this CLIP-Adapter artifact's adaptation to images and query "
        "(required for an index built with --artifact)",
    )
    p.add_argument(
        "--template",
        action="append",
        default=None,
        help="prompt template(s) for the text query, each with one {} (default: the raw text)",
    )
    p.add_argument("--top-k", type=positive_int, default=10, help="images to return (default: %(default)s)")
    p.add_argument(
        "--faiss", action="store_true", help="use the index's approximate FAISS index instead of exact search"
    )
    p.add_argument("--format", default="csv", choices=("csv", "json"), help="output format (default: %(default)s)")
    group = p.add_argument_group("backbone (default: the one the index was built with)")
    group.add_argument(
        "--backbone", default=None, help="override the recorded backbone name (must give the same weights)"
    )
    group.add_argument("--pretrained", default=None, help="override the recorded weights (tag or path)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    p.add_argument("--cache-dir", default="", help="feature cache for an image query")
    p.set_defaults(func=main)


def query_source(query: str | None, image: str | None, as_text: bool) -> tuple[str, str]:
    """``("image", path)`` or ``("text", words)`` for the query as given.

    The README's ``search INDEX more/b.png`` must search by the image, not by
    the words "more b png": a query naming an existing file is an image. A query
    shaped like an image path that names nothing is almost surely a typo, and
    searching its words would return unrelated images without a word of warning.
    """
    if (query is None) == (image is None):
        raise ConfigError(
            "give either a text query or --image FILE (exactly one; an image file's path may also be the query)"
        )
    if image is not None:
        if as_text:
            raise ConfigError("--text applies to a query given as words, not to --image")
        reason = not_a_file_reason(image)
        if reason is not None:
            raise ConfigError(
                f"--image {quoted(image)} {reason}" if reason != "not found" else f"image not found: {quoted(image)}"
            )
        return "image", image
    if as_text:
        return "text", query
    path = Path(query)
    # os.path.isfile/isdir answer False on any OSError: a long sentence is "File name too long" to the kernel.
    if os.path.isfile(query):
        return "image", query
    if os.path.isdir(query):
        raise ConfigError(f"the query {quoted(query)} is a folder; give one image file, or --text to search the words")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise ConfigError(
            f"image not found: {quoted(query)} (give an existing image file, or --text to search these words)"
        )
    return "text", query


def main(args: argparse.Namespace) -> int:
    kind, value = query_source(args.query, args.image, args.text)
    if kind == "image" and args.template:
        raise ConfigError(
            f"--template applies to a text query, not to the image {quoted(value)} (--text searches the words)"
        )
    templates = resolve_templates(args.template) if args.template else ()
    cache_dir = cache_dir_from_args(args, []) or default_cache_dir()
    index = load_index(args.index)
    backbone = backbone_for_index(index, args.backbone, args.pretrained, args.device)
    adaptation = None
    if args.artifact:
        adaptation = adaptation_for(Classifier.from_pretrained(args.artifact, backbone=backbone), args.artifact)
    check_index_adaptation(index, adaptation)  # before any query is encoded
    if kind == "image":
        query = _image_query(backbone, value, cache_dir, from_words=args.image is None)
    else:
        query = encode_text_query(backbone, value, templates)
    hits = search(index, query, args.top_k, adaptation, kind, approximate=args.faiss)
    sys.stdout.write(_render(hits, args.format))
    return 0


def _image_query(backbone: Backbone, path: str, cache_dir: str | os.PathLike, from_words: bool) -> torch.Tensor:
    """The image query's embedding; when the file came as the query, a bad one says how to search the words."""
    try:
        return encode_image_query(backbone, path, cache_dir)
    except DataError as exc:
        if not from_words:
            raise
        raise DataError(
            f"{exc} (the query names this file, so it was read as an image; --text searches the words)"
        ) from None


def _render(hits: list[tuple[str, float]], fmt: str) -> str:
    rows = [{"rank": r + 1, "path": path, "score": score} for r, (path, score) in enumerate(hits)]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["rank", "path", "score"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
