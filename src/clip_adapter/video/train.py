"""``video train``: fine-tune a CLIP's image encoder on seen actions, STDD-style.

Frames → per-frame features (space-time attention inside the ViT blocks,
:mod:`.stdd`) → per-frame scores against the seen classes' prompts (the frozen
text encoder: descriptions when given, else the templates) → cross-entropy at
the model's own temperature. The score is ``cfg.scorer``, as the official
``TemporalClipVideo.forward`` (github Mia-YatingYu/STDD,
``slowfast/models/temporalclip_video_model.py``) computes it in training:
with description prompts, prompt-level matching ``½(mean_p max_t + mean_t
max_p)``; without, each frame's logits against the class features averaged
over frames (``frame-mean``); ``embed-mean`` (the mean frame embedding, what
checkpoints before this recorded) stays available. Plus FROSTER's residual
feature distillation toward the frozen CLIP, frame by frame as the official
code applies it, ``w · (1 − cos(f + 0.1·MLP(f), f_frozen))`` with ``w = 2``.
The projector MLP trains with the encoder and is dropped afterwards. The
released STDD code computes the projector under ``no_grad`` (so its
distillation term carries no gradient); here it follows FROSTER: the term has
its gradient, to the encoder and the projector.

Every clip is decoded once before the first step, so a missing or broken
file stops the run there, in one line naming it. Every step samples
``batch_clips`` clips and one random frame per TSN segment (a function of the
seed and the step only) and preprocesses just those frames; decoded clips are
kept as uint8 up to ``hold_mb`` (training and validation each), the rest
decoded per batch, so memory is bounded whatever the dataset (a Kinetics clip
is hundreds of frames). Validation: top-1 on the seen classes' ``val`` clips
with the configured ``scorer`` over ``views`` test-time views (deterministic
segment centres, masks unpermuted), encoded ``batch_size`` frames at a time;
the finetune trainer keeps the best validated step. The output folder is a
backbone checkpoint (``--pretrained`` in every command) plus ``stdd.json``
(the space-time settings, read by ``video zero-shot``/``predict``), the CSV
log and ``result.json``.

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
from ..core.config import Config, Default, check_choice, check_range, defaults, option
from ..core.errors import ConfigError, DataError
from ..core.files import atomic_dir, atomic_write_json, quoted
from ..core.outputs import claim_output_dir, is_own_output, mark_output_dir
from ..finetune.checkpoint import write_backbone_checkpoint
from ..finetune.trainable import TrainableClip
from ..finetune.trainer import TrainerConfig, train
from .clipencode import frames_to_pixels
from .dataset import Sample, VideoDataset
from .decode import BadVideo, count_decoded, decode_frames, probe, random_segment_indices, segment_indices, unreadable
from .scoring import SCORERS, score_clips
from .stdd import SpaceTime, SpaceTimeConfig, install_space_time, remove_space_time, space_time_of

OUTPUT_KIND = "video-train"
STDD_FILE = "stdd.json"
STDD_FORMAT = "clip-adapter-video-stdd"
LOG_NAME = "video_train_log.csv"
LEGACY_SCORER = "embed-mean"  # what checkpoints written before the scorer was recorded trained and validated with
HOLD_BYTES = (
    1 << 30
)  # decoded uint8 frames kept across steps (1 GiB: every toy clip, ~13 Kinetics-length ones at 340x256)


@dataclass
class VideoTrainConfig(Config):
    """What ``video train`` learns from (the optimiser's settings are :class:`TrainerConfig`).

    ``distill_weight`` and ``residual`` are FROSTER's, ``scorer`` the official STDD training
    score without descriptions, ``shots`` the base-to-novel protocol's 16; ``frames`` 8 and
    ``batch_clips`` 8 have no recorded origin and were not checked on held-out data.
    """

    frames: int = option(8, "frames per clip (T)")
    batch_clips: int = option(8, "clips per step")
    shots: int = option(16, "training clips per seen class (0: all)")
    classes: tuple[str, ...] = option((), "seen classes (empty: the dataset's meta.json 'base', else all)")
    distill_weight: float = option(2.0, "weight of FROSTER's residual feature distillation (0: off)")
    residual: float = option(0.1, "projector residual ratio: f + residual * MLP(f)")
    unfreeze: str = option("image", "image, image-last-N or all (see finetune.trainable)")
    precision: str = option("auto", "autocast: auto (bf16 where fast), bf16 or fp32")
    scorer: str = option(
        "frame-mean",
        "the score trained and validated: frame-mean, prompt-match (STDD) or embed-mean; "
        "`video train` without it: prompt-match with --descriptions, as the official STDD "
        "training",
    )
    views: int = option(1, "test-time views per validation clip (segment offsets (v+0.5)/views)")
    batch_size: int = option(64, "frames per encoder batch when validating (whole clips, at least one)")
    hold_mb: int = option(
        HOLD_BYTES >> 20, "MiB of decoded uint8 frames kept across steps (past it: decoded per batch)"
    )

    def __post_init__(self) -> None:
        # "a, b" from the command line names "a" and "b": blanks around and between the names are not part of them.
        if isinstance(self.classes, (list, tuple)):
            self.classes = tuple(
                n.strip() if isinstance(n, str) else n for n in self.classes if not isinstance(n, str) or n.strip()
            )
        super().__post_init__()

    def validate(self) -> None:
        check_range("frames", self.frames, 1, 512)
        check_range("batch_clips", self.batch_clips, 1, 4096)
        check_choice("scorer", self.scorer, SCORERS)
        check_range("views", self.views, 1, 64)
        check_range("batch_size", self.batch_size, 1, 1 << 16)
        check_range("hold_mb", self.hold_mb, 0, 1 << 30)
        check_range("shots", self.shots, 0, 1_000_000)
        check_range("distill_weight", self.distill_weight, 0.0)
        check_range("residual", self.residual, 0.0)
        check_choice("precision", self.precision, ("auto", "bf16", "fp32"))


@dataclass
@defaults(
    steps=Default(200, "optimisation steps"),
    lr=Default(1e-4, "peak learning rate (AdamW)"),
    val_every=Default(25, "steps between validations (the best validated step is saved)"),
    seed=Default(1, "seed of the shots, batches and masks"),
)
class VideoTrainerConfig(TrainerConfig):
    """The optimiser of ``video train``: :class:`TrainerConfig` with the command's defaults.

    Its warm-up is a tenth of the steps, at most 20 (:meth:`with_warmup`); no recorded origin
    for the values, not checked on held-out data.

    Example:
        >>> VideoTrainerConfig(steps=50).with_warmup().warmup_steps
        5
    """

    def validate(self) -> None:
        super().validate()
        if self.lr <= 0:  # a zero rate would "train" for every step and save the start
            raise ConfigError(f"lr must be positive, got {self.lr}")

    def with_warmup(self) -> VideoTrainerConfig:
        """The same settings, warm-up fitted to the steps (a tenth, at most 20)."""
        return self.replace(warmup_steps=min(20, self.steps // 10))


class ClipSet:
    """Training or validation clips; each batch's frames preprocessed on demand from uint8 frames.

    Holding every clip as float32 pixels (the first version) needs ``frames × 3 × S × S × 4``
    bytes per clip — about 180 MB for a 300-frame Kinetics clip at 224 px. Here every clip is
    decoded once when the set is built (a missing, unreadable or corrupt file is a one-line error
    naming it, before the first step); its uint8 frames are kept while they fit in ``hold_bytes``
    (small datasets decode once, as before), the others are only counted and their sampled frames
    decoded per batch, through the same decode helpers. The pixels are the same either way, so
    training stays a function of the seed.

    Example:
        >>> # pixels, labels = ClipSet(samples, backbone, {0: 0, 3: 1}).batch([0, 1], 8, np.random.default_rng(0))
    """

    def __init__(
        self, samples: Sequence[Sample], backbone: Backbone, label_of: dict[int, int], hold_bytes: int = HOLD_BYTES
    ) -> None:
        self.backbone, self.hold_bytes, self.held_bytes = backbone, hold_bytes, 0
        self.paths = [str(s.path) for s in samples]
        self.labels = [label_of[s.label] for s in samples]
        self.infos = [probe(p) for p in self.paths]
        # Sampling starts from the header's count, as zero-shot's sampled_frames does (the same frames).
        self.counts = [info.num_frames for info in self.infos]
        self.held: dict[int, list[np.ndarray]] = {}  # clip → uint8 [H, W, 3] frames (sizes may change mid-stream)
        self.decoded = [self._check(i) for i in range(len(self.paths))]  # frames really there

    def __len__(self) -> int:
        return len(self.labels)

    def _check(self, i: int) -> int:
        """Decode clip ``i`` once (held if it fits, else only counted); return its number of decodable frames."""
        path, info = self.paths[i], self.infos[i]
        estimate = (
            self.counts[i] * info.width * info.height * 3
        )  # 0 when the header gives no size: measured after decoding
        if self.held_bytes + estimate <= self.hold_bytes and self.held_bytes < self.hold_bytes:
            decoded = decode_frames(path, range(self.counts[i]))
            frames = [decoded[j] for j in sorted(decoded)]
            size = sum(f.nbytes for f in frames)
            if frames and self.held_bytes + size <= self.hold_bytes:
                self.held[i], self.held_bytes = frames, self.held_bytes + size
            count = len(frames)
        else:
            count = count_decoded(path)
        if count < 1:  # probe counted packets; none of them decoded to a frame
            raise unreadable(Path(path), f"video {quoted(path)} holds no decodable frames", "no-frames")
        return count

    def batch(
        self, which: Sequence[int], frames: int, rng: np.random.Generator | None, views: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels ``[B·V·T, 3, S, S]`` (random segment frames with ``rng``, else the ``views`` segment centres)
        and labels."""
        chosen = [frames_to_pixels(self._frames(i, frames, rng, views), self.backbone) for i in which]
        return torch.cat(chosen), torch.tensor([self.labels[i] for i in which])

    def _frames(self, i: int, frames: int, rng: np.random.Generator | None, views: int) -> list[np.ndarray]:
        for _ in range(2):
            n = self.counts[i]
            if rng is not None:
                idx = random_segment_indices(n, frames, rng)
            else:
                idx = [j for v in range(views) for j in segment_indices(n, frames, v, views)]
            got = self._source(i, idx)
            if all(j in got for j in idx):
                return [got[j] for j in idx]
            # The header overstated the frame count: sample again from the frames really there
            # (held or not, the same draws: the run stays a function of the files and the seed).
            self.counts[i] = self.decoded[i]
        missing = min(j for j in idx if j not in got)
        raise BadVideo(
            f"video {quoted(self.paths[i])} changed since it was checked: frame {missing} no longer decodes",
            "corrupt-video",
        )

    def _source(self, i: int, idx: Sequence[int]) -> dict[int, np.ndarray]:
        """``{index: frame}`` of clip ``i`` at ``idx`` that exist: its held frames, else a decode."""
        if i in self.held:
            frames = self.held[i]
            return {j: frames[j] for j in idx if j < len(frames)}
        return decode_frames(self.paths[i], idx)


def seen_classes(dataset: VideoDataset, classes: Sequence[str]) -> list[str]:
    """The classes trained on: as given, else the dataset's ``base``, else all; each checked to exist."""
    names = (
        list(classes)
        or list(dataset.meta.get("base", []) if isinstance(dataset.meta, dict) else [])
        or list(dataset.classnames)
    )
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


def train_video(
    backbone: Backbone,
    dataset: VideoDataset,
    cfg: VideoTrainConfig,
    space: SpaceTimeConfig,
    trainer: TrainerConfig,
    out_dir: str | os.PathLike,
    prompts: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    overwrite: bool = False,
    inputs: Sequence[Any] = (),
    text_info: dict | None = None,
) -> dict:
    """Fine-tune ``backbone``'s image encoder on ``dataset``'s seen classes; write the checkpoint to ``out_dir``.

    ``prompts``: the seen classes' prompt embeddings ``[C_seen, P, D]`` with their boolean ``mask``
    ``[C_seen, P]`` (:func:`.zeroshot.text_side` builds both), or one feature per class ``[C_seen, D]``;
    ``cfg.scorer`` scores frames against them in training and validation. Returns the result dict (also
    ``result.json``).
    """
    out = claim_output_dir(out_dir, OUTPUT_KIND, overwrite=overwrite, inputs=list(inputs))
    names = seen_classes(dataset, cfg.classes)
    label_of = {dataset.classnames.index(n): i for i, n in enumerate(names)}
    prompts, mask = _prompt_table(prompts, mask, len(names))
    val_samples = [s for s in dataset.splits.get("val", []) if s.label in label_of]
    if not val_samples:  # the saved step is chosen on validation; without it, training could not be kept
        raise DataError(
            f"{dataset.name} has no validation clips of the seen classes (a val split chooses the saved step)"
        )
    view = TrainableClip(backbone, unfreeze=cfg.unfreeze, precision=cfg.precision)
    installed = space_time_of(view.model.visual)
    space = installed.cfg if installed else space
    teacher = _frozen_copy(view.model.visual)  # the frozen CLIP, frame by frame (never the space-time blocks)
    space_time = installed or install_space_time(view.model.visual, space)
    hold = cfg.hold_mb << 20
    train_set = ClipSet(
        few_shot(dataset.split("train"), list(label_of), cfg.shots, trainer.seed), backbone, label_of, hold
    )
    val_set = ClipSet(
        val_samples, backbone, label_of, hold
    )  # its own budget: validation clips are decoded every validation
    if len(train_set) == 0:
        raise DataError(f"no training clips of the seen classes in {dataset.name}")
    with torch.random.fork_rng():
        torch.manual_seed(trainer.seed)  # the projector's start is a function of the seed, not of what ran before
        projector = Projector(prompts.shape[-1], cfg.residual).to(view.device)
    module = nn.ModuleDict({"visual": view.model.visual, "projector": projector})
    loss_at = _loss_fn(view, teacher, space_time, projector, train_set, (prompts, mask), cfg, trainer.seed)
    validate = lambda: {"score": validation_accuracy(view, space_time, val_set, prompts, mask, cfg)}  # noqa: E731
    started = time.perf_counter()
    with torch.random.fork_rng():
        result = train(module, loss_at, trainer, validate, log_path=None, desc="video train")
    space_time.randomize = False
    record = {
        "format": STDD_FORMAT,
        "space_time": space.to_dict(),
        "train_config": cfg.to_dict(),
        "trainer": trainer.to_dict(),
        "seen_classes": names,
        "train_clips": len(train_set),
        "val_clips": len(val_samples),
        "text": text_info or {},
        "result": result.summary(),
        "clips_per_s": round(trainer.steps * cfg.batch_clips / max(time.perf_counter() - started, 1e-9), 2),
    }
    _write(out, overwrite, backbone, record, result)
    return record


def _prompt_table(
    prompts: torch.Tensor | None, mask: torch.Tensor | None, classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[C, P, D]`` prompts and their mask; a ``[C, D]`` table is one prompt per class. Refuses a wrong class count."""
    if prompts is None or prompts.dim() not in (2, 3) or prompts.shape[0] != classes:
        got = None if prompts is None else tuple(prompts.shape)
        raise ConfigError(f"prompt embeddings for the {classes} seen classes are needed, got {got}")
    if prompts.dim() == 2:
        prompts, mask = prompts[:, None, :], None
    if mask is None:
        mask = torch.ones(prompts.shape[:2], dtype=torch.bool)
    if tuple(mask.shape) != tuple(prompts.shape[:2]):
        raise ConfigError(f"prompt mask {tuple(mask.shape)} does not match the prompts {tuple(prompts.shape)}")
    return prompts.float(), mask.bool()


def _frozen_copy(visual: nn.Module) -> nn.Module:
    """A frozen copy of ``visual`` with plain blocks: deepcopy keeps the installed forwards,
    which call the live blocks."""
    copy_ = copy.deepcopy(visual)
    remove_space_time(copy_)
    for block in getattr(getattr(copy_, "transformer", None), "resblocks", []):
        block.__dict__.pop("forward", None)
    return copy_.eval().requires_grad_(False)


def _loss_fn(
    view: TrainableClip,
    teacher: nn.Module,
    space_time: SpaceTime,
    projector: Projector,
    data: ClipSet,
    text: tuple[torch.Tensor, torch.Tensor],
    cfg: VideoTrainConfig,
    seed: int,
):
    scale = view.logit_scale().detach()
    prompts, mask = (t.to(view.device) for t in text)

    def loss_at(step: int) -> torch.Tensor:
        rng = np.random.default_rng([seed, step])
        which = rng.choice(len(data), size=min(cfg.batch_clips, len(data)), replace=False)
        pixels, labels = data.batch(which, cfg.frames, rng)
        space_time.randomize = True
        try:
            with space_time.clips(cfg.frames):
                frames = F.normalize(view.encode_images(pixels).float(), dim=-1)  # [B·T, D]
        finally:
            space_time.randomize = False
        logits = score_clips(cfg.scorer, frames.view(len(labels), 1, cfg.frames, -1), prompts, mask, scale)
        loss = F.cross_entropy(logits, labels.to(logits.device))
        if cfg.distill_weight > 0:  # frame by frame, as the official code distils
            with torch.no_grad(), view.autocast():
                target = teacher(pixels.to(view.device)).float()
            loss = loss + cfg.distill_weight * distill_loss(frames, target, projector)
        return loss

    return loss_at


def validation_logits(
    view: TrainableClip,
    space_time: SpaceTime,
    data: ClipSet,
    prompts: torch.Tensor,
    mask: torch.Tensor,
    cfg: VideoTrainConfig,
) -> torch.Tensor:
    """Scores ``[N, C]`` (unscaled) of ``data`` with ``cfg.scorer`` over ``cfg.views`` views,
    ``cfg.batch_size`` frames per batch.

    The frames and scores are those ``video zero-shot`` computes for the same clips with the same
    ``--frames``, ``--views`` and scorer (its ``--scorer`` defaults to the one recorded in the
    checkpoint's ``stdd.json``), so then the validated number is the one that evaluation reports.
    """
    per_batch = max(1, cfg.batch_size // (cfg.frames * cfg.views))  # whole clips: the attention spans a clip's frames
    out = []
    for start in range(0, len(data), per_batch):
        which = range(start, min(start + per_batch, len(data)))
        pixels, _ = data.batch(which, cfg.frames, None, cfg.views)
        with space_time.clips(cfg.frames):
            feats = view.encode_images(pixels).float().cpu()
        out.append(
            score_clips(cfg.scorer, feats.view(len(which), cfg.views, cfg.frames, -1), prompts.cpu(), mask.cpu(), 1.0)
        )
    return torch.cat(out)


def validation_accuracy(
    view: TrainableClip,
    space_time: SpaceTime,
    data: ClipSet,
    prompts: torch.Tensor,
    mask: torch.Tensor,
    cfg: VideoTrainConfig,
) -> float:
    """Top-1 of :func:`validation_logits`."""
    logits = validation_logits(view, space_time, data, prompts, mask, cfg)
    return int((logits.argmax(1) == torch.tensor(data.labels)).sum()) / len(data)


def _write(out: Path, overwrite: bool, backbone: Backbone, record: dict, result) -> None:
    import csv
    import io

    from ..core.files import atomic_write_bytes

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
    from ..core.files import read_json

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
    seen = meta.get("seen_classes", [])
    # A string would be read letter by letter, a nested list would crash the overlap check: refuse both here.
    if not isinstance(seen, list) or not all(isinstance(n, str) for n in seen):
        raise ConfigError(f"{file}: seen_classes must be a list of class names (strings), got {seen!r:.80}")
    train_cfg = meta.get("train_config", {})
    if not isinstance(train_cfg, dict):
        raise ConfigError(f"{file}: train_config must be a JSON object, got {train_cfg!r:.80}")
    if train_cfg.get("scorer", LEGACY_SCORER) not in SCORERS:
        raise ConfigError(
            f"{file}: train_config.scorer must be one of {', '.join(SCORERS)}, got {train_cfg['scorer']!r:.80}"
        )
    return meta


def training_scorer(described: bool) -> str:
    """The official STDD training score: prompt-level matching over description prompts, else frame-averaged logits.

    Example:
        >>> training_scorer(True), training_scorer(False)
        ('prompt-match', 'frame-mean')
    """
    return "prompt-match" if described else "frame-mean"


def recorded_scorer(meta: dict) -> str:
    """The scorer a ``video train`` checkpoint was validated with (its ``stdd.json``, as :func:`read_stdd` returns it).

    Files written before the scorer was recorded were validated on the mean frame embedding.

    Example:
        >>> recorded_scorer({"train_config": {"scorer": "prompt-match"}}), recorded_scorer({})
        ('prompt-match', 'embed-mean')
    """
    return meta.get("train_config", {}).get("scorer", LEGACY_SCORER)
