"""Optimisation, in one place: the optimisers, the warm-up + cosine schedule, the finite check, the CSV log, the
encoder loop.

Two optimiser builders, because the two kinds of training differ:

- :func:`make_optimizer` (heads on cached features): AdamW with torch's betas,
  or SGD with momentum, over a flat list of parameters that all decay alike
  (:func:`head_optimizer` is the same without a config);
- :func:`clip_adamw` (encoders: fine-tuning, toy pretraining, distillation):
  CLIP's AdamW (betas 0.9/0.98, eps 1e-6) with weight decay on weight matrices
  only (norms, biases, embeddings and the logit scale stay free).

Every config that trains inherits its optimiser's fields from one of three
configs declared here, and changes only their defaults (:func:`config.defaults`):
:class:`OptimConfig` (learning rate, weight decay), :class:`StepsOptimConfig`
(an encoder loop's steps, warm-up, seed, threads) and :class:`EpochsOptimConfig`
(a head's epochs and batch).

The schedule is one warm-up then a cosine decay, :func:`warmup_cosine` in
steps; :func:`lr_schedule` steps it per batch or per epoch (Dassl's per-epoch
form is :func:`dassl_epoch_factor`), and :func:`lr_at` is the encoders' form
(a linear warm-up that reaches the peak at its last step).

:func:`train_encoder` is the one loop every encoder trains through: a
``loss_at(batch)`` per step, extra parameter groups, optional gradient
clipping, a per-step CSV log (:class:`CsvLog`) and an optional validator. With
a validator the best-validated weights are restored at the end (step 0 = the
weights as given); without one the weights of the last step are kept.

:func:`train_epochs` is the one loop every head trains through (epochs of batches over cached
features, a loss and its parts per batch, hooks after each epoch).

A plumbing module: it imports torch and the package's config, errors, io and
progress modules only.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import torch
from torch import nn

from .config import Config, Default, check_range, check_seed, defaults, option
from .errors import TrainingError
from .files import atomic_write_bytes
from .progress import progress

LOG_FLUSH_EVERY = 25  # steps between atomic rewrites of an encoder loop's CSV log
SCHEDULE_UNITS = ("step", "epoch")

# --------------------------------------------------------------------------------------------- configs


@dataclass
class OptimConfig(Config):
    """What every training loop's optimiser has: a learning rate and a weight decay.

    Example:
        >>> OptimConfig(lr=0.1).to_dict()
        {'lr': 0.1, 'weight_decay': 0.0001}
    """

    lr: float = option(1e-3, "peak learning rate")
    weight_decay: float = option(1e-4, "weight decay")

    def validate(self) -> None:
        check_range("lr", self.lr, 0.0)
        check_range("weight_decay", self.weight_decay, 0.0)


@dataclass
@defaults(
    lr=Default(5e-4, "peak learning rate (AdamW)"), weight_decay=Default(0.05, "AdamW weight decay on weight matrices")
)
class StepsOptimConfig(OptimConfig):
    """An encoder loop's optimiser (:func:`train_encoder`): CLIP's AdamW, warm-up then cosine, in steps.

    Example:
        >>> StepsOptimConfig(steps=0)
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: steps must be in [1, inf], got 0
    """

    steps: int = option(300, "optimisation steps")
    warmup_steps: int = option(20, "linear warm-up steps before the cosine decay")
    seed: int = option(0, "seed of initialisation and data")
    threads: int = option(1, "torch CPU threads while training (0: leave as is)")

    def validate(self) -> None:
        super().validate()
        check_range("steps", self.steps, 1)
        check_range("warmup_steps", self.warmup_steps, 0)
        check_seed("seed", self.seed)
        check_range("threads", self.threads, 0, 1024)


@dataclass
class EpochsOptimConfig(OptimConfig):
    """A head's optimiser on cached features: epochs over the training images, in batches.

    Example:
        >>> EpochsOptimConfig(epochs=3).to_dict()["epochs"]
        3
    """

    epochs: int = option(50, "passes over the training images")
    batch_size: int = option(32, "images per step")

    # Zero epochs would silently save an untrained head; a config whose untrained state is
    # meaningful (a prompt initialised from a phrase, zero-shot multi-label) lowers this to 0.
    min_epochs: ClassVar[int] = 1
    min_batch_size: ClassVar[int] = 1  # CLIP-Adapter lowers it to 0 ("auto")

    def validate(self) -> None:
        super().validate()
        check_range("epochs", self.epochs, self.min_epochs, 100_000)
        check_range("batch_size", self.batch_size, self.min_batch_size, 1_000_000)


# --------------------------------------------------------------------------------------------- optimisers


def head_optimizer(
    params: Sequence[nn.Parameter],
    lr: float,
    weight_decay: float,
    name: str = "adamw",
    momentum: float = 0.9,
    eps: float = 1e-8,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """AdamW (torch's betas; decoupled decay) or SGD with momentum (L2 decay) over ``params``, all decayed alike.

    ``fused``: torch's fused AdamW kernel where it has one (one pass over a large state: 14 ms instead of 96 a
    step over 16M parameters), else the default one; off by default, since it may differ in the last bits.

    Example:
        >>> opt = head_optimizer([nn.Parameter(torch.zeros(2))], lr=1e-3, weight_decay=1e-4)
        >>> type(opt).__name__, opt.defaults["eps"]
        ('AdamW', 1e-08)
    """
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if fused:
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, eps=eps, fused=True)
        except (RuntimeError, TypeError):  # an older torch, or a device without the fused kernel
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, eps=eps)


def make_optimizer(params: Sequence[nn.Parameter], cfg: Any, fused: bool = False) -> torch.optim.Optimizer:
    """:func:`head_optimizer` of a head config (``optimizer``, ``lr``, ``weight_decay``, ``momentum``, ``adam_eps``)."""
    return head_optimizer(params, cfg.lr, cfg.weight_decay, cfg.optimizer, cfg.momentum, cfg.adam_eps, fused)


def clip_adamw(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """CLIP's AdamW over ``module``'s trainable parameters (pretraining, fine-tuning and distillation share it).

    Weight matrices and kernels decay; norms, biases, embeddings and the logit scale stay free.

    Example:
        >>> opt = clip_adamw(torch.nn.Linear(2, 2), lr=1e-3, weight_decay=0.1)
        >>> [g["weight_decay"] for g in opt.param_groups]
        [0.1, 0.0]
    """
    decay, free = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            is_matrix = p.ndim >= 2 and "embedding" not in name and "position" not in name
            (decay if is_matrix else free).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": free, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.98), eps=1e-6)


# --------------------------------------------------------------------------------------------- the schedule


def warmup_cosine(step: int, total: int, warmup: int, constant: float | None = None) -> float:
    """Learning-rate multiplier: warm-up (linear, or at ``constant``), then cosine decay to zero.

    Example:
        >>> warmup_cosine(0, 10, 0), warmup_cosine(0, 10, 1), warmup_cosine(10, 10, 1)
        (1.0, 0.5, 0.0)
    """
    if step < warmup:
        return constant if constant is not None else (step + 1) / (warmup + 1)
    done = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))


def dassl_epoch_factor(
    epoch: int, epochs: int, warmup: int, constant: float | None = None, first: float = 0.0
) -> float:
    """Learning-rate multiplier of 0-based ``epoch`` under Dassl's per-epoch schedule.

    Dassl wraps ``CosineAnnealingLR(T_max=epochs)`` in a warm-up scheduler and
    steps it once, at each epoch's end. Warm-up epochs run at ``constant``
    (constant warm-up) or, for a linear one, at ``first`` in epoch 0 and
    ``epoch / warmup`` after; then the cosine starts at the peak and counts its
    epochs from the warm-up's end over the full ``epochs``, so it never reaches
    zero: CoCoOp's 10 epochs with one warm-up epoch end at 0.0955 × the peak.

    Example:
        >>> round(dassl_epoch_factor(9, 10, 1, constant=0.005), 4), dassl_epoch_factor(1, 10, 1, constant=0.005)
        (0.0955, 1.0)
    """
    if epoch < warmup:
        if constant is not None:
            return constant
        return first if epoch == 0 else epoch / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / epochs))


def lr_schedule(
    opt: torch.optim.Optimizer,
    unit: str,
    epochs: int,
    per_epoch: int,
    warmup_epochs: float,
    constant: float | None = None,
    first: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then cosine as a scheduler: step it after every batch (``unit="step"``) or every epoch (``"epoch"``).

    In steps the warm-up is ``round(warmup_epochs · per_epoch)`` steps and the
    cosine reaches zero after ``epochs · per_epoch`` (:func:`warmup_cosine`); in
    epochs it is Dassl's (:func:`dassl_epoch_factor`). ``constant`` is a
    constant warm-up's multiplier, ``first`` a per-epoch linear warm-up's first one.

    Example:
        >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = lr_schedule(opt, "step", epochs=2, per_epoch=2, warmup_epochs=0.5)  # 4 steps, 1 of warm-up
        >>> [round(sched.lr_lambdas[0](step), 3) for step in range(4)]
        [0.5, 1.0, 0.75, 0.25]
    """
    if unit == "epoch":
        warmup = int(warmup_epochs)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: dassl_epoch_factor(e, epochs, warmup, constant, first))
    total, warmup = per_epoch * epochs, round(warmup_epochs * per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup, constant))


