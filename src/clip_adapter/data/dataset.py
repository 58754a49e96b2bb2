"""Datasets as plain data: class names plus train/val/test lists of (path, label).

Two layouts are read: an ImageFolder (``root/<class>/<image>``, optionally with
``train/``, ``val/``, ``test/`` sub-roots) and a CoOp split JSON
(``{"train"|"val"|"test": [[relative_path, label, classname], ...]}``) with an
image root, the format of the 11 standard few-shot benchmarks.
"""

from __future__ import annotations

import os
import random
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import DataError
from ..core.files import atomic_write_json, read_json
from .classnames import ClassnameMap, clean_classname, final_classnames, load_classname_map
from .images import is_image_name
from .issues import Issues, show
from .templates import check_template

SPLITS = ("train", "val", "test")
# CoOp's read_and_split_data proportions for a folder without a split of its own.
FOLDER_SPLIT = (0.5, 0.2)  # train, val; the rest is test
FOLDER_SPLIT_SEED = 1


__all__ = [
    "Dataset",
    "Sample",
    "clean_classname",
    "load_dataset",
    "read_coop_split",
    "read_image_folder",
    "write_coop_split",
]


@dataclass(frozen=True)
class Sample:
    """One labelled image: an absolute path and a class index."""

    path: Path
    label: int


