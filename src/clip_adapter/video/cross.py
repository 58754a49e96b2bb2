"""Zero-shot cross-dataset evaluation: a model trained on one set of actions, tested on disjoint ones.

The protocol of Open-VCLIP, FROSTER and STDD (train on Kinetics-400, test on
UCF101 / HMDB51 / Kinetics-600's new classes): each evaluation split's test
clips are scored over that split's own classes, and each dataset's splits'
top-1/top-5 are reported with their mean ± std (population std, ddof 0, as
those papers compute it). Each split goes through
:func:`.zeroshot.evaluate_zero_shot` (one evaluator for every video command).

A split's dataset is ``NAME`` when the split is given as ``NAME=DIR``, else
the folder holding ``DIR`` (``ucf101/split1 ucf101/split2 hmdb51/split1`` →
``ucf101`` and ``hmdb51``): splits of different datasets are summarised apart,
never averaged together.

An evaluation class whose name is a training action's is refused, unless the
caller allows overlap: K400 → UCF101 as published keeps the shared classes,
and that is a choice to make knowingly. Names are compared, not meanings:
case, spaces, underscores, hyphens, punctuation and CamelCase are ignored
(``ApplyEyeMakeup`` = ``apply eye makeup``), but ``applying eye makeup`` is
another name.

Example:
    >>> class_overlap(["moving_left", "Growing"], ["growing", "MovingUp", "moving-left."])
    ['growing', 'moving-left.']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..backbones.base import Backbone
from ..core.errors import ConfigError, DataError
from .dataset import VideoDataset, load_video_dataset, read_classmap, read_video_folder
from .descriptions import class_prompts, read_descriptions
from .metrics import mean_std
from .zeroshot import DEFAULT_TEMPLATES, VideoZeroShotConfig, evaluate_zero_shot

SUMMARY_KEYS = ("top1", "top5", "mean_per_class_accuracy", "time_reversed_pairs")
STD_NOTE = "population (ddof 0), as Open-VCLIP/FROSTER"


@dataclass(frozen=True)
class EvalSplit:
    """One evaluation split: its name (the folder as given), the dataset it belongs to, and its clips."""

    name: str
    dataset_name: str
    data: VideoDataset


def _key(name: str) -> str:
    # Only letters and digits, case-folded: "moving_up", "Moving-Up.", "MovingUp" and "moving up" are one name.
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def class_overlap(train_classes: Sequence[str], eval_classes: Sequence[str]) -> list[str]:
    """The evaluation classes whose name, ignoring case, spacing and punctuation, is a training class's,
    in evaluation order.

    Example:
        >>> class_overlap(["ApplyEyeMakeup", "a b"], ["apply eye makeup", "A_B", "applying eye makeup"])
        ['apply eye makeup', 'A_B']
    """
    seen = {_key(n) for n in train_classes}
    return [n for n in eval_classes if _key(n) in seen]


def training_classes(
    split_dir: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    classmap: str | os.PathLike | None = None,
) -> list[str]:
    """The training set's class names, from exactly one of ``classmap``, ``split_dir/classmap.json``
    or ``data``'s class folders.

    Only the names are read (a Kinetics split file is not walked); two sources are refused, since one would be ignored.

    Example:
        >>> training_classes()
        []
    """
    given = [
        opt
        for opt, value in (("--train-split-dir", split_dir), ("--train-data", data), ("--train-classmap", classmap))
        if value is not None
    ]
    if len(given) > 1:
        raise ConfigError(
            f"give only one of {', '.join(given)}: only the training class names are read, so the others "
            f"would be ignored"
        )
    if classmap is not None:
        return read_classmap(classmap)
    if split_dir is not None:
        if not Path(split_dir).is_dir():
            raise DataError(f"training split folder not found: {split_dir}")
        return read_classmap(Path(split_dir) / "classmap.json")
    if data is not None:
        return read_video_folder(data).classnames
    return []


def parse_eval_arg(text: str | os.PathLike) -> tuple[str | None, str]:
    """``NAME=DIR`` → ``(NAME, DIR)``; a plain ``DIR`` (or an existing folder whose name holds ``=``) → ``(None, DIR)``.

    Example:
        >>> parse_eval_arg("ucf101=splits/1"), parse_eval_arg("ucf101/split1")
        (('ucf101', 'splits/1'), (None, 'ucf101/split1'))
    """
    text = str(text)
    name, sep, folder = text.partition("=")
    if not sep or os.path.exists(text) or not name.strip() or not folder:
        return None, text
    return name.strip(), folder


def _dataset_names(folders: Sequence[str], named: Sequence[str | None]) -> list[str]:
    """Each split's dataset: its ``NAME=``, else the name of the folder holding it
    (its path when two such names clash)."""
    parents = [Path(f).resolve().parent for f in folders]
    by_name: dict[str, set[Path]] = {}
    for parent, name in zip(parents, named):
        if name is None:
            by_name.setdefault(parent.name or str(parent), set()).add(parent)
    clash = {n for n, paths in by_name.items() if len(paths) > 1}
    return [
        name if name is not None else (str(p) if (p.name or str(p)) in clash else (p.name or str(p)))
        for p, name in zip(parents, named)
    ]


def load_eval_sets(
    split_dirs: Sequence[str | os.PathLike] = (),
    data: Sequence[str | os.PathLike] = (),
    root: str | os.PathLike | None = None,
    classmap: str | os.PathLike | None = None,
) -> list[EvalSplit]:
    """Every evaluation split (``DIR`` or ``NAME=DIR``), named as given; each read and checked now, before any work.

    ``root`` and ``classmap`` apply to the ``split_dirs`` (``data`` folders read their own classes).

    Example:
        >>> try:
        ...     load_eval_sets()
        ... except DataError as e:
        ...     print(type(e).__name__, e)
        DataError give the evaluation splits: --eval-split-dir DIR [DIR ...] or --eval-data DIR [DIR ...]
    """
    parsed = [(*parse_eval_arg(p), kind) for kind, paths in (("split", split_dirs), ("data", data)) for p in paths]
    if not parsed:
        raise DataError("give the evaluation splits: --eval-split-dir DIR [DIR ...] or --eval-data DIR [DIR ...]")
    if (root is not None or classmap is not None) and not split_dirs:
        raise ConfigError(
            "--eval-classmap and --video-root apply to --eval-split-dir folders; "
            "--eval-data folders read their own class folders"
        )
    _refuse_twice([folder for _, folder, _ in parsed])
    out = []
    datasets = _dataset_names([folder for _, folder, _ in parsed], [name for name, _, _ in parsed])
    for (_, folder, kind), dataset_name in zip(parsed, datasets):
        if not Path(folder).is_dir():
            what = "split" if kind == "split" else "video"
            raise DataError(f"evaluation {what} folder not found: {folder}")
        loaded = load_video_dataset(None, folder, root, classmap) if kind == "split" else load_video_dataset(folder)
        out.append(EvalSplit(folder, dataset_name, loaded))
    return out


def _refuse_twice(folders: Sequence[str]) -> None:
    # The same folder under two spellings (t1, ./t1, a link to it) would count one split twice in the mean.
    first: dict[Path, str] = {}
    for folder in folders:
        resolved = Path(folder).resolve()
        if resolved in first:
            same = folder if first[resolved] == folder else f"{first[resolved]} and {folder}"
            raise DataError(f"evaluation split given twice: {same}")
        first[resolved] = folder


def check_eval_sets(
    eval_sets: Sequence[EvalSplit],
    train_classes: Sequence[str],
    split: str | None,
    allow_overlap: bool,
    templates: Sequence[str] | None,
    descriptions: dict | None,
) -> dict[str, list[str]]:
    """Refuse, in one line each, a split without ``split`` clips, overlapping classes, or classes the descriptions lack.

    ``split`` None: each split's own default (test, else all), as ``video zero-shot``.
    Returns each split's overlapping classes (empty unless ``allow_overlap``).
    """
    overlaps = {}
    for one in eval_sets:
        name, dataset = one.name, one.data
        chosen = split or dataset.default_split
        if chosen != "all" and not dataset.splits.get(chosen):
            have = ", ".join(k for k, v in dataset.splits.items() if v) or "none"
            raise DataError(
                f"evaluation split {name} has no {chosen} clips (it has: {have}); --split all evaluates every clip"
            )
        if not dataset.split(chosen):
            raise DataError(f"evaluation split {name} holds no clips")
        shared = class_overlap(train_classes, dataset.classnames)
        if shared and not allow_overlap:
            raise DataError(
                f"evaluation split {name} shares {len(shared)} class name(s) with the training actions: "
                f"{', '.join(shared[:12])}{', …' if len(shared) > 12 else ''} (zero-shot needs disjoint classes; "
                f"--allow-overlap evaluates anyway)"
            )
        overlaps[name] = shared
        try:
            class_prompts(dataset.classnames, tuple(templates or dataset.templates or DEFAULT_TEMPLATES), descriptions)
        except DataError as exc:  # say which split needs the class: one description file serves them all
            raise DataError(f"evaluation split {name}: {exc}") from None
    return overlaps


def summarise(rows: Sequence[dict]) -> dict[str, dict]:
    """Mean and population std (ddof 0) of each metric over the splits that have it.

    Example:
        >>> summarise([{"top1": 0.5}, {"top1": 0.7}])["top1"]
        {'mean': 0.6, 'std': 0.1, 'splits': 2}
    """
    out = {}
    for key in SUMMARY_KEYS:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out[key] = {**{k: round(v, 10) for k, v in mean_std(values).items()}, "splits": len(values)}
    return out


def summarise_by_dataset(rows: Sequence[dict]) -> dict[str, dict]:
    """:func:`summarise` of each dataset's splits (rows carry ``dataset``), in the order datasets first appear.

    Example:
        >>> rows = [{"dataset": "a", "top1": 0.5}, {"dataset": "b", "top1": 0.9}, {"dataset": "a", "top1": 0.7}]
        >>> {k: v["top1"]["mean"] for k, v in summarise_by_dataset(rows).items()}
        {'a': 0.6, 'b': 0.9}
    """
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    return {name: summarise([r for r in rows if r["dataset"] == name]) for name in names}


def evaluate_cross_dataset(
    backbone: Backbone,
    eval_sets: Sequence[EvalSplit],
    config: VideoZeroShotConfig | None = None,
    train_classes: Sequence[str] = (),
    templates: Sequence[str] | None = None,
    descriptions: str | os.PathLike | dict | None = None,
    cache_dir: Any = "",
    skip_bad: bool = False,
    allow_overlap: bool = False,
    split: str | None = None,
) -> dict[str, Any]:
    """Zero-shot metrics of every evaluation split over its own classes, and each dataset's mean ± std.

    ``summary`` is the mean ± std over every split when they are of one dataset, else None (never a mean
    across datasets); ``summary_by_dataset`` always holds each dataset's. ``overlap_checked`` is False when
    no ``train_classes`` were known, so no class could be refused.

    Example:
        >>> # sets = load_eval_sets(["ucf101/split1", "ucf101/split2", "ucf101/split3"])
        >>> # r = evaluate_cross_dataset(backbone, sets, train_classes=training_classes(classmap="k400.json"))
        >>> # r["summary"]["top1"]  # {'mean': …, 'std': …, 'splits': 3}
    """
    config = config or VideoZeroShotConfig()
    described = read_descriptions(descriptions) if isinstance(descriptions, (str, os.PathLike)) else descriptions
    overlaps = check_eval_sets(eval_sets, train_classes, split, allow_overlap, templates, described)
    splits, predictions = [], []
    for one in eval_sets:
        result = evaluate_zero_shot(backbone, one.data, split, config, templates, described, cache_dir, skip_bad)
        splits.append(_split_row(one, result, overlaps[one.name]))  # refuses a split left with no clips
        predictions += [
            {
                "split": one.name,
                **p,
                "label": one.data.classnames[p["label"]],
                "predicted": one.data.classnames[p["predicted"]],
            }
            for p in result.pop("predictions")
        ]
    by_dataset = summarise_by_dataset(splits)
    return {
        "protocol": "zero-shot cross-dataset",
        "split": split or "each dataset's default (test, else all)",
        "backbone": backbone.describe(),
        "config": config.to_dict(),
        "text": {"source": "descriptions" if described else "templates", "templates": list(templates or [])},
        "train_classes": list(train_classes),
        "overlap_checked": bool(train_classes),
        "allow_overlap": allow_overlap,
        "std": STD_NOTE,
        "splits": splits,
        "summary": next(iter(by_dataset.values())) if len(by_dataset) == 1 else None,
        "summary_by_dataset": by_dataset,
        "predictions": predictions,
    }


def _split_row(one: EvalSplit, result: dict, overlap: list[str]) -> dict:
    m = result["metrics"]
    if not m["num_clips"]:  # --skip-bad left nothing to score: no metric exists to report
        skipped = len(result["extraction"].get("skipped", []))
        raise DataError(f"evaluation split {one.name}: every clip was unreadable ({skipped} skipped)")
    pairs = m.get("time_reversed_pairs") or {}
    return {
        "name": one.name,
        "dataset": one.dataset_name,
        "folder": one.data.name,
        "split": result["split"],
        "num_classes": len(one.data.classnames),
        "num_clips": m["num_clips"],
        "top1": m["top1"],
        "top5": m["top5"],
        "mean_per_class_accuracy": m["mean_per_class_accuracy"],
        "chance_top1": m["chance_top1"],
        "time_reversed_pairs": pairs.get("accuracy"),
        "templates": result["text"]["templates"],
        "overlap_with_training": overlap,
        "metrics": m,
        "extraction": result["extraction"],
    }


def one_line_table(result: dict) -> str:
    """``top-1 % | A 45.00 | B 50.00 | mean 47.50 ± 2.50 | top-5 … | reversed pairs …``
    (one line; per dataset when several).

    Example:
        >>> r = {
        ...     "splits": [{"name": "a", "top1": 0.5}],
        ...     "summary_by_dataset": {"d": {"top1": {"mean": 0.5, "std": 0.0}}},
        ... }
        >>> one_line_table(r)
        'top-1 % | a 50.00 | mean 50.00 ± 0.00'
    """
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    cells = ["top-1 %"] + [f"{s['name']} {pct(s['top1'])}" for s in result["splits"]]
    by_dataset = result["summary_by_dataset"]
    for key, label in (("top1", "mean"), ("top5", "top-5 mean"), ("time_reversed_pairs", "reversed pairs")):
        for dataset, summary in by_dataset.items():
            if key in summary:
                prefix = f"{dataset} " if len(by_dataset) > 1 else ""
                cells.append(f"{prefix}{label} {pct(summary[key]['mean'])} ± {pct(summary[key]['std'])}")
    return " | ".join(cells)
