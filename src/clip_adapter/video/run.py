"""The video commands' work: what ``clip-adapter video …`` runs once its options are parsed.

Each function checks its inputs before any work (output folder, feature cache, data, then the
backbone, which is built last through ``make_backbone``), writes its own outputs and returns what
the command prints. The command line only turns options into configs and prints.

Example:
    >>> VideoSource(split_dir="toy-videos").inputs
    [None, 'toy-videos', None]
    >>> with_space_time.__name__, stdd_meta(None)
    ('with_space_time', None)
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..backbones.base import Backbone
from ..core.errors import ConfigError
from ..core.files import atomic_write_bytes, atomic_write_json, quoted
from ..core.outputs import check_cache_dir, claim_output_dir, mark_output_dir
from ..features.store import default_cache_dir
from .dataset import VideoDataset, load_video_dataset, read_classmap
from .descriptions import read_descriptions
from .kinds import VIDEO_BASE_TO_NOVEL, VIDEO_CROSS, VIDEO_EVAL
from .stdd import SpaceTimeConfig, install_space_time
from .train import VideoTrainConfig, read_stdd, recorded_scorer
from .zeroshot import VideoZeroShotConfig

MakeBackbone = Callable[[], Backbone]
Log = Callable[[str], None]


@dataclass(frozen=True)
class VideoSource:
    """Where a video dataset is: a folder per class (``data``) or split CSVs (``split_dir``, ``video_root``,
    ``classmap``).

    Example:
        >>> VideoSource(data="videos").inputs
        ['videos', None, None]
    """

    data: str | None = None
    split_dir: str | None = None
    video_root: str | None = None
    classmap: str | None = None

    @property
    def inputs(self) -> list[str | None]:
        """The paths the data is read from: outputs and caches must stay out of them."""
        return [self.data, self.split_dir, self.video_root]

    def load(self) -> VideoDataset:
        return load_video_dataset(self.data, self.split_dir, self.video_root, self.classmap)


def checked_cache_dir(cache_dir: str | os.PathLike, inputs: Sequence[Any]) -> str | os.PathLike:
    """``cache_dir`` as given ("" = the default), refused now if unusable or inside the data.

    Example:
        >>> import tempfile
        >>> cache = tempfile.mkdtemp()
        >>> checked_cache_dir(cache, ["videos"]) == cache
        True
    """
    check_cache_dir(cache_dir or default_cache_dir(), [i for i in inputs if i is not None])
    return cache_dir


# ------------------------------------------------------------------------------------- checkpoints


def stdd_meta(pretrained: str | None) -> dict | None:
    """The ``stdd.json`` of a ``video train`` checkpoint given as ``--pretrained``, or None.

    Example:
        >>> stdd_meta("shipped") is None and stdd_meta("/no/such/run") is None
        True
    """
    return read_stdd(pretrained) if pretrained and pretrained not in ("shipped", "none") else None


def with_space_time(backbone: Backbone, stdd: str = "auto", meta: dict | None = None) -> Backbone:
    """``backbone`` with space-time attention installed as ``stdd`` (auto, on, off) and the checkpoint's ``meta`` say.

    Example:
        >>> # with_space_time(create_backbone("toy", "stdd-toy"), "auto", stdd_meta("stdd-toy"))
    """
    if stdd == "off" or (stdd == "auto" and not (meta and meta["space_time"].get("enabled", True))):
        return backbone
    space = SpaceTimeConfig.from_dict(meta["space_time"], where="stdd.json") if meta else SpaceTimeConfig()
    visual = getattr(getattr(backbone, "model", None), "visual", None)
    if visual is None:
        raise ConfigError(f"--stdd on needs a toy or open_clip ViT backbone, not {backbone.id}")
    install_space_time(visual, space.replace(enabled=True))
    return backbone


def checkpoint_defaults(meta: dict | None) -> dict[str, str]:
    """What a ``video train`` checkpoint changes in the sampling defaults: the scorer it was validated with.

    Example:
        >>> checkpoint_defaults({"train_config": {"scorer": "prompt-match"}}), checkpoint_defaults(None)
        ({'scorer': 'prompt-match'}, {})
    """
    return {"scorer": recorded_scorer(meta)} if meta else {}


def check_text_side(meta: dict | None, descriptions: str | None, pretrained: str | None, scorer: str) -> None:
    """Warn when a checkpoint trained on description prompts is scored on the plain templates.

    Example:
        >>> check_text_side(None, None, None, "frame-mean")
    """
    text = meta.get("text") if meta else None
    if isinstance(text, dict) and text.get("source") == "descriptions" and not descriptions:
        warnings.warn(
            f"{pretrained} was trained on description prompts; without the same --descriptions, its "
            f"{scorer} scores use the plain templates instead"
        )


# ------------------------------------------------------------------------------------- zero-shot


def zero_shot(
    source: VideoSource,
    config: VideoZeroShotConfig,
    make_backbone: MakeBackbone,
    out: str | os.PathLike,
    *,
    split: str | None = None,
    templates: Sequence[str] | None = None,
    descriptions: str | None = None,
    cache_dir: str | os.PathLike = "",
    skip_bad: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate zero-shot on ``source``; write ``metrics.json`` and ``predictions.csv`` to ``out``; return the metrics.

    Example:
        >>> # make = lambda: create_backbone("toy")
        >>> # result = zero_shot(VideoSource(split_dir="toy-videos"), VideoZeroShotConfig(), make, "zs")
        >>> # print(summary(result))
    """
    from .zeroshot import evaluate_zero_shot

    folder = claim_output_dir(out, VIDEO_EVAL, overwrite=overwrite, inputs=source.inputs)
    cache_dir = checked_cache_dir(cache_dir, source.inputs)
    dataset = source.load()
    result = evaluate_zero_shot(make_backbone(), dataset, split, config, templates, descriptions, cache_dir, skip_bad)
    predictions = result.pop("predictions")
    mark_output_dir(folder, VIDEO_EVAL)
    atomic_write_json(folder / "metrics.json", result)
    atomic_write_bytes(folder / "predictions.csv", predictions_csv(predictions, dataset.classnames).encode("utf-8"))
    warn_skipped(result["extraction"]["skipped"], folder / "metrics.json")
    return result


