"""``video train``: fine-tune a CLIP's image encoder on seen actions, STDD-style.

Frames → per-frame features (space-time attention inside the ViT blocks,
:mod:`.stdd`) → the mean of the normalised frame features is the video
feature; cross-entropy over the seen classes' text features (the frozen text
encoder: each class's prompt ensemble, its descriptions when given, else the
templates) at the model's own temperature; plus FROSTER's residual feature
distillation toward the frozen CLIP's frame-averaged feature,
``w · (1 − cos(f + 0.1·MLP(f), f_frozen))`` with ``w = 2``. The projector MLP
trains with the encoder and is dropped afterwards. The released STDD code
computes the projector under ``no_grad`` (so its distillation term carries no
gradient); here it follows FROSTER: the term has its gradient, to the encoder
and the projector.

Training clips are decoded once, then every step samples ``batch_clips``
clips and one random frame per TSN segment (a function of the seed and the
step only). Validation: top-1 on the seen classes' ``val`` clips (deterministic
test-time sampling, masks unpermuted); the finetune trainer keeps the best
validated step. The output folder is a backbone checkpoint (``--pretrained``
in every command) plus ``stdd.json`` (the space-time settings, read by
``video zero-shot``/``predict``), the CSV log and ``result.json``.

Example:
    >>> # result = train_video(create_backbone("toy", "runs/toy-video-clip"), load_video_dataset(None, "toy-videos"),
    >>> #                      VideoTrainConfig(), SpaceTimeConfig(), TrainerConfig(steps=200, lr=1e-4), "runs/stdd")
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.base import Backbone
from ..config import Config, check_range, option
from ..errors import ConfigError, DataError
from ..finetune.checkpoint import write_backbone_checkpoint
from ..finetune.trainable import TrainableClip
from ..finetune.trainer import TrainerConfig, train
from ..io import atomic_dir, atomic_write_json
from ..outputs import claim_output_dir, is_own_output, mark_output_dir
from .clipencode import frames_to_pixels
from .dataset import Sample, VideoDataset
from .decode import decode_frames, probe, random_segment_indices, segment_indices
from .stdd import SpaceTime, SpaceTimeConfig, install_space_time, remove_space_time, space_time_of

OUTPUT_KIND = "video-train"
STDD_FILE = "stdd.json"
STDD_FORMAT = "clip-adapter-video-stdd"
LOG_NAME = "video_train_log.csv"


@dataclass
class VideoTrainConfig(Config):
    """What ``video train`` learns from (the optimiser's settings are :class:`TrainerConfig`)."""

    frames: int = option(8, "frames per clip (T)")
    batch_clips: int = option(8, "clips per step")
    shots: int = option(16, "training clips per seen class (0: all)")
    classes: tuple[str, ...] = option((), "seen classes (empty: the dataset's meta.json 'base', else all)")
    distill_weight: float = option(2.0, "weight of FROSTER's residual feature distillation (0: off)")
    residual: float = option(0.1, "projector residual ratio: f + residual * MLP(f)")
    unfreeze: str = option("image", "image, image-last-N or all (see finetune.trainable)")
    precision: str = option("auto", "autocast: auto (bf16 where fast), bf16 or fp32")

    def validate(self) -> None:
        check_range("frames", self.frames, 1, 512)
        check_range("batch_clips", self.batch_clips, 1, 4096)
        check_range("shots", self.shots, 0, 1_000_000)
        check_range("distill_weight", self.distill_weight, 0.0)
        check_range("residual", self.residual, 0.0)


class ClipSet:
    """Decoded clips held as preprocessed frames: ``pixels[i]`` is ``[F_i, 3, S, S]``, ``labels[i]`` its class."""

    def __init__(self, samples: Sequence[Sample], backbone: Backbone, label_of: dict[int, int]) -> None:
        self.pixels, self.labels, self.paths = [], [], []
        for sample in samples:
            count = probe(sample.path).num_frames
            decoded = decode_frames(sample.path, range(count))
            frames = [decoded[i] for i in sorted(decoded)]
            if not frames:
                raise DataError(f"video {sample.path} holds no decodable frames")
            self.pixels.append(frames_to_pixels(frames, backbone))
            self.labels.append(label_of[sample.label])
            self.paths.append(str(sample.path))

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, which: Sequence[int], frames: int, rng: np.random.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels ``[B·T, 3, S, S]`` (random segment frames with ``rng``, else the segment centres) and labels."""
        chosen = []
        for i in which:
            n = self.pixels[i].shape[0]
            idx = random_segment_indices(n, frames, rng) if rng is not None else segment_indices(n, frames)
            chosen.append(self.pixels[i][idx])
        return torch.cat(chosen), torch.tensor([self.labels[i] for i in which])


def seen_classes(dataset: VideoDataset, classes: Sequence[str]) -> list[str]:
    """The classes trained on: as given, else the dataset's ``base``, else all; each checked to exist."""
    names = list(classes) or list(dataset.meta.get("base", []) if isinstance(dataset.meta, dict) else []) or list(dataset.classnames)
    unknown = [n for n in names if n not in dataset.classnames]
    if unknown:
        raise ConfigError(f"seen class(es) not in the dataset {dataset.name}: {', '.join(unknown)}")
    return names


def few_shot(samples: Sequence[Sample], labels: Sequence[int], shots: int, seed: int) -> list[Sample]:
    """Up to ``shots`` samples per label in ``labels`` (all with 0), dealt from ``seed``."""
    rng = np.random.default_rng([seed, 17])
    out = []
    for label in labels:
        mine = [s for s in samples if s.label == label]
        order = rng.permutation(len(mine))
        out += [mine[i] for i in (order if shots == 0 else order[:shots])]
    return out


class Projector(nn.Module):
    """FROSTER's residual projector ``f + r·MLP(f)`` (trained, then dropped)."""

    def __init__(self, dim: int, residual: float) -> None:
        super().__init__()
        self.residual = residual
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f + self.residual * self.mlp(f)


def video_features(frame_feats: torch.Tensor, frames: int) -> torch.Tensor:
    """Normalised mean of the normalised frame features: ``[B·T, D]`` → ``[B, D]``."""
    return F.normalize(F.normalize(frame_feats, dim=-1).view(-1, frames, frame_feats.shape[-1]).mean(1), dim=-1)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, projector: Projector) -> torch.Tensor:
    """``mean(1 − cos(projector(student), teacher))`` (with gradient through student and projector).

    Example:
        >>> p = Projector(4, 0.0)
        >>> float(distill_loss(torch.eye(4), torch.eye(4), p))
        0.0
    """
    return (1 - F.cosine_similarity(projector(student), teacher, dim=-1)).mean()


