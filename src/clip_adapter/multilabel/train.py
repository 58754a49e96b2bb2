"""Training a multi-label head on cached features: ``L_ASL + α·L_MFI`` (MFI for Unmix-CLIP only)."""

from __future__ import annotations

import math

import torch

from ..core.optim import head_optimizer, train_epochs
from .config import MultiLabelConfig
from .heads import TextHead, UnmixHead
from .losses import asl_loss, mfi_loss


def head_loss(
    head: TextHead, features: torch.Tensor, targets: torch.Tensor, cfg: MultiLabelConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of one batch and its parts.

    Example:
        >>> from clip_adapter.multilabel.heads import build_head
        >>> head = build_head(MultiLabelConfig(), torch.eye(2, 4), torch.ones(2, 4), 10.0)
        >>> loss, parts = head_loss(head, torch.randn(3, 5, 4), torch.ones(3, 2), MultiLabelConfig())
        >>> sorted(parts)
        ['asl', 'mfi']
    """
    asl = asl_loss(head(features), targets, cfg.gamma_pos, cfg.gamma_neg, cfg.asl_clip)
    if not isinstance(head, UnmixHead):
        return asl, {"asl": asl.item()}
    mfi = mfi_loss(head.class_text(), cfg.mfi_offdiag)
    return asl + cfg.mfi_weight * mfi, {"asl": asl.item(), "mfi": mfi.item()}


def train_head(
    head: TextHead, features: torch.Tensor, targets: torch.Tensor, cfg: MultiLabelConfig
) -> list[dict[str, float]]:
    """Train ``head`` in place (AdamW, cosine decay, seeded batch order); returns one record per epoch.

    A head without trainable weights (zero-shot) or ``epochs=0`` returns ``[]``.
    A non-finite loss raises TrainingError naming the epoch.

    Example:
        >>> from clip_adapter.multilabel.heads import build_head
        >>> cfg = MultiLabelConfig(method="clip-adapter", epochs=2)
        >>> head = build_head(cfg, torch.eye(2, 4), torch.ones(2, 4), 10.0)
        >>> len(train_head(head, torch.randn(6, 4), torch.ones(6, 2), cfg))
        2
    """
    params = [p for p in head.parameters() if p.requires_grad]
    if not params or cfg.epochs == 0 or len(features) == 0:
        return []
    steps_per_epoch = math.ceil(len(features) / cfg.batch_size)
    opt = head_optimizer(params, cfg.learning_rate, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    records: list[dict[str, float]] = []

    def loss_at(batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, parts = head_loss(head, features[batch], targets[batch], cfg)
        return loss, {k: torch.tensor(v, dtype=torch.float64) for k, v in parts.items()}

    def after_epoch(epoch: int, means: dict[str, torch.Tensor]) -> None:
        records.append({"epoch": epoch + 1, **{k: round(float(v), 6) for k, v in means.items()}})

    head.train()
    train_epochs(
        params,
        opt,
        cfg.epochs,
        lambda epoch: torch.randperm(len(features), generator=gen).split(cfg.batch_size),
        loss_at,
        sched,
        after_epoch=after_epoch,
        hint=f"try a smaller lr (now {cfg.learning_rate})",
    )
    head.eval()
    return records