def predictions_csv(rows: list[dict], classnames: list[str]) -> str:
    """``path,label,predicted`` per clip, labels as class names.

    Example:
        >>> print(predictions_csv([{"path": "a.mp4", "label": 0, "predicted": 1}], ["jump", "run"]), end="")
        path,label,predicted
        a.mp4,jump,run
    """
    rows_out = [[r["path"], classnames[r["label"]], classnames[r["predicted"]]] for r in rows]
    return _csv(["path", "label", "predicted"], rows_out)


def summary(result: dict) -> str:
    """The lines ``video zero-shot`` prints: clips, classes, scorer, sampling, then top-1/top-5/per-class and the pairs.

    Example:
        >>> m = {"num_clips": 4, "per_class_accuracy": [1, 0], "top1": 0.5, "top5": 1.0, "mean_per_class_accuracy": 0.5,
        ...      "chance_top1": 0.5}
        >>> print(summary({"dataset": "toy", "split": "test", "metrics": m,
        ...                "config": {"scorer": "frame-mean", "frames": 8, "views": 1}}))
        toy (test): 4 clips, 2 classes, scorer frame-mean, 8 frames x 1 view(s)
        top-1 50.00  top-5 100.00  mean per-class 50.00  (chance 50.00)
    """
    m, config = result["metrics"], result["config"]
    classes = len(m["per_class_accuracy"])
    lines = [
        f"{result['dataset']} ({result['split']}): {m['num_clips']} clips, {classes} classes, "
        f"scorer {config['scorer']}, {config['frames']} frames x {config['views']} view(s)",
        f"top-1 {_pct(m['top1'])}  top-5 {_pct(m['top5'])}  mean per-class {_pct(m['mean_per_class_accuracy'])}"
        f"  (chance {_pct(m['chance_top1'])})",
    ]
    pairs = m.get("time_reversed_pairs")
    if pairs and pairs["num_clips"]:
        lines.append(
            f"time-reversed pairs: {_pct(pairs['accuracy'])} % beat their reversal "
            f"({pairs['num_clips']} clips; chance 50.00 %)"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def warn_skipped(skipped: list[dict], listed_in: str | os.PathLike) -> None:
    """One warning line for the videos ``--skip-bad`` left out: how many, the first few, where all are listed.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_skipped([{"path": f"v/{i}.mp4", "reason": "…"} for i in range(5)], "zs/metrics.json")
        >>> str(caught[0].message)
        'skipped 5 unreadable video(s): v/0.mp4, v/1.mp4, v/2.mp4 and 2 more (each with its reason in zs/metrics.json)'
    """
    if not skipped:
        return
    names = ", ".join(quoted(item["path"]) for item in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    warnings.warn(
        f"skipped {len(skipped)} unreadable video(s): {names}{more} (each with its reason in {quoted(listed_in)})"
    )


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------- predict


def video_classnames(
    classmap: str | None = None, classes: str | None = None, descriptions: str | None = None
) -> list[str]:
    """The classes to predict among: a class map, comma-separated names, or the description file's classes.

    Example:
        >>> video_classnames(classes="jump, run")
        ['jump', 'run']
    """
    if classmap and classes:
        raise ConfigError("give --classmap or --classes, not both")
    if classmap:
        return read_classmap(classmap)
    if classes:
        names = [n.strip() for n in classes.split(",") if n.strip()]
        if len(names) < 2:
            raise ConfigError(f"--classes needs at least two comma-separated class names, got {classes!r}")
        return names
    if descriptions:
        return sorted(read_descriptions(descriptions))
    raise ConfigError("name the classes: --classmap FILE, --classes a,b,c, or --descriptions FILE")


def predict_csv(rows: list[dict]) -> str:
    """One row per video and rank, ``path,rank,class,probability``: the columns of the image ``predict``.

    Example:
        >>> top = [{"label": "jump", "score": 0.75}, {"label": "run", "score": 0.25}]
        >>> print(predict_csv([{"path": "a.mp4", "top_k": top}]), end="")
        path,rank,class,probability
        a.mp4,1,jump,0.750000
        a.mp4,2,run,0.250000
    """
    ranked = [
        [row["path"], rank, top["label"], f"{top['score']:.6f}"]
        for row in rows
        for rank, top in enumerate(row["top_k"], 1)
    ]
    return _csv(["path", "rank", "class", "probability"], ranked)


# ------------------------------------------------------------------------------------- cross-dataset


@dataclass(frozen=True)
class CrossSources:
    """The training actions (one source, or none) and the evaluation splits of ``video cross-dataset``.

    Example:
        >>> CrossSources(eval_split_dirs=("ucf101=ucf/split1",)).inputs
        ['ucf/split1', None, None, None]
    """

    eval_split_dirs: tuple[str, ...] = ()
    eval_data: tuple[str, ...] = ()
    video_root: str | None = None
    eval_classmap: str | None = None
    train_split_dir: str | None = None
    train_data: str | None = None
    train_classmap: str | None = None

    @property
    def inputs(self) -> list[str | None]:
        from .cross import parse_eval_arg

        folders = [parse_eval_arg(p)[1] for p in [*self.eval_split_dirs, *self.eval_data]]
        return [*folders, self.video_root, self.train_split_dir, self.train_data]


def cross_dataset(
    sources: CrossSources,
    config: VideoZeroShotConfig,
    make_backbone: MakeBackbone,
    out: str | os.PathLike,
    *,
    meta: dict | None = None,
    split: str | None = None,
    allow_overlap: bool = False,
    templates: Sequence[str] | None = None,
    descriptions: str | None = None,
    cache_dir: str | os.PathLike = "",
    skip_bad: bool = False,
    overwrite: bool = False,
    log: Log = lambda m: None,
) -> dict[str, Any]:
    """Score every evaluation split over its own classes; write ``metrics.json`` and ``predictions.csv``; return
    the metrics.

    ``meta``: the checkpoint's ``stdd.json`` (its seen classes count as training actions).

    Example:
        >>> # sources = CrossSources(("tgt1", "tgt2"), train_split_dir="src")
        >>> # result = cross_dataset(sources, VideoZeroShotConfig(), make, "cross")
        >>> # print(one_line_table(result))
    """
    from .cross import check_eval_sets, evaluate_cross_dataset, load_eval_sets, training_classes

    folder = claim_output_dir(out, VIDEO_CROSS, overwrite=overwrite, inputs=sources.inputs)
    cache_dir = checked_cache_dir(cache_dir, sources.inputs)
    trained = training_classes(sources.train_split_dir, sources.train_data, sources.train_classmap)
    seen = list(meta.get("seen_classes", [])) if meta else []  # a `video train` checkpoint names what it saw
    train_classes = list(dict.fromkeys([*trained, *seen]))
    eval_sets = load_eval_sets(sources.eval_split_dirs, sources.eval_data, sources.video_root, sources.eval_classmap)
    described = read_descriptions(descriptions) if descriptions else None
    check_eval_sets(eval_sets, train_classes, split, allow_overlap, templates, described)  # before the backbone loads
    if not train_classes:  # nothing to compare with: say so rather than pass silently
        log(
            "warning: no training classes known (no --train-split-dir/--train-data/--train-classmap, and no stdd.json "
            "beside the checkpoint): evaluation classes were not checked for overlap"
        )
    result = evaluate_cross_dataset(
        make_backbone(),
        eval_sets,
        config,
        train_classes,
        templates,
        described,
        cache_dir,
        skip_bad,
        allow_overlap,
        split,
    )
    result["train_class_sources"] = {"training set": len(trained), "checkpoint stdd.json": len(seen)}
    predictions = result.pop("predictions")
    mark_output_dir(folder, VIDEO_CROSS)
    atomic_write_json(folder / "metrics.json", result)
    rows = [[r["split"], r["path"], r["label"], r["predicted"]] for r in predictions]
    atomic_write_bytes(folder / "predictions.csv", _csv(["split", "path", "label", "predicted"], rows).encode("utf-8"))
    warn_skipped([item for one in result["splits"] for item in one["extraction"]["skipped"]], folder / "metrics.json")
    return result


# ------------------------------------------------------------------------------------- training


def train(
    source: VideoSource,
    cfg: VideoTrainConfig,
    trainer: Any,
    make_backbone: MakeBackbone,
    out: str | os.PathLike,
    *,
    stdd: str = "auto",
    templates: Sequence[str] | None = None,
    descriptions: str | None = None,
    cache_dir: str | os.PathLike = "",
    overwrite: bool = False,
) -> dict[str, Any]:
    """``video train``: fine-tune on ``source``'s seen classes into ``out``; return the record (``stdd.json``).

    ``trainer``: a :class:`.train.VideoTrainerConfig` (or any ``TrainerConfig``). ``stdd`` off trains frame-wise.

    Example:
        >>> # source = VideoSource(split_dir="toy-videos")
        >>> # record = train(source, VideoTrainConfig(), VideoTrainerConfig(), make, "stdd-toy")
    """
    from .train import seen_classes, train_video
    from .zeroshot import DEFAULT_TEMPLATES, text_side

    cache_dir = checked_cache_dir(cache_dir, source.inputs)
    dataset = source.load()
    space = SpaceTimeConfig(enabled=stdd != "off")
    backbone = make_backbone()
    names = seen_classes(dataset, cfg.classes)
    templates = tuple(templates or dataset.templates or DEFAULT_TEMPLATES)
    prompts, mask, _ = text_side(backbone, names, templates, descriptions, cache_dir)
    text_info = {"source": "descriptions" if descriptions else "templates", "templates": list(templates)}
    return train_video(
        backbone,
        dataset,
        cfg,
        space,
        trainer,
        out,
        prompts,
        mask,
        overwrite=overwrite,
        inputs=source.inputs,
        text_info=text_info,
    )


def train_summary(record: dict[str, Any], out: str | os.PathLike) -> str:
    """The line ``video train`` prints: classes, clips, validation before and after, speed, where the checkpoint is.

    Example:
        >>> r = {"validation_initial": {"score": 0.25}, "validation_selected": {"score": 0.5}, "selected_step": 4}
        >>> print(train_summary({"seen_classes": ["a", "b"], "train_clips": 8, "result": r, "clips_per_s": 3.5,
        ...                      "space_time": {"enabled": True}}, "runs/stdd"))  # doctest: +NORMALIZE_WHITESPACE
        trained on 2 seen classes, 8 clips; validation top-1 0.2500 -> 0.5000 (step 4); 3.5 clips/s;
        checkpoint in runs/stdd (space-time attention on)
    """
    r = record["result"]
    before, after = r["validation_initial"]["score"], r["validation_selected"]["score"]
    return (
        f"trained on {len(record['seen_classes'])} seen classes, {record['train_clips']} clips; validation top-1 "
        f"{before:.4f} -> {after:.4f} (step {r['selected_step']}); {record['clips_per_s']} clips/s; "
        f"checkpoint in {out} (space-time attention {'on' if record['space_time']['enabled'] else 'off'})"
    )


def pretrain_defaults(quick: bool, given: Mapping[str, Any]) -> dict[str, Any]:
    """What ``video toy-pretrain`` fills in where ``given`` (the options, None = not set) has no value.

    ``quick``: the quick recipe's settings (:data:`.pretrain.QUICK`); and always a warm-up fitted to the
    steps (:func:`.pretrain.warmup_for`).

    Example:
        >>> pretrain_defaults(True, {"steps": 50, "threads": None})
        {'batch_size': 64, 'image_from': 'shipped', 'threads': 1, 'warmup_steps': 5}
        >>> pretrain_defaults(False, {})
        {'warmup_steps': 100}
    """
    from .pretrain import QUICK, VideoPretrainConfig, warmup_for

    out = {k: v for k, v in (QUICK if quick else {}).items() if given.get(k) is None}
    if given.get("warmup_steps") is None:
        steps = given.get("steps")
        out["warmup_steps"] = warmup_for(steps if steps is not None else out.get("steps", VideoPretrainConfig().steps))
    return out


# ------------------------------------------------------------------------------------- base-to-novel


def base_to_novel(
    source: VideoSource,
    cfg: Any,
    make_backbone: MakeBackbone,
    load_trained: Callable[[Path], Backbone],
    out: str | os.PathLike,
    *,
    pretrained: str | None = None,
    base: Sequence[str] = (),
    novel: Sequence[str] = (),
    descriptions: str | None = None,
    cache_dir: str | os.PathLike = "",
    overwrite: bool = False,
    log: Log = lambda m: None,
    info: dict | None = None,
) -> dict[str, Any]:
    """The base-to-novel protocol from a frozen CLIP (``cfg``: a :class:`.bench.BaseToNovelConfig`); returns the
    results.

    Refuses a ``video train`` checkpoint as ``pretrained`` (every row would be a trained one), then the output
    folder, the cache, the data and the class split, all before the first backbone loads.

    Example:
        >>> # source = VideoSource(split_dir="toy-videos")
        >>> # results = base_to_novel(source, BaseToNovelConfig(), make, trained_loader("toy"), "b2n")
        >>> # print(results["markdown"])
    """
    from .bench import base_novel_split, run_base_to_novel

    if pretrained and stdd_meta(pretrained):  # a trained checkpoint as the "frozen" CLIP would make every row a lie
        raise ConfigError(
            f"--pretrained {pretrained} is a `video train` output; base-to-novel starts from a frozen CLIP"
        )
    inputs = [*source.inputs, descriptions]
    claim_output_dir(out, VIDEO_BASE_TO_NOVEL, overwrite=overwrite, inputs=inputs)  # before any work
    cache_dir = checked_cache_dir(cache_dir, inputs)
    dataset = source.load()
    base, novel = base_novel_split(dataset, base, novel)  # before the backbone loads
    return run_base_to_novel(
        dataset,
        cfg,
        out,
        make_backbone,
        load_trained,
        base,
        novel,
        descriptions,
        cache_dir,
        overwrite,
        inputs,
        log=log,
        info=info,
    )
