"""Compositionality suites on disk: the format, and a reader that checks every item.

A **suite** is a folder holding ``items.json`` and (usually) an ``images/``
folder. ``items.json`` is a JSON list; each item is an image with its true
caption and one or more false captions::

    [{"image": "images/00000.png",
      "true_caption": "a red circle and a blue square",
      "false_captions": ["a blue circle and a red square"],
      "subtype": "color",                     # optional: accuracy is also reported per subtype
      "false_kinds": ["swap-color"],          # optional: one per false caption, reported per kind
      "scene": [...]}]                        # optional: any other metadata is kept, unread

``image`` is a path relative to the suite folder (or absolute). The spellings
of ARO-style releases are accepted too: ``image_path``/``path`` for the image,
``"true caption"``/``caption`` for the true caption, ``"false captions"``,
``false_caption``/``"false caption"`` (a string or a list), or ARO's
COCO/Flickr-Order ``caption_options`` (the first option is the true caption).
ARO's Visual Genome items are read as ARO reads them: ``bbox_x``,
``bbox_y``, ``bbox_w``, ``bbox_h`` (pixels, all four or none) crop the image
to the box before encoding, and without a ``subtype`` the ``relation_name``
(VG-Relation) or the ``attributes`` pair joined by ``_`` (VG-Attribution,
``["white", "black"]`` → ``"white_black"``) is the subtype, so the macro
accuracy over relations/attributes (ARO's headline VG figure) can be reported.
The suite's name is its folder's name (``attribution``, ``relation``,
``order``, ``negation`` for the toy suites); a user's Visual Genome
Attribution folder is scored by the same command.

Every problem is one :class:`~clip_adapter.core.errors.DataError` line naming the
file and the item index: a missing or undecodable image, an empty list, an
item without false captions, a false caption equal to the true one or
repeated, a duplicated item, a box that is not four numbers of positive size
inside the image.

Example:
    >>> import json, tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "mine"
    >>> (d / "images").mkdir(parents=True)
    >>> Image.new("RGB", (8, 8)).save(d / "images" / "a.png")
    >>> items = [{"image": "images/a.png", "true caption": "a b", "false_caption": "b a"}]
    >>> _ = (d / "items.json").write_text(json.dumps(items))
    >>> suite = read_suite(d)
    >>> suite.name, suite.items[0].false_captions
    ('mine', ('b a',))
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..core.errors import DataError
from ..core.files import quoted, read_json
from ..data.images import load_rgb

ITEMS_FILE = "items.json"
IMAGE_DIR = "images"
IMAGE_KEYS = ("image", "image_path", "path")
TRUE_KEYS = ("true_caption", "true caption", "caption")
FALSE_KEYS = ("false_captions", "false captions", "false_caption", "false caption")
OPTIONS_KEY = "caption_options"  # ARO COCO/Flickr-Order: [true, false, false, ...]
BOX_KEYS = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")  # ARO VG-Relation/Attribution: crop to this box first
RELATION_KEY, ATTRIBUTES_KEY = "relation_name", "attributes"  # ARO's subtypes (macro accuracy is over these)

Box = tuple[float, float, float, float]  # x, y, width, height in pixels of the decoded (upright) image


@dataclass(frozen=True)
class SuiteItem:
    """One image, its true caption, its false captions (and optional subtype / per-false-caption kinds)."""

    image: Path
    true_caption: str
    false_captions: tuple[str, ...]
    subtype: str | None = None
    false_kinds: tuple[str, ...] | None = None
    box: Box | None = None  # crop to this (x, y, w, h) before encoding; None: the whole image
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def chance(self) -> float:
        """Accuracy of a model that picks one caption at random."""
        return 1.0 / (1 + len(self.false_captions))


@dataclass(frozen=True)
class Suite:
    """A named list of items read from one folder."""

    name: str
    root: Path
    items: tuple[SuiteItem, ...]


def _where(path: Path, index: int | None = None) -> str:
    return f"{quoted(path)} item {index}" if index is not None else quoted(path)


def _pick(item: dict, keys: Sequence[str], what: str, where: str) -> Any:
    found = [k for k in keys if k in item]
    if len(found) > 1:
        raise DataError(f"{where} gives the {what} twice ({', '.join(repr(k) for k in found)}); keep one")
    return item[found[0]] if found else None


def _text(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {what} must be a non-empty string, got {value!r:.60}")
    return value.strip()


def _captions(item: dict, where: str) -> tuple[str, list[str]]:
    true, false = _pick(item, TRUE_KEYS, "true caption", where), _pick(item, FALSE_KEYS, "false captions", where)
    if OPTIONS_KEY in item:
        if true is not None or false is not None:
            raise DataError(f"{where} has both {OPTIONS_KEY!r} and true/false captions; keep one form")
        options = item[OPTIONS_KEY]
        if not isinstance(options, list) or not options:
            raise DataError(f"{where}: {OPTIONS_KEY!r} must be a non-empty list of captions (the true one first)")
        true, false = options[0], options[1:]
    if true is None:
        raise DataError(f"{where} has no true caption (key 'true_caption')")
    if false is None:
        raise DataError(f"{where} has no false captions (key 'false_captions')")
    false = [false] if isinstance(false, str) else false
    if not isinstance(false, list):
        raise DataError(f"{where}: false captions must be a string or a list of strings")
    return _text(true, "the true caption", where), [_text(f, "a false caption", where) for f in false]


def _check_captions(true: str, false: list[str], where: str) -> None:
    if not false:
        raise DataError(f"{where} has no false captions: nothing to tell the true caption from")
    if true in false:
        raise DataError(f"{where}: a false caption is the true caption itself ({true!r})")
    if len(set(false)) != len(false):
        raise DataError(f"{where}: a false caption is repeated")


def _image_path(item: dict, root: Path, where: str) -> Path:
    rel = _text(_pick(item, IMAGE_KEYS, "image", where), "the image path ('image')", where)
    path = Path(rel) if os.path.isabs(rel) else root / rel
    if not path.is_file():
        raise DataError(f"{where}: image not found: {quoted(path)}")
    return path


def _optional_list(value: Any, n: int, what: str, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: {what!r} must be a list of {n} strings, one per false caption")
    return tuple(value)


def _is_number(value: Any) -> bool:
    # bool is an int subclass; NaN and infinities are not pixel positions
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _box(item: dict, where: str) -> Box | None:
    """ARO's ``bbox_*`` keys as ``(x, y, w, h)``: all four or none, numbers, ``x, y >= 0``, ``w, h > 0``.

    Example:
        >>> _box({"bbox_x": 1, "bbox_y": 2, "bbox_w": 3, "bbox_h": 4}, "item 0")
        (1, 2, 3, 4)
        >>> _box({"bbox_x": 1}, "item 0")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: item 0 has bbox_x but not bbox_y, bbox_w, bbox_h; give all four or none
    """
    present = [k for k in BOX_KEYS if k in item]
    if not present:
        return None
    if len(present) < len(BOX_KEYS):
        missing = ", ".join(k for k in BOX_KEYS if k not in item)
        raise DataError(f"{where} has {', '.join(present)} but not {missing}; give all four or none")
    bad = next((k for k in BOX_KEYS if not _is_number(item[k])), None)
    if bad is not None:
        raise DataError(f"{where}: {bad!r} must be a number of pixels, got {item[bad]!r:.40}")
    x, y, w, h = (item[k] for k in BOX_KEYS)
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise DataError(
            f"{where}: the box (bbox_x, bbox_y, bbox_w, bbox_h) = ({x}, {y}, {w}, {h}) "
            "needs x, y >= 0 and a positive width and height"
        )
    return (x, y, w, h)


def check_box(box: Box | None, size: tuple[int, int], where: str) -> None:
    """Refuse a box that misses an image of ``size`` (width, height); ``None`` (no box) always passes.

    A box that only runs past the edge is clipped to the image (:func:`crop_box`): Visual Genome
    boxes often overrun by a pixel or so, and ARO crops them as they are.

    Example:
        >>> check_box((9, 0, 8, 8), (8, 8), "item 3")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: item 3: the box (x 9, y 0, w 8, h 8) lies outside the 8x8 image
    """
    if box is None:
        return
    x, y, w, h = box
    if x >= size[0] or y >= size[1]:
        raise DataError(f"{where}: the box (x {x}, y {y}, w {w}, h {h}) lies outside the {size[0]}x{size[1]} image")


def crop_box(box: Box, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The box as Pillow's ``crop`` wants it, ``(left, top, right, bottom)``, clipped to an image of ``size``.

    Example:
        >>> crop_box((1, 2, 3, 4), (100, 100)), crop_box((4, 0, 8, 8), (8, 8))
        ((1, 2, 4, 6), (4, 0, 8, 8))
    """
    x, y, w, h = box
    return (x, y, min(x + w, size[0]), min(y + h, size[1]))


