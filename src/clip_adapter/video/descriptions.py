"""Descriptive prompts per class: STDD's text side, read from a description file.

A description file maps each class name to a list of clauses, each of which
becomes one prompt of that class (STDD asks an LLM for such clauses; the toy
world writes them from its scene metadata). JSON always works; YAML is read
when PyYAML is importable (``.yaml``/``.yml``), otherwise such a file is refused
in one line saying to install ``pyyaml`` or convert it to JSON::

    {
      "moving left":  ["a circle on the right", "a circle in the center", "a circle on the left"],
      "push up":      ["a person lying face down", "arms bend and straighten", "{} on the floor"]
    }

A class's prompts are built as the official STDD ``text_prompt``
(``utils/text2feature.py``) builds them: for every template, the template
with the class name ("a video of a person push up."), then the template with
``"<class>, <clause>"`` for each clause ("a video of a person push up, arms bend
and straighten."), so every prompt names the action and the clauses add what
it looks like. A clause holding ``{}`` is used as written instead, with the
class name in place of ``{}`` (for files that phrase whole prompts); with no
templates, every clause is used as written. Classes of the dataset missing
from the file are an error naming the first one; extra classes in the file
are ignored (one file can serve a dataset and its subsets). Without a file,
every class gets the plain templates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from ..core.errors import DataError
from ..core.files import read_json
from ..data.classnames import clean_classname
from ..data.issues import show
from ..data.templates import check_template

MAX_DESCRIPTION_BYTES = 64 * 1024 * 1024


def yaml_available() -> bool:
    """True when PyYAML can be imported (YAML description files are then read)."""
    try:
        import yaml  # noqa: F401
    except ImportError:
        return False
    return True


def read_descriptions(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{class name: [clause, …]}`` from a JSON (or, with PyYAML, YAML) description file.

    Example:
        >>> import json, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "d.json"
        >>> _ = p.write_text(json.dumps({"moving_left": ["a circle on the right", "a circle on the left"]}))
        >>> read_descriptions(p)
        {'moving left': ['a circle on the right', 'a circle on the left']}
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"description file not found: {show(path)}")
    data = (
        _load_yaml(path)
        if path.suffix.lower() in (".yaml", ".yml")
        else read_json(path, "description file", error=DataError)
    )
    where = f"description file {show(path)}"
    if not isinstance(data, dict) or not data:
        raise DataError(
            f'{where} must map class names to lists of clauses, e.g. {{"jump": ["a person leaves the ground"]}}'
        )
    out: dict[str, list[str]] = {}
    for name, clauses in data.items():
        key = clean_classname(str(name))
        if isinstance(clauses, str):
            clauses = [clauses]
        if not isinstance(clauses, list) or not clauses or not all(isinstance(c, str) and c.strip() for c in clauses):
            raise DataError(f"{where}: class {name!r} must have a non-empty list of non-empty text clauses")
        out[key] = [c.strip() for c in clauses]
    return out


def _load_yaml(path: Path) -> object:
    if not yaml_available():
        raise DataError(
            f"description file {show(path)} is YAML but PyYAML is not installed "
            "(pip install pyyaml, or convert it to JSON)"
        )
    import yaml

    if path.stat().st_size > MAX_DESCRIPTION_BYTES:
        raise DataError(f"description file {show(path)} is larger than {MAX_DESCRIPTION_BYTES} bytes")
    try:
        return yaml.safe_load(path.read_text("utf-8"))  # safe_load: plain data only, never objects
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"description file {show(path)} is not valid YAML ({show(str(exc).splitlines()[0])})") from None


def class_prompts(
    classnames: Sequence[str], templates: Sequence[str], descriptions: Mapping[str, Sequence[str]] | None = None
) -> list[list[str]]:
    """Prompts of each class, in label order: the templates, then the templates filled with each described clause.

    Example:
        >>> class_prompts(["jump"], ["a video of {}."])
        [['a video of jump.']]
        >>> class_prompts(["jump"], ["a video of {}."], {"jump": ["feet off the ground", "{} high"]})
        [['a video of jump.', 'a video of jump, feet off the ground.', 'jump high']]
        >>> class_prompts(["jump"], [], {"jump": ["{} high", "feet off the ground"]})
        [['jump high', 'feet off the ground']]
    """
    filled = [check_template(t, "--template") for t in templates]
    if descriptions is None:
        return [[t.format(name) for t in filled] for name in classnames]
    index = {clean_classname(k).casefold(): v for k, v in descriptions.items()}
    out = []
    for name in classnames:
        clauses = index.get(clean_classname(name).casefold())
        if clauses is None:
            raise DataError(f"description file has no clauses for class {name!r}")
        out.append(_described(name, filled, clauses))
    return out


def _described(name: str, templates: Sequence[str], clauses: Sequence[str]) -> list[str]:
    """One class's prompts: STDD's ``[t(c)] + [t(f"{c}, {clause}")]`` per template; ``{}`` clauses as written, once."""
    whole = [c.replace("{}", name) for c in clauses if "{}" in c]
    parts = [c for c in clauses if "{}" not in c]
    if not templates:
        return [c.replace("{}", name) for c in clauses]
    prompts = [p for t in templates for p in (t.format(name), *(t.format(f"{name}, {c}") for c in parts))]
    return prompts + whole
