"""What ``clip-adapter compose-bench`` runs once its options are parsed: toy suites written, models scored, outputs
written.

Every input is checked before any work: what to do, the two output folders kept apart, the models'
checkpoints, the suites, then the output folder claimed; only then are toy suites written and models
loaded, one at a time.

Example:
    >>> parse_models([], "shipped")
    {'base': 'shipped'}
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..backbones.base import Backbone
from ..core.errors import ArtifactError, ConfigError, OutputError
from ..core.files import quoted
from ..core.outputs import check_cache_dir, claim_output_dir
from ..features import default_cache_dir
from .bench import ComposeConfig, bench_models, write_bench
from .kinds import BENCH_KIND
from .plots import figures
from .suites import Suite, find_suites, read_suite
from .toy_suites import ITEMS_PER_SUITE, SUITES, write_toy_suites

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")


def parse_models(pairs: list[str], pretrained: str | None) -> dict[str, str | None]:
    """``["base=shipped", "neg=runs/neg"]`` → ``{label: pretrained}``; without pairs, ``{"base": pretrained}``.

    Example:
        >>> parse_models(["base=shipped", "neg=runs/neg"], None)
        {'base': 'shipped', 'neg': 'runs/neg'}
    """
    if not pairs:
        return {"base": pretrained}
    if pretrained is not None:
        raise ConfigError("give the models either with --model LABEL=PRETRAINED or with --pretrained alone, not both")
    models: dict[str, str | None] = {}
    for pair in pairs:
        label, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not label or not value:
            raise ConfigError(f"--model {pair!r}: expected LABEL=PRETRAINED, e.g. negclip=runs/negclip")
        if label in models:
            raise ConfigError(f"--model: the label {label!r} is given twice")
        models[label] = value
    return models


def check_models(models: dict[str, str | None], backbone: str) -> None:
    """A checkpoint that looks like a path must exist: found now, not after the other models are scored.

    Example:
        >>> check_models({"a": "runs/gone.safetensors"}, "ViT-B-32")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ArtifactError: --model a: checkpoint not found: runs/gone.safetensors
    """
    from ..toyworld.backbone import RANDOM, TOY_NAMES, resolve_checkpoint

    for label, value in models.items():
        if value and (os.sep in value or value.endswith(CHECKPOINT_SUFFIXES)) and not os.path.exists(value):
            raise ArtifactError(f"--model {label}: checkpoint not found: {quoted(value)}")
        if backbone in TOY_NAMES and value and value.lower() != RANDOM:
            try:
                resolve_checkpoint(value)  # a toy checkpoint is a folder or .safetensors file with its .json
            except ArtifactError as exc:
                raise ArtifactError(f"--model {label}: {exc}") from None


def check_separate(out: str | os.PathLike | None, toy_dir: str | os.PathLike | None) -> None:
    """Refuse ``--out`` equal to, inside or around ``--write-toy-suites``.

    The output claim's input check skips inputs that do not exist yet, and the toy
    suites do not exist before this command writes them, so they are compared here.

    Example:
        >>> check_separate("/x/out", "/x")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.OutputError: --out /x/out is inside --write-toy-suites /x; choose separate folders
    """
    if not out or not toy_dir:
        return
    a, b = Path(out).resolve(), Path(toy_dir).resolve()
    if a == b:
        raise OutputError(f"--out and --write-toy-suites are the same folder ({quoted(out)}); choose separate folders")
    if b in a.parents:
        raise OutputError(
            f"--out {quoted(out)} is inside --write-toy-suites {quoted(toy_dir)}; choose separate folders"
        )
    if a in b.parents:
        raise OutputError(
            f"--write-toy-suites {quoted(toy_dir)} is inside --out {quoted(out)}; choose separate folders"
        )


def check_task(out: str | None, suite_dirs: Sequence[str], toy_dir: str | None) -> None:
    """Something to do, and suites for ``out`` to score.

    Example:
        >>> check_task("o", [], None)
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: --out needs suites to score: --suites DIR (or --write-toy-suites DIR)
    """
    if not toy_dir and not out:
        raise ConfigError("nothing to do: give --write-toy-suites DIR, or --suites DIR with --out DIR (or both)")
    if out and not (suite_dirs or toy_dir):
        raise ConfigError("--out needs suites to score: --suites DIR (or --write-toy-suites DIR)")
    check_separate(out, toy_dir)


def compose_bench(
    models: dict[str, str | None],
    make_backbone: Callable[[str | None], Backbone],
    backbone: str,
    config: ComposeConfig,
    *,
    suite_dirs: Sequence[str] = (),
    toy_dir: str | None = None,
    items_per_suite: int = ITEMS_PER_SUITE,
    out: str | None = None,
    cache_dir: str | os.PathLike = "",
    overwrite: bool = False,
    log: Callable[[str], None] = lambda m: None,
) -> dict[str, Any] | None:
    """Write the toy suites to ``toy_dir`` and/or score ``models`` on every suite into ``out``; the result, or None.

    ``models``: label → pretrained (:func:`parse_models`), each loaded by ``make_backbone(pretrained)`` on
    ``backbone``.

    Example:
        >>> # result = compose_bench({"base": None}, lambda p: create_backbone("toy", p), "toy", ComposeConfig(),
        >>> #                        toy_dir="suites", out="compose-base")
    """
    check_task(out, suite_dirs, toy_dir)
    check_models(models, backbone)
    suites = [read_suite(d) for d in (find_suites(suite_dirs) if suite_dirs else [])]  # a missing suite before any work
    if out:
        claim_output_dir(out, BENCH_KIND, overwrite=overwrite, inputs=[*suite_dirs, toy_dir])
    if toy_dir:
        written = write_toy_suites(toy_dir, items_per_suite, SUITES, overwrite)
        log(f"wrote {len(SUITES)} toy suites ({items_per_suite} items each) to {quoted(written)}")
        suites += [read_suite(written / name, decode=False) for name in SUITES]
    if not out:
        return None
    return _bench(models, make_backbone, suites, config, Path(out), _cache(cache_dir, suite_dirs), overwrite)


def _cache(cache_dir: str | os.PathLike, inputs: Sequence[str]) -> str | os.PathLike:
    check_cache_dir(cache_dir or default_cache_dir(), inputs)
    return cache_dir or default_cache_dir()


def _bench(
    models: dict[str, str | None],
    make_backbone: Callable[[str | None], Backbone],
    suites: list[Suite],
    config: ComposeConfig,
    out: Path,
    cache_dir: str | os.PathLike,
    overwrite: bool,
) -> dict[str, Any]:
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"two suites are named {twice!r}; suite names (folder names) must differ")
    start = time.perf_counter()
    factories = {label: (lambda p=pretrained: make_backbone(p)) for label, pretrained in models.items()}
    result = bench_models(factories, suites, cache_dir, config)
    result["models_pretrained"] = dict(models)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_bench(out, result, figures(result), overwrite=overwrite)
    return result


def summary_line(result: dict[str, Any], out: str | os.PathLike) -> str:
    """The line printed after the tables: models, suites, time and the files written.

    Example:
        >>> import tempfile
        >>> summary_line({"models": {"a": {}}, "suites": ["negation"], "wall_seconds": 3.2}, tempfile.mkdtemp())[:36]
        '1 model(s), 1 suite(s) in 3 s; wrote'
    """
    pngs = ", ".join(sorted(n for n in os.listdir(out) if n.endswith(".png")))
    return (
        f"{len(result['models'])} model(s), {len(result['suites'])} suite(s) in {result['wall_seconds']:.0f} s; "
        f"wrote {quoted(Path(out) / 'compose.json')}, compose.md and {pngs}"
    )