def _subtype(item: dict, where: str) -> str | None:
    """``subtype``, else ARO's ``relation_name``, else its ``attributes`` joined by ``_``
    (``["a", "b"]`` → ``"a_b"``)."""
    if item.get("subtype") is not None:  # an explicit null means "none", as before
        if not isinstance(item["subtype"], str):
            raise DataError(f"{where}: 'subtype' must be a string")
        return item["subtype"]
    if RELATION_KEY in item:
        return _text(item[RELATION_KEY], repr(RELATION_KEY), where)
    if ATTRIBUTES_KEY in item:
        attributes = item[ATTRIBUTES_KEY]
        if (
            not isinstance(attributes, list)
            or not attributes
            or not all(isinstance(a, str) and a.strip() for a in attributes)
        ):
            raise DataError(f'{where}: {ATTRIBUTES_KEY!r} must be a list of attribute names, e.g. ["white", "black"]')
        return "_".join(a.strip() for a in attributes)
    return None


def parse_item(item: Any, root: Path, where: str) -> SuiteItem:
    """One item of ``items.json`` (``where`` names it in errors), image presence checked, not decoded.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp()); _ = (root / "a.png").write_bytes(b"")
        >>> item = parse_item({"image": "a.png", "true_caption": "a on b", "false_caption": "b on a",
        ...                    "relation_name": "on", "bbox_x": 0, "bbox_y": 0, "bbox_w": 4, "bbox_h": 2},
        ...                   root, "item 0")
        >>> item.subtype, item.box
        ('on', (0, 0, 4, 2))
    """
    if not isinstance(item, dict):
        raise DataError(f"{where} is not a JSON object")
    true, false = _captions(item, where)
    _check_captions(true, false, where)
    subtype = _subtype(item, where)
    kinds = _optional_list(item.get("false_kinds"), len(false), "false_kinds", where)
    box = _box(item, where)
    return SuiteItem(_image_path(item, root, where), true, tuple(false), subtype, kinds, box, item)


