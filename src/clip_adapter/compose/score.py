"""Score a backbone on a suite: how often the true caption gets the highest cosine with the image.

Images go through the feature cache (:func:`clip_adapter.features.extract_images`,
the centre view, as ``eval`` does), captions through the text cache. An item
with a box (ARO's VG-Relation/Attribution) is cropped to it first, and crops
are encoded directly, never through the cache: the cache keys rows by file
content, and a crop of a file is not that file. A tie
between the true caption and ``k`` false ones (a bag-of-words model gives
identical embeddings to a caption and its swap) earns ``1 / (k + 1)``, the
expected accuracy of breaking it at random, so such a model scores exactly
chance. Per subtype (an item's ``subtype``) the same accuracy is reported;
per kind (``false_kinds``) the pairwise accuracy of the true caption against
the false captions of that kind (chance 0.5). ``accuracy`` is over items
(micro); ``macro_accuracy`` is the mean of the per-subtype accuracies (ARO's
headline figure for VG-Relation and VG-Attribution), ``None`` without subtypes.

Example:
    >>> import tempfile, pathlib
    >>> from clip_adapter.backbones import create_backbone
    >>> from clip_adapter.compose.suites import read_suite
    >>> from clip_adapter.compose.toy_suites import write_toy_suites
    >>> work = pathlib.Path(tempfile.mkdtemp())
    >>> suite = read_suite(write_toy_suites(work / "s", 6, ("attribution",)) / "attribution")
    >>> result = score_suite(create_backbone("toy", precision="fp32"), suite, work / "cache")
    >>> result["n_items"], result["chance"], sorted(result["subtypes"]), result["macro_chance"]
    (6, 0.5, ['color', 'fill', 'size'], 0.5)
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..backbones.base import Backbone
from ..core.errors import DataError
from ..data.images import load_rgb
from ..features import extract_images, extract_texts, image_store, text_store
from ..features.transforms import eval_view
from .encode import TIE, rowwise_cosine, win
from .suites import Box, Suite, check_box, crop_box, item_where

Crop = tuple[Path, Box]


def _suite_embeddings(
    backbone: Backbone, suite: Suite, cache_dir: str | os.PathLike, batch_size: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Normalised image embeddings in item order (whole images cached, crops encoded) and caption → embedding."""
    whole = [i for i, item in enumerate(suite.items) if item.box is None]
    cropped = [i for i, item in enumerate(suite.items) if item.box is not None]
    rows: dict[int, torch.Tensor] = {}
    if whole:
        paths = [suite.items[i].image for i in whole]
        images, _, _ = extract_images(
            backbone, paths, image_store(backbone, cache_dir), None, 0, batch_size, False, suite.name, bad_hint=None
        )  # compose-bench has no --skip-bad to suggest
        rows.update(zip(whole, images.float()))
    if cropped:
        rows.update(zip(cropped, _crop_embeddings(backbone, suite, cropped, batch_size)))
    texts = sorted({t for item in suite.items for t in (item.true_caption, *item.false_captions)})
    embedded = F.normalize(extract_texts(backbone, texts, text_store(backbone, cache_dir)).float(), dim=-1)
    return F.normalize(torch.stack([rows[i] for i in range(len(suite.items))]), dim=-1), dict(zip(texts, embedded))


def _decoded(suite: Suite, index: int) -> Image.Image:
    try:
        return load_rgb(suite.items[index].image)[0]
    except DataError as exc:
        raise DataError(f"{item_where(suite, index)}: {exc}") from None


def _crop_embeddings(backbone: Backbone, suite: Suite, indices: list[int], batch_size: int) -> torch.Tensor:
    """Raw embeddings ``[len(indices), D]`` of the items' crops, each distinct (image, box) encoded once.

    Crops are grouped by image, so an image with many boxes (ARO's VG) is decoded once per group.
    A box lying outside its image is a DataError naming ``items.json`` and the item; one running past an edge is
    clipped.
    """
    first: dict[Crop, int] = {}
    for i in indices:
        first.setdefault((suite.items[i].image, suite.items[i].box), i)  # type: ignore[arg-type]
    crops = sorted(first, key=lambda c: (str(c[0]), c[1]))
    encoded, pixels, image, decoded = [], [], None, None
    for crop in crops:
        if crop[0] != image:
            image, decoded = crop[0], _decoded(suite, first[crop])
        check_box(crop[1], decoded.size, item_where(suite, first[crop]))  # read with decode=False: not checked yet
        pixels.append(eval_view(decoded.crop(crop_box(crop[1], decoded.size)), backbone.preprocess))
        if len(pixels) == batch_size:
            encoded.append(backbone.encode_images(torch.stack(pixels)).float().cpu())
            pixels = []
    if pixels:
        encoded.append(backbone.encode_images(torch.stack(pixels)).float().cpu())
    by_crop = dict(zip(crops, torch.cat(encoded)))
    return torch.stack([by_crop[(suite.items[i].image, suite.items[i].box)] for i in indices])  # type: ignore[index]


def item_credit(true: torch.Tensor, false: torch.Tensor) -> float:
    """1 if the true cosine beats every false one, ``1/(k+1)`` if it ties ``k`` of them for the top, else 0.

    Example:
        >>> item_credit(torch.tensor(0.3), torch.tensor([0.3, 0.1]))
        0.5
    """
    if bool((false > true + TIE).any()):
        return 0.0
    return 1.0 / (1 + int(((false - true).abs() <= TIE).sum()))


def _summary(credits: list[float], chances: list[float]) -> dict[str, Any]:
    n = len(credits)
    return {"n": n, "accuracy": sum(credits) / n, "chance": sum(chances) / n}


def macro(subtypes: dict[str, dict[str, Any]], key: str = "accuracy") -> float | None:
    """Mean of ``key`` over the subtypes, each subtype counting once however many items it has; None without any.

    Example:
        >>> macro({"on": {"accuracy": 1.0}, "under": {"accuracy": 0.5}})
        0.75
    """
    return sum(s[key] for s in subtypes.values()) / len(subtypes) if subtypes else None


def score_suite(backbone: Backbone, suite: Suite, cache_dir: str | os.PathLike, batch_size: int = 64) -> dict[str, Any]:
    """Accuracy of ``backbone`` on ``suite``: overall (micro), per subtype and their mean (macro), per false-caption
    kind.

    See the module example.
    """
    images, text = _suite_embeddings(backbone, suite, cache_dir, batch_size)
    credits, chances = [], []
    by_subtype: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    by_kind: dict[str, list[float]] = defaultdict(list)
    for image, item in zip(images, suite.items):
        true = rowwise_cosine(image, text[item.true_caption])
        false = torch.stack([rowwise_cosine(image, text[t]) for t in item.false_captions])
        credit = item_credit(true, false)
        credits.append(credit)
        chances.append(item.chance)
        if item.subtype is not None:
            by_subtype[item.subtype][0].append(credit)
            by_subtype[item.subtype][1].append(item.chance)
        for kind, wins in zip(item.false_kinds or (), win(true.expand_as(false), false).tolist()):
            by_kind[kind].append(wins)
    result = {
        "suite": suite.name,
        "n_items": len(credits),
        **{k: v for k, v in _summary(credits, chances).items() if k != "n"},
    }
    result["subtypes"] = {name: _summary(*lists) for name, lists in sorted(by_subtype.items())}
    result["macro_accuracy"], result["macro_chance"] = macro(result["subtypes"]), macro(result["subtypes"], "chance")
    result["kinds"] = {
        name: {"n": len(w), "accuracy": sum(w) / len(w), "chance": 0.5} for name, w in sorted(by_kind.items())
    }
    return result