def train_video(backbone: Backbone, dataset: VideoDataset, cfg: VideoTrainConfig, space: SpaceTimeConfig,
                trainer: TrainerConfig, out_dir: str | os.PathLike, text: torch.Tensor | None = None,
                overwrite: bool = False, inputs: Sequence[Any] = (), text_info: dict | None = None) -> dict:
    """Fine-tune ``backbone``'s image encoder on ``dataset``'s seen classes; write the checkpoint to ``out_dir``.

    ``text``: the seen classes' text features ``[C_seen, D]`` (normalised inside; the caller builds them from
    templates or descriptions). Returns the result dict (also ``result.json``).
    """
    out = claim_output_dir(out_dir, OUTPUT_KIND, overwrite=overwrite, inputs=list(inputs))
    names = seen_classes(dataset, cfg.classes)
    label_of = {dataset.classnames.index(n): i for i, n in enumerate(names)}
    if text is None or text.shape[0] != len(names):
        raise ConfigError(f"text features for the {len(names)} seen classes are needed, got {None if text is None else tuple(text.shape)}")
    val_samples = [s for s in dataset.splits.get("val", []) if s.label in label_of]
    if not val_samples:  # the saved step is chosen on validation; without it, training could not be kept
        raise DataError(f"{dataset.name} has no validation clips of the seen classes (a val split chooses the saved step)")
    view = TrainableClip(backbone, unfreeze=cfg.unfreeze, precision=cfg.precision)
    installed = space_time_of(view.model.visual)
    space = installed.cfg if installed else space
    teacher = _frozen_copy(view.model.visual)  # the frozen CLIP, frame by frame (never the space-time blocks)
    space_time = installed or install_space_time(view.model.visual, space)
    train_set = ClipSet(few_shot(dataset.split("train"), list(label_of), cfg.shots, trainer.seed), backbone, label_of)
    val_set = ClipSet(val_samples, backbone, label_of)
    if len(train_set) == 0:
        raise DataError(f"no training clips of the seen classes in {dataset.name}")
    classes = F.normalize(text.float(), dim=-1).to(view.device)
    with torch.random.fork_rng():
        torch.manual_seed(trainer.seed)  # the projector's start is a function of the seed, not of what ran before
        projector = Projector(classes.shape[-1], cfg.residual).to(view.device)
    module = nn.ModuleDict({"visual": view.model.visual, "projector": projector})
    loss_at = _loss_fn(view, teacher, space_time, projector, train_set, classes, cfg, trainer.seed)
    validate = lambda: {"score": _accuracy(view, space_time, val_set, classes, cfg.frames)}  # noqa: E731
    started = time.perf_counter()
    with torch.random.fork_rng():
        result = train(module, loss_at, trainer, validate, log_path=None, desc="video train")
    space_time.randomize = False
    record = {
        "format": STDD_FORMAT, "space_time": space.to_dict(), "train_config": cfg.to_dict(), "trainer": trainer.to_dict(),
        "seen_classes": names, "train_clips": len(train_set), "val_clips": len(val_samples), "text": text_info or {},
        "result": result.summary(), "clips_per_s": round(trainer.steps * cfg.batch_clips / max(time.perf_counter() - started, 1e-9), 2),
    }
    _write(out, overwrite, backbone, record, result)
    return record