def read_suite(path: str | os.PathLike, decode: bool = True) -> Suite:
    """Read and check a suite folder (see the module docstring); ``decode`` also decodes every image."""
    root = Path(path)
    items_file = root / ITEMS_FILE
    if not root.is_dir():
        raise DataError(f"suite not found: {quoted(root)} (a folder holding {ITEMS_FILE})")
    if not items_file.is_file():
        raise DataError(f"suite {quoted(root)} has no {ITEMS_FILE}")
    raw = read_json(items_file, "suite file", error=DataError)
    if not isinstance(raw, list):
        raise DataError(f"{quoted(items_file)} must hold a JSON list of items, got {type(raw).__name__}")
    if not raw:
        raise DataError(f"{quoted(items_file)} holds no items")
    items, seen = [], {}
    for index, entry in enumerate(raw):
        item = parse_item(entry, root, _where(items_file, index))
        key = (
            str(item.image.resolve()),
            item.box,
            item.true_caption,
            item.false_captions,
        )  # ARO: one image, several boxes
        if key in seen:
            raise DataError(f"{_where(items_file, index)} repeats item {seen[key]} (same image and captions)")
        seen[key] = index
        items.append(item)
    if decode:
        _decode_all(items, items_file)
    return Suite(root.resolve().name, root, tuple(items))


def _decode_all(items: list[SuiteItem], items_file: Path) -> None:
    """Decode each image once; check every item's box against its image's (upright) size."""
    sizes: dict[Path, tuple[int, int]] = {}
    for index, item in enumerate(items):
        if item.image not in sizes:
            try:
                sizes[item.image] = load_rgb(item.image)[0].size
            except DataError as exc:
                raise DataError(f"{_where(items_file, index)}: {exc}") from None
        check_box(item.box, sizes[item.image], _where(items_file, index))


def item_where(suite: Suite, index: int) -> str:
    """How errors name item ``index`` of ``suite``: its ``items.json`` and the index.

    Example:
        >>> item_where(Suite("s", Path("/x/s"), ()), 3)
        '/x/s/items.json item 3'
    """
    return _where(suite.root / ITEMS_FILE, index)


# Tables list suites in this order whichever way they were found (written by --write-toy-suites or
# read back with --suites), so the same suites give the same columns; other names follow, sorted.
STANDARD_ORDER = ("attribution", "relation", "order", "negation")


def _suite_order(folder: Path) -> tuple[int, str]:
    name = folder.name
    return (STANDARD_ORDER.index(name) if name in STANDARD_ORDER else len(STANDARD_ORDER), name)


def find_suites(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Suite folders in ``paths``: each a suite itself, or a folder whose sub-folders are suites.

    Sub-folders come in :data:`STANDARD_ORDER`, then sorted by name.

    Example:
        >>> find_suites(["/nonexistent"])
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: --suites /nonexistent not found
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise DataError(
                f"--suites {quoted(path)} not found"
                if not path.exists()
                else f"--suites {quoted(path)} is not a folder"
            )
        inner = (
            [path]
            if (path / ITEMS_FILE).exists()
            else sorted((p for p in path.iterdir() if (p / ITEMS_FILE).is_file()), key=_suite_order)
        )
        if not inner:
            raise DataError(f"--suites {quoted(path)} holds no {ITEMS_FILE}, nor sub-folders with one")
        found += inner
    names = [p.resolve().name for p in found]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(f"--suites: two suites are named {duplicated[0]!r}; suite names (folder names) must differ")
    return found
