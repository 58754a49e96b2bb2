"""Output paths: what the tool may write into, what it may replace, and what it refuses.

The rule, as in the tools users trust (git, ``cp -n``): an output path is
used only if it does not exist, is an empty folder, or holds an output this
tool wrote (recognised by its files). Our own output is replaced only when
asked (``--overwrite``), or added to when the command resumes (``bench``).
Anything else is refused with one line, before any work is done, and nothing
the tool did not create is ever moved or deleted. An output inside one of the
command's inputs (the dataset folder) is refused as well.

Folders this tool writes carry a small marker file (:data:`MARKER`) naming
what they hold, and a ledger of every file written into them with its SHA-256
(:mod:`clip_adapter.core.ownership`). A folder is replaced or added to only when
every entry in it, at every depth, is in the ledger unchanged: a photo the user
dropped into ``images/red/`` or a notebook beside ``config.json`` makes
``--overwrite`` refuse, naming it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from .._version import __version__
from .errors import OutputError, SystemRefusal
from .files import atomic_write_json, quoted
from .ownership import LEDGER, MARKER, unowned_entries

ARTIFACT_FORMAT = "clip-adapter-artifact"
_KIND_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

# Each kind of folder is registered by the code that writes it (register_kind), with the pattern every entry at
# the folder's top level matches. This module sits below all of them and must not import them, yet a folder's
# kind may be checked before its writer was imported (``report`` reads a marker, a test claims a "gap" folder):
# so it keeps the name of each kind's owner module, as clip_adapter.core.registry's providers do, and imports it on
# the kind's first lookup. Names only: an owner module is never an import edge of this one.
_OWNERS: dict[str, str] = {
    "bench": "clip_adapter.bench",
    "compose-bench": "clip_adapter.compose.kinds",
    "compose-suites": "clip_adapter.compose.kinds",
    "demo": "clip_adapter.apps.demo",
    "distill": "clip_adapter.distill",
    "finetune": "clip_adapter.finetune",
    "gap": "clip_adapter.gap.analyse",
    "index": "clip_adapter.apps.retrieval",
    "multilabel-artifact": "clip_adapter.multilabel.kinds",
    "multilabel-dataset": "clip_adapter.multilabel.kinds",
    "toy-dataset": "clip_adapter.toyworld",
    "toy-ood": "clip_adapter.toyworld.tasks",
    "toy-pretrain": "clip_adapter.toyworld",
    "toy-video-clip": "clip_adapter.video.kinds",
    "toy-video-dataset": "clip_adapter.video.kinds",
    "video-base-to-novel": "clip_adapter.video.kinds",
    "video-cross-dataset": "clip_adapter.video.kinds",
    "video-eval": "clip_adapter.video.kinds",
    "video-train": "clip_adapter.video.kinds",
}
_KINDS: dict[str, re.Pattern[str]] = {}


def register_kind(name: str, pattern: str) -> str:
    r"""Register the output kind ``name``: every top-level entry of its folders matches ``pattern``. Returns ``name``.

    Called by the module that writes the kind, once, at import (``KIND = register_kind(...)``). Registering it
    again with the same pattern does nothing (a module reloaded); another pattern is a bug, refused. A kind a
    lookup must find before its owner is imported is also listed, by owner module, in this module's ``_OWNERS``.

    Example:
        >>> KIND = register_kind("index", r"^(index\.json|features\.safetensors|faiss-(raw|adapted)\.index)$")
        >>> KIND, kind_pattern(KIND).match("index.json") is not None
        ('index', True)
        >>> register_kind("My Photos", r"^.*$")
        Traceback (most recent call last):
        ...
        ValueError: output kind 'My Photos' is not kebab-case (a-z, 0-9, '-')
    """
    if not _KIND_NAME.match(name):
        raise ValueError(f"output kind {name!r} is not kebab-case (a-z, 0-9, '-')")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"output kind {name!r}: pattern {pattern!r} is not a regular expression ({exc})") from None
    known = _KINDS.get(name)
    if known is not None and known.pattern != compiled.pattern:
        raise ValueError(
            f"output kind {name!r} is registered twice, with different files ({known.pattern!r}, {pattern!r})"
        )
    _KINDS[name] = compiled
    return name


def known_kinds() -> list[str]:
    """Every kind a lookup can find: those registered, and those whose owner registers them when imported.

    Example:
        >>> {"artifact", "bench", "gap"} <= set(known_kinds())
        True
    """
    return sorted(set(_KINDS) | set(_OWNERS))


def kind_pattern(kind: str) -> re.Pattern[str]:
    """What a ``kind`` folder may hold at its top level, importing the kind's owner if it has not registered yet.

    An unknown kind is a ValueError (a caller's bug: kinds are constants in code, never user input).

    Example:
        >>> kind_pattern("artifact").match("model.safetensors") is not None
        True
        >>> try:
        ...     kind_pattern("photos")
        ... except ValueError as exc:
        ...     print(str(exc).split(";")[0])
        unknown output kind 'photos'
    """
    owner = _OWNERS.get(kind)
    if kind not in _KINDS and owner is not None:
        importlib.import_module(owner)
        if kind not in _KINDS:
            raise RuntimeError(f"{owner} is named as the owner of output kind {kind!r} but did not register it")
    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown output kind {kind!r}; known kinds: {', '.join(known_kinds())}") from None


def _check_kind(kind: str) -> None:
    """A ValueError for a kind nobody registers; no owner is imported (claiming a folder needs no pattern)."""
    if kind not in _KINDS and kind not in _OWNERS:
        raise ValueError(f"unknown output kind {kind!r}; known kinds: {', '.join(known_kinds())}")


# Kinds with no owner module to register them: the artifact (whose format this module already recognises, for
# the older artifacts it refuses), and a benchmark's output outside the package (benchmarks/trust_toy.py, which
# no lookup could import).
register_kind("artifact", r"^(config\.json|model\.safetensors|result\.json|split\.json|log\.csv)$")
register_kind("trust-toy-bench", r"^(table\.md|results\.json|trust_toy\.png)$")


def _entries(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        raise SystemRefusal(f"cannot read the output folder {quoted(path)}: {exc.strerror or exc}") from None


def marker_kind(path: Path) -> str | None:
    """The kind recorded in ``path``'s marker file, if it has a readable one."""
    try:
        data = json.loads((path / MARKER).read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def _is_artifact_config(path: Path) -> bool:
    """An artifact written before folders carried a marker (recognised only to say why it is refused)."""
    try:
        return json.loads((path / "config.json").read_text("utf-8")).get("format") == ARTIFACT_FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def foreign_entries(path: Path, kind: str) -> list[str]:
    """Entries under ``path``, at any depth, that this tool's ledgers do not prove it wrote."""
    _check_kind(kind)
    try:
        return unowned_entries(path)
    except OSError as exc:
        raise SystemRefusal(f"cannot read the output folder {quoted(path)}: {exc.strerror or exc}") from None
    except RecursionError:
        raise OutputError(f"{quoted(path)} is nested too deep to check file by file; choose a new folder") from None


def is_own_output(path: Path, kind: str) -> bool:
    """True when ``path`` is a folder holding a ``kind`` output this tool wrote, and nothing else, at any depth.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "thesis.tex").write_text("years of work")
        >>> is_own_output(d, "artifact")
        False
    """
    if not path.is_dir() or path.is_symlink():
        return False
    return marker_kind(path) == kind and (path / LEDGER).is_file() and not foreign_entries(path, kind)


def _inside(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b)


def check_not_in_inputs(path: Path, inputs: Iterable[str | os.PathLike | None], option: str) -> None:
    """Refuse an output inside an input folder (or an input inside the output)."""
    out = path.resolve()
    for item in inputs:
        if item is None or not os.path.exists(item):
            continue  # a missing input is reported by its reader
        source = Path(item).resolve()
        if out == source:
            raise OutputError(f"{option} {quoted(path)} is the input {quoted(item)} itself; write outputs elsewhere")
        if source.is_dir() and _inside(out, source):
            raise OutputError(f"{option} {quoted(path)} is inside the input {quoted(item)}; write outputs elsewhere")
        if _inside(source, out):
            raise OutputError(
                f"{option} {quoted(path)} contains the input {quoted(item)}; choose a separate output folder"
            )


def claim_output_dir(
    path: str | os.PathLike,
    kind: str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    option: str = "--out",
) -> Path:
    """Check, before any work, that ``path`` may receive a ``kind`` output; return it as a Path.

    ``overwrite``: our own earlier output may be replaced. ``resume``: our
    own earlier output is added to (finished work is kept). Refuses an
    existing file, a folder holding anything this tool did not write, and a
    path inside (or around) one of ``inputs``.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "thesis.tex").write_text("years of work")
        >>> try:
        ...     claim_output_dir(d, "artifact")
        ... except OutputError as exc:
        ...     print(str(exc).split(" holds ")[1])
        files clip-adapter did not write (thesis.tex); choose a new or empty folder
    """
    path = Path(path)
    _check_kind(kind)
    check_not_in_inputs(path, inputs, option)
    if path.is_symlink():
        raise OutputError(
            f"{option} {quoted(path)} is a symbolic link (to {quoted(os.readlink(path))}); "
            "give the real folder's path or a new folder"
        )
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{option} {quoted(path)} exists and is not a folder; choose a new folder")
    if not path.exists() or not _entries(path):
        _check_creatable(path, option)
        return path
    if not is_own_output(path, kind):
        raise OutputError(_not_ours_message(path, kind, option))
    if not (overwrite or resume):
        raise OutputError(
            f"{option} {quoted(path)} already holds a clip-adapter {kind}; pass --overwrite to replace it"
        )
    _check_creatable(path, option)
    return path


def _not_ours_message(path: Path, kind: str, option: str) -> str:
    recognised = marker_kind(path) == kind
    legacy_artifact = kind == "artifact" and marker_kind(path) is None and _is_artifact_config(path)
    if (recognised or legacy_artifact) and not (path / LEDGER).is_file():
        return (
            f"{option} {quoted(path)} holds a clip-adapter {kind} written by an older version that kept no list of "
            "its files, so nothing in it can be proven ours; move it away or choose a new folder"
        )
    foreign = foreign_entries(path, kind) if recognised else [n for n in _entries(path) if n != MARKER]
    listing = ", ".join(quoted(n) for n in foreign[:3]) + (", …" if len(foreign) > 3 else "")
    return f"{option} {quoted(path)} holds files clip-adapter did not write ({listing}); choose a new or empty folder"


def _check_creatable(path: Path, option: str) -> None:
    """The folder (or its nearest existing parent) must be writable."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{option} {quoted(path)}: {quoted(probe)} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SystemRefusal(f"{option} {quoted(path)}: no permission to write in {quoted(probe)}")


def mark_output_dir(path: str | os.PathLike, kind: str) -> None:
    """Create ``path`` if needed and record that this tool's ``kind`` output lives there."""
    path = Path(path)
    if marker_kind(path) != kind:
        atomic_write_json(path / MARKER, {"kind": kind, "library_version": __version__})
    # An empty ledger from the start: a run stopped before its first file still leaves a folder proven ours.
    os.close(os.open(path / LEDGER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666))


def claim_output_file(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    option: str = "--out",
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """Check, before any work, that a single output file may be written at ``path``.

    An existing folder is refused; an existing file is replaced only with
    ``overwrite`` (as ``cp -n`` would refuse it). A path that is one of
    ``inputs`` or lies inside an input folder is refused, ``--overwrite`` or not.
    """
    path = Path(path)
    check_not_in_inputs(path, inputs, option)
    if path.is_dir():
        raise OutputError(f"{option} {quoted(path)} is a folder; name a file to write")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"{option} {quoted(path)} already exists; pass --overwrite to replace it")
    _check_creatable(path.parent if str(path.parent) else Path("."), option)
    return path


def check_cache_dir(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Refuse a feature-cache path that is a file, cannot be created or written, or lies inside the data."""
    path = Path(path)
    check_not_in_inputs(path, inputs, "--cache-dir")
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"--cache-dir {quoted(path)} is a file, not a folder")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        try:
            empty = not os.listdir(path)
        except OSError:
            empty = True
        if empty:
            raise SystemRefusal(
                f"--cache-dir {quoted(path)} is read-only and empty: nothing can be cached or read there"
            )
        return path  # a read-only shared cache still serves what it holds
    _check_creatable(path, "--cache-dir")
    return path


__all__ = [
    "MARKER",
    "check_cache_dir",
    "check_not_in_inputs",
    "claim_output_dir",
    "claim_output_file",
    "is_own_output",
    "kind_pattern",
    "known_kinds",
    "mark_output_dir",
    "register_kind",
]