@dataclass
class Dataset:
    """Class names and the images of each split.

    Example:
        >>> ds = Dataset("demo", ["cat", "dog"], Path("/data"), {"train": [Sample(Path("/data/a.jpg"), 0)]})
        >>> ds.count("train"), ds.count("test")
        (1, 0)
    """

    name: str
    classnames: list[str]
    root: Path
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    templates: tuple[str, ...] = ()  # prompt templates the dataset declares (empty: the name's default)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def split(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        return self.splits.get(name, [])

    def count(self, name: str) -> int:
        return len(self.split(name))

    def to_coop(self) -> dict[str, list[list[Any]]]:
        """The CoOp JSON form, paths relative to ``root`` (POSIX separators)."""
        out: dict[str, list[list[Any]]] = {}
        for split in SPLITS:
            out[split] = [[_relative(s.path, self.root), s.label, self.classnames[s.label]] for s in self.split(split)]
        return out


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def write_coop_split(dataset: Dataset, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
    """Write ``dataset`` as a CoOp split JSON (atomically).

    ``meta`` and the dataset's declared templates go under ``"meta"``, which
    CoOp's own readers ignore and :func:`read_coop_split` reads back.
    """
    data: dict[str, Any] = dataset.to_coop()
    meta = {**(meta or {}), **({"templates": list(dataset.templates)} if dataset.templates else {})}
    if meta:
        data["meta"] = meta
    atomic_write_json(path, data)


def read_coop_split(
    split_json: str | os.PathLike,
    image_root: str | os.PathLike,
    name: str | None = None,
    issues: Issues | None = None,
    classnames: ClassnameMap = None,
) -> Dataset:
    """Read a CoOp split JSON whose paths are relative to ``image_root``.

    Labels must be 0..C-1, each with one class name; entries must stay inside
    ``image_root``. Any violation is a DataError naming the entry.
    ``classnames`` renames classes (see :func:`load_dataset`).
    """
    split_json, root = Path(split_json), Path(image_root)
    if not _safe_is_dir(root):
        raise DataError(f"image root not found: {show(root)}")
    try:
        data = read_json(split_json, "split file")
    except (OSError, ValueError, RecursionError) as exc:  # unreadable, or digits json refuses late
        raise DataError(f"split file {show(split_json)} cannot be read ({show(str(exc)[:200])})") from None
    return parse_coop_split(data, root, show(split_json), name or split_json.stem, issues, classnames)


def parse_coop_split(
    data: Any, root: Path, where: str, name: str, issues: Issues | None = None, classnames: ClassnameMap = None
) -> Dataset:
    """Validate decoded CoOp JSON ``data`` and build the Dataset (see :func:`read_coop_split`).

    With a non-strict ``issues`` every bad entry is recorded and left out
    instead of stopping at the first.
    """
    issues, mapping = issues or Issues(), load_classname_map(classnames)
    if not isinstance(data, dict) or not any(s in data for s in SPLITS):
        raise DataError(f"split file {where} has none of the keys {', '.join(SPLITS)}")
    lists = {split: _entries(data, split, where, issues) for split in SPLITS}
    # A label can be no larger than the number of entries (C classes need C entries at least):
    # a label of 10**9 is refused here, not turned into a billion placeholder classes.
    labels = _Labels(max_label=sum(map(len, lists.values())) - 1)
    resolved_root = _safe_resolve(root) or root
    splits: dict[str, list[Sample]] = {}
    for split, entries in lists.items():
        splits[split] = []
        for i, entry in enumerate(entries):
            sample = _parse_entry(entry, labels, root, resolved_root, f"{where} {split}[{i}]", issues)
            if sample is not None:
                splits[split].append(sample)
    names = _classnames_from_labels(labels, where, issues, mapping)
    return Dataset(name, names, root, splits, _declared_templates(data, where))


def _entries(data: dict, split: str, where: str, issues: Issues) -> list:
    entries = data.get(split, [])
    if not isinstance(entries, list):
        issues.add("malformed-split", f"split file {where}: {split!r} must be a list")
        return []
    return entries


@dataclass
class _Labels:
    """Class names seen per label while reading a split file (cleaned, and as first written)."""

    max_label: int
    cleaned: dict[int, str] = field(default_factory=dict)
    original: dict[int, str] = field(default_factory=dict)


def _declared_templates(data: dict, where: str) -> tuple[str, ...]:
    """``meta.templates`` of a split file, if it declares any (each checked like ``--template``)."""
    meta = data.get("meta")
    templates = meta.get("templates") if isinstance(meta, dict) else None
    if templates is None:
        return ()
    if not (isinstance(templates, list) and templates):
        raise DataError(f"split file {where}: meta.templates must be a non-empty list of strings with one '{{}}' each")
    return tuple(
        check_template(t, f"split file {where} meta.templates[{i}]", DataError) for i, t in enumerate(templates)
    )


def _parse_entry(
    entry: Any, labels: _Labels, root: Path, resolved_root: Path, where: str, issues: Issues
) -> Sample | None:
    if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
        issues.add(
            "malformed-entry",
            f"split file {where}: expected [relative_path, label, classname], got {reprlib.repr(entry)}",
        )
        return None
    rel, label, classname = entry
    if not isinstance(rel, str) or not rel:
        issues.add("malformed-entry", f"split file {where}: path must be a non-empty string")
    elif "\0" in rel:
        issues.add(
            "malformed-entry",
            f"split file {where}: path {reprlib.repr(rel)} contains a NUL byte, which no file system accepts",
        )
    elif isinstance(label, bool) or not isinstance(label, int) or label < 0:
        issues.add(
            "malformed-entry", f"split file {where}: label must be a non-negative integer, got {reprlib.repr(label)}"
        )
    elif label > labels.max_label:
        issues.add(
            "label-out-of-range",
            f"split file {where}: label {reprlib.repr(label)} is out of range: "
            f"the file's {labels.max_label + 1} entries can use labels 0..{labels.max_label} at most",
        )
    elif not isinstance(classname, str) or not classname.strip():
        issues.add("malformed-entry", f"split file {where}: class name must be a non-empty string")
    else:
        cleaned = clean_classname(classname)
        known = labels.cleaned.setdefault(label, cleaned)
        labels.original.setdefault(label, classname)
        if known != cleaned:
            issues.add(
                "label-mismatch", f"split file {where}: label {label} is {cleaned!r} here but {known!r} elsewhere", rel
            )
            return None
        path = _inside(root, resolved_root, rel, where, issues)
        return Sample(path, label) if path is not None else None
    return None


def _classnames_from_labels(labels: _Labels, where: str, issues: Issues, mapping: dict[str, str]) -> list[str]:
    names = labels.cleaned
    if not names:
        raise DataError(f"split file {where} lists no images")
    top = max(names)  # bounded by the number of entries, so this loop is too
    for label in range(top + 1):
        if label not in names:
            issues.add("label-gap", f"split file {where}: labels must be 0..{top}; label {label} has no image")
            names[label] = labels.original[label] = f"<label {label}>"
    order = sorted(names)
    originals = [labels.original[label] for label in order]
    described = [f"label {label} ({labels.original[label]!r})" for label in order]
    return final_classnames(originals, described, mapping, f"split file {where}", issues)


def _inside(root: Path, resolved_root: Path, rel: str, where: str, issues: Issues) -> Path | None:
    """Join ``rel`` to ``root``, refusing absolute paths, ``..`` and symlinks that leave the root."""
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        issues.add(
            "path-escape",
            f"split file {where}: path {rel!r} is absolute; paths must be relative to the image root",
            rel,
        )
        return None
    path = root / rel
    resolved = _safe_resolve(path)
    if resolved is None:
        issues.add(
            "malformed-entry",
            f"split file {where}: path {reprlib.repr(rel)} cannot be resolved (symlink loop or name too long)",
            rel,
        )
        return None
    if not resolved.is_relative_to(resolved_root):
        issues.add("path-escape", f"split file {where}: path {rel!r} leaves the image root {show(root)}", rel)
        return None
    return path


def _safe_resolve(path: Path) -> Path | None:
    """``path.resolve()``, or None where the OS refuses it (symlink loop, name too long, NUL byte)."""
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError):
        return None


