"""Proof that a file or folder on disk was written by this tool.

Two rules keep a user's files safe (see ``outputs`` and ``io``):

* A **temporary** is ours only if it is a folder holding a proof file
  (:data:`TEMP_PROOF`) that we wrote into it first, naming our host, pid and
  target. A look-alike name (``photos.tmp-2023-backup``) proves nothing and is
  never swept, renamed or deleted.
* An **output folder** is ours, file by file, only as far as its ledger
  (:data:`LEDGER`) lists each file with the SHA-256 we wrote. A file the ledger
  does not list, or whose bytes changed since, belongs to the user at any depth,
  and ``--overwrite`` refuses to replace the folder that holds it.

The ledger is append-only JSON lines: concurrent writers (Ray workers filling one
bench folder) each append one short line, and a line cut by a kill is ignored.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / MARKER).write_text("{}")
    >>> _ = (d / "a.txt").write_text("ours")
    >>> record_file(d / "a.txt", sha256_of(d / "a.txt"))
    >>> _ = (d / "notes.txt").write_text("the user's")
    >>> unowned_entries(d)
    ['notes.txt']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
from pathlib import Path

TMP_MARK = ".tmp-"
# <target>.tmp-<pid>@<host>-<random>: the name of every temporary this tool makes (io.temp_prefix)
TEMP_NAME = re.compile(
    r"^(?P<target>.+)" + re.escape(TMP_MARK) + r"(?P<pid>\d+)@(?P<host>[0-9a-f]+)-(?P<rest>[A-Za-z0-9_]*)$"
)
MARKER = ".clip-adapter-output.json"
LEDGER = ".clip-adapter-files.jsonl"
TEMP_PROOF = ".clip-adapter-temp.json"
TEMP_FORMAT = "clip-adapter-temporary"
_OWN_FILES = (MARKER, LEDGER)
EMPTY_FOLDER = "folder"  # the ledger's digest for an empty folder we created


def host_tag() -> str:
    """A short, file-name-safe tag of this machine (a hash of its host name).

    Temporaries carry it so that a process on another machine sharing the folder
    (a cluster's shared cache) never judges their writer dead: it cannot see that
    writer's pid.
    """
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def sha256_of(path: str | os.PathLike, chunk: int = 2**20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --- temporaries -------------------------------------------------------------------------------


def write_temp_proof(directory: Path, target: str, role: str) -> None:
    """Write, first thing, the file that proves ``directory`` is our temporary for ``target``."""
    proof = {"format": TEMP_FORMAT, "target": target, "pid": os.getpid(), "host": host_tag(), "role": role}
    (directory / TEMP_PROOF).write_text(json.dumps(proof), encoding="utf-8")


def temp_proof(directory: Path) -> dict | None:
    """The proof inside ``directory`` if it is a well-formed one of ours, else None."""
    if directory.is_symlink() or not directory.is_dir():
        return None
    try:
        proof = json.loads((directory / TEMP_PROOF).read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    fields = {"target": str, "pid": int, "host": str, "role": str}
    if not isinstance(proof, dict) or proof.get("format") != TEMP_FORMAT:
        return None
    if any(not isinstance(proof.get(k), t) or isinstance(proof.get(k), bool) for k, t in fields.items()):
        return None
    return proof


def proven_temporary(path: Path) -> dict | None:
    """The proof of ``path`` if it is a temporary of ours: a temporary's name, and a proof inside that agrees with it.

    Both are needed: a name alone is a look-alike, and a proof file alone may be
    one a kill left inside a finished output (whose name is not a temporary's).
    """
    match = TEMP_NAME.match(path.name)
    proof = temp_proof(path) if match else None
    if proof is None or (proof["target"], str(proof["pid"]), proof["host"]) != (
        match["target"],
        match["pid"],
        match["host"],
    ):
        return None
    return proof


def drop_temp_proof(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / TEMP_PROOF).unlink()


# --- the ledger of an output folder ------------------------------------------------------------


def _real(path: str | os.PathLike) -> Path:
    """``path`` with its folder resolved on disk (symlinks, ``..``), as the file will really be found."""
    path = Path(path)
    return Path(os.path.realpath(path.parent)) / path.name


def owning_output(path: Path) -> Path | None:
    """The nearest folder above ``path`` that is one of our outputs (holds :data:`MARKER`)."""
    for folder in _real(path).parents:
        if (folder / MARKER).is_file():
            return folder
    return None


def record_file(path: Path, digest: str) -> None:
    """Note in the owning output's ledger that we wrote ``path`` with these bytes (no-op outside outputs)."""
    path = _real(path)
    if path.name in _OWN_FILES:
        return
    owner = owning_output(path)
    if owner is None:
        return
    line = json.dumps({"path": path.relative_to(owner).as_posix(), "sha256": digest}) + "\n"
    # One write(2) with O_APPEND: concurrent writers' lines never interleave.
    fd = os.open(owner / LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def write_ledger(root: Path) -> None:
    """List every file now under ``root`` (a temporary we filled) as ours: the ledger of a finished output."""
    lines = []
    for rel, full in _walk_files(root):
        if rel not in _OWN_FILES and rel != TEMP_PROOF:
            lines.append(json.dumps({"path": rel, "sha256": sha256_of(full)}) + "\n")
    for folder, dirs, files in os.walk(root):
        if not dirs and not files and Path(folder) != root:  # an empty folder we made is ours too
            lines.append(json.dumps({"path": Path(folder).relative_to(root).as_posix(), "sha256": EMPTY_FOLDER}) + "\n")
    (root / LEDGER).write_text("".join(sorted(lines)), encoding="utf-8")  # sorted: the same output, the same bytes


def read_ledger(root: Path) -> dict[str, set[str]] | None:
    """Every digest the ledger records per path; None when there is no ledger."""
    try:
        text = (root / LEDGER).read_text("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    recorded: dict[str, set[str]] = {}
    for line in text.splitlines():
        with contextlib.suppress(ValueError, RecursionError, AttributeError, TypeError):
            entry = json.loads(line)
            if isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str):
                recorded.setdefault(entry["path"], set()).add(entry["sha256"])
    return recorded


def _walk_files(root: Path):
    for folder, dirs, files in os.walk(root):
        for name in files:
            full = Path(folder) / name
            yield full.relative_to(root).as_posix(), full


def unowned_entries(root: Path) -> list[str]:
    """Paths under ``root`` (relative, at any depth) that our ledgers do not prove ours.

    A nested output (a folder with its own :data:`MARKER`) is judged by its own
    ledger; a proven temporary of ours is ours; a symlink, a special file, an empty
    folder we never wrote into, a file not listed or changed since it was written
    are not.
    """
    return _unowned(root, root)


def _unowned(root: Path, report_from: Path) -> list[str]:
    recorded = read_ledger(root)
    if recorded is None:
        recorded = {}
    parents = {p for rel in recorded for p in _ancestors(rel)}
    found: list[str] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        found += _judge(Path(entry.path), root, report_from, recorded, parents)
    return found


def _ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _judge(path: Path, root: Path, report_from: Path, recorded: dict, parents: set) -> list[str]:
    rel = path.relative_to(root).as_posix()
    shown = path.relative_to(report_from).as_posix()
    if path.parent == root and path.name in (*_OWN_FILES, TEMP_PROOF) and path.is_file() and not path.is_symlink():
        return []  # our bookkeeping, even a proof file a kill left behind
    if path.is_symlink():
        return [shown]
    if path.is_dir():
        if proven_temporary(path) is not None:
            return []
        if (path / MARKER).is_file():
            return _unowned(path, report_from)
        children = sorted(os.scandir(path), key=lambda e: e.name)
        if not children:
            return [] if rel in parents or EMPTY_FOLDER in recorded.get(rel, ()) else [shown + "/"]
        return [item for child in children for item in _judge(Path(child.path), root, report_from, recorded, parents)]
    if not path.is_file() or rel not in recorded:
        return [shown]
    return [] if sha256_of(path) in recorded[rel] else [shown + " (changed since clip-adapter wrote it)"]


__all__ = [
    "LEDGER",
    "MARKER",
    "TEMP_PROOF",
    "drop_temp_proof",
    "host_tag",
    "owning_output",
    "proven_temporary",
    "read_ledger",
    "record_file",
    "sha256_of",
    "temp_proof",
    "unowned_entries",
    "write_ledger",
    "write_temp_proof",
]
