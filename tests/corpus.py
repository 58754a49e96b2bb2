"""A corpus of bad inputs, generated on demand: each kind of problem a user's data can have.

``BAD_DATASETS`` maps a kind to a function that writes a small dataset with
exactly that problem (on top of an otherwise valid ImageFolder) and returns
the path to pass as ``--data``; ``EXPECTED`` says how ``validate`` should
report it. Used by tests/test_reliability.py and benchmarks/bad_inputs.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog")


def good_folder(root: Path, per_class: int = 10, size: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            pixels[..., c] = 255  # distinct content per file, no accidental duplicates
            pixels[0, 0] = (i, c, 7)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _first(root: Path) -> Path:
    return root / CLASSES[0] / "0.png"


def _replace_first(root: Path, writer: Callable[[Path], None], suffix: str = ".png") -> Path:
    target = _first(root)
    target.unlink()
    writer(target.with_suffix(suffix))
    return root


def _split_json(root: Path, entries: dict, meta: dict | None = None) -> Path:
    images = good_folder(root / "images", per_class=6)
    base = {
        "train": [[f"{c}/{i}.png", k, c] for k, c in enumerate(CLASSES) for i in range(4)],
        "val": [[f"{c}/4.png", k, c] for k, c in enumerate(CLASSES)],
        "test": [[f"{c}/5.png", k, c] for k, c in enumerate(CLASSES)],
    }
    for split, extra in entries.items():
        base[split] = base[split] + extra
    (root / "split.json").write_text(json.dumps({**base, **({"meta": meta} if meta else {})}))
    assert images.is_dir()
    return root


def _split_text(root: Path, text: str) -> Path:
    """A split file whose text json.dumps cannot write (huge integers, deep nesting)."""
    _split_json(root, {})
    (root / "split.json").write_text(text)
    return root


def _extra_class(root: Path, folder: str, seed: int = 9) -> Path:
    """One more class folder (its own pixels: no accidental duplicate of another class)."""
    rng = np.random.default_rng(seed)
    (root / folder).mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / folder / f"{i}.png")
    return root


def _rename_class(root: Path, old: str, new: str | bytes) -> Path:
    target = os.fsencode(root) + b"/" + (new if isinstance(new, bytes) else new.encode())
    os.rename(root / old, target)
    return root


def _odd_file_name(root: Path, name: bytes) -> Path:
    """A valid image under a name Linux allows but many tools choke on (newline, non-UTF-8 bytes)."""
    os.rename(_first(root), os.fsencode(root / CLASSES[0]) + b"/" + name)
    return root


def _wide(path: Path) -> None:
    Image.new("L", (1_000_000, 1), 128).save(path)  # 3 KB on disk; 50 Gpx once its short side is resized to 224


def _nan_tiff(path: Path) -> None:
    pixels = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    pixels[3, 4], pixels[5, 6] = np.nan, np.inf
    Image.fromarray(pixels, "F").save(path)


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display", as phones write portrait photos
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (16, 24, 3), dtype=np.uint8)).save(
        path, exif=exif.tobytes()
    )


def _symlink_loop(root: Path) -> Path:
    os.symlink("loop.png", root / CLASSES[0] / "loop.png")
    return root


def _bomb(path: Path) -> None:
    Image.new("1", (20000, 20000)).save(path)  # 400 Mpx, a few KB on disk


def _huge(path: Path) -> None:
    Image.new("1", (7000, 6000)).save(path)  # 42 Mpx: decodable, but reported


def _truncated(path: Path) -> None:
    buffer = path.with_suffix(".full.jpg")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer)
    path.write_bytes(buffer.read_bytes()[:300])
    buffer.unlink()


def _symlink_outside(root: Path) -> Path:
    outside = root.parent / "outside.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(outside)
    os.symlink(outside, root / CLASSES[0] / "link.png")
    return root


def _duplicate_across_splits(root: Path) -> Path:
    return _split_json(root, {"test": [["cat/0.png", 0, "cat"]]})


def _16bit(path: Path) -> None:
    Image.fromarray(np.full((16, 16), 50000, dtype=np.uint16)).save(path)


def _palette_alpha(path: Path) -> None:
    img = Image.new("P", (16, 16))
    img.info["transparency"] = 0
    img.save(path, transparency=0)


BAD_DATASETS: dict[str, Callable[[Path], Path]] = {
    "missing-dataset": lambda root: root / "does-not-exist",
    "empty-class": lambda root: (good_folder(root), (root / "empty_class").mkdir())[0],
    "zero-byte": lambda root: _replace_first(good_folder(root), lambda p: p.write_bytes(b"")),
    "truncated-jpeg": lambda root: _replace_first(good_folder(root), _truncated, ".jpg"),
    "text-as-jpeg": lambda root: _replace_first(good_folder(root), lambda p: p.write_text("hello"), ".jpg"),
    "html-as-png": lambda root: _replace_first(good_folder(root), lambda p: p.write_text("<html>404</html>")),
    "non-image-extension": lambda root: ((good_folder(root) / "cat" / "notes.txt").write_text("x"), root)[1],
    "decompression-bomb": lambda root: _replace_first(good_folder(root), _bomb),
    "huge-image": lambda root: _replace_first(good_folder(root), _huge),
    "cmyk": lambda root: _replace_first(
        good_folder(root), lambda p: Image.new("CMYK", (16, 16), (0, 50, 100, 0)).save(p), ".jpg"
    ),
    "16-bit": lambda root: _replace_first(good_folder(root), _16bit),
    "palette-transparency": lambda root: _replace_first(good_folder(root), _palette_alpha),
    "grayscale": lambda root: _replace_first(good_folder(root), lambda p: Image.new("L", (16, 16), 80).save(p)),
    "few-images": lambda root: good_folder(root, per_class=3),
    "duplicate-within-split": lambda root: _split_json(root, {"train": [["cat/0.png", 0, "cat"]]}),
    "duplicate-across-splits": _duplicate_across_splits,
    "symlink-outside-root": lambda root: _symlink_outside(good_folder(root)),
    "label-disagrees-with-class": lambda root: _split_json(root, {"train": [["dog/0.png", 0, "dog"]]}),
    "path-with-dotdot": lambda root: _split_json(root, {"train": [["../escape.png", 0, "cat"]]}),
    "absolute-path": lambda root: _split_json(root, {"train": [["/etc/hostname", 0, "cat"]]}),
    "missing-file-in-split": lambda root: _split_json(root, {"test": [["cat/nope.png", 0, "cat"]]}),
    "malformed-entry": lambda root: _split_json(root, {"train": [["cat/0.png", 0]]}),
    "negative-label": lambda root: _split_json(root, {"train": [["cat/0.png", -1, "cat"]]}),
    "label-gap": lambda root: _split_json(root, {"train": [["cat/0.png", 5, "lion"]]}),
    "split-not-json": lambda root: (_split_json(root, {}), (root / "split.json").write_text("{'train': ["))[0],
    "split-not-an-object": lambda root: (_split_json(root, {}), (root / "split.json").write_text("[1, 2, 3]"))[0],
    # Reliability II: split files
    "huge-label": lambda root: _split_json(root, {"train": [["cat/0.png", 10**9, "lion"]]}),
    "nul-byte-in-path": lambda root: _split_json(root, {"train": [["cat/\x000.png", 0, "cat"]]}),
    "bool-label": lambda root: _split_json(root, {"train": [["cat/0.png", True, "cat"]]}),
    "float-label": lambda root: _split_json(root, {"train": [["cat/0.png", 1.0, "dog"]]}),
    "classname-not-a-string": lambda root: _split_json(root, {"train": [["cat/0.png", 0, ["cat"]]]}),
    "huge-integer-in-split": lambda root: _split_text(root, '{"train": [["cat/0.png", ' + "9" * 5000 + ', "cat"]]}'),
    "deeply-nested-split": lambda root: _split_text(root, '{"train": ' + "[" * 200_000 + "]" * 200_000 + "}"),
    "split-classnames-collide": lambda root: _split_json(root, {"train": [["dog/0.png", 2, "Cat"]]}),
    "template-with-named-field": lambda root: _split_json(root, {}, {"templates": ["a photo of a {x}."]}),
    "template-with-stray-brace": lambda root: _split_json(root, {}, {"templates": ["a photo of a {}. {"]}),
    "template-with-two-fields": lambda root: _split_json(root, {}, {"templates": ["a {} of a {}."]}),
    # Reliability II: class folders
    "classnames-differ-by-underscore": lambda root: (
        _extra_class(good_folder(root), "red fox", 9) and _extra_class(root, "red_fox", 10)
    ),
    "classnames-differ-by-case": lambda root: (
        _extra_class(good_folder(root), "Red_Fox", 9) and _extra_class(root, "red_fox", 10)
    ),
    "classname-cleans-to-empty": lambda root: _extra_class(good_folder(root), "___"),
    "classname-with-control-character": lambda root: _extra_class(good_folder(root), "fox\x07"),
    "classname-not-utf8": lambda root: _rename_class(good_folder(root), "dog", b"d\xf6g"),
    # Reliability II: file names and images
    "newline-in-file-name": lambda root: _odd_file_name(good_folder(root), b"a\nb.png"),
    "non-utf8-file-name": lambda root: _odd_file_name(good_folder(root), b"caf\xe9.png"),
    "symlink-loop": lambda root: _symlink_loop(good_folder(root)),
    "extreme-aspect-ratio": lambda root: _replace_first(good_folder(root), _wide),
    "nan-float-tiff": lambda root: _replace_first(good_folder(root), _nan_tiff, ".tif"),
    "exif-rotated": lambda root: _replace_first(good_folder(root), _exif_rotated, ".jpg"),
}

# kind → (what validate reports: an issue kind, or "fatal" for a one-line error with exit 2, or "clean")
EXPECTED: dict[str, str] = {
    "missing-dataset": "fatal",
    "empty-class": "empty-class",
    "zero-byte": "zero-byte",
    "truncated-jpeg": "corrupt-image",
    "text-as-jpeg": "not-an-image",
    "html-as-png": "not-an-image",
    "non-image-extension": "non-image-file",
    "decompression-bomb": "decompression-bomb",
    "huge-image": "huge-image",
    "cmyk": "converted-mode",
    "16-bit": "converted-mode",
    "palette-transparency": "converted-mode",
    "grayscale": "converted-mode",
    "few-images": "few-images",
    "duplicate-within-split": "duplicate-within-split",
    "duplicate-across-splits": "duplicate-across-splits",
    "symlink-outside-root": "path-escape",
    "label-disagrees-with-class": "label-mismatch",
    "path-with-dotdot": "path-escape",
    "absolute-path": "path-escape",
    "missing-file-in-split": "missing-file",
    "malformed-entry": "malformed-entry",
    "negative-label": "malformed-entry",
    "label-gap": "label-gap",
    "split-not-json": "fatal",
    "split-not-an-object": "fatal",
    "huge-label": "label-out-of-range",
    "nul-byte-in-path": "malformed-entry",
    "bool-label": "malformed-entry",
    "float-label": "malformed-entry",
    "classname-not-a-string": "malformed-entry",
    "huge-integer-in-split": "fatal",
    "deeply-nested-split": "fatal",
    "split-classnames-collide": "duplicate-classname",
    "template-with-named-field": "fatal",
    "template-with-stray-brace": "fatal",
    "template-with-two-fields": "fatal",
    "classnames-differ-by-underscore": "duplicate-classname",
    "classnames-differ-by-case": "duplicate-classname",
    "classname-cleans-to-empty": "empty-classname",
    "classname-with-control-character": "invalid-classname",
    "classname-not-utf8": "invalid-classname",
    "newline-in-file-name": "unusual-filename",
    "non-utf8-file-name": "unusual-filename",
    "symlink-loop": "unreadable",
    "extreme-aspect-ratio": "extreme-aspect-ratio",
    "nan-float-tiff": "non-finite-pixels",
    "exif-rotated": "exif-orientation",
}

# Kinds that training handles without stopping (reported conversions, warnings only).
TRAINABLE = {
    "non-image-extension",
    "huge-image",
    "cmyk",
    "16-bit",
    "palette-transparency",
    "grayscale",
    "few-images",
    "duplicate-within-split",
    "duplicate-across-splits",
    "newline-in-file-name",
    "non-utf8-file-name",
    "exif-rotated",
}
