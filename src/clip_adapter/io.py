"""Crash-safe file writing and careful reading of JSON and safetensors.

Every file the tool writes goes to a temporary sibling first, is flushed to
disk, and is renamed over the target only when complete, so a killed process
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import ArtifactError, DataError

TMP_MARK = ".tmp-"
MAX_JSON_BYTES = 512 * 2**20  # a CoOp split of SUN397 is ~5 MB; anything near this is hostile


def _fsync_dir(directory: Path) -> None:
    # The rename itself must reach the disk, not only the file's bytes.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path`` atomically.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + TMP_MARK, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def to_json(obj: Any) -> str:
    """Serialise with sorted keys and no NaN, so equal objects give equal files."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_bytes(path, to_json(obj).encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block succeeds.

    An existing directory at ``path`` is replaced only after the new one is
    complete; on failure the temporary directory is removed and ``path`` is
    untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + TMP_MARK, dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(path.name + TMP_MARK + "old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 2**20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | os.PathLike, what: str = "JSON file", error: type = DataError) -> Any:
    """Read a JSON file, turning every failure into a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise error(f"{what} {path} is {size} bytes, more than the {MAX_JSON_BYTES} allowed")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{what} {path} is not valid JSON ({exc.__class__.__name__}: {exc})") from None


def clean_stale_temporaries(directory: str | os.PathLike, min_age_s: float = 600.0) -> int:
    """Remove temporaries left by killed writers in ``directory``; return how many.

    Only temporaries older than ``min_age_s`` go, so a writer still at work in
    another process keeps its file. Younger leftovers are harmless: no reader
    ever looks at a temporary name.
    """
    removed = 0
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    now = time.time()
    for entry in directory.iterdir():
        if TMP_MARK in entry.name and now - entry.lstat().st_mtime >= min_age_s:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed += 1
    return removed


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write a dict of tensors as safetensors, atomically.

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> save_tensors(p, {"w": torch.ones(2)})
        >>> load_tensors(p, "weights")["w"].tolist()
        [1.0, 1.0]
    """
    from safetensors.torch import save

    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    atomic_write_bytes(path, save(contiguous, metadata=metadata))


def load_tensors(
    path: str | os.PathLike,
    what: str,
    expected: dict[str, tuple[int, ...]] | None = None,
    error: type = ArtifactError,
) -> dict:
    """Load a safetensors file, refusing anything malformed or unexpected.

    ``expected`` maps tensor names to shapes; any missing, extra or
    mis-shaped tensor is an error naming it. Floating tensors must be finite.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    return parse_tensors(path.read_bytes(), f"{what} {path}", expected, error)


def parse_tensors(
    data: bytes, where: str, expected: dict[str, tuple[int, ...]] | None = None, error: type = ArtifactError
) -> dict:
    """Decode safetensors bytes with the checks of :func:`load_tensors` (``where`` names the source)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, OSError, RuntimeError, OverflowError) as exc:
        raise error(f"{where} is not a valid safetensors file ({exc})") from None
    if expected is not None:
        check_tensor_shapes(tensors, expected, where, error)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise error(f"{where}: tensor {name!r} holds NaN or infinite values")
    return tensors


def check_tensor_shapes(tensors: dict, expected: dict[str, tuple[int, ...]], where: str, error: type) -> None:
    """Raise ``error`` naming the first tensor whose presence or shape is wrong."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing:
        raise error(f"{where}: missing tensor(s) {', '.join(missing)}")
    if extra:
        raise error(f"{where}: unexpected tensor(s) {', '.join(extra)}")
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != tuple(shape):
            raise error(f"{where}: tensor {name!r} has shape {list(got)}, expected {list(shape)}")


__all__ = [
    "check_tensor_shapes",
    "load_tensors",
    "parse_tensors",
    "save_tensors",
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "clean_stale_temporaries",
    "read_json",
    "sha256_bytes",
    "sha256_file",
    "to_json",
]
