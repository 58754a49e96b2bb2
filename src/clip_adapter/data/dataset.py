"""Datasets as plain data: class names plus train/val/test lists of (path, label).

Two layouts are read: an ImageFolder (``root/<class>/<image>``, optionally with
``train/``, ``val/``, ``test/`` sub-roots) and a CoOp split JSON
(``{"train"|"val"|"test": [[relative_path, label, classname], ...]}``) with an
image root, the format of the 11 standard few-shot benchmarks.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io import atomic_write_json, read_json
from .images import is_image_name
from .issues import Issues

SPLITS = ("train", "val", "test")
# CoOp's read_and_split_data proportions for a folder without a split of its own.
FOLDER_SPLIT = (0.5, 0.2)  # train, val; the rest is test
FOLDER_SPLIT_SEED = 1


def clean_classname(name: str) -> str:
    """``"golden_retriever"`` → ``"golden retriever"`` (CoOp's cleaning).

    Example:
        >>> clean_classname("  Golden_Retriever ")
        'Golden Retriever'
    """
    return " ".join(name.replace("_", " ").split())


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
    split_json: str | os.PathLike, image_root: str | os.PathLike, name: str | None = None, issues: Issues | None = None
) -> Dataset:
    """Read a CoOp split JSON whose paths are relative to ``image_root``.

    Labels must be 0..C-1, each with one class name; entries must stay inside
    ``image_root``. Any violation is a DataError naming the entry.
    """
    split_json, root = Path(split_json), Path(image_root)
    if not root.is_dir():
        raise DataError(f"image root not found: {root}")
    data = read_json(split_json, "split file")
    return parse_coop_split(data, root, str(split_json), name or split_json.stem, issues)


def parse_coop_split(data: Any, root: Path, where: str, name: str, issues: Issues | None = None) -> Dataset:
    """Validate decoded CoOp JSON ``data`` and build the Dataset (see :func:`read_coop_split`).

    With a non-strict ``issues`` every bad entry is recorded and left out
    instead of stopping at the first.
    """
    issues = issues or Issues()
    if not isinstance(data, dict) or not any(s in data for s in SPLITS):
        raise DataError(f"split file {where} has none of the keys {', '.join(SPLITS)}")
    names: dict[int, str] = {}
    resolved_root = root.resolve()
    splits: dict[str, list[Sample]] = {}
    for split in SPLITS:
        entries = data.get(split, [])
        if not isinstance(entries, list):
            issues.add("malformed-split", f"split file {where}: {split!r} must be a list")
            entries = []
        splits[split] = []
        for i, entry in enumerate(entries):
            sample = _parse_entry(entry, names, root, resolved_root, f"{where} {split}[{i}]", issues)
            if sample is not None:
                splits[split].append(sample)
    return Dataset(name, _classnames_from_labels(names, where, issues), root, splits, _declared_templates(data, where))


def _declared_templates(data: dict, where: str) -> tuple[str, ...]:
    """``meta.templates`` of a split file, if it declares any (each with one ``{}``)."""
    meta = data.get("meta")
    templates = meta.get("templates") if isinstance(meta, dict) else None
    if templates is None:
        return ()
    if not (isinstance(templates, list) and templates and all(isinstance(t, str) and t.count("{}") == 1 for t in templates)):
        raise DataError(f"split file {where}: meta.templates must be a list of strings with one '{{}}' each")
    return tuple(templates)


def _parse_entry(entry: Any, names: dict[int, str], root: Path, resolved_root: Path, where: str, issues: Issues) -> Sample | None:
    if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
        issues.add("malformed-entry", f"split file {where}: expected [relative_path, label, classname], got {str(entry)[:80]}")
        return None
    rel, label, classname = entry
    if not isinstance(rel, str) or not rel:
        issues.add("malformed-entry", f"split file {where}: path must be a non-empty string")
    elif isinstance(label, bool) or not isinstance(label, int) or label < 0:
        issues.add("malformed-entry", f"split file {where}: label must be a non-negative integer, got {label!r}")
    elif not isinstance(classname, str) or not classname.strip():
        issues.add("malformed-entry", f"split file {where}: class name must be a non-empty string")
    else:
        cleaned = clean_classname(classname)
        known = names.setdefault(label, cleaned)
        if known != cleaned:
            issues.add("label-mismatch", f"split file {where}: label {label} is {cleaned!r} here but {known!r} elsewhere", rel)
            return None
        path = _inside(root, resolved_root, rel, where, issues)
        return Sample(path, label) if path is not None else None
    return None


def _classnames_from_labels(names: dict[int, str], where: str, issues: Issues) -> list[str]:
    if not names:
        raise DataError(f"split file {where} lists no images")
    for label in sorted(set(range(max(names) + 1)) - set(names)):
        issues.add("label-gap", f"split file {where}: labels must be 0..{max(names)}; label {label} has no image")
        names[label] = f"<label {label}>"
    seen: dict[str, int] = {}
    for label in sorted(names):
        if names[label] in seen:
            issues.add("label-mismatch", f"split file {where}: class {names[label]!r} has two labels ({seen[names[label]]} and {label})")
        seen.setdefault(names[label], label)
    return [names[label] for label in sorted(names)]


def _inside(root: Path, resolved_root: Path, rel: str, where: str, issues: Issues) -> Path | None:
    """Join ``rel`` to ``root``, refusing absolute paths, ``..`` and symlinks that leave the root."""
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        issues.add("path-escape", f"split file {where}: path {rel!r} is absolute; paths must be relative to the image root", rel)
        return None
    path = root / rel
    if not path.resolve().is_relative_to(resolved_root):
        issues.add("path-escape", f"split file {where}: path {rel!r} leaves the image root {root}", rel)
        return None
    return path


def read_image_folder(
    root: str | os.PathLike, name: str | None = None, seed: int = FOLDER_SPLIT_SEED, issues: Issues | None = None
) -> Dataset:
    """Read ``root/<class>/<image>``; with ``train/``, ``val/``/``test/`` sub-roots use those.

    Without sub-roots each class is split 50/20/30 into train/val/test with a
    fixed seed (CoOp's convention for folders), so the same folder always
    gives the same split. Class names are the folder names, cleaned.
    """
    root, issues = Path(root), issues or Issues()
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    name = name or root.resolve().name
    if (root / "train").is_dir() and ((root / "test").is_dir() or (root / "val").is_dir()):
        return _read_presplit_folder(root, name, issues)
    folders = _class_folders(root)
    classnames = [clean_classname(f.name) for f in folders]
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for label, folder in enumerate(folders):
        images = _class_images(folder, root, issues)
        for split, paths in (_split_paths(images, seed).items() if images else ()):
            splits[split] += [Sample(p, label) for p in paths]
    return Dataset(name, classnames, root, splits)


def _read_presplit_folder(root: Path, name: str, issues: Issues) -> Dataset:
    folders = _class_folders(root / "train")
    folder_names = [f.name for f in folders]
    splits = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        extra = sorted({f.name for f in _class_folders(root / split, allow_empty=True)} - set(folder_names))
        if extra:
            raise DataError(f"{root / split / extra[0]}: class folder not present in {root / 'train'}")
        splits[split] = [
            Sample(p, label)
            for label, folder in enumerate(folder_names)
            if (root / split / folder).is_dir()
            for p in _class_images(root / split / folder, root, issues)
        ]
    if "val" not in splits:  # CoOp carves val out of train when a dataset has none
        splits["train"], splits["val"] = _carve_val(splits["train"])
    return Dataset(name, [clean_classname(n) for n in folder_names], root, splits)


def _class_folders(root: Path, allow_empty: bool = False) -> list[Path]:
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    if not folders and not allow_empty:
        raise DataError(f"{root} has no class folders (expected {root}/<class>/<image>)")
    return folders


def _class_images(folder: Path, root: Path, issues: Issues) -> list[Path]:
    images, resolved_root = [], root.resolve()
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue
        if not p.resolve().is_relative_to(resolved_root):
            issues.add("path-escape", f"{p} is a symlink to {p.resolve()}, outside the dataset root {root}", p)
        elif not is_image_name(p):
            issues.add("non-image-file", f"{p} is not an image file (by its extension); ignored", p, severity="warning")
        else:
            images.append(p)
    if not images:
        issues.add("empty-class", f"class folder {folder} has no images", folder)
    return images


def _split_paths(paths: list[Path], seed: int) -> dict[str, list[Path]]:
    shuffled = list(paths)
    random.Random(f"{seed}:{paths[0].parent.name}").shuffle(shuffled)
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
    data: str | os.PathLike, split_file: str | os.PathLike | None = None, name: str | None = None, issues: Issues | None = None
) -> Dataset:
    """Read a dataset given on the command line.

    ``data`` is an ImageFolder, or (with ``split_file``) the image root of a
    CoOp split JSON; ``data`` may also be a split JSON whose images live beside
    it (``<dir>/images``, else ``<dir>``).

    Example:
        >>> load_dataset("/no/such/folder")
        Traceback (most recent call last):
        ...
        clip_adapter.errors.DataError: dataset folder not found: /no/such/folder
    """
    data = Path(data)
    if split_file is not None:
        return read_coop_split(split_file, data, name, issues)
    if data.suffix == ".json":
        root = data.parent / "images" if (data.parent / "images").is_dir() else data.parent
        return read_coop_split(data, root, name or data.parent.name, issues)
    if data.is_dir() and (data / "split.json").is_file() and (data / "images").is_dir():
        return read_coop_split(data / "split.json", data / "images", name or data.name, issues)
    return read_image_folder(data, name, issues=issues)
