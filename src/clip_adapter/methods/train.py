"""One training loop on cached features, shared by every trained method.

Each epoch visits every training image once, through one of its cached
augmented views, and the epoch's samples are gathered with one indexing op
and then cut into batches. Hyper-parameter candidates are trained in turn (or,
for CLIP-Adapter's α, side by side: see :mod:`clip_adapter.methods.stacked`)
and compared on the selection split only.

Cached views against Dassl's fresh crops. Dassl (CoOp, CoCoOp, CLIP-Adapter's
official code) draws a new random resized crop of every image at every step it
is used, i.e. once per image per epoch. Here the encoder ran once over ``V``
cached crops per image, and each epoch picks one of them per image:

- ``view_order="random"`` (default): a view drawn uniformly per image per
  epoch, so over ``E`` epochs an image shows about ``V·(1 − (1 − 1/V)^E)``
  distinct crops (all ``V`` once ``E ≫ V``) and repeats the rest.
- ``view_order="distinct"``: each image walks through its views in a random
  order without repeating one until all ``V`` have been used; with
  ``V ≥ epochs`` every epoch sees a crop it never saw before, which is exactly
  Dassl's fresh crop per epoch (the views are independent draws of the same
  random crop). This is the fresh-crop reference of
  ``benchmarks/views_curve.py``, which measures how many views the random
  order needs to get there.

The learning rate follows a warm-up then a cosine decay, stepped after every
batch (``schedule_unit="step"``, the default: a smooth decay to zero) or after
every epoch as Dassl's trainers do (``"epoch"``: constant within an epoch,
the cosine over ``epochs`` counted from the end of the warm-up, so the last
epoch keeps a non-zero lr; see :func:`clip_adapter.core.optim.dassl_epoch_factor`). The optimiser, the
schedule and the finite check live in :mod:`clip_adapter.core.optim`, shared with the encoder loop.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from ..core.config import Default, check_choice, check_range, defaults, option
from ..core.errors import ConfigError
from ..core.optim import (  # noqa: F401  (warmup_cosine: re-exported)
    SCHEDULE_UNITS,
    EpochsOptimConfig,
    check_finite,
    lr_schedule,
    make_optimizer,
    train_epochs,
    warmup_cosine,
)
from ..core.progress import progress
from ..core.threads import torch_threads
from .base import FewShotData, FitResult, Head, better, evaluate_head, selection_record

EVALS_PER_RUN = 10  # validation checkpoints per training run, for choosing the epoch
VIEW_ORDERS = ("random", "distinct")


@dataclass
@defaults(weight_decay=Default(1e-4, "decoupled (AdamW) or L2 (SGD) weight decay"))
class TrainConfig(EpochsOptimConfig):
    """Optimisation settings shared by trained methods (fields are inherited; lr, weight decay, epochs
    and batch size are :class:`~clip_adapter.core.optim.EpochsOptimConfig`'s).
    """

    optimizer: str = option("adamw", "adamw or sgd")
    momentum: float = option(0.9, "SGD momentum")
    warmup_epochs: float = option(1.0, "warm-up length, in epochs, before the cosine decay")
    warmup_type: str = option(
        "linear", "warm-up: linear (to the peak lr) or constant (at warmup_lr, as CoOp's official code)"
    )
    warmup_lr: float = option(
        1e-5, "learning rate of a constant warm-up (and of a per-epoch linear warm-up's first epoch, as Dassl's)"
    )
    select_epoch: bool = option(True, "choose the epoch on the selection split (protocol val/oracle)")
    lr_grid: tuple[float, ...] = option((), "learning rates searched on validation (empty: just `lr`)")
    adam_eps: float = option(1e-8, "AdamW epsilon (torch's default; Tip-Adapter-F's official code uses 1e-4)")
    drop_last: bool = option(
        False, "drop each epoch's last partial batch, as Dassl's training loader does (official presets)"
    )
    schedule_unit: str = option(
        "step", "lr schedule stepped per batch (step) or per epoch as Dassl's trainers do (epoch; official presets)"
    )
    view_order: str = option(
        "random", "cached view per image per epoch: random, or distinct (no view repeats until all were used)"
    )

    def validate(self) -> None:
        # Checks every inherited field itself, not through super(): a head's bounds are tighter (lr <= 10),
        # and a subclass may allow 0 epochs or an "auto" batch of 0 (min_epochs, min_batch_size).
        check_choice("optimizer", self.optimizer, ("adamw", "sgd"))
        check_positive("lr", self.lr, 10.0)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("epochs", self.epochs, self.min_epochs, 100_000)
        check_range("batch_size", self.batch_size, self.min_batch_size, 1_000_000)
        check_range("warmup_epochs", self.warmup_epochs, 0.0, 100_000.0)
        check_choice("warmup_type", self.warmup_type, ("linear", "constant"))
        check_range("warmup_lr", self.warmup_lr, 0.0, 10.0)
        check_range("adam_eps", self.adam_eps, 1e-12, 1.0)
        check_choice("schedule_unit", self.schedule_unit, SCHEDULE_UNITS)
        check_choice("view_order", self.view_order, VIEW_ORDERS)
        if self.schedule_unit == "epoch" and self.warmup_epochs != int(self.warmup_epochs):
            # Dassl counts warm-up in whole epochs; rounding silently would change the recipe
            raise ConfigError(
                f"warmup_epochs must be a whole number with schedule_unit=epoch, got {self.warmup_epochs!r}"
            )
        for lr in self.lr_grid:
            check_positive("lr_grid", lr, 10.0)


def check_positive(name: str, value: float, hi: float) -> None:
    """ConfigError unless ``0 < value <= hi`` (a zero learning rate trains nothing)."""
    check_range(name, value, 0.0, hi)
    if value <= 0:
        raise ConfigError(f"{name} must be > 0 (0 would leave the head untrained), got {value!r}")


def epoch_order(
    data: FewShotData, gen: torch.Generator, view: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's ``(image index, view index)`` per sample, in visiting order: a random order, one view each.

    Each image's view is ``view[i]`` when given (see :class:`DistinctViews`), else drawn at random.
    """
    n, views = data.train.shape[0], data.train.shape[1]
    order = torch.randperm(n, generator=gen)
    if view is None:
        view = torch.randint(views, (n,), generator=gen)
    return order, view[order]


def epoch_samples(
    data: FewShotData, gen: torch.Generator, view: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's ``(features [N, D], labels [N])`` of :func:`epoch_order`, gathered at once."""
    order, picked = epoch_order(data, gen, view)
    return data.train[order, picked], data.train_labels[order]


def epoch_batches(
    data: FewShotData, gen: torch.Generator, batch_size: int, used: int, view: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``used`` samples of :func:`epoch_samples` (same stream, same values), a batch at a time.

    Each batch is gathered when it is needed: gathering a whole epoch first copied CLAP's 16,000 views at
    100 × 16 shots (64 MB, freshly mapped pages) every epoch, which cost more than the epoch's SGD steps.

    Example:
        >>> from types import SimpleNamespace
        >>> data = SimpleNamespace(train=torch.randn(5, 2, 3), train_labels=torch.arange(5))  # 5 images, 2 views
        >>> [len(y) for _, y in epoch_batches(data, torch.Generator().manual_seed(0), 2, 5)]
        [2, 2, 1]
    """
    order, picked = epoch_order(data, gen, view)  # drawn now, before the caller's next use of gen
    return _gathered(data, order[:used].split(batch_size), picked[:used].split(batch_size))


def _gathered(data: FewShotData, rows: tuple[torch.Tensor, ...], views: tuple[torch.Tensor, ...]):
    for r, v in zip(rows, views):
        yield data.train[r, v], data.train_labels[r]


class DistinctViews:
    """Per image, its ``V`` cached views in a random order, none repeated until all were used.

    Epoch ``e`` uses column ``e mod V`` of a per-image permutation, re-drawn every
    ``V`` epochs; with ``V ≥ epochs`` no image ever sees a view twice, as with a
    fresh random crop per epoch. Its own generator leaves the batch order's
    stream untouched.

    Example:
        >>> picker = DistinctViews(n=3, views=4, seed=0)
        >>> seen = torch.stack([picker.epoch(e) for e in range(4)], dim=1)
        >>> [sorted(row.tolist()) for row in seen]
        [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
    """

    def __init__(self, n: int, views: int, seed: int) -> None:
        self.n, self.views = n, views
        self.gen = torch.Generator().manual_seed(seed + 0x5EED)  # not the batch-order generator
        self.table: torch.Tensor | None = None  # drawn by the first epoch (never uninitialised memory)

    def epoch(self, epoch: int) -> torch.Tensor:
        """The view index of every image for ``epoch`` (0-based; epochs must come in order)."""
        if epoch % self.views == 0 or self.table is None:
            self.table = torch.rand(self.n, self.views, generator=self.gen).argsort(dim=1)
        return self.table[:, epoch % self.views]


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr schedule of ``cfg``: step it after every batch, or (``schedule_unit="epoch"``) after every epoch.

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
        >>> sched = make_scheduler(
        ...     opt, TrainConfig(lr=2e-3, schedule_unit="epoch", warmup_type="constant"), per_epoch=4
        ... )
        >>> sched.get_last_lr()  # the first (warm-up) epoch runs at warmup_lr
        [1e-05]
    """
    ratio = cfg.warmup_lr / cfg.lr
    constant = ratio if cfg.warmup_type == "constant" else None
    return lr_schedule(opt, cfg.schedule_unit, cfg.epochs, per_epoch, cfg.warmup_epochs, constant, ratio)


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches in an epoch of ``n`` samples; with ``drop_last`` the partial one is dropped unless it is
    the only one (Dassl)."""
    if drop_last and n >= batch_size:
        return n // batch_size
    return max(1, math.ceil(n / batch_size))


def training_title(head: Head) -> str:
    """The registered name of the method whose head this is (for progress lines people read)."""
    from .base import METHODS

    return next((name for name in METHODS.names() if METHODS.get(name).Head is type(head)), type(head).__name__)


_check_finite = check_finite  # the name methods.stacked imports (with warmup_cosine and make_optimizer, from here)


def train_head(
    head: Head,
    data: FewShotData,
    cfg: TrainConfig,
    seed: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    on_epoch: Callable[[int], None] | None = None,
    epoch_size: int | None = None,
    extra_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Train ``head``'s trainable parameters on ``data.train``; return a summary.

    An epoch visits every training image once (one random cached view each) in
    ``steps_per_epoch`` batches; ``epoch_size`` instead makes an epoch that many
    samples' worth of batches drawn from a fresh shuffle of all rows (CLAP's
    official loop: as many batches as its image loader has, over all cached
    views). With ``cfg.select_epoch`` and a selection split, the head is evaluated
    ``EVALS_PER_RUN`` times and left at its best checkpoint (accuracy, then
    loss); otherwise at the last epoch.

    ``extra_loss(features, logits)``, when given, is added to every batch's loss
    (e.g. CLIP-Adapter's ``range_penalty``); without it the loss is computed
    exactly as before, op for op, so results are bit-identical.
    """
    params = [p for p in head.parameters() if p.requires_grad]
    n = data.train.shape[0]
    per_epoch = steps_per_epoch(epoch_size or n, cfg.batch_size, cfg.drop_last)
    opt = make_optimizer(params, cfg)
    sched, per_step = make_scheduler(opt, cfg, per_epoch), cfg.schedule_unit == "step"
    gen = torch.Generator().manual_seed(seed)
    distinct = (
        DistinctViews(n, data.train.shape[1], seed) if cfg.view_order == "distinct" and epoch_size is None else None
    )
    sel_x, sel_y = data.selection
    selecting = cfg.select_epoch and data.protocol != "none" and len(sel_y) > 0
    every = max(1, cfg.epochs // EVALS_PER_RUN)
    best, best_state, best_epoch = None, None, cfg.epochs
    start = time.perf_counter()
    bar = progress(total=cfg.epochs, desc=f"training {training_title(head)}", unit="epoch")
    log: list[dict[str, Any]] = []  # one record per epoch (written as the run's log.csv)
    used = per_epoch * cfg.batch_size  # everything, unless the last partial batch is dropped
    lr_used = [0.0]  # the learning rate of the latest step (logged: the epoch's last step's)

    def batches(epoch: int):
        return epoch_batches(data, gen, cfg.batch_size, used, distinct.epoch(epoch) if distinct else None)

    def loss_at(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = batch
        logits = head(x)
        loss = loss_fn(logits, y) + head.regularizer()
        if extra_loss is not None:
            loss = loss + extra_loss(x, logits)
        lr_used[0] = opt.param_groups[0]["lr"]
        return loss, {"loss": loss.detach()}

    def after_epoch(epoch: int, means: dict[str, torch.Tensor]) -> None:
        nonlocal best, best_state, best_epoch
        bar.update(1)
        log.append({"epoch": epoch + 1, "loss": round(float(means["loss"]), 6), "lr": lr_used[0]})
        if on_epoch is not None:
            on_epoch(epoch)
        if selecting and ((epoch + 1) % every == 0 or epoch + 1 == cfg.epochs):
            score = evaluate_head(head, sel_x, sel_y)
            log[-1].update(selection_accuracy=score[0], selection_loss=round(score[1], 6))
            if better(score, best):
                best, best_epoch = score, epoch + 1
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}

    head.train()
    step = train_epochs(params, opt, cfg.epochs, batches, loss_at, sched, per_step, after_epoch)
    bar.close()
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return {
        "epochs_run": cfg.epochs,
        "best_epoch": best_epoch,
        "steps": step,
        "train_seconds": time.perf_counter() - start,
        "epochs": log,
    }


def axis(default: Any, grid: tuple) -> tuple:
    """A search axis: the default first (what protocol ``none`` uses), then the rest of the grid."""
    return (default,) + tuple(v for v in grid if v != default)


def grid_search(
    data: FewShotData,
    grid: dict[str, tuple[Any, ...]],
    fit_one: Callable[[dict[str, Any]], tuple[Head, dict[str, Any]]],
    threads: int | None = 1,
) -> FitResult:
    """Fit one head per grid point; keep the best on the selection split.

    With protocol ``none`` only the first value of each axis is used (the
    defaults), so no data is looked at to choose anything. Heads on cached
    features run on one thread (see :mod:`clip_adapter.core.threads`); a method
    that runs an encoder in its loop passes ``threads=None``.
    """
    with torch_threads(threads):
        return _grid_search(data, grid, fit_one)


def grid_points(data: FewShotData, grid: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The grid's points in search order (only the defaults under protocol ``none``)."""
    if data.protocol == "none":
        grid = {k: v[:1] for k, v in grid.items()}
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[k] for k in names))]


def _grid_search(data, grid, fit_one) -> FitResult:
    return select_best(data, grid, ((point, *fit_one(point)) for point in grid_points(data, grid)))


def select_best(data: FewShotData, grid: dict[str, tuple[Any, ...]], fits) -> FitResult:
    """Keep the best of ``(point, head, info)`` fits on the selection split (the first under ``none``)."""
    if data.protocol == "none":
        grid = {k: v[:1] for k, v in grid.items()}
    best, best_fit, history = None, None, []
    sel_x, sel_y = data.selection
    for point, head, info in fits:
        score = evaluate_head(head, sel_x, sel_y) if len(sel_y) else (0.0, 0.0)
        history.append({**point, **info, "selection_accuracy": score[0], "selection_loss": score[1]})
        if best_fit is None or (data.protocol != "none" and better(score, best)):
            best, best_fit = score, (head, point, info)
    head, point, info = best_fit  # type: ignore[misc]
    chosen = {**point, **{k: v for k, v in info.items() if k == "best_epoch"}}
    record = selection_record(data.protocol, {k: list(v) for k, v in grid.items()}, chosen)
    return FitResult(head, record, best[0] if best and len(sel_y) else None, history)
