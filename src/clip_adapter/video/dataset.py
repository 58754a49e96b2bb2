"""Video datasets as users hold them: a folder per class, or split CSVs with a class map.

Two layouts are read:

* **folder per class**: ``videos/<class>/<file>.mp4|avi|webm|…`` (optionally with
  ``train/``, ``val/``, ``test/`` sub-roots). Without sub-roots every video is in
  the split ``all`` (zero-shot evaluation uses them all).
* **split CSVs** (PySlowFast / Open-VCLIP, as UCF101, HMDB51 and Kinetics are
  distributed): ``train.csv``, ``val.csv``, ``test.csv`` in one folder, one
  ``relative/path,label`` per line (a space instead of the comma also works,
  as in PySlowFast's default), paths resolved against a root (default: the
  CSVs' folder; absolute paths are used as they are), plus a class map JSON
  ``{"0": "abseiling", "1": "air drumming", …}`` (or a list of names), default
  ``<folder>/classmap.json``.

Every problem is reported through :class:`~clip_adapter.data.issues.Issues`:
raised at once (one line naming the file or row) when reading for a run,
collected when validating.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import DataError
from ..core.files import read_json
from ..data.classnames import final_classnames
from ..data.dataset import Sample
from ..data.issues import Issues, show
from ..data.templates import check_template
from .decode import is_video_name

VIDEO_SPLITS = ("train", "val", "test", "all")
CSV_SPLITS = ("train", "val", "test")
CLASSMAP_FILE = "classmap.json"
META_FILE = "meta.json"
MAX_CSV_BYTES = 512 * 1024 * 1024  # far beyond Kinetics-700 (~650k rows); guards against a wrong file


@dataclass
class VideoDataset:
    """Class names and the videos of each split (``train``, ``val``, ``test`` or ``all``).

    Example:
        >>> ds = VideoDataset("demo", ["jump", "run"], Path("/v"), {"test": [Sample(Path("/v/a.mp4"), 1)]})
        >>> ds.split("test")[0].label, ds.default_split
        (1, 'test')
    """

    name: str
    classnames: list[str]
    root: Path
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    templates: tuple[str, ...] = ()  # prompt templates declared by the dataset (meta.json)
    meta: dict = field(default_factory=dict)  # the dataset's meta.json, if any (toy: pairs, base/novel)
    layout: str = "folder"  # "folder" (a folder per class) or "csv" (split CSVs + class map)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def default_split(self) -> str:
        """``test`` when the dataset has one, else ``all``."""
        return "test" if self.splits.get("test") else "all"

    def split(self, name: str) -> list[Sample]:
        """The videos of split ``name``; ``all`` is every split together (for a folder without splits, every video)."""
        if name not in VIDEO_SPLITS:
            raise DataError(f"unknown split {name!r}; choose from {', '.join(VIDEO_SPLITS)}")
        if name == "all" and "all" not in self.splits:
            return [s for split in CSV_SPLITS for s in self.splits.get(split, [])]
        if name not in self.splits:
            have = ", ".join(k for k, v in self.splits.items() if v) or "none"
            raise DataError(f"video dataset {show(self.root)} has no {name!r} split (it has: {have})")
        return self.splits[name]


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"folder {show(folder)} cannot be read ({exc.strerror or exc.__class__.__name__})") from None


def _class_folders(root: Path) -> list[Path]:
    folders = [p for p in _listdir(root) if p.is_dir() and not p.name.startswith(".")]
    if not folders:
        raise DataError(f"{show(root)} has no class folders (expected {show(root)}/<class>/<video>.mp4)")
    return folders


def _class_videos(folder: Path, issues: Issues) -> list[Path]:
    videos = []
    for p in _listdir(folder):
        if p.name.startswith(".") or p.is_dir():
            continue
        if is_video_name(p):
            videos.append(p)
        else:
            issues.add(
                "non-video-file", f"{show(p)} is not a video file (by its extension); ignored", p, severity="warning"
            )
    if not videos:
        issues.add("empty-class", f"class folder {show(folder)} has no videos", folder)
    return videos


def read_video_folder(root: str | os.PathLike, issues: Issues | None = None) -> VideoDataset:
    """Read ``root/<class>/<video>`` (or ``root/{train,val,test}/<class>/<video>``).

    Class names are the folder names, cleaned (``moving_left`` → ``moving left``).

    Example:
        >>> read_video_folder("/no/such/videos")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: video folder not found: /no/such/videos
    """
    root, issues = Path(root), issues or Issues()
    if not root.is_dir():
        raise DataError(f"video folder not found: {show(root)}")
    presplit = [s for s in CSV_SPLITS if (root / s).is_dir()]
    if "train" in presplit or "test" in presplit:
        return _read_presplit(root, presplit, issues)
    folders = _class_folders(root)
    names = final_classnames(
        [f.name for f in folders],
        [f"class folder {f.name!r}" for f in folders],
        {},
        f"video folder {show(root)}",
        issues,
    )
    samples = [Sample(p, label) for label, folder in enumerate(folders) for p in _class_videos(folder, issues)]
    return VideoDataset(root.name, names, root, {"all": samples})


def _read_presplit(root: Path, present: list[str], issues: Issues) -> VideoDataset:
    folder_names = sorted({f.name for s in present for f in _class_folders(root / s)})
    described = [f"class folder {n!r}" for n in folder_names]
    names = final_classnames(folder_names, described, {}, f"video folder {show(root)}", issues)
    splits = {}
    for split in present:
        splits[split] = [
            Sample(p, label)
            for label, folder in enumerate(folder_names)
            if (root / split / folder).is_dir()
            for p in _class_videos(root / split / folder, issues)
        ]
    return VideoDataset(root.name, names, root, splits)


def read_classmap(path: str | os.PathLike) -> list[str]:
    """Class names in label order from ``{"0": "name", …}`` (indices 0..C-1) or ``["name", …]``.

    Example:
        >>> import json, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "classmap.json"
        >>> _ = p.write_text(json.dumps({"1": "run", "0": "jump"}))
        >>> read_classmap(p)
        ['jump', 'run']
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class map not found: {show(path)}")
    data = read_json(path, "class map", error=DataError)
    where = f"class map {show(path)}"
    if isinstance(data, list):
        names = data
    elif isinstance(data, dict):
        names = _names_by_index(data, where)
    else:
        raise DataError(f'{where} must be a JSON object {{"<index>": "<class name>"}} or a list of names')
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{where}: the name of class {i} must be a non-empty string, got {name!r:.80}")
    if not names:
        raise DataError(f"{where} holds no classes")
    return final_classnames(names, [f"class {i} {n!r}" for i, n in enumerate(names)], {}, where, Issues())


