"""Zero-shot action recognition with a frozen CLIP: frames → per-frame features → scorer.

The stages are separate so a trained video encoder (a later stage: STDD's
space-time attention) can replace the per-frame features and keep the text
side, the scorers and the metrics.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..backbones.base import Backbone
from ..core.config import Config, check_choice, check_range, option
from ..core.errors import DataError
from ..features.extract import extract_texts, text_store
from ..features.store import default_cache_dir
from .clipencode import extract_temporal_features
from .dataset import VideoDataset
from .descriptions import class_prompts, read_descriptions
from .features import extract_clip_features, frame_store
from .metrics import video_report
from .scoring import SCORERS, pad_prompts, score_clips
from .stdd import space_time_of

DEFAULT_TEMPLATES = ("a video of a person {}.",)  # Open-VCLIP's / ActionCLIP's plain template
TOP_K = 5  # classes listed per video by :func:`predict_videos` (and ``video predict``)


@dataclass
class VideoZeroShotConfig(Config):
    """How clips are sampled and scored.

    ``frames`` 8: origin not recorded; not checked on held-out data.
    """

    frames: int = option(8, "frames sampled per clip (T, one per TSN segment)")
    views: int = option(1, "temporal views per clip at test time (segment offsets (v+0.5)/views)")
    scorer: str = option(
        "frame-mean",
        "frame-mean, embed-mean or prompt-match (STDD); unset on the command line: the scorer "
        "a `video train` checkpoint was validated with, from its stdd.json, else frame-mean",
    )
    batch_size: int = option(
        64,
        "frames per encoder batch; with space-time attention, whole clips of --views x --frames "
        "frames, at least one clip",
    )

    def validate(self) -> None:
        check_range("frames", self.frames, 1, 512)
        check_range("views", self.views, 1, 64)
        check_choice("scorer", self.scorer, SCORERS)
        check_range("batch_size", self.batch_size, 1, 1 << 16)


def text_side(
    backbone: Backbone,
    classnames: Sequence[str],
    templates: Sequence[str],
    descriptions: str | os.PathLike | dict | None,
    cache_dir: Any = "",
) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
    """Prompt embeddings ``[C, P, D]``, their mask and the prompts: descriptions if given, else templates.

    Words the backbone's tokenizer cannot read (the toy CLIP's closed
    vocabulary) become ``<unk>``; they are warned about, not refused, so a
    zero-shot row can still be reported (and read with that in mind).
    """
    described = read_descriptions(descriptions) if isinstance(descriptions, (str, os.PathLike)) else descriptions
    prompts = class_prompts(classnames, templates, described)
    flat = [p for group in prompts for p in group]
    unknown = backbone.unknown_words(sorted(set(flat)))
    if unknown:
        words = sorted({w for ws in unknown.values() for w in ws})
        warnings.warn(
            f"{len(unknown)} prompt(s) hold words the {backbone.name} tokenizer cannot read "
            f"(they become <unk>): {', '.join(words[:12])}{', …' if len(words) > 12 else ''}"
        )
    embeddings = extract_texts(backbone, flat, text_store(backbone, cache_dir or default_cache_dir()))
    per_class, start = [], 0
    for group in prompts:
        per_class.append(embeddings[start : start + len(group)])
        start += len(group)
    emb, mask = pad_prompts(per_class)
    return emb, mask, prompts


def clips_per_batch(config: VideoZeroShotConfig) -> int:
    """Whole clips per encoder batch with space-time attention: a clip is ``views × frames`` frames, at least one clip.

    Example:
        >>> clips_per_batch(VideoZeroShotConfig(frames=8, views=2, batch_size=64))
        4
    """
    return max(1, config.batch_size // (config.frames * config.views))


def score_videos(
    backbone: Backbone,
    paths: Sequence[str | os.PathLike],
    prompts: torch.Tensor,
    mask: torch.Tensor,
    config: VideoZeroShotConfig,
    cache_dir: Any = "",
    skip_bad: bool = False,
) -> tuple[torch.Tensor, list[int], dict]:
    """Logits ``[N_kept, C]`` of the videos at ``paths``, the kept indices, and extraction stats."""
    space_time = space_time_of(getattr(getattr(backbone, "model", None), "visual", None))
    if space_time is not None and space_time.cfg.enabled:  # temporal encoder: clips encoded whole, uncached
        feats, kept, stats = extract_temporal_features(
            backbone, space_time, paths, config.frames, config.views, clips_per_batch(config), skip_bad
        )
    else:
        store = frame_store(backbone, cache_dir or default_cache_dir())
        feats, kept, stats = extract_clip_features(
            backbone, paths, store, config.frames, config.views, config.batch_size, skip_bad
        )
    return score_clips(config.scorer, feats, prompts, mask, backbone.logit_scale), kept, stats.to_dict()


def time_reversed_pairs(dataset: VideoDataset) -> list[tuple[int, int]]:
    """Class-index pairs the dataset declares as time reversals of each other
    (``meta.json`` ``time_reversed_pairs``)."""
    index = {name: i for i, name in enumerate(dataset.classnames)}
    pairs = dataset.meta.get("time_reversed_pairs", []) if isinstance(dataset.meta, dict) else []
    well_formed = isinstance(pairs, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p) for p in pairs
    )
    if not well_formed:
        raise DataError(f"meta.json of {dataset.name}: time_reversed_pairs must be a list of [class, class] pairs")
    return [(index[a], index[b]) for a, b in pairs if a in index and b in index]


def evaluate_zero_shot(
    backbone: Backbone,
    dataset: VideoDataset,
    split: str | None = None,
    config: VideoZeroShotConfig | None = None,
    templates: Sequence[str] | None = None,
    descriptions: str | os.PathLike | dict | None = None,
    cache_dir: Any = "",
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Zero-shot metrics of ``dataset``'s ``split`` (default: test, else all videos).

    Example:
        >>> # result = evaluate_zero_shot(create_backbone("toy"), load_video_dataset("toy-videos"), "test")
        >>> # result["metrics"]["top1"], result["metrics"]["time_reversed_pairs"]["accuracy"]
    """
    config = config or VideoZeroShotConfig()
    split = split or dataset.default_split
    templates = tuple(templates or dataset.templates or DEFAULT_TEMPLATES)
    samples = dataset.split(split)
    prompts, mask, texts = text_side(backbone, dataset.classnames, templates, descriptions, cache_dir)
    logits, kept, stats = score_videos(backbone, [s.path for s in samples], prompts, mask, config, cache_dir, skip_bad)
    labels = torch.tensor([samples[i].label for i in kept], dtype=torch.long)
    return {
        "dataset": dataset.name,
        "split": split,
        "backbone": backbone.describe(),
        "config": config.to_dict(),
        "text": {
            "source": "descriptions" if descriptions else "templates",
            "templates": list(templates),
            "prompts": texts,
        },
        "metrics": video_report(logits, labels, dataset.classnames, time_reversed_pairs(dataset)),
        "extraction": stats,
        "predictions": [
            {"path": str(samples[i].path), "label": samples[i].label, "predicted": int(p)}
            for i, p in zip(kept, logits.argmax(dim=1).tolist())
        ],
    }