def _frozen_copy(visual: nn.Module) -> nn.Module:
    """A frozen copy of ``visual`` with plain blocks: deepcopy keeps the installed forwards, which call the live blocks."""
    copy_ = copy.deepcopy(visual)
    remove_space_time(copy_)
    for block in getattr(getattr(copy_, "transformer", None), "resblocks", []):
        block.__dict__.pop("forward", None)
    return copy_.eval().requires_grad_(False)


def _loss_fn(view: TrainableClip, teacher: nn.Module, space_time: SpaceTime, projector: Projector, data: ClipSet,
             classes: torch.Tensor, cfg: VideoTrainConfig, seed: int):
    scale = view.logit_scale().detach()

    def loss_at(step: int) -> torch.Tensor:
        rng = np.random.default_rng([seed, step])
        which = rng.choice(len(data), size=min(cfg.batch_clips, len(data)), replace=False)
        pixels, labels = data.batch(which, cfg.frames, rng)
        space_time.randomize = True
        try:
            with space_time.clips(cfg.frames):
                student = video_features(view.encode_images(pixels), cfg.frames)
        finally:
            space_time.randomize = False
        loss = F.cross_entropy(scale * student @ classes.T, labels.to(student.device))
        if cfg.distill_weight > 0:
            with torch.no_grad(), view.autocast():
                target = video_features(teacher(pixels.to(view.device)).float(), cfg.frames)
            loss = loss + cfg.distill_weight * distill_loss(student, target, projector)
        return loss

    return loss_at


def _accuracy(view: TrainableClip, space_time: SpaceTime, data: ClipSet, classes: torch.Tensor, frames: int) -> float:
    hits = 0
    for start in range(0, len(data), 16):
        pixels, labels = data.batch(range(start, min(start + 16, len(data))), frames, None)
        with space_time.clips(frames):
            feats = video_features(view.encode_images(pixels), frames)
        hits += int(((feats @ classes.T).argmax(1).cpu() == labels).sum())
    return hits / len(data)


def _write(out: Path, overwrite: bool, backbone: Backbone, record: dict, result) -> None:
    import csv
    import io

    from ..io import atomic_write_bytes

    with atomic_dir(out, may_replace=lambda p: overwrite and is_own_output(p, OUTPUT_KIND)) as tmp:
        mark_output_dir(tmp, OUTPUT_KIND)
        weights = write_backbone_checkpoint(backbone, tmp, {"recipe": "video-stdd", "stdd": record["space_time"]})
        record["weights"] = weights.name
        atomic_write_json(tmp / STDD_FILE, record)
        atomic_write_json(tmp / "result.json", {k: v for k, v in record.items() if k != "format"})
        columns = list(dict.fromkeys(k for row in result.history for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(result.history)
        atomic_write_bytes(tmp / LOG_NAME, text.getvalue().encode())


def read_stdd(pretrained: str | os.PathLike) -> dict | None:
    """``stdd.json`` beside a checkpoint (a folder, or a weights file inside one), or None.

    Example:
        >>> read_stdd("/no/such/folder") is None
        True
    """
    from ..io import read_json

    path = Path(pretrained)
    if not path.exists():  # an open_clip tag ("openai"), not a file: never look in the working folder
        return None
    folder = path if path.is_dir() else path.parent
    file = folder / STDD_FILE
    if not file.is_file():
        return None
    meta = read_json(file, "video STDD settings", error=ConfigError)
    if not isinstance(meta, dict) or meta.get("format") != STDD_FORMAT or not isinstance(meta.get("space_time"), dict):
        raise ConfigError(f"{file} is not a {STDD_FORMAT} file")
    return meta
