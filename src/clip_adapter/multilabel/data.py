"""Multi-label datasets: image → set of labels, read from a JSON or CSV file.

Accepted files (image paths relative to the file's folder):

* JSON with splits: ``{"classes": [...], "train": SPLIT, "val": SPLIT, "test": SPLIT}``
  (``classes`` and ``val`` optional), where ``SPLIT`` is ``{"img.jpg": ["cat", "dog"], ...}``
  or ``[{"image": "img.jpg", "labels": ["cat", "dog"]}, ...]``; labels are names,
  or (only when ``classes`` is given) integer indices into ``classes``. A bare
  ``SPLIT`` (no split keys) is one split, ``all``, and its labels are names.
* CSV with a header: ``image,labels[,split]`` with labels joined by ``;`` or ``|``
  (COCO-style lists), or ``image,<class 1>,...,<class N>[,split]`` with 0/1 columns
  (VOC-style one-hot). Without a ``split`` column all rows are one split, ``all``.

A JSON file may also hold ``"meta": {"positive_template": ..., "negative_template": ...}``:
prompts suited to its classes (the toy task's, which its tiny CLIP can read), used
unless the command line gives others.

A dataset with only ``all`` is split 50/20/30 into train/val/test with a fixed
seed (the convention the single-label reader uses for folders). Classes are
the ``classes`` list, the one-hot header, or the sorted labels seen. An image
may have no label (a negative for every class).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import DataError
from ..core.files import quoted, read_json

SPLITS = ("train", "val", "test")
ALL = "all"
IMAGE_COLUMNS = ("image", "path", "file", "filename")
LIST_SEPARATORS = (";", "|")
SPLIT_FRACTIONS = (0.5, 0.2)  # train, val; the rest is test
SPLIT_SEED = 0
DEFAULT_NAMES = ("labels.json", "labels.csv")
PROMPT_KEYS = ("positive_template", "negative_template")


@dataclass(frozen=True)
class MultiLabelSample:
    """One image and the indices of the classes it shows (sorted)."""

    path: Path
    labels: tuple[int, ...]


@dataclass
class MultiLabelDataset:
    """Classes and splits of multi-label samples.

    Example:
        >>> ds = MultiLabelDataset(Path("."), ("cat", "dog"), {"train": [MultiLabelSample(Path("a.png"), (0, 1))]})
        >>> ds.targets("train").tolist()
        [[1.0, 1.0]]
    """

    source: Path
    classes: tuple[str, ...]
    splits: dict[str, list[MultiLabelSample]] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)  # positive/negative templates the file suggests (its "meta")

    def split(self, name: str) -> list[MultiLabelSample]:
        """The samples of split ``name``; DataError naming the file if it is absent or empty."""
        samples = self.splits.get(name)
        if not samples:
            have = ", ".join(k for k, v in self.splits.items() if v) or "none"
            raise DataError(f"{quoted(self.source)} has no {name!r} images (splits with images: {have})")
        return samples

    def targets(self, name: str) -> torch.Tensor:
        """0/1 label matrix ``[n, num_classes]`` (float32) of split ``name``."""
        samples = self.split(name)
        out = torch.zeros(len(samples), len(self.classes))
        for row, sample in enumerate(samples):
            out[row, list(sample.labels)] = 1.0
        return out


def resolve_label_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or the ``labels.json``/``labels.csv`` inside a folder."""
    path = Path(path)
    if path.is_dir():
        for name in DEFAULT_NAMES:
            if (path / name).is_file():
                return path / name
        raise DataError(f"{quoted(path)} is a folder without {' or '.join(DEFAULT_NAMES)}; pass the label file itself")
    if not path.is_file():
        raise DataError(f"multi-label file not found: {quoted(path)}")
    return path


