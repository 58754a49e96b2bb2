"""Class names: the user's renaming map, and the checks that keep names distinct and readable.

Class names become the text prompts, so two folders that clean to the same
name (``red_fox`` and ``red fox``; ``Red_Fox`` and ``red_fox``) would be two
classes with identical text embeddings, and a folder named ``___`` an empty
prompt. Both are refused (reported by ``validate``); a class-name map —
``{"<folder or original class name>": "<new name>"}`` — renames classes
without renaming folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from ..core.errors import DataError
from ..core.files import read_json
from .issues import Issues, show

ClassnameMap = Union[str, os.PathLike, Mapping[str, Any], None]
MAX_CLASSNAME_CHARS = 1000  # far beyond any real name; longer ones are data errors, not names


def clean_classname(name: str) -> str:
    """``"golden_retriever"`` → ``"golden retriever"`` (CoOp's cleaning).

    Example:
        >>> clean_classname("  Golden_Retriever ")
        'Golden Retriever'
    """
    return " ".join(name.replace("_", " ").split())


def load_classname_map(spec: ClassnameMap) -> dict[str, str]:
    """The renaming map from a JSON object file (path) or a dict; ``None`` gives ``{}``.

    Example:
        >>> load_classname_map({"red_fox": "red fox (Vulpes vulpes)"})
        {'red_fox': 'red fox (Vulpes vulpes)'}
        >>> load_classname_map({"red_fox": 3})
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: class-name map: the new name for 'red_fox' must be a string, got 3
    """
    if spec is None:
        return {}
    where = "class-name map"
    if not isinstance(spec, Mapping):
        where = f"class-name map {show(spec)}"
        try:
            spec = read_json(Path(spec), "class-name map")
        except (OSError, ValueError, RecursionError) as exc:  # unreadable file, or JSON that json rejects late
            raise DataError(f"{where} cannot be read ({show(exc)})") from None
        if not isinstance(spec, dict):
            raise DataError(
                f'{where} must be a JSON object {{"<folder or class name>": "<new name>"}}, got {type(spec).__name__}'
            )
    out: dict[str, str] = {}
    for key, value in spec.items():
        if not isinstance(key, str):
            raise DataError(f"{where}: key {key!r} must be a string (a folder or class name)")
        if not isinstance(value, str):
            raise DataError(f"{where}: the new name for {key!r} must be a string, got {value!r:.80}")
        out[key] = value
    return out


def renamed(original: str, mapping: Mapping[str, str]) -> str:
    """The class name of a folder (or split-file class) ``original``: mapped by its own or its cleaned name, cleaned.

    Example:
        >>> renamed("red_fox", {"red fox": "fox"}), renamed("Red_Fox", {})
        ('fox', 'Red Fox')
    """
    cleaned = clean_classname(original)
    return clean_classname(mapping.get(original, mapping.get(cleaned, cleaned)))


def final_classnames(
    originals: Sequence[str], described: Sequence[str], mapping: Mapping[str, str], where: str, issues: Issues
) -> list[str]:
    """Cleaned (and renamed) class names, checked for empty, unreadable and colliding names.

    ``originals`` are the folder names (or a split file's class names) in label
    order, ``described`` how each is named in messages (e.g. ``folder 'red_fox'``).
    A map key may be the original or the cleaned name; a key that matches no
    class is an error even when validating, since the map is an option, not data.
    """
    cleaned = [clean_classname(name) for name in originals]
    known = set(originals) | set(cleaned)
    unused = [key for key in mapping if key not in known]
    if unused:
        raise DataError(f"class-name map: {unused[0]!r} matches no class folder or class name of {where}")
    names = [renamed(orig, mapping) for orig in originals]
    _check_readable(names, described, where, issues)
    _check_distinct(names, described, where, issues)
    return names


def _check_readable(names: Sequence[str], described: Sequence[str], where: str, issues: Issues) -> None:
    hint = "rename it, or give it a name with a class-name map"
    for name, desc in zip(names, described):
        if not name:
            issues.add("empty-classname", f"{where}: {desc} gives an empty class name; {hint}")
        elif not name.isprintable() or len(name) > MAX_CLASSNAME_CHARS:
            why = "is too long" if name.isprintable() else "holds control characters or bytes that are not UTF-8"
            issues.add("invalid-classname", f"{where}: the class name of {desc} {why}; {hint}")


def _check_distinct(names: Sequence[str], described: Sequence[str], where: str, issues: Issues) -> None:
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        key = name.casefold()
        if not key:
            continue  # reported as empty
        if key in first:
            j = first[key]
            issues.add(
                "duplicate-classname",
                f"{where}: {described[j]} and {described[i]} give the same class name {names[j]!r} "
                "(names are compared after cleaning '_' and case); rename one, or pass a class-name map",
            )
        first.setdefault(key, i)


def match_classes(names: Sequence[str], known: Sequence[str], where: str) -> list[int]:
    """For each of a dataset's class names (label order), the index of the same class in ``known`` (an artifact's).

    Matched by name, not by label index: a held-out folder may hold a subset of
    the trained classes, and a folder's labels follow its own sorted folder
    names, so label 0 of ``held/{red,yellow}`` is not label 0 of a
    ``{blue,red,yellow}`` artifact. Names match exactly, else ignoring case (as
    collisions are judged). A class ``known`` lacks is refused, naming each: its
    images have no right answer among the artifact's classes.

    Example:
        >>> match_classes(["red", "Yellow"], ["blue", "red", "yellow"], "dataset held3")
        [1, 2]
        >>> match_classes(["red", "purple"], ["blue", "red"], "dataset held4")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: dataset held4 has 1 class the artifact was not trained on: 'purple'
        (the artifact's 2 classes: 'blue', 'red'); leave it out, or rename it with --classnames FILE
    """
    exact = {name: i for i, name in enumerate(known)}
    folded: dict[str, int | None] = {}
    for i, name in enumerate(known):
        folded[name.casefold()] = None if name.casefold() in folded else i  # ambiguous when two differ only by case
    found = [exact.get(name, folded.get(name.casefold())) for name in names]
    unknown = [name for name, index in zip(names, found) if index is None]
    if unknown:
        raise DataError(
            f"{where} has {len(unknown)} class{'es' if len(unknown) > 1 else ''} the artifact was not trained on: "
            f"{_listed(unknown)} (the artifact's {len(known)} classes: {_listed(known)}); "
            f"leave {'them' if len(unknown) > 1 else 'it'} out, "
            f"or rename {'them' if len(unknown) > 1 else 'it'} with --classnames FILE"
        )
    return [int(i) for i in found if i is not None]


def _listed(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])  # repr escapes line breaks: the message stays one line
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")