def _safe_is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # no permission to look, a NUL byte: not a folder we can read
        return False


def _safe_is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def read_image_folder(
    root: str | os.PathLike,
    name: str | None = None,
    seed: int = FOLDER_SPLIT_SEED,
    issues: Issues | None = None,
    classnames: ClassnameMap = None,
) -> Dataset:
    """Read ``root/<class>/<image>``; with ``train/``, ``val/``/``test/`` sub-roots use those.

    Without sub-roots each class is split 50/20/30 into train/val/test with a
    fixed seed (CoOp's convention for folders), so the same folder always
    gives the same split. Class names are the folder names, cleaned, or as
    ``classnames`` renames them (see :func:`load_dataset`).
    """
    root, issues, mapping = Path(root), issues or Issues(), load_classname_map(classnames)
    if not _safe_is_dir(root):
        raise DataError(f"dataset folder not found: {show(root)}")
    name = name or (_safe_resolve(root) or root).name
    if _safe_is_dir(root / "train") and (_safe_is_dir(root / "test") or _safe_is_dir(root / "val")):
        return _read_presplit_folder(root, name, issues, mapping)
    folders = _class_folders(root)
    names = _folder_classnames(root, [f.name for f in folders], mapping, issues)
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for label, folder in enumerate(folders):
        images = _class_images(folder, root, issues)
        for split, paths in _split_paths(images, seed).items() if images else ():
            splits[split] += [Sample(p, label) for p in paths]
    return Dataset(name, names, root, splits)


def _folder_classnames(root: Path, folder_names: list[str], mapping: dict[str, str], issues: Issues) -> list[str]:
    described = [f"class folder {n!r}" for n in folder_names]
    return final_classnames(folder_names, described, mapping, f"dataset {show(root)}", issues)


def _read_presplit_folder(root: Path, name: str, issues: Issues, mapping: dict[str, str]) -> Dataset:
    folders = _class_folders(root / "train")
    folder_names = [f.name for f in folders]
    splits = {}
    for split in SPLITS:
        if not _safe_is_dir(root / split):
            continue
        extra = sorted({f.name for f in _class_folders(root / split, allow_empty=True)} - set(folder_names))
        if extra:
            raise DataError(f"{show(root / split / extra[0])}: class folder not present in {show(root / 'train')}")
        splits[split] = [
            Sample(p, label)
            for label, folder in enumerate(folder_names)
            if _safe_is_dir(root / split / folder)
            for p in _class_images(root / split / folder, root, issues)
        ]
    if "val" not in splits:  # CoOp carves val out of train when a dataset has none
        splits["train"], splits["val"] = _carve_val(splits["train"])
    return Dataset(name, _folder_classnames(root, folder_names, mapping, issues), root, splits)