def _names_by_index(data: dict, where: str) -> list[str]:
    by_index: dict[int, object] = {}
    for key, value in data.items():
        if not re.fullmatch(r"\d+", str(key).strip()):
            raise DataError(f'{where}: key {key!r} is not a class index (expected "0", "1", …)')
        by_index[int(key)] = value
    missing = [i for i in range(len(by_index)) if i not in by_index]
    if missing:
        raise DataError(f"{where}: class index {missing[0]} is missing (indices must run 0..{len(by_index) - 1})")
    return [by_index[i] for i in range(len(by_index))]  # type: ignore[misc]


def parse_csv_row(line: str) -> tuple[str, str] | None:
    """``"a/b.mp4,3"`` or ``"a/b.mp4 3"`` → ``("a/b.mp4", "3")``; a blank line → None.

    Example:
        >>> parse_csv_row("abseiling/x y.mp4,0"), parse_csv_row("a.avi 12")
        (('abseiling/x y.mp4', '0'), ('a.avi', '12'))
    """
    line = line.strip()
    if not line:
        return None
    parts = line.rsplit(",", 1) if "," in line else line.rsplit(None, 1)
    if len(parts) != 2 or not parts[0].strip():
        raise ValueError("expected 'relative/path,label'")
    return parts[0].strip(), parts[1].strip()


def read_split_csv(path: Path, root: Path, num_classes: int, issues: Issues) -> list[Sample]:
    """One split file: every row checked (path exists, label a class index), problems naming file and line."""
    if path.stat().st_size > MAX_CSV_BYTES:
        raise DataError(f"split file {show(path)} is larger than {MAX_CSV_BYTES} bytes: not a split file")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"split file {show(path)} cannot be read ({show(exc)})") from None
    samples = []
    for number, line in enumerate(text.splitlines(), start=1):
        sample = _parse_row(line, f"{show(path)} line {number}", root, num_classes, issues)
        if sample is not None:
            samples.append(sample)
    return samples


