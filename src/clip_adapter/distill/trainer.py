"""Distil a frozen teacher CLIP into a student: ``L = L_CLIP + Σ λ_k·L_k`` (CLIP-KD) on image–caption batches.

The recipe is the toy pretraining's (AdamW, linear warm-up then cosine,
weight decay on matrices only, logit scale clamped at 100: the one encoder
loop, :func:`clip_adapter.core.optim.train_encoder`), so a student trained with the
CLIP loss alone is exactly a small toy pretraining run, and the KD runs
differ from it by their loss only. The KD module's projections and ICL scale
train with AdamW's default weight decay (0.01), as in the official code,
where they form a third parameter group with no decay set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from ..backbones import Backbone
from ..core.config import Default, check_choice, check_range, defaults, option
from ..core.errors import ConfigError
from ..core.files import atomic_write_json
from ..core.optim import CsvLog, StepsOptimConfig, train_encoder
from ..core.threads import torch_threads
from .data import Batch
from .losses import ICL_SCALES, KD_LOSSES, PAPER_WEIGHTS, KDLoss
from .students import Student, pixels_for

LOG_NAME, RESULT_NAME = "distill_log.csv", "distill.json"
KD_DECAY = 0.01  # torch AdamW's default, which the official code leaves the KD parameters at


@dataclass
@defaults(
    steps=400,
    warmup_steps=50,
    weight_decay=Default(0.05, "AdamW weight decay on the student's weight matrices"),
    seed=Default(0, "seed of the student's initialisation and of the data"),
)
class DistillConfig(StepsOptimConfig):
    """Settings of ``clip-adapter distill`` (λ defaults are the paper's).

    ``icl_scale`` follows the official code; lr, warm-up and weight decay are the toy
    pretraining's, and ``steps`` 400, ``batch_size`` 64 have no recorded origin (the
    benchmark runs 200 steps); not checked on held-out data.
    """

    losses: tuple[str, ...] = option(
        (), "KD losses added to the CLIP loss: any of fd, icl, crd (empty: the CLIP loss alone)"
    )
    clip_weight: float = option(1.0, "weight of the student's own CLIP loss")
    fd_weight: float = option(PAPER_WEIGHTS["fd"], "λ_FD (on a per-element MSE of normalised embeddings)")
    icl_weight: float = option(PAPER_WEIGHTS["icl"], "λ_ICL")
    crd_weight: float = option(PAPER_WEIGHTS["crd"], "λ_CRD")
    icl_scale: str = option(
        "code", "ICL logit scale: code (raw learnable multiplier from 2.66) or paper (exp, from 1/0.07)"
    )
    batch_size: int = option(64, "image-caption pairs per step")
    workers: int = option(1, "toy stream: 1 renders batches ahead in a worker process, 0 in the loop (same batches)")

    def validate(self) -> None:
        super().validate()
        for name in self.losses:
            check_choice("losses", name, KD_LOSSES)
        if len(set(self.losses)) != len(self.losses):
            raise ConfigError(f"losses lists a loss twice: {','.join(self.losses)}")
        check_choice("icl_scale", self.icl_scale, ICL_SCALES)
        for name in ("clip_weight", "fd_weight", "icl_weight", "crd_weight"):
            check_range(name, getattr(self, name), 0.0)
        check_range("batch_size", self.batch_size, 2)
        check_range("workers", self.workers, 0, 1)

    @property
    def label(self) -> str:
        """``clip`` or ``clip+fd+icl``…: what the student was trained with."""
        return "+".join(("clip", *self.losses)) if self.clip_weight else "+".join(self.losses)


class Teacher:
    """A frozen backbone's embeddings of raw batches; with ``memo``, each ``step``'s are computed once.

    The memo serves runs that share the data (same seed and batch size): a
    benchmark comparing losses pays the teacher's forward pass once.
    """

    def __init__(self, backbone: Backbone, memo: bool = False) -> None:
        self.backbone, self.memo = backbone, ({} if memo else None)
        self.embed_dim, self.logit_scale = backbone.embed_dim, float(backbone.logit_scale)

    def embed(self, step: int, images: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        key = (step, tuple(texts), len(images))
        if self.memo is not None and key in self.memo:
            return self.memo[key]
        # The student trains on the CPU: bring the teacher's outputs there (a CUDA teacher returns CUDA tensors).
        out = (
            self.backbone.encode_images(pixels_for(images, self.backbone.preprocess)).float().cpu(),
            self.backbone.encode_texts(texts).float().cpu(),
        )
        if self.memo is not None:
            self.memo[key] = out
        return out


@dataclass
class DistillRun:
    """What :func:`distill` returns: the trained student, its log and the measured facts."""

    student: Student
    log: list[dict[str, float]]
    info: dict[str, Any]


def distill(
    teacher: Teacher, student: Student, cfg: DistillConfig, batches: Iterable[Batch], log_dir: Path | None = None
) -> DistillRun:
    """Train ``student`` for ``cfg.steps`` on ``batches`` with the CLIP loss plus ``cfg.losses``.

    Example:
        >>> from clip_adapter.backbones import create_backbone
        >>> from clip_adapter.distill.data import toy_batches
        >>> cfg = DistillConfig(losses=("fd",), steps=2, batch_size=4, workers=0)
        >>> run = distill(Teacher(create_backbone("toy", precision="fp32")), Student("toy-tiny"), cfg,
        ...               toy_batches(0, 2, 4, 0))
        >>> len(run.log), sorted(run.log[-1])[:3]
        (2, ['clip', 'fd', 'images_per_s'])
    """
    with torch_threads(cfg.threads or None):
        return _train(teacher, student, cfg, batches, log_dir)


def _kd_module(cfg: DistillConfig, student: Student, teacher: Teacher) -> KDLoss:
    torch.manual_seed(cfg.seed)  # the projections start the same in every run of a seed
    weights = {"fd": cfg.fd_weight, "icl": cfg.icl_weight, "crd": cfg.crd_weight}
    return KDLoss(cfg.losses, student.embed_dim, teacher.embed_dim, weights, cfg.clip_weight, cfg.icl_scale)


def _train(
    teacher: Teacher, student: Student, cfg: DistillConfig, batches: Iterable[Batch], log_dir: Path | None
) -> DistillRun:
    kd = _kd_module(cfg, student, teacher)
    tick, pairs = 0.0, 0

    def loss_at(batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        nonlocal tick, pairs
        tick, pairs = time.perf_counter(), len(batch[2])
        return _loss(teacher, student, kd, *batch)

    def row(step: int, total: float, lr: float, parts: dict[str, float]) -> dict[str, float]:
        return {
            "step": step,
            "total": total,
            **parts,
            "lr": lr,
            "logit_scale": float(student.log_logit_scale.detach().exp()),
            "images_per_s": pairs / (time.perf_counter() - tick),
        }

    log = CsvLog(
        log_dir / LOG_NAME if log_dir is not None else None, fmt=".6g"
    )  # every column: step, total, clip, each KD loss, lr, …
    result = train_encoder(
        student.model,
        loss_at,
        cfg,
        batches=batches,
        extra_groups=[{"params": list(kd.parameters()), "weight_decay": KD_DECAY}],
        after_step=student.clamp_logit_scale,
        log=log,
        row=row,
        desc=f"distill {cfg.label}",
        hint="lower --lr or the λ weights",
    )
    rows = result.history
    info = {
        "label": cfg.label,
        "wall_time_s": round(result.wall_time_s, 1),
        "steps_run": len(rows),
        "final_loss": rows[-1]["total"] if rows else None,
    }
    return DistillRun(student, rows, info)


def _loss(
    teacher: Teacher, student: Student, kd: KDLoss, step: int, images: Any, texts: list[str]
) -> tuple[torch.Tensor, dict[str, float]]:
    t_img, t_txt = teacher.embed(step, images, texts) if kd.losses else (None, None)
    tokens = student.tokenize(texts)
    _, groups = torch.unique(tokens, dim=0, return_inverse=True)  # identical captions are all positives
    s_img = student.encode_image(pixels_for(images, student.preprocess))
    s_txt = student.encode_text(tokens)
    return kd(s_img, s_txt, student.log_logit_scale.exp(), t_img, t_txt, teacher.logit_scale, groups)


def save_student(
    out: Path, run: DistillRun, cfg: DistillConfig, teacher: Backbone, extra: dict[str, Any]
) -> tuple[str, str]:
    """Write the student checkpoint and ``distill.json`` into ``out``; returns ``(--backbone, --pretrained)`` for it."""
    student = run.student
    record = {
        "distill_config": cfg.to_dict(),
        "teacher": teacher.describe(),
        "student": student.spec,
        "parameters": {"student": student.parameter_count()},
        **run.info,
        **extra,
    }
    saved = student.save(out, {"command": extra.get("command", "clip-adapter distill"), "distill": record})
    backbone, pretrained = student.backbone_args(saved)
    relative = "." if saved == out else saved.name  # the folder may move (it is written beside its final place)
    atomic_write_json(
        out / RESULT_NAME, {**record, "student_backbone": {"backbone": backbone, "pretrained_in_folder": relative}}
    )
    return backbone, pretrained