def lr_at(step: int, cfg: Any) -> float:
    """The encoders' learning rate at ``step``: linear warm-up to ``cfg.lr`` over ``cfg.warmup_steps``, then cosine
    to zero.

    Unlike :func:`warmup_cosine`'s warm-up, this one reaches the peak at its last step.

    Example:
        >>> from types import SimpleNamespace
        >>> cfg = SimpleNamespace(lr=1.0, warmup_steps=2, steps=6)
        >>> [round(lr_at(s, cfg), 3) for s in range(6)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup_steps)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group's learning rate to ``lr``."""
    for group in opt.param_groups:
        group["lr"] = lr


# --------------------------------------------------------------------------------------------- checks and logs


def check_finite(
    loss: torch.Tensor,
    params: Iterable[nn.Parameter] = (),
    step: int = 0,
    epoch: int | None = None,
    hint: str = "try a lower learning rate",
    detail: str = "",
) -> None:
    """TrainingError if ``loss`` or a gradient of ``params`` is not finite (NaN or infinite).

    ``epoch`` (0-based) is named beside the step when given; ``detail`` (the loss's parts, say) is added in brackets.

    Example:
        >>> check_finite(torch.tensor(float("nan")), step=3, epoch=0)  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.TrainingError: training stopped: non-finite loss at step 3 (epoch 1);
        try a lower learning rate
    """
    where = f"step {step}" + (f" (epoch {epoch + 1})" if epoch is not None else "") + (f" ({detail})" if detail else "")
    if not torch.isfinite(loss):
        raise TrainingError(f"training stopped: non-finite loss at {where}; {hint}")
    for p in params:
        # One reduction, no temporaries: a sum is finite only if every element is (a NaN or an infinity
        # propagates); the element-wise test runs only to confirm, since a finite sum may still overflow.
        if p.grad is not None and not torch.isfinite(p.grad.sum()) and not torch.isfinite(p.grad).all():
            raise TrainingError(f"training stopped: non-finite gradient at {where}; {hint}")