def read_multilabel(path: str | os.PathLike) -> MultiLabelDataset:
    """Read a multi-label JSON or CSV file (or a folder holding ``labels.json``/``labels.csv``).

    Example:
        >>> import tempfile, pathlib, json
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "a.png").write_bytes(b"x")
        >>> _ = (d / "l.json").write_text(json.dumps({"train": {"a.png": ["dog", "cat"]}}))
        >>> ds = read_multilabel(d / "l.json")
        >>> ds.classes, ds.splits["train"][0].labels
        (('cat', 'dog'), (0, 1))
    """
    path = resolve_label_file(path)
    prompts: dict[str, str] = {}
    if path.suffix.lower() == ".csv":
        classes, raw = _read_csv(path)
    elif path.suffix.lower() == ".json":
        classes, raw, prompts = _read_json(path)
    else:
        raise DataError(f"{quoted(path)}: a multi-label file must be .json or .csv")
    classes = classes or tuple(sorted({label for rows in raw.values() for _, labels, _ in rows for label in labels}))
    if not classes:
        raise DataError(f"{quoted(path)} names no classes (no image has a label)")
    if len(set(classes)) != len(classes):
        raise DataError(f"{quoted(path)}: duplicate class names")
    splits = {name: _samples(path, rows, classes) for name, rows in raw.items()}
    if set(splits) == {ALL}:
        splits = _split_all(splits[ALL])
    return MultiLabelDataset(path, tuple(classes), splits, prompts)


Row = tuple[str, list[Any], str]  # image, labels (names or indices), where (for messages)


def _read_json(path: Path) -> tuple[tuple[str, ...], dict[str, list[Row]], dict[str, str]]:
    data = read_json(path, "multi-label file")
    if isinstance(data, dict) and (set(data) & {*SPLITS, "classes"}):
        unknown = sorted(set(data) - {*SPLITS, "classes", "meta"})
        if unknown:
            raise DataError(
                f"{quoted(path)}: unknown key(s) {', '.join(map(repr, unknown))} (expected classes, train, val, test)"
            )
        classes = data.get("classes", [])
        if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
            raise DataError(f"{quoted(path)}: 'classes' must be a list of non-empty names")
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        prompts = {k: v for k, v in meta.items() if k in PROMPT_KEYS and isinstance(v, str)}
        return tuple(classes), {s: _json_rows(path, data[s], s, bool(classes)) for s in SPLITS if s in data}, prompts
    return (), {ALL: _json_rows(path, data, ALL, False)}, {}


def _check_labels(path: Path, labels: list[Any], where: str, indices: bool) -> None:
    """Labels are non-empty names, or (``indices``: the file has a ``classes`` list) ints indexing it.

    Without ``classes`` a number has nothing to index, and would silently become a class
    named after it; lists and other values are never labels. Ranges are checked by :func:`_label`.

    Example:
        >>> try:
        ...     _check_labels(Path("l.json"), ["dog", 0], "train image 'a.png'", indices=False)
        ... except DataError as exc:
        ...     print(str(exc).replace("; ", ";\\n"))
        l.json: train image 'a.png': label 0 is a number, but the file has no 'classes' list for it to index;
        give 'classes' or use label names
    """
    for label in labels:
        if isinstance(label, str) and label:
            continue
        if isinstance(label, int) and not isinstance(label, bool):
            if indices:
                continue
            raise DataError(
                f"{quoted(path)}: {where}: label {label} is a number, but the file has no 'classes' list "
                "for it to index; give 'classes' or use label names"
            )
        allowed = "names or indices into 'classes'" if indices else "names (non-empty strings)"
        raise DataError(f"{quoted(path)}: {where}: label {label!r:.40} is not a label; labels are {allowed}")


def _json_rows(path: Path, split: Any, name: str, indices: bool) -> list[Row]:
    if isinstance(split, dict):
        items = list(split.items())
    elif isinstance(split, list):
        items = []
        for i, entry in enumerate(split):
            if not isinstance(entry, dict) or "labels" not in entry or not any(k in entry for k in IMAGE_COLUMNS):
                raise DataError(f"{quoted(path)}: {name}[{i}] must be an object with 'image' and 'labels'")
            items.append((next(entry[k] for k in IMAGE_COLUMNS if k in entry), entry["labels"]))
    else:
        raise DataError(f"{quoted(path)}: split {name!r} must be an object (image → labels) or a list")
    rows = []
    for image, labels in items:
        if not isinstance(image, str) or not isinstance(labels, list):
            raise DataError(f"{quoted(path)}: split {name!r}: {image!r} needs a list of labels")
        _check_labels(path, labels, f"{name} image {image!r}", indices)
        rows.append((image, labels, f"{name} image {image!r}"))
    return rows


