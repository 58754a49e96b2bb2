"""Benchmark several backbones (a base CLIP and its remedies) on every compositionality measure at once.

:func:`bench_models` scores each model on the given suites, the
multi-object biases, the binding probes and (toy backbones) zero-shot
accuracy on the toy tasks; the scenes of the last three are rendered once
and shared by every model. :func:`markdown_tables` turns the result into
the tables the command prints; :func:`write_bench` writes ``compose.json``,
``compose.md`` and the plots into an output folder.

Example (two toy models, a few items; seconds):
    >>> import tempfile, pathlib
    >>> from clip_adapter.backbones import create_backbone
    >>> from clip_adapter.compose.suites import read_suite
    >>> from clip_adapter.compose.toy_suites import write_toy_suites
    >>> work = pathlib.Path(tempfile.mkdtemp())
    >>> suites = [read_suite(write_toy_suites(work / "s", 6, ("negation",)) / "negation")]
    >>> models = {"base": lambda: create_backbone("toy", precision="fp32"),
    ...           "random": lambda: create_backbone("toy", "none", precision="fp32")}
    >>> small = ComposeConfig(bias=BiasConfig(pairs=4), probes=ProbeConfig(shapes=("circle",), train=20, test=5),
    ...                       zero_shot_per_class=2)
    >>> result = bench_models(models, suites, work / "cache", small)
    >>> list(result["models"]), "negation" in result["models"]["base"]["suites"]
    (['base', 'random'], True)
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .._version import __version__
from ..backbones.base import Backbone
from ..core.config import Config, check_range, option
from ..core.errors import ConfigError
from ..core.files import atomic_dir, to_json
from ..core.outputs import is_own_output, mark_output_dir
from .bias import BiasConfig, bias_material, measure_bias
from .kinds import BENCH_KIND
from .probes import ProbeConfig, measure_probes, probe_material
from .score import score_suite
from .suites import Suite
from .zero_shot import TASKS, zero_shot_accuracy, zero_shot_material

MACRO = " macro"  # suffix of the summary column holding a suite's mean over subtypes
ModelSource = Backbone | Callable[[], Backbone]  # a factory loads one model at a time: memory stays one model's


ZERO_SHOT = ("auto", "always", "never")


@dataclass
class ComposeConfig(Config):
    """What to measure besides the suites, and how much of it (``None`` switches a study off).

    ``zero_shot``: ``"auto"`` runs the toy tasks for toy backbones only.

    Example:
        >>> ComposeConfig(probes=None, zero_shot="never").bias.pairs
        200
    """

    bias: BiasConfig | None = field(
        default_factory=BiasConfig, metadata={"help": "the multi-object bias study (None: off)"}
    )
    probes: ProbeConfig | None = field(default_factory=ProbeConfig, metadata={"help": "the binding probes (None: off)"})
    zero_shot: str = option(
        "auto", "zero-shot accuracy on the toy tasks shape and colour: auto (toy backbones only), always or never"
    )
    zero_shot_per_class: int = option(100, "zero-shot test images per class")
    batch_size: int = option(64, "encoder batch size")

    def validate(self) -> None:
        if self.zero_shot not in ZERO_SHOT:
            raise ConfigError(f"zero_shot must be auto, always or never, got {self.zero_shot!r}")
        check_range("batch_size", self.batch_size, 1, 65_536)
        check_range("zero-shot images per class", self.zero_shot_per_class, 1, 100_000)
        for study in (self.bias, self.probes):
            if study is not None:
                study.validate()


@dataclass
class StudiesConfig(Config):
    """Which studies run beside the suites, and their sizes: the knobs of :class:`BiasConfig` and :class:`ProbeConfig`
    that ``compose-bench`` offers (their other fields keep their defaults).

    Example:
        >>> c = StudiesConfig(probes=False, bias_pairs=8).apply(ComposeConfig(zero_shot="never"))
        >>> c.bias, c.probes
        (BiasConfig(pairs=8, seed=1004, batch_size=64), None)
        >>> c.zero_shot, c.zero_shot_per_class, c.batch_size
        ('never', 100, 64)
    """

    bias: bool = option(True, "the multi-object bias study")
    probes: bool = option(True, "the binding probes")
    bias_pairs: int = option(BiasConfig().pairs, BiasConfig.help_texts()["pairs"])
    probe_train: int = option(ProbeConfig().train, ProbeConfig.help_texts()["train"])
    probe_test: int = option(ProbeConfig().test, ProbeConfig.help_texts()["test"])

    def validate(self) -> None:
        for name in ("bias_pairs", "probe_train", "probe_test"):  # counts, whether their study runs or not
            check_range(name, getattr(self, name), 1)

    def apply(self, config: ComposeConfig) -> ComposeConfig:
        """``config`` with these studies (None where switched off); a study that runs checks its sizes here."""
        bias = BiasConfig(pairs=self.bias_pairs) if self.bias else None
        probes = ProbeConfig(train=self.probe_train, test=self.probe_test) if self.probes else None
        return config.replace(bias=bias, probes=probes)


@dataclass
class _Material:
    """Rendered once, shared by every model."""

    config: ComposeConfig
    cache: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self.cache:
            self.cache[name] = make()
        return self.cache[name]


def bench_model(
    backbone: Backbone, suites: Sequence[Suite], cache_dir: str | os.PathLike, material: _Material
) -> dict[str, Any]:
    """Every measure for one backbone."""
    config, start = material.config, time.perf_counter()
    row: dict[str, Any] = {
        "backbone": backbone.describe(),
        "suites": {s.name: score_suite(backbone, s, cache_dir, config.batch_size) for s in suites},
    }
    if config.bias is not None:
        row["bias"] = measure_bias(
            backbone, material.get("bias", lambda: bias_material(config.bias)), config.batch_size
        )
    if config.probes is not None:
        row["probes"] = measure_probes(
            backbone, material.get("probes", lambda: probe_material(config.probes)), config.batch_size
        )
    if config.zero_shot == "always" or (config.zero_shot == "auto" and backbone.provider == "toy"):
        tasks = material.get("zero_shot", lambda: zero_shot_material(TASKS, config.zero_shot_per_class))
        row["zero_shot"] = zero_shot_accuracy(backbone, tasks, config.batch_size)
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def bench_models(
    models: Mapping[str, ModelSource],
    suites: Sequence[Suite],
    cache_dir: str | os.PathLike,
    config: ComposeConfig = ComposeConfig(),
) -> dict[str, Any]:
    """Score each model (label → backbone, or a function returning one) on everything; see the module example.

    Returns ``{"models": {label: {"backbone", "suites", "bias", "probes", "zero_shot", "seconds"}}, "suites": [names],
    "config": {...}, "library_version"}``; accuracies are fractions in [0, 1].
    """
    config.validate()
    material, rows = _Material(config), {}
    for label, source in models.items():
        backbone = source if isinstance(source, Backbone) else source()
        rows[label] = bench_model(backbone, suites, cache_dir, material)
        del backbone  # the next model loads into the memory this one held
    return {
        "models": rows,
        "suites": [s.name for s in suites],
        "suite_roots": [str(s.root) for s in suites],
        "config": _config_dict(config),
        "library_version": __version__,
    }


def _config_dict(config: ComposeConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _columns(result: dict[str, Any]) -> list[tuple[str, Callable[[dict], float | None]]]:
    """(header, getter) of the summary table; studies that did not run are left out."""
    rows = list(result["models"].values())
    cols: list[tuple[str, Callable[[dict], float | None]]] = []
    for name in result["suites"]:
        cols.append((name, lambda r, n=name: r["suites"][n]["accuracy"]))
        if any(
            r["suites"][name].get("macro_accuracy") is not None for r in rows
        ):  # beside the micro: ARO's VG headline
            cols.append((f"{name}{MACRO}", lambda r, n=name: r["suites"][n].get("macro_accuracy")))
    if any("bias" in r for r in rows):
        cols += [
            ("img→larger", lambda r: r.get("bias", {}).get("image_follows_larger")),
            ("txt→first", lambda r: r.get("bias", {}).get("text_follows_first")),
            ("large-first wins", lambda r: r.get("bias", {}).get("interaction", {}).get("large_first_caption_wins")),
        ]
    if any("probes" in r for r in rows):
        cols += [
            ("probe img", lambda r: r.get("probes", {}).get("image_probe")),
            ("probe txt", lambda r: r.get("probes", {}).get("text_probe")),
            ("cross-modal", lambda r: r.get("probes", {}).get("cross_modal")),
        ]
    for task in sorted({t for r in rows for t in r.get("zero_shot", {})}):
        cols.append((f"zs {task}", lambda r, t=task: r.get("zero_shot", {}).get(t, {}).get("accuracy")))
    return cols


def _chance_row(result: dict[str, Any], cols: list[tuple[str, Callable]]) -> list[str]:
    first = next(iter(result["models"].values()))
    chance: dict[str, float | None] = {name: first["suites"][name]["chance"] for name in result["suites"]}
    chance.update({f"{name}{MACRO}": first["suites"][name].get("macro_chance") for name in result["suites"]})
    chance.update({"img→larger": 0.5, "txt→first": 0.5, "large-first wins": 0.5})
    if "probes" in first:
        chance.update(
            {
                "probe img": first["probes"]["chance"],
                "probe txt": first["probes"]["chance"],
                "cross-modal": first["probes"]["chance"],
            }
        )
    for task, r in first.get("zero_shot", {}).items():
        chance[f"zs {task}"] = r["chance"]
    return ["chance / no bias", *(_pct(chance.get(name)) for name, _ in cols)]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def summary_table(result: dict[str, Any]) -> str:
    """One row per model: suite accuracies, bias figures, probe figures, zero-shot accuracies (%), and a chance row.

    A suite with subtypes has two columns: ``name`` (over items, micro) and ``name macro`` (mean over subtypes).
    """
    cols = _columns(result)
    rows = [_chance_row(result, cols)] + [
        [label, *(_pct(get(r)) for _, get in cols)] for label, r in result["models"].items()
    ]
    return _table(["model", *(name for name, _ in cols)], rows)


def detail_tables(result: dict[str, Any]) -> str:
    """Per suite: accuracy per subtype and per false-caption kind (%), one row per model."""
    out = []
    for name in result["suites"]:
        first = next(iter(result["models"].values()))["suites"][name]
        keys = [("subtypes", k) for k in first["subtypes"]] + [("kinds", k) for k in first["kinds"]]
        if len(keys) < 2:
            continue
        rows = [
            [label, *(_pct(r["suites"][name][group].get(k, {}).get("accuracy")) for group, k in keys)]
            for label, r in result["models"].items()
        ]
        chance = ["chance", *(_pct(first[group][k]["chance"]) for group, k in keys)]
        out.append(
            f"**{name}** (per subtype; per kind = pairwise against that kind's false captions)\n\n"
            + _table(["model", *(k for _, k in keys)], [chance, *rows])
        )
    return "\n".join(out)


def interaction_tables(result: dict[str, Any]) -> str:
    """The bias study's 2×2 mean cosines (A large/small × A mentioned first/second) and top-1 shares, per model."""
    rows = []
    for label, r in result["models"].items():
        if "bias" not in r:
            continue
        cos, top = r["bias"]["interaction"]["mean_cosine"], r["bias"]["image_top1"]
        rows.append(
            [label, *(f"{cos[k]:.4f}" for k in cos), _pct(top["larger"]), _pct(top["smaller"]), _pct(top["neither"])]
        )
    if not rows:
        return ""
    first = next(r for r in result["models"].values() if "bias" in r)["bias"]
    header = ["model", *first["interaction"]["mean_cosine"], "top-1 larger", "top-1 smaller", "top-1 neither"]
    return "**multi-object bias** (mean image–caption cosine; top-1 over every colour-shape caption, %)\n\n" + _table(
        header, rows
    )


def markdown_tables(result: dict[str, Any]) -> str:
    """Everything the command prints: the summary, per-subtype and interaction tables."""
    parts = [summary_table(result), detail_tables(result), interaction_tables(result)]
    return "\n".join(p for p in parts if p)


def write_bench(out: Path, result: dict[str, Any], pngs: dict[str, bytes], overwrite: bool = False) -> Path:
    """Write ``compose.json``, ``compose.md`` and the PNGs into ``out`` in one atomic step
    (a ``compose-bench`` output)."""
    with atomic_dir(out, may_replace=lambda p: overwrite and is_own_output(p, BENCH_KIND)) as tmp:
        (tmp / "compose.json").write_text(to_json(result))
        (tmp / "compose.md").write_text(markdown_tables(result))
        for name, data in pngs.items():
            (tmp / name).write_bytes(data)
        mark_output_dir(tmp, BENCH_KIND)
    return out