class CsvLog:
    """Rows of a CSV log, rewritten atomically on :meth:`flush` (columns: every key seen, in order of first appearance).

    A row may lack a column (left empty). ``fmt`` formats every number (e.g. ``".6g"``); without it
    values are written as ``str`` would. With no ``path`` the rows are only kept.

    Example:
        >>> import tempfile
        >>> log = CsvLog(Path(tempfile.mkdtemp()) / "log.csv", fmt=".3g")
        >>> log.add({"step": 0, "loss": 2.34567}); log.add({"step": 1, "val": 0.5}); log.flush()
        >>> log.path.read_text().splitlines()
        ['step,loss,val', '0,2.35,', '1,,0.5']
    """

    def __init__(self, path: Path | None = None, fmt: str | None = None) -> None:
        self.path, self.fmt = path, fmt
        self.rows: list[dict[str, Any]] = []
        self.columns: dict[str, None] = {}

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        for key in row:
            self.columns.setdefault(key, None)

    def flush(self) -> None:
        if self.path is None or not self.rows:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(self.columns), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: self._cell(v) for k, v in row.items()})
        atomic_write_bytes(self.path, text.getvalue().encode())

    def _cell(self, value: Any) -> Any:
        return format(value, self.fmt) if self.fmt and isinstance(value, (int, float)) else value


# --------------------------------------------------------------------------------------------- the head loop


