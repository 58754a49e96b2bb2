"""The one training loop for encoders: AdamW, warm-up + cosine, clipping, CSV log, validation-based selection.

It knows nothing of any recipe: a recipe hands it the module whose
``requires_grad`` parameters train, a ``loss_at(step)`` that builds the
step's batch and returns the loss (the batch of step ``k`` must depend only
on the seed and ``k``, so a run is reproducible), and a ``validate()`` that
scores the current weights on held-out data (higher is better). Validation
runs before the first step (step 0 = the weights as given), every
``val_every`` steps and after the last; the weights of the best-scoring
validation step are restored at the end, so a run that never helps returns
what it was given and says so (``selected_step`` 0).

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

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..config import Config, check_range, option
from ..errors import ConfigError, TrainingError
from ..io import atomic_write_bytes
from ..progress import progress
from ..toyworld.pretrain import clip_adamw, lr_at

LOG_FLUSH_EVERY = 25


@dataclass
class TrainerConfig(Config):
    """Optimisation settings shared by every fine-tuning recipe."""

    steps: int = option(300, "optimisation steps")
    lr: float = option(2e-5, "peak learning rate (AdamW)")
    warmup_steps: int = option(20, "linear warm-up steps before the cosine decay")
    weight_decay: float = option(0.1, "AdamW weight decay on weight matrices")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0: no clipping)")
    val_every: int = option(50, "steps between validations (the best validated step is saved)")
    seed: int = option(0, "seed of initialisation and batches (training data seeds stay below 1000)")
    threads: int = option(1, "torch CPU threads while training (0: leave as is)")

    def validate(self) -> None:
        check_range("steps", self.steps, 1)
        check_range("lr", self.lr, 0.0)
        check_range("warmup_steps", self.warmup_steps, 0)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("grad_clip", self.grad_clip, 0.0)
        check_range("val_every", self.val_every, 1)
        check_range("seed", self.seed, 0, 2**32 - 1)
        check_range("threads", self.threads, 0, 1024)


@dataclass
class TrainResult:
    """What a run did: the step whose weights were kept, its validation scores, the history."""

    selected_step: int
    selected: dict[str, float]
    initial: dict[str, float]
    history: list[dict[str, float]] = field(repr=False)
    wall_time_s: float = 0.0

    def summary(self) -> dict:
        return {"selected_step": self.selected_step, "validation_selected": self.selected,
                "validation_initial": self.initial, "wall_time_s": round(self.wall_time_s, 1)}


def make_optimizer(module: nn.Module, cfg: TrainerConfig) -> torch.optim.Optimizer:
    """:func:`~clip_adapter.toyworld.pretrain.clip_adamw` over the trainable parameters; refuses a fully frozen module."""
    if not any(p.requires_grad for p in module.parameters()):
        raise ConfigError("nothing to train: every parameter is frozen (check unfreeze)")
    return clip_adamw(module, cfg.lr, cfg.weight_decay)


def train(
    module: nn.Module,
    loss_at: Callable[[int], torch.Tensor],
    cfg: TrainerConfig,
    validate: Callable[[], dict[str, float]] | None = None,
    log_path: Path | None = None,
    after_step: Callable[[], None] | None = None,
    desc: str = "finetune",
) -> TrainResult:
    """Train ``module``'s trainable parameters; restore the best-validated ones; return what happened."""
    torch.manual_seed(cfg.seed)
    opt = make_optimizer(module, cfg)
    params = [p for group in opt.param_groups for p in group["params"]]
    check = validate or (lambda: {"score": 0.0})
    log = _Log(log_path)
    start = time.perf_counter()
    initial = _scores(check, 0, log)
    best_step, best, best_state = 0, initial, _snapshot(params)
    with progress(total=cfg.steps, desc=desc, unit="step") as bar:
        for step in range(cfg.steps):
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = loss_at(step)
            if not torch.isfinite(loss):
                raise TrainingError(f"fine-tuning loss became {float(loss)} at step {step}; lower the learning rate (--set lr=...)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = float(nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf))
            opt.step()
            if after_step:
                after_step()
            log.add({"step": step + 1, "loss": round(float(loss.detach()), 5), "lr": f"{lr:.4g}", "grad_norm": round(norm, 4)})
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            done = step + 1
            if done % cfg.val_every == 0 or done == cfg.steps:
                scores = _scores(check, done, log)
                if scores["score"] > best["score"]:
                    best_step, best, best_state = done, scores, _snapshot(params)
            if done % LOG_FLUSH_EVERY == 0:
                log.flush()
    _restore(params, best_state)
    log.flush()
    return TrainResult(best_step, best, initial, log.rows, time.perf_counter() - start)


def _scores(check: Callable[[], dict[str, float]], step: int, log: "_Log") -> dict[str, float]:
    with torch.no_grad():
        scores = {k: float(v) for k, v in check().items()}
    if "score" not in scores:
        raise ValueError("validate() must return a 'score'")
    log.add({"step": step, **{f"val_{k}": round(v, 5) for k, v in scores.items()}})
    return scores


def _snapshot(params: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _restore(params: list[nn.Parameter], state: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, saved in zip(params, state):
            p.copy_(saved)


class _Log:
    """Rows of the CSV log (columns: every key seen, in order of first appearance), rewritten atomically."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.rows, self.columns = path, [], {}

    def add(self, row: dict) -> None:
        self.rows.append(row)
        for key in row:
            self.columns.setdefault(key, None)

    def flush(self) -> None:
        if self.path is None:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(self.columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.path, text.getvalue().encode())
