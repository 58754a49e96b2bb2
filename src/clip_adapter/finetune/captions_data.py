"""Real training data for the remedies: a JSON list of image–caption pairs with optional hard negatives.

The file holds ``[{"image": path, "caption": text, "negatives": [texts], "labels": [names]}, …]``;
``image`` is relative to the file's folder, ``negatives`` (captions the image
must score below its caption) and ``labels`` (the objects it shows, which the
negation recipe turns into "a dog and no cat" captions) are optional. Every
problem is one line naming the entry at fault, found before any training.

Example:
    >>> import json, tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (8, 8)).save(d / "a.png")
    >>> _ = (d / "c.json").write_text(json.dumps([{"image": "a.png", "caption": "a red cube"}]))
    >>> [e.caption for e in read_caption_file(d / "c.json")]
    ['a red cube']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torchvision.transforms.functional as TF

from ..backbones.base import PreprocessConfig
from ..core.errors import DataError
from ..core.files import quoted, read_json
from ..data.images import load_rgb
from ..toyworld.captions import ORDER_KINDS, order_perturbation
from .toydata import Item, negation_captions

GENERIC_ORDER_KINDS = ORDER_KINDS[2:]  # the trigram shuffles need no part-of-speech tags


@dataclass
class CaptionEntry:
    image: Path
    caption: str
    negatives: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


def read_caption_file(path: str | Path) -> list[CaptionEntry]:
    """Entries of a captions JSON file, checked (files exist, fields typed); a DataError names the first bad one."""
    path = Path(path)
    data = read_json(path, "captions file")
    if not isinstance(data, list) or not data:
        raise DataError(
            f'captions file {quoted(path)} must hold a non-empty JSON list of {{"image", "caption"}} objects'
        )
    return [_entry(path, i, raw) for i, raw in enumerate(data)]


def _entry(path: Path, i: int, raw: object) -> CaptionEntry:
    where = f"captions file {quoted(path)} entry {i}"
    if not isinstance(raw, dict):
        raise DataError(f'{where} is not an object with "image" and "caption"')
    image, text = raw.get("image"), raw.get("caption")
    if not isinstance(image, str) or not image:
        raise DataError(f'{where}: "image" must be a path (relative to the file)')
    if not isinstance(text, str) or not text.strip():
        raise DataError(f'{where}: "caption" must be a non-empty text')
    lists = {key: raw.get(key, []) for key in ("negatives", "labels")}
    for key, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise DataError(f'{where}: "{key}" must be a list of non-empty texts')
    file = path.parent / image
    if not file.is_file():
        raise DataError(f"{where}: image {quoted(file)} not found")
    return CaptionEntry(file, text.strip(), list(lists["negatives"]), list(lists["labels"]))


def load_image(path: Path, preprocess: PreprocessConfig) -> np.ndarray:
    """uint8 ``[S, S, 3]``: short side resized to the backbone's input, centre-cropped (CLIP's eval view)."""
    img, _ = load_rgb(path)
    img = TF.center_crop(TF.resize(img, preprocess.image_size, antialias=True), [preprocess.image_size] * 2)
    return np.asarray(img, dtype=np.uint8)


def entries_to_items(
    entries: list[CaptionEntry], preprocess: PreprocessConfig, seed: int, negation: bool = False
) -> list[Item]:
    """Training items: the file's negatives, else order perturbations; for ``negation``, template captions from
    labels."""
    rng = np.random.default_rng([seed, 17])
    all_labels = sorted({label for e in entries for label in e.labels})
    items = []
    for i, e in enumerate(entries):
        if negation:
            absent = [label for label in all_labels if label not in e.labels]
            if not e.labels or not absent:
                raise DataError(
                    f"captions entry {i} ({quoted(e.image)}): "
                    'the negation recipe needs "labels" naming what the image shows, '
                    "and other entries' labels to deny"
                )
            true, flipped = negation_captions(e.labels, absent, rng)
            items.append(Item(load_image(e.image, preprocess), true, [flipped], "negation"))
            continue
        negatives = e.negatives or _order_negatives(e.caption, rng)
        items.append(Item(load_image(e.image, preprocess), e.caption, negatives, "caption"))
    return items


def _order_negatives(text: str, rng: np.random.Generator) -> list[str]:
    out = [order_perturbation(text, kind, rng) for kind in GENERIC_ORDER_KINDS]
    return [t for t in dict.fromkeys(out) if t != text]