def train_epochs(
    params: Sequence[nn.Parameter],
    opt: torch.optim.Optimizer,
    epochs: int,
    batches: Callable[[int], Iterable[Any]],
    loss_at: Callable[[Any], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    sched: torch.optim.lr_scheduler.LRScheduler | None = None,
    per_step: bool = True,
    after_epoch: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    hint: str = "try a lower learning rate",
) -> int:
    """The one loop every head trains through (CE, multi-label ASL, soft KD targets); returns the steps taken.

    ``batches(epoch)`` yields what one step trains on, ``loss_at(batch)`` gives ``(loss, parts)``; each step
    zeroes the gradients, backpropagates, checks the loss and gradients are finite, steps the optimiser and,
    with ``per_step``, the schedule (else once at each epoch's end, as Dassl's trainers do).
    ``after_epoch(epoch, means)`` gets each part's mean over the epoch's steps (a tensor; selection,
    logging and early stops live there). Stacked candidates (:mod:`clip_adapter.methods.stacked`) keep
    their own loop: the race drops candidates, and their optimiser state with them, between epochs.

    Example:
        >>> w = nn.Parameter(torch.ones(1))
        >>> opt = torch.optim.SGD([w], lr=0.5)
        >>> seen = []
        >>> train_epochs([w], opt, 2, lambda e: range(3), lambda b: ((w**2).sum(), {"w": w.detach().clone()}),
        ...              after_epoch=lambda e, m: seen.append(round(float(m["w"]), 4)))
        6
        >>> seen, round(float(w), 4)
        ([0.3333, 0.0], 0.0)
    """
    params = list(params)
    step = 0
    for epoch in range(epochs):
        parts_seen: dict[str, list[torch.Tensor]] = {}
        for batch in batches(epoch):
            loss, parts = loss_at(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            check_finite(loss, params, step, epoch, hint)
            opt.step()
            if per_step and sched is not None:
                sched.step()
            step += 1
            for key, value in parts.items():
                parts_seen.setdefault(key, []).append(value)
        if not per_step and sched is not None:
            sched.step()
        if after_epoch is not None:
            after_epoch(epoch, {k: torch.stack(v).mean() for k, v in parts_seen.items()})
    return step


# --------------------------------------------------------------------------------------------- the encoder loop


@dataclass
class TrainResult:
    """What a run did: the step whose weights were kept, its validation scores, the history.

    Without a validator the last step is kept and both score dicts are empty.
    """

    selected_step: int
    selected: dict[str, float]
    initial: dict[str, float]
    history: list[dict[str, Any]] = field(repr=False)
    wall_time_s: float = 0.0

    def summary(self) -> dict:
        return {
            "selected_step": self.selected_step,
            "validation_selected": self.selected,
            "validation_initial": self.initial,
            "wall_time_s": round(self.wall_time_s, 1),
        }


def _default_row(step: int, loss: float, lr: float, parts: dict[str, float]) -> dict[str, Any]:
    row = {"step": step + 1, "loss": round(loss, 5), "lr": f"{lr:.4g}"}
    if "grad_norm" in parts:
        row["grad_norm"] = round(parts["grad_norm"], 4)
    return row


def train_encoder(
    module: nn.Module,
    loss_at: Callable[[Any], torch.Tensor | tuple[torch.Tensor, dict[str, float]]],
    cfg: Any,
    *,
    batches: Iterable[Any] | None = None,
    extra_groups: Sequence[dict[str, Any]] = (),
    seed: int | None = None,
    validate: Callable[[], dict[str, float]] | None = None,
    val_every: int | None = None,
    grad_clip: float | None = None,
    after_step: Callable[[], None] | None = None,
    log: CsvLog | None = None,
    row: Callable[[int, float, float, dict[str, float]], dict[str, Any] | None] = _default_row,
    desc: str | None = "train",
    postfix: Callable[[dict[str, Any]], dict[str, str]] | None = None,
    hint: str = "lower the learning rate",
) -> TrainResult:
    """Train ``module``'s trainable parameters with :func:`clip_adamw` and :func:`lr_at`; return what happened.

    - ``cfg``: ``steps``, ``lr``, ``warmup_steps``, ``weight_decay``;
    - ``batches``: what step ``k`` trains on, handed to ``loss_at`` (default ``range(cfg.steps)``: the step);
      the loop ends with ``batches`` if they end first;
    - ``loss_at(batch)``: the step's loss, or ``(loss, parts)`` with the parts to log (floats);
    - ``extra_groups``: more parameter groups (``{"params": …, "weight_decay": …}``);
    - ``seed``: ``torch.manual_seed`` before the first step (None: the caller seeded);
    - ``validate()``: scores of the current weights (a ``score`` among them, higher is better), taken before
      the first step, every ``val_every`` steps and after the last; the best-scoring weights are restored at
      the end (ties keep the earlier). Without it the last step's weights are kept;
    - ``grad_clip``: clip the gradient norm to it (0: no clipping, but the norm is logged); None: neither;
    - ``after_step()``: called after every optimiser step (clamping the logit scale, say);
    - ``log`` and ``row(step, loss, lr, parts)``: the step's CSV row (None: no row), rewritten every
      :data:`LOG_FLUSH_EVERY` steps and at the end; validations add ``val_*`` rows;
    - ``desc``: the progress bar's title (None: no bar), ``postfix(row)`` what it shows (default: the loss).

    A non-finite loss raises TrainingError naming the step and ``hint``.

    Example:
        >>> from types import SimpleNamespace
        >>> w = nn.Linear(1, 1, bias=False)
        >>> _ = nn.init.zeros_(w.weight)
        >>> cfg = SimpleNamespace(steps=100, lr=0.2, warmup_steps=0, weight_decay=0.0)
        >>> result = train_encoder(w, lambda step: ((w.weight - 3.0) ** 2).sum(), cfg, desc=None)
        >>> result.selected_step, round(w.weight.item(), 1)
        (100, 3.0)
    """
    if seed is not None:
        torch.manual_seed(seed)
    opt = clip_adamw(module, cfg.lr, cfg.weight_decay)
    for group in extra_groups:
        opt.add_param_group(dict(group))
    params = [p for group in opt.param_groups for p in group["params"]]
    log = log if log is not None else CsvLog()
    every = val_every or cfg.steps
    start = time.perf_counter()
    initial = best = _scores(validate, 0, log) if validate else {}
    best_step, best_state = 0, _snapshot(params) if validate else None
    bar = progress(total=cfg.steps, desc=desc, unit="step") if desc is not None else None
    done = 0
    try:
        for step, batch in enumerate(range(cfg.steps) if batches is None else batches):
            if step == cfg.steps:  # more batches than steps (a stream that ends by itself is read to its end)
                break
            lr = lr_at(step, cfg)
            set_lr(opt, lr)
            out = loss_at(batch)
            loss, parts = out if isinstance(out, tuple) else (out, {})
            check_finite(loss, (), step, hint=hint, detail=", ".join(f"{k} {v:.4g}" for k, v in parts.items()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                parts = {
                    **parts,
                    "grad_norm": float(nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)),
                }
            opt.step()
            if after_step is not None:
                after_step()
            value, done = float(loss.detach()), step + 1
            record = row(step, value, lr, parts)
            if record is not None:
                log.add(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(**(postfix(record or {}) if postfix else {"loss": f"{value:.3f}"}))
            if validate and (done % every == 0 or done == cfg.steps):
                scores = _scores(validate, done, log)
                if scores["score"] > best["score"]:
                    best_step, best, best_state = done, scores, _snapshot(params)
            if done % LOG_FLUSH_EVERY == 0 or done == cfg.steps:
                log.flush()
    finally:
        if bar is not None:
            bar.close()
    if validate:
        _restore(params, best_state)
    else:
        best_step = done
    log.flush()
    return TrainResult(best_step, best, initial, log.rows, time.perf_counter() - start)


def _scores(validate: Callable[[], dict[str, float]], step: int, log: CsvLog) -> dict[str, float]:
    with torch.no_grad():
        scores = {k: float(v) for k, v in validate().items()}
    if "score" not in scores:
        raise ValueError("validate() must return a 'score'")
    log.add({"step": step, **{f"val_{k}": round(v, 5) for k, v in scores.items()}})
    return scores


def _snapshot(params: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _restore(params: list[nn.Parameter], state: list[torch.Tensor] | None) -> None:
    with torch.no_grad():
        for p, saved in zip(params, state or ()):
            p.copy_(saved)
