"""Crash-safe file writing and careful reading of JSON and safetensors.

Every file the tool writes goes to a temporary sibling first, is flushed to
disk, and is renamed over the target only when complete, so a killed process
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import ArtifactError, DataError, OutputError, SystemRefusal
from .ownership import (
    TEMP_NAME,
    TEMP_PROOF,
    TMP_MARK,
    drop_temp_proof,
    host_tag,
    owning_output,
    proven_temporary,
    record_file,
    unowned_entries,
    write_ledger,
    write_temp_proof,
)
from .ownership import (
    sha256_of as sha256_file,  # one body: ownership hashes for the ledger, io for everyone else
)

MAX_JSON_BYTES = 512 * 2**20  # a CoOp split of SUN397 is ~5 MB; anything near this is hostile


def _fsync_dir(directory: Path) -> None:
    # The rename itself must reach the disk, not only the file's bytes.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    # os.umask can only be read by setting it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def respect_umask(path: Path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it.

    ``mkstemp``/``mkdtemp`` create 0600/0700 whatever the umask, which would
    make a cache or artifact shared by a team unreadable to the others.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def temp_prefix(path: Path) -> str:
    """Prefix of the temporaries written for ``path``: its name, the mark, this process's pid and host."""
    return f"{path.name}{TMP_MARK}{os.getpid()}@{host_tag()}-"


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemRefusal(
            f"cannot create the folder {quoted(path.parent)} for {quoted(path)}: {_reason(exc)}"
        ) from None