def _read_csv(path: Path) -> tuple[tuple[str, ...], dict[str, list[Row]]]:
    try:
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{quoted(path)} cannot be read as UTF-8 CSV ({exc})") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    image_col = next((i for i, h in enumerate(header) if h.lower() in IMAGE_COLUMNS), None)
    if image_col is None:
        raise DataError(f"{quoted(path)}: the header needs an image column ({', '.join(IMAGE_COLUMNS)})")
    split_col = next((i for i, h in enumerate(header) if h.lower() == "split"), None)
    list_col = next((i for i, h in enumerate(header) if h.lower() == "labels"), None)
    onehot = [i for i in range(len(header)) if i not in (image_col, split_col, list_col)]
    if list_col is None and not onehot:
        raise DataError(f"{quoted(path)}: the header needs a 'labels' column or one 0/1 column per class")
    classes = () if list_col is not None else tuple(header[i] for i in onehot)
    rows: dict[str, list[Row]] = {}
    for line, record in enumerate(reader, start=2):
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            raise DataError(f"{quoted(path)} line {line}: {len(record)} fields, the header has {len(header)}")
        split = record[split_col].strip().lower() if split_col is not None else ALL
        if split not in SPLITS and split != ALL:
            raise DataError(f"{quoted(path)} line {line}: split {record[split_col]!r} is not train, val or test")
        labels = (
            _csv_list(record[list_col]) if list_col is not None else _csv_onehot(path, line, record, onehot, header)
        )
        rows.setdefault(split, []).append((record[image_col].strip(), labels, f"line {line}"))
    return classes, rows


def _csv_list(cell: str) -> list[str]:
    for sep in LIST_SEPARATORS:
        cell = cell.replace(sep, LIST_SEPARATORS[0])
    return [part.strip() for part in cell.split(LIST_SEPARATORS[0]) if part.strip()]


def _csv_onehot(path: Path, line: int, record: list[str], columns: list[int], header: list[str]) -> list[str]:
    labels = []
    for i in columns:
        value = record[i].strip()
        if value not in ("0", "1", "0.0", "1.0", "-1", ""):  # -1: VOC's "not present"
            raise DataError(f"{quoted(path)} line {line}: column {header[i]!r} must be 0 or 1, got {value!r}")
        if value in ("1", "1.0"):
            labels.append(header[i])
    return labels


def _samples(path: Path, rows: list[Row], classes: tuple[str, ...]) -> list[MultiLabelSample]:
    index = {name: i for i, name in enumerate(classes)}
    seen: set[Path] = set()
    out = []
    for image, labels, where in rows:
        if not image:
            raise DataError(f"{quoted(path)}: {where} has an empty image path")
        file = (path.parent / image) if not os.path.isabs(image) else Path(image)
        if not file.is_file():
            raise DataError(f"{quoted(path)}: {where}: image not found: {quoted(file)}")
        if file in seen:
            raise DataError(f"{quoted(path)}: {where}: image {quoted(image)} is listed twice in one split")
        seen.add(file)
        out.append(
            MultiLabelSample(file, tuple(sorted({_label(path, where, label, index, classes) for label in labels})))
        )
    return out


def _label(path: Path, where: str, label: Any, index: dict[str, int], classes: tuple[str, ...]) -> int:
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(classes):
        return label
    if isinstance(label, str) and label in index:
        return index[label]
    raise DataError(
        f"{quoted(path)}: {where}: unknown label {label!r} "
        f"(classes: {', '.join(classes[:8])}{', …' if len(classes) > 8 else ''})"
    )


def _split_all(samples: list[MultiLabelSample]) -> dict[str, list[MultiLabelSample]]:
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    n_train = round(len(samples) * SPLIT_FRACTIONS[0])
    n_val = round(len(samples) * SPLIT_FRACTIONS[1])
    picked = [samples[i] for i in order]
    return {"train": picked[:n_train], "val": picked[n_train : n_train + n_val], "test": picked[n_train + n_val :]}
