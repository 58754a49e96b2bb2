"""Distil an adapted teacher (backbone + CLIP-Adapter) into an adapted student (student backbone + CLIP-Adapter).

The teacher artifact labels every training image of the dataset softly (its
adapted logits; no labels are read), and a CLIP-Adapter of the same
configuration (variant, α/β, reduction) on the student's features learns to
match them: ``KL(softmax(z_T/T) ‖ softmax(z_S/T))·T²`` (Hinton et al.), with
AdamW and a cosine schedule. The student's class embeddings are its own
prompt embeddings (the teacher's templates, ensembled). The result is an
ordinary ``clip-adapter`` artifact on the student backbone: ``eval``,
``predict``, ``serve`` take it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..artifacts import Classifier
from ..backbones import Backbone
from ..core.config import Default, check_range, defaults, option
from ..core.errors import ArtifactError, DataError
from ..core.optim import EpochsOptimConfig, head_optimizer, train_epochs, warmup_cosine
from ..core.threads import torch_threads
from ..data import load_dataset
from ..features import default_cache_dir, extract_images, image_store, prompt_embeddings
from ..methods.clip_adapter import ClipAdapterHead


@dataclass
@defaults(
    epochs=Default(60, "passes over the dataset's training images"),
    lr=Default(1e-3, "peak learning rate (AdamW, cosine to zero)"),
    weight_decay=Default(1e-4, "AdamW weight decay"),
)
class AdapterDistillConfig(EpochsOptimConfig):
    """How the student's adapter learns from the teacher's adapted logits.

    Epochs, lr, batch size and weight decay are CLIP-Adapter's fast recipe as it runs on small
    sets (:mod:`clip_adapter.methods.clip_adapter`); ``temperature`` 1 has no recorded origin.
    Not checked on held-out data.
    """

    temperature: float = option(1.0, "softmax temperature T of the KL (the loss is scaled by T²)")
    seed: int = option(1, "seed of the adapter's initialisation and the batch order")

    def validate(self) -> None:
        super().validate()
        check_range("temperature", self.temperature, 1e-3)


def class_embeddings(
    backbone: Backbone, classnames: list[str], templates: tuple[str, ...], cache_dir: Any
) -> torch.Tensor:
    """L2-normalised, template-ensembled prompt embeddings ``[C, D]`` (what zero-shot and CLIP-Adapter use)."""
    raw = prompt_embeddings(backbone, classnames, templates, cache_dir).view(len(classnames), len(templates), -1)
    return F.normalize(F.normalize(raw, dim=-1).mean(1), dim=-1)


def split_features(backbone: Backbone, paths: list[Path], cache_dir: Any) -> torch.Tensor:
    """Centre-view features of ``paths`` through the feature cache."""
    feats, _, _ = extract_images(
        backbone, paths, image_store(backbone, cache_dir), None, 0, 64, False, "distill", bad_hint=None
    )  # distill has no --skip-bad
    return feats


def distill_adapter(
    teacher: Classifier,
    teacher_backbone: Backbone,
    student_backbone: Backbone,
    data: str | Path,
    cfg: AdapterDistillConfig | None = None,
    cache_dir: Any = None,
) -> tuple[Classifier, dict[str, Any]]:
    """A CLIP-Adapter classifier on ``student_backbone`` trained to reproduce ``teacher`` on ``data``'s training images.

    Example:
        >>> # clf, info = distill_adapter(Classifier.from_pretrained("runs/t"), teacher_bb, student_bb, "photos")
        >>> # clf.save_pretrained("runs/student")
    """
    cfg = cfg or AdapterDistillConfig()
    if teacher.method != "clip-adapter" or not isinstance(teacher.head, ClipAdapterHead):
        raise ArtifactError(
            f"the teacher artifact is a {teacher.method} classifier; "
            "distillation into an adapter needs a clip-adapter one"
        )
    dataset = load_dataset(data)
    if dataset.classnames != teacher.classnames:
        raise DataError(
            f"dataset {data} has classes {dataset.classnames[:3]}… "
            f"but the teacher artifact has {teacher.classnames[:3]}…"
        )
    paths = [s.path for s in dataset.split("train")]
    if not paths:
        raise DataError(f"dataset {data} has no training images to distil on")
    cache_dir = cache_dir or default_cache_dir()
    with torch.no_grad():
        targets = teacher.logits(split_features(teacher_backbone, paths, cache_dir))
    feats = split_features(student_backbone, paths, cache_dir)
    head = _student_head(teacher, student_backbone, cache_dir, cfg.seed)
    with torch_threads(1):  # a head on cached features: one thread is fastest (see clip_adapter.core.threads)
        losses = _fit(head, feats, targets, cfg)
    selection = {
        "distilled_from": teacher.backbone.get("id"),
        "teacher_method": teacher.method,
        "distill_config": cfg.to_dict(),
    }
    clf = Classifier(
        "clip-adapter", head.eval(), list(teacher.classnames), teacher.templates, student_backbone.describe(), selection
    )
    return clf, {"train_images": len(paths), "first_loss": losses[0], "final_loss": losses[-1]}


def _student_head(teacher: Classifier, backbone: Backbone, cache_dir: Any, seed: int) -> ClipAdapterHead:
    torch.manual_seed(seed)
    meta = {
        "num_classes": len(teacher.classnames),
        "embed_dim": backbone.embed_dim,
        "logit_scale": float(backbone.logit_scale),
    }
    head = ClipAdapterHead(teacher.head.config, meta)
    with torch.no_grad():
        head.text.copy_(class_embeddings(backbone, list(teacher.classnames), teacher.templates, cache_dir))
    return head


def _fit(head: ClipAdapterHead, feats: torch.Tensor, targets: torch.Tensor, cfg: AdapterDistillConfig) -> list[float]:
    params = [p for p in head.parameters() if p.requires_grad]
    if not params:  # a zero-shot-like head (nothing to train) is the student's zero-shot
        return [float("nan")]
    opt = head_optimizer(params, cfg.lr, cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    total = cfg.epochs * math.ceil(len(feats) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, total, 0))  # cosine to zero
    t, losses = cfg.temperature, []

    def loss_at(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        student = F.log_softmax(head(feats[idx]) / t, 1)
        loss = F.kl_div(student, F.softmax(targets[idx] / t, 1), reduction="batchmean") * t * t
        losses.append(float(loss.detach()))
        return loss, {}

    head.train()
    train_epochs(
        params,
        opt,
        cfg.epochs,
        lambda epoch: torch.randperm(len(feats), generator=gen).split(cfg.batch_size),
        loss_at,
        sched,
    )
    return losses
