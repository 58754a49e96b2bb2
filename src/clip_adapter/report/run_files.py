"""What an artifact directory holds, read without trusting it, and where its test images are now.

An artifact (``clip-adapter train``, ``save_pretrained``) holds ``config.json`` and
``model.safetensors``, and usually the run's ``result.json`` (with its ``history``),
``split.json`` (the sampled split, paths relative to the dataset root) and maybe a
per-epoch ``log.csv``. The dataset root is not part of the split file, so the test
images are looked for where they are likely to be (``--data``, a root the result
records, the folders beside the artifact) and used only where every test path exists.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, DataError
from ..io import quoted, read_json

MAX_SIBLINGS = 200  # folders beside the artifact looked at for its dataset
MAX_LOG_BYTES = 50_000_000


@dataclass
class RunFiles:
    """The JSON (and CSV) files of one artifact directory; ``None`` where a file is absent."""

    directory: Path
    config: dict[str, Any]
    result: dict[str, Any] | None
    split: dict[str, Any] | None
    log_rows: list[dict[str, Any]] | None

    @property
    def classnames(self) -> list[str]:
        return list(self.config.get("classnames", []))

    @property
    def method(self) -> str:
        return str(self.config.get("method", "?"))


def is_artifact_dir(path: Path) -> bool:
    """True for a folder whose ``config.json`` is a clip-adapter artifact config."""
    try:
        config = read_json(path / "config.json", "artifact config", ArtifactError)
    except ArtifactError:
        return False
    return isinstance(config, dict) and config.get("format") == "clip-adapter-artifact"


def read_run_files(directory: str | os.PathLike) -> RunFiles:
    """Read an artifact's config, result, split and log; a malformed file is a one-line ArtifactError.

    Example:
        >>> read_run_files("/no/such/artifact")
        Traceback (most recent call last):
        ...
        clip_adapter.errors.ArtifactError: artifact config not found: /no/such/artifact/config.json
    """
    directory = Path(directory)
    config = _object(directory / "config.json", "artifact config", required=True)
    result = _object(directory / "result.json", "run result")
    split = _object(directory / "split.json", "split file")
    return RunFiles(directory, config, result, split, read_log_csv(directory / "log.csv"))


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


def _number(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass
class TestImages:
    """The run's test images as found on disk: paths, labels, and the root they were found under."""

    paths: list[Path]
    labels: list[int]
    root: str


def find_test_images(run: RunFiles, data: str | os.PathLike | None = None) -> TestImages | str:
    """The test images, or a sentence saying why they cannot be used (for the page's note)."""
    if data is not None:
        return _from_dataset(run, data)
    entries = (run.split or {}).get("test")
    if not isinstance(entries, list) or not entries:
        return "the artifact has no split.json listing its test images; pass --data DATASET to use them"
    try:
        relative = [(str(e[0]), int(e[1])) for e in entries]
    except (TypeError, ValueError, IndexError, KeyError):
        raise ArtifactError(f"{run.directory}/split.json: test entries must be [path, label, classname]") from None
    if any(not 0 <= label < len(run.classnames) for _, label in relative):
        raise ArtifactError(f"{run.directory}/split.json: a test label is outside the artifact's {len(run.classnames)} classes")
    for root in _candidate_roots(run):
        paths = [Path(root, p) for p, _ in relative]
        if all(p.is_file() for p in paths):
            return TestImages(paths, [label for _, label in relative], str(root))
    return (f"the test images of split.json (e.g. {relative[0][0]}) were not found beside the artifact "
            "(they may have been moved or deleted); pass --data DATASET to use them")


def _candidate_roots(run: RunFiles) -> list[Path]:
    """Where a relative split path may start: a recorded root, then the folders beside the artifact."""
    recorded = ((run.result or {}).get("data") or {}).get("root")
    roots = [Path(recorded)] if isinstance(recorded, str) else []
    parent = run.directory.resolve().parent
    try:
        siblings = sorted(p for p in parent.iterdir() if p.is_dir() and p != run.directory.resolve())[:MAX_SIBLINGS]
    except OSError:
        siblings = []
    for folder in [parent, *siblings]:
        roots += [folder / "images", folder]
    return roots


def _from_dataset(run: RunFiles, data: str | os.PathLike) -> TestImages:
    from ..data import load_dataset

    dataset = load_dataset(data)
    if dataset.classnames != run.classnames:
        raise DataError(f"dataset {quoted(data)} has classes {dataset.classnames[:3]}… but the artifact has {run.classnames[:3]}…")
    samples = dataset.split("test")
    if not samples:
        raise DataError(f"dataset {quoted(data)} has no test images")
    return TestImages([s.path for s in samples], [s.label for s in samples], str(dataset.root))