def _listdir(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; an unreadable folder is a DataError naming it."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"folder {show(folder)} cannot be read ({exc.strerror or exc.__class__.__name__})") from None


def _class_folders(root: Path, allow_empty: bool = False) -> list[Path]:
    folders = [p for p in _listdir(root) if _safe_is_dir(p) and not p.name.startswith(".")]
    if not folders and not allow_empty:
        raise DataError(f"{show(root)} has no class folders (expected {show(root)}/<class>/<image>)")
    return sorted(folders, key=lambda p: p.name)


def _class_images(folder: Path, root: Path, issues: Issues) -> list[Path]:
    images, resolved_root = [], _safe_resolve(root) or root
    for p in _listdir(folder):
        if p.name.startswith(".") or _safe_is_dir(p):
            continue
        resolved = _safe_resolve(p)
        if resolved is None:
            issues.add("unreadable", f"{show(p)} cannot be resolved (a symlink loop?)", p)
        elif not resolved.is_relative_to(resolved_root):
            issues.add(
                "path-escape", f"{show(p)} is a symlink to {show(resolved)}, outside the dataset root {show(root)}", p
            )
        elif not is_image_name(p):
            issues.add(
                "non-image-file", f"{show(p)} is not an image file (by its extension); ignored", p, severity="warning"
            )
        else:
            if not p.name.isprintable():  # valid on Linux and read fine here, but other tools may stumble
                issues.add(
                    "unusual-filename",
                    f"{show(p)}: file name holds control characters or bytes that are not UTF-8",
                    p,
                    severity="info",
                )
            images.append(p)
    if not images:
        issues.add("empty-class", f"class folder {show(folder)} has no images", folder)
    return images


def _split_paths(paths: list[Path], seed: int) -> dict[str, list[Path]]:
    shuffled = list(paths)
    # Bytes, not str: a folder name that is not UTF-8 cannot be str.encode()d; for every
    # other name these bytes are exactly what the str seed was, so splits are unchanged.
    random.Random(f"{seed}:".encode() + os.fsencode(paths[0].parent.name)).shuffle(shuffled)
    n = len(shuffled)
    n_train = max(1, round(n * FOLDER_SPLIT[0]))
    n_val = min(n - n_train, max(1, round(n * FOLDER_SPLIT[1]))) if n > 2 else 0
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def _carve_val(train: list[Sample], fraction: float = 0.2) -> tuple[list[Sample], list[Sample]]:
    by_label: dict[int, list[Sample]] = {}
    for sample in train:
        by_label.setdefault(sample.label, []).append(sample)
    new_train, val = [], []
    for label, items in sorted(by_label.items()):
        n_val = int(len(items) * fraction) if len(items) > 1 else 0
        shuffled = list(items)
        random.Random(f"{FOLDER_SPLIT_SEED}:{label}").shuffle(shuffled)
        val += sorted(shuffled[:n_val], key=lambda s: s.path)
        new_train += sorted(shuffled[n_val:], key=lambda s: s.path)
    return new_train, val


def load_dataset(
    data: str | os.PathLike,
    split_file: str | os.PathLike | None = None,
    name: str | None = None,
    issues: Issues | None = None,
    classnames: ClassnameMap = None,
) -> Dataset:
    """Read a dataset given on the command line.

    ``data`` is an ImageFolder, or (with ``split_file``) the image root of a
    CoOp split JSON; ``data`` may also be a split JSON whose images live beside
    it (``<dir>/images``, else ``<dir>``). ``classnames`` renames classes: a
    JSON object file or dict ``{"<folder or original class name>": "<new name>"}``.
    Class names that are empty or collide after cleaning and case-folding
    (``red_fox`` / ``Red Fox``) are refused, renamed ones included.

    Example:
        >>> load_dataset("/no/such/folder")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: dataset folder not found: /no/such/folder
    """
    data = Path(data)
    if split_file is not None:
        return read_coop_split(split_file, data, name, issues, classnames)
    if data.suffix == ".json":
        root = data.parent / "images" if _safe_is_dir(data.parent / "images") else data.parent
        return read_coop_split(data, root, name or data.parent.name, issues, classnames)
    if _safe_is_dir(data) and _safe_is_file(data / "split.json") and _safe_is_dir(data / "images"):
        return read_coop_split(data / "split.json", data / "images", name or data.name, issues, classnames)
    return read_image_folder(data, name, issues=issues, classnames=classnames)