def remove_temporary(folder: Path) -> None:
    """Delete a temporary folder of ours, its proof last: a kill midway leaves it still provably ours."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name == TEMP_PROOF:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
    drop_temp_proof(folder)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _make_temp_dir(path: Path, role: str) -> Path:
    """A new temporary folder beside ``path``, proven ours by the file written into it first."""
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
    try:
        respect_umask(tmp, directory=True)
        write_temp_proof(tmp, path.name, role)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path`` atomically.

    The temporary file has ``path``'s own name (writers that pick a format from
    the suffix keep working) inside a temporary folder of ours beside ``path``.
    A file written inside one of our output folders is entered in its ledger
    (:mod:`clip_adapter.core.ownership`), so ``--overwrite`` knows it is ours. A failed
    write (disk full, file too large, permission) becomes an OutputError naming
    ``path``; the temporary is removed and ``path`` untouched.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    _make_parent(path)
    with _write_errors(path):
        folder = _make_temp_dir(path, "file")
    try:
        tmp = folder / path.name
        with _write_errors(path):
            tmp.touch()
            respect_umask(tmp)
        with _write_errors(path, folder):  # the caller's block: only its writes into our temporary are ours to name
            yield tmp
        with _write_errors(path):
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            if owning_output(path) is not None:  # written ahead of the rename: a kill leaves no unlisted file of ours
                record_file(path, sha256_file(tmp))
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    finally:
        remove_temporary(folder)


# A write that fails with no file name attached (write(2) after open) fails for one of these reasons.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}


@contextlib.contextmanager
def _write_errors(path: Path, caller_writes_in: Path | None = None) -> Iterator[None]:
    """Turn a failed write of ``path`` into a SystemRefusal (exit 3) naming it.

    With ``caller_writes_in`` (the temporary the caller's block fills), an
    OSError about some other file — an input the block could not read — is the
    caller's to report, and passes through unchanged.
    """
    try:
        yield
    except OSError as exc:
        if caller_writes_in is not None and not _about_temporary(exc, caller_writes_in):
            raise
        raise SystemRefusal(f"could not write {quoted(path)}: {_reason(exc)}") from None


def _about_temporary(exc: OSError, folder: Path) -> bool:
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    if not names:
        return exc.errno in _WRITE_ERRNOS
    inside = os.path.realpath(folder)
    return any(
        os.path.realpath(os.fsdecode(n)).startswith(inside + os.sep) or os.path.realpath(os.fsdecode(n)) == inside
        for n in names
        if isinstance(n, (str, bytes, os.PathLike))
    )


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
def atomic_dir(path: str | os.PathLike, may_replace: Callable[[Path], bool] = lambda p: False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block succeeds.

    ``path`` must not exist, or be a directory that ``may_replace(path)``
    accepts (asked again at the moment of the swap). An existing directory is
    swapped with the new one in one atomic step (``renameat2`` with
    ``RENAME_EXCHANGE``), so a kill at any instant leaves the old or the new
    directory at ``path``, never neither. Where the file system cannot
    exchange, the old one is moved aside first (proven ours by a file written
    into it) and a later run puts it back (:func:`clean_stale_temporaries`).
    Before the swap every file of the new directory is entered in its ledger,
    the proof a later ``--overwrite`` asks for. On failure the temporary
    directory is removed and ``path`` is untouched. Nothing that
    ``may_replace`` refuses is ever moved or deleted.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out"
        >>> with atomic_dir(target) as tmp:
        ...     _ = (tmp / "f.txt").write_text("new")
        >>> sorted(p.name for p in target.iterdir())
        ['.clip-adapter-files.jsonl', 'f.txt']
    """
    path = Path(path)
    _make_parent(path)
    clean_stale_temporaries(path.parent, only=path.name)
    try:
        tmp = _make_temp_dir(path, "dir")
    except OSError as exc:
        raise SystemRefusal(f"cannot write in {quoted(path.parent)}: {_reason(exc)}") from None
    try:
        with _write_errors(path, tmp):
            yield tmp
        with _write_errors(path):
            write_ledger(tmp)
            _install_dir(tmp, path, may_replace)
            drop_temp_proof(path)  # a kill just before leaves a proof file the ledger check ignores
    finally:
        if tmp.exists():
            remove_temporary(tmp)  # made by this call, or the old output we verified and swapped out


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(os.scandir(path))


def _install_dir(tmp: Path, path: Path, may_replace: Callable[[Path], bool]) -> None:
    if not os.path.lexists(path) or _is_empty_dir(path):
        # rename(2) replaces only an empty folder: it fails (ENOTEMPTY/EEXIST) rather than
        # replace anything created meanwhile.
        try:
            os.rename(tmp, path)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise _appeared(path) from None
            raise
    elif path.is_dir() and not path.is_symlink() and may_replace(path):
        _replace_dir(tmp, path)
    else:
        raise _appeared(path)
    _fsync_dir(path.parent)


def _appeared(path: Path) -> OutputError:
    return OutputError(f"{quoted(path)} appeared while the output was being written; nothing was replaced")


def _replace_dir(tmp: Path, path: Path) -> None:
    """Swap our new output in for our old one, checked again after the swap (a file added meanwhile stays)."""
    # The old output gets a proof first, so that wherever a kill leaves it under a temporary
    # name, the next run knows it for ours (to put back, or to remove once replaced).
    write_temp_proof(path, path.name, "dir")
    try:
        exchanged = _exchange(tmp, path)
    except OSError:
        drop_temp_proof(path)
        raise
    if exchanged:
        # ``tmp`` now holds the old output. It was checked before the swap; a file the user added
        # since (hashing a large tree takes seconds) must not go with it: swap back and refuse.
        added = unowned_entries(tmp)
        if added:
            _exchange(tmp, path)
            drop_temp_proof(path)
            raise OutputError(
                f"{quoted(path)} gained files while the output was being written "
                f"({', '.join(quoted(a) for a in added[:3])}); nothing was replaced"
            )
        return  # atomic_dir's finally removes the old output, now at ``tmp``
    backup = path.with_name(temp_prefix(path) + "old")
    write_temp_proof(path, path.name, "old")
    os.rename(path, backup)  # a kill here is repaired by the next run (clean_stale_temporaries)
    os.rename(tmp, path)
    remove_temporary(backup)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), str(b))


def quoted(value: Any) -> str:
    r"""``value`` as text that prints on one line of any terminal.

    Linux file names may hold newlines, control characters and bytes that are
    not UTF-8 (decoded by Python as lone surrogates); printed raw they split a
    one-line message in two or crash a strict UTF-8 stdout. Such names are
    quoted with those characters escaped; ordinary names are left as they are.

    Example:
        >>> print(quoted("cat/1.png"), quoted("cat/a" + chr(10) + "b.png"), quoted("cat/" + chr(0xDCFF) + ".png"))
        cat/1.png 'cat/a\nb.png' 'cat/\xff.png'
    """
    text = str(value)
    if text.isprintable():
        return text
    return "'" + "".join(_escape(c) for c in text) + "'"


