"""What an artifact directory holds, read without trusting it, and where its test images are.

An artifact (``clip-adapter train``, ``save_pretrained``) holds ``config.json`` and
``model.safetensors``, and usually the run's ``result.json`` (with its ``history``),
``split.json`` and maybe a per-epoch ``log.csv``. Every field the page reads is
checked (:mod:`.fields`); the class names, which every section is indexed by, must
be valid or the report stops with one line naming the file and field.

Test images are read only from the dataset the user names (``--data``): never
from a path the artifact records (``split.json`` entries, ``result.json``'s
``data.root``). A received artifact could otherwise list ``/home/me/id.png`` or
``../../private/scan.png`` as a test image and have its thumbnail embedded in a
page meant to be shared. Each ``--data`` image is also checked, symlinks
resolved, to lie inside the ``--data`` folder; one that does not is skipped with
a one-line warning naming it (a stray link should not block the report, and
the page says how many were skipped).
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.errors import ArtifactError, DataError
from ...core.files import quoted, read_json
from .fields import Fields, text

MAX_LOG_BYTES = 50_000_000
MAX_WARNED = 10  # escaping images named one per line; the rest are counted in one more line
NO_DATA = (
    "test images are read only from --data (never from paths the artifact records), and none was given; "
    "pass --data DATASET to re-evaluate the run, compare each class with zero-shot and see the worst-classified images"
)


@dataclass
class RunFiles:
    """The JSON (and CSV) files of one artifact directory, with checked access to their fields."""

    directory: Path
    config: dict[str, Any]
    result: dict[str, Any] | None
    log_rows: list[dict[str, Any]] | None
    classnames: list[str]
    problems: list[str] = field(default_factory=list)  # "<file> <field>" of every malformed field read

    @property
    def config_fields(self) -> Fields:
        return Fields(self.config, "config.json", self.problems)

    @property
    def result_fields(self) -> Fields:
        return Fields(self.result, "result.json", self.problems)

    @property
    def method(self) -> str:
        value = self.config_fields.get("method", text, "?")
        return str(value)  # "malformed" for a method that is not a string


def is_artifact_dir(path: Path) -> bool:
    """True for a folder whose ``config.json`` is a clip-adapter artifact config."""
    try:
        config = read_json(path / "config.json", "artifact config", ArtifactError)
    except ArtifactError:
        return False
    return isinstance(config, dict) and config.get("format") == "clip-adapter-artifact"


def read_run_files(directory: str | os.PathLike) -> RunFiles:
    """Read an artifact's config, result and log; a malformed file (or class list) is a one-line ArtifactError.

    Example:
        >>> read_run_files("/no/such/artifact")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ArtifactError: artifact config not found: /no/such/artifact/config.json
    """
    from ...artifacts import checked_classnames

    directory = Path(directory)
    config = _object(directory / "config.json", "artifact config", required=True) or {}
    classnames = checked_classnames(config.get("classnames"), f"{quoted(directory / 'config.json')}")
    result = _object(directory / "result.json", "run result")
    return RunFiles(directory, config, result, read_log_csv(directory / "log.csv"), classnames)


def _object(path: Path, what: str, required: bool = False) -> dict[str, Any] | None:
    if not required and not path.exists():
        return None
    data = read_json(path, what, ArtifactError)
    if not isinstance(data, dict):
        raise ArtifactError(f"{what} {quoted(path)} is not a JSON object")
    return data


def read_log_csv(path: Path) -> list[dict[str, Any]] | None:
    """Rows of a per-epoch CSV log with numbers converted; ``None`` when there is no log."""
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_LOG_BYTES:
        raise ArtifactError(f"log {quoted(path)} is larger than {MAX_LOG_BYTES} bytes")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [{k: _number(v) for k, v in row.items() if k} for row in csv.DictReader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ArtifactError(f"log {quoted(path)} cannot be read as CSV ({exc.__class__.__name__})") from None


def _number(cell: Any) -> Any:
    if not isinstance(cell, str):
        return cell
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:  # not a number (or more digits than int() converts): kept as text
            pass
    return cell


@dataclass
class TestImages:
    """The run's test images in ``--data``: paths, labels, the root, and the paths skipped as outside it."""

    paths: list[Path]
    labels: list[int]
    root: str
    outside: list[str] = field(default_factory=list)


def find_test_images(run: RunFiles, data: str | os.PathLike | None = None) -> TestImages | str:
    """The test split of ``--data``, or a sentence saying why there are no images (for the page's notes)."""
    if data is None:
        return NO_DATA
    dataset = _load_dataset(data)
    if dataset.classnames != run.classnames:
        raise DataError(
            f"dataset {quoted(data)} has classes {dataset.classnames[:3]}… but the artifact has {run.classnames[:3]}…"
        )
    samples = dataset.split("test")
    if not samples:
        raise DataError(f"dataset {quoted(data)} has no test images")
    root, kept, outside = data_root(data), [], []
    for sample in samples:
        if is_inside(sample.path, root):
            kept.append(sample)
        else:
            outside.append(str(sample.path))
    _warn_outside(outside, data)
    return TestImages([s.path for s in kept], [s.label for s in kept], str(dataset.root), outside)


def data_root(data: str | os.PathLike) -> Path:
    """The folder every ``--data`` image must lie in: the folder itself, or a split JSON's folder."""
    path = Path(data)
    folder = path if path.is_dir() else path.parent
    return folder.resolve()


def is_inside(path: Path, root: Path) -> bool:
    """True when ``path``, every symlink resolved, lies inside ``root`` (already resolved)."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # gone, a symlink loop, a NUL byte: not an image we may read
        return False
    return resolved.is_relative_to(root)


def _load_dataset(data: str | os.PathLike) -> Any:
    """``load_dataset`` that skips (and warns about) images leaving the dataset, and stops on any other error."""
    from ...data import load_dataset
    from ...data.issues import Issues

    issues = Issues(strict=False)
    dataset = load_dataset(data, issues=issues)
    escapes = [i for i in issues.items if i.severity == "error" and i.kind == "path-escape"]
    others = [i for i in issues.items if i.severity == "error" and i.kind != "path-escape"]
    if others:
        raise DataError(others[0].message)  # what the strict reader would have stopped on
    for issue in escapes[:MAX_WARNED]:
        warnings.warn(f"--data: skipped, outside the dataset: {issue.message}", stacklevel=2)
    if len(escapes) > MAX_WARNED:
        warnings.warn(f"--data: skipped {len(escapes) - MAX_WARNED} more images outside the dataset", stacklevel=2)
    return dataset


def _warn_outside(outside: list[str], data: str | os.PathLike) -> None:
    for path in outside[:MAX_WARNED]:
        warnings.warn(
            f"--data: skipped test image {quoted(path)}: it is not inside {quoted(data)} (symlinks resolved)",
            stacklevel=2,
        )
    if len(outside) > MAX_WARNED:
        warnings.warn(
            f"--data: skipped {len(outside) - MAX_WARNED} more test images not inside {quoted(data)}", stacklevel=2
        )