def _parse_row(line: str, where: str, root: Path, num_classes: int, issues: Issues) -> Sample | None:
    try:
        row = parse_csv_row(line)
    except ValueError as exc:
        issues.add("bad-row", f"{where}: {exc}, got {line.strip()!r:.120}", None)
        return None
    if row is None:
        return None
    rel, label_text = row
    if not re.fullmatch(r"\d+", label_text):
        if label_text.lower() == "label" and where.endswith("line 1"):
            return None  # a header row
        issues.add("bad-row", f"{where}: label {label_text!r:.40} is not a class index", None)
        return None
    label = int(label_text)
    if label >= num_classes:
        issues.add(
            "label-out-of-range", f"{where}: label {label} is outside the class map (0..{num_classes - 1})", None
        )
        return None
    path = root / rel
    if not path.is_file():
        issues.add("missing-file", f"{where}: video not found: {show(path)}", path)
        return None
    return Sample(path, label)


def read_split_dir(
    split_dir: str | os.PathLike,
    root: str | os.PathLike | None = None,
    classmap: str | os.PathLike | None = None,
    issues: Issues | None = None,
) -> VideoDataset:
    """Read ``train.csv``/``val.csv``/``test.csv`` of ``split_dir`` and its class map.

    ``root`` (default ``split_dir``) is what relative paths are joined to;
    ``classmap`` defaults to ``split_dir/classmap.json``. A ``meta.json``
    beside the CSVs may declare ``templates`` (prompt templates) and anything
    else the dataset wants recorded (the toy world's time-reversed pairs).

    Example:
        >>> read_split_dir("/no/such/dir")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: split folder not found: /no/such/dir
    """
    split_dir, issues = Path(split_dir), issues or Issues()
    if not split_dir.is_dir():
        raise DataError(f"split folder not found: {show(split_dir)}")
    files = {s: split_dir / f"{s}.csv" for s in CSV_SPLITS if (split_dir / f"{s}.csv").is_file()}
    if not files:
        raise DataError(f"split folder {show(split_dir)} holds none of train.csv, val.csv, test.csv")
    names = read_classmap(Path(classmap) if classmap else split_dir / CLASSMAP_FILE)
    base = Path(root) if root is not None else split_dir
    if not base.is_dir():
        raise DataError(f"video root not found: {show(base)}")
    splits = {s: read_split_csv(f, base, len(names), issues) for s, f in files.items()}
    _check_classes_present(splits, names, split_dir, issues)
    meta = _read_meta(split_dir)
    declared = meta.get("templates", [])
    if not isinstance(declared, list):
        raise DataError(f"{show(split_dir / 'meta.json')}: templates must be a list of strings")
    templates = tuple(check_template(t, f"{show(split_dir / 'meta.json')} templates", DataError) for t in declared)
    return VideoDataset(split_dir.name, names, base, splits, templates, meta, layout="csv")


def _check_classes_present(splits: dict[str, list[Sample]], names: list[str], split_dir: Path, issues: Issues) -> None:
    if not any(splits.values()):
        issues.add("empty-split", f"split files in {show(split_dir)} list no videos", split_dir)
        return
    train = splits.get("train")
    if train:
        present = {s.label for s in train}
        for label, name in enumerate(names):
            if label not in present:
                issues.add(
                    "empty-class",
                    f"class {label} {name!r} has no videos in {show(split_dir / 'train.csv')}",
                    None,
                    "warning",
                )


def _read_meta(split_dir: Path) -> dict:
    path = split_dir / META_FILE
    if not path.is_file():
        return {}
    meta = read_json(path, "video dataset meta", error=DataError)
    if not isinstance(meta, dict):
        raise DataError(f"video dataset meta {show(path)} must be a JSON object")
    return meta


def is_split_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds split CSVs (``train.csv``, ``val.csv`` or ``test.csv``)."""
    return any((Path(path) / f"{s}.csv").is_file() for s in CSV_SPLITS)


def load_video_dataset(
    data: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    classmap: str | os.PathLike | None = None,
    issues: Issues | None = None,
) -> VideoDataset:
    """A folder per class (``data``) or split CSVs (``split_dir``; a ``data`` holding CSVs counts as one).

    Example:
        >>> load_video_dataset()
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: give a video folder (--data) or a folder of split CSVs (--split-dir)
    """
    if data is not None and split_dir is not None:
        raise DataError("give either a video folder (--data) or a folder of split CSVs (--split-dir), not both")
    if split_dir is None and data is not None and is_split_dir(data):
        split_dir = data
    if split_dir is not None:
        return read_split_dir(split_dir, root, classmap, issues)
    if data is None:
        raise DataError("give a video folder (--data) or a folder of split CSVs (--split-dir)")
    return read_video_folder(data, issues)