def _escape(char: str) -> str:
    if "\udc80" <= char <= "\udcff":  # an undecodable byte, kept by os.fsdecode as a surrogate
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char if char.isprintable() else repr(char)[1:-1]


def one_line(message: str) -> str:
    r"""``message`` with line breaks, control characters and undecodable bytes escaped (one printable line).

    Example:
        >>> print(one_line("image photos/a" + chr(10) + "b.jpg is broken"))
        image photos/a\nb.jpg is broken
    """
    return message if message.isprintable() else "".join(_escape(c) for c in message)


def _reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def not_a_file_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a regular file one can read an image from, in words; None when it is one.

    "not found" is said only of a path that does not exist: a folder, a device
    (``/dev/null``), a named pipe or a broken link is named for what it is.

    Example:
        >>> not_a_file_reason("/dev/null"), not_a_file_reason("/"), not_a_file_reason("/no/such.png")
        ('is a device, not a file', 'is a folder, not a file', 'not found')
    """
    import stat as st

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a broken symbolic link" if os.path.islink(path) else "not found"
    except OSError as exc:
        return f"cannot be read ({_reason(exc)})"
    if st.S_ISREG(mode):
        return None
    if st.S_ISDIR(mode):
        return "is a folder, not a file"
    if st.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file"
    if st.S_ISCHR(mode) or st.S_ISBLK(mode):
        return "is a device, not a file"
    if st.S_ISSOCK(mode):
        return "is a socket, not a file"
    return "is not a regular file"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_json(path: str | os.PathLike, what: str = "JSON file", error: type = DataError) -> Any:
    """Read a JSON file, turning every failure into a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {quoted(path)}")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise error(f"{what} {path} is {size} bytes, more than the {MAX_JSON_BYTES} allowed")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{what} {quoted(path)} cannot be read: {_reason(exc)}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, a number too long to convert
        raise error(
            f"{what} {quoted(path)} is not valid JSON ({exc.__class__.__name__}: {one_line(str(exc))[:200]})"
        ) from None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def _stale_proof(entry: Path) -> dict | None:
    """The proof of a temporary of ours whose writer ran on this machine and is gone; else None.

    The name alone proves nothing (a user may call a backup ``photos.tmp-2023-old``):
    the folder must hold our proof file, and the proof must agree with the name.
    """
    proof = proven_temporary(entry)
    if proof is None:
        return None
    if proof["host"] != host_tag() or _pid_alive(proof["pid"]):
        return None
    return proof


def _remove_if_empty_and_dead(entry: Path, match: re.Match) -> None:
    """A folder a writer of ours made and was killed in before it wrote its proof: empty, so nothing is lost."""
    if match["host"] == host_tag() and not _pid_alive(int(match["pid"])) and entry.is_dir() and not entry.is_symlink():
        with contextlib.suppress(OSError):
            entry.rmdir()  # rmdir(2) refuses a folder that holds anything


def clean_stale_temporaries(directory: str | os.PathLike, only: str | None = None) -> int:
    """Remove temporaries that killed writers of ours left in ``directory``; return how many.

    Only a folder that proves itself ours (a proof file naming this host, its
    writer's pid and its target, written into it first) counts; anything else,
    whatever its name, is never touched. A previous output moved aside by
    :func:`atomic_dir` is put back when a kill left nothing at its name. ``only``
    limits the sweep to the temporaries of one target name. A temporary written
    on another machine is left alone: its writer's pid means nothing here.
    """
    removed, directory = 0, Path(directory)
    if not directory.is_dir():
        return 0
    with contextlib.suppress(OSError):
        for entry in list(directory.iterdir()):
            match = TEMP_NAME.match(entry.name)
            if match is None or (only is not None and match["target"] != only):
                continue
            proof = _stale_proof(entry)
            if proof is None:
                _remove_if_empty_and_dead(entry, match)
                continue
            target = directory / match["target"]
            if proof["role"] == "old" and not os.path.lexists(target):
                drop_temp_proof(entry)
                os.rename(entry, target)  # the previous output, moved aside by a writer that was killed
                continue
            remove_temporary(entry)
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
    "not_a_file_reason",
    "one_line",
    "quoted",
    "respect_umask",
    "clean_stale_temporaries",
    "read_json",
    "sha256_bytes",
    "sha256_file",
    "to_json",
]
