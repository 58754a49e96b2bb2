"""Fine-tuning's settings and entry to the one encoder loop (:func:`clip_adapter.core.optim.train_encoder`).

The loop (AdamW, warm-up + cosine, clipping, CSV log, validation-based selection) knows nothing of any recipe:
a recipe hands it the module whose ``requires_grad`` parameters train, a ``loss_at(step)`` that builds the
step's batch and returns the loss (the batch of step ``k`` must depend only
on the seed and ``k``, so a run is reproducible), and a ``validate()`` that
scores the current weights on held-out data (higher is better). Validation
runs before the first step (step 0 = the weights as given), every
``val_every`` steps and after the last; the weights of the best-scoring
validation step are restored at the end, so a run that never helps returns
what it was given and says so (``selected_step`` 0). Without ``validate()`` the last step's
weights are kept (``selected_step`` = ``steps``).

Example:
    >>> from torch import nn
    >>> w = nn.Linear(1, 1, bias=False)
    >>> _ = nn.init.zeros_(w.weight)
    >>> cfg = TrainerConfig(steps=100, lr=0.2, warmup_steps=0, weight_decay=0.0, val_every=10)
    >>> loss_at = lambda step: ((w.weight - 3.0) ** 2).sum()
    >>> result = train(w, loss_at, cfg, validate=lambda: {"score": -abs(w.weight.item() - 3.0)})
    >>> result.selected_step, round(w.weight.item(), 1)
    (100, 3.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..core.config import Default, check_range, defaults, option
from ..core.errors import ConfigError
from ..core.optim import CsvLog, StepsOptimConfig, TrainResult, train_encoder

__all__ = ["TrainResult", "TrainerConfig", "train"]


@dataclass
@defaults(
    lr=2e-5,
    weight_decay=0.1,
    seed=Default(0, "seed of initialisation and batches (training data seeds stay below 1000)"),
)
class TrainerConfig(StepsOptimConfig):
    """Optimisation settings shared by every fine-tuning recipe (the optimiser's fields are
    :class:`StepsOptimConfig`'s).

    The defaults' origin is not recorded (each recipe sets its own steps and lr);
    they were not checked on held-out data.
    """

    grad_clip: float = option(1.0, "clip the gradient norm to this (0: no clipping)")
    val_every: int = option(50, "steps between validations (the best validated step is saved)")

    def validate(self) -> None:
        super().validate()
        check_range("grad_clip", self.grad_clip, 0.0)
        check_range("val_every", self.val_every, 1)


def train(
    module: nn.Module,
    loss_at: Callable[[int], torch.Tensor],
    cfg: TrainerConfig,
    validate: Callable[[], dict[str, float]] | None = None,
    log_path: Path | None = None,
    after_step: Callable[[], None] | None = None,
    desc: str = "finetune",
) -> TrainResult:
    """Train ``module``'s trainable parameters; restore the best-validated ones (the last without ``validate``)."""
    if not any(p.requires_grad for p in module.parameters()):
        raise ConfigError("nothing to train: every parameter is frozen (check unfreeze)")
    return train_encoder(
        module,
        loss_at,
        cfg,
        seed=cfg.seed,
        validate=validate,
        val_every=cfg.val_every,
        grad_clip=cfg.grad_clip,
        after_step=after_step,
        log=CsvLog(log_path),
        desc=desc,
        hint="lower the learning rate (--set lr=...)",
    )