def predict_videos(
    backbone: Backbone,
    paths: Sequence[str | os.PathLike],
    classnames: Sequence[str],
    config: VideoZeroShotConfig | None = None,
    templates: Sequence[str] | None = None,
    descriptions: str | os.PathLike | dict | None = None,
    top_k: int = TOP_K,
    cache_dir: Any = "",
    skip_bad: bool = False,
) -> list[dict]:
    """Top-``k`` classes with probabilities for each video, in input order (unreadable ones left out with ``skip_bad``).

    Example:
        >>> # predict_videos(create_backbone("toy"), ["a.mp4"], ["moving left", "moving right"], top_k=1)
        >>> # [{'path': 'a.mp4', 'label': 'moving left', 'score': 0.61, 'top_k': [...]}]
    """
    config = config or VideoZeroShotConfig()
    prompts, mask, _ = text_side(backbone, classnames, tuple(templates or DEFAULT_TEMPLATES), descriptions, cache_dir)
    logits, kept, stats = score_videos(backbone, paths, prompts, mask, config, cache_dir, skip_bad)
    for skipped in stats.get("skipped", []):
        warnings.warn(f"skipped: {skipped['reason']}")
    probs = logits.softmax(dim=1)
    values, indices = torch.sort(probs, dim=1, descending=True, stable=True)
    rows = []
    for row, i in enumerate(kept):
        top = [
            {"label": classnames[c], "score": round(float(v), 6)}
            for v, c in zip(values[row, :top_k].tolist(), indices[row, :top_k].tolist())
        ]
        rows.append({"path": str(Path(paths[i])), "label": top[0]["label"], "score": top[0]["score"], "top_k": top})
    return rows
