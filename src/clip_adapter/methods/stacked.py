"""CLIP-Adapter's α candidates trained side by side, as one stacked model.

The visual adapters of a fixed-ratio search differ only in α: they start from
the same weights (one seed), see the same batches (one generator) and use the
same optimiser settings. AdamW and SGD update every element on its own, so K
adapters stacked along a leading axis and trained on the sum of their losses
follow the trajectories K separate runs would (up to float rounding), for one
pass over the data instead of K, matrix products K times larger (where a CPU
is efficient) and K times fewer Python-level steps. The normalised text
classifier is computed once: the text side is frozen, so nothing flows to it.
α = 0 is zero-shot whatever the adapter holds, so it is not trained at all.
The stack steps with torch's fused AdamW (one pass over each K-fold state, no temporaries: the unfused
update cost more than the adapters' products at 100 classes); it may differ from the one-at-a-time
loop's AdamW in the last bits, which the goldens' tolerance allows.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.progress import progress
from .base import FewShotData, better
from .train import (
    EVALS_PER_RUN,
    TrainConfig,
    _check_finite,
    epoch_batches,
    make_optimizer,
    steps_per_epoch,
    warmup_cosine,
)

EVAL_CHUNK = 2048  # selection images per forward: bounds the [K, chunk, C] logits


class StackedAdapters(nn.Module):
    """K visual adapters ``x → α_k·A_k(x) + (1−α_k)·x`` with one frozen classifier.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> first, second = nn.Linear(8, 2, bias=False), nn.Linear(2, 8, bias=False)
        >>> model = StackedAdapters(first.weight, second.weight, [0.2, 0.6], torch.randn(3, 8), 30.0, True)
        >>> model(torch.randn(5, 8)).shape
        torch.Size([2, 5, 3])
    """

    def __init__(
        self,
        w1: torch.Tensor,
        w2: torch.Tensor,
        alphas: list[float],
        text: torch.Tensor,
        scale: float,
        final_relu: bool,
    ) -> None:
        super().__init__()
        k = len(alphas)
        # Stored transposed (x @ w) so the forward needs no transposes; every candidate starts equal.
        # Contiguous, not the transposed strides ``.t().expand().clone()`` would keep: bmm returns contiguous
        # gradients, which were otherwise copied into the parameters' layout at every step.
        self.w1 = nn.Parameter(w1.detach().t().expand(k, -1, -1).contiguous())  # [K, D, D/r]
        self.w2 = nn.Parameter(w2.detach().t().expand(k, -1, -1).contiguous())  # [K, D/r, D]
        self.register_buffer("alpha", torch.tensor(alphas, dtype=torch.float32).view(k, 1, 1))
        self.register_buffer("classifier", F.normalize(text, dim=-1).t().contiguous())  # [D, C], once
        self.scale, self.final_relu = float(scale), final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adapted = torch.relu(torch.matmul(x, self.w1)) @ self.w2  # [B, D] → [K, B, D]
        if self.final_relu:
            adapted = torch.relu(adapted)
        blended = self.alpha * adapted + (1 - self.alpha) * x
        return self.scale * F.normalize(blended, dim=-1) @ self.classifier  # [K, B, C]

    def keep(self, slots: list[int]) -> None:
        """Keep only the candidates at ``slots`` (in that order); the dropped ones leave the stack."""
        index = torch.tensor(slots)
        self.w1 = nn.Parameter(self.w1.detach()[index].clone())
        self.w2 = nn.Parameter(self.w2.detach()[index].clone())
        self.alpha = self.alpha[index].clone()


def stacked_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over candidates of each one's mean cross-entropy (so each gets its own gradient)."""
    k = logits.shape[0]
    return F.cross_entropy(logits.flatten(0, 1), labels.repeat(k)) * k


@torch.no_grad()
def evaluate_stacked(model: StackedAdapters, x: torch.Tensor, y: torch.Tensor) -> list[tuple[float, float]]:
    """``(accuracy, mean cross-entropy)`` of every candidate on ``(x, y)``."""
    k = model.alpha.shape[0]
    correct, loss = torch.zeros(k), torch.zeros(k)
    for xs, ys in zip(x.split(EVAL_CHUNK), y.split(EVAL_CHUNK)):
        logits = model(xs)
        correct += (logits.argmax(-1) == ys).sum(-1).float()
        loss += F.cross_entropy(logits.flatten(0, 1), ys.repeat(k), reduction="none").view(k, -1).sum(-1)
    return [(float(hits) / len(y), float(total) / len(y)) for hits, total in zip(correct, loss)]


def train_stacked(
    model: StackedAdapters,
    data: FewShotData,
    cfg: TrainConfig,
    seed: int,
    race: tuple[int, int] | None = None,
) -> list[tuple[dict[str, Any], tuple[torch.Tensor, torch.Tensor]]]:
    """Train every candidate of ``model`` at once; ``(info, (first, second))`` each, at its best checkpoint.

    The same schedule, epoch sampling and epoch selection as
    :func:`~clip_adapter.methods.train.train_head`, per candidate. ``race=(epoch, keep)``:
    after ``epoch`` epochs (a selection checkpoint), only the ``keep`` candidates best
    on the selection split so far train on; the others stop there, at their best
    checkpoint (their optimiser state leaves the stack with them, so the survivors'
    trajectories are unchanged).
    """
    k, n = model.alpha.shape[0], data.train.shape[0]
    per_epoch = steps_per_epoch(n, cfg.batch_size, cfg.drop_last)
    total, warmup = per_epoch * cfg.epochs, round(cfg.warmup_epochs * per_epoch)
    opt = make_optimizer([model.w1, model.w2], cfg, fused=True)
    constant = cfg.warmup_lr / cfg.lr if cfg.warmup_type == "constant" else None
    gen = torch.Generator().manual_seed(seed)
    sel_x, sel_y = data.selection
    selecting = cfg.select_epoch and data.protocol != "none" and len(sel_y) > 0
    every = max(1, cfg.epochs // EVALS_PER_RUN)
    race_epoch, race_keep = race if race and selecting and race[1] < k else (0, k)
    active = list(range(k))  # the candidate in each slot of the stack
    best: list[Any] = [None] * k
    best_epoch, best_w = [cfg.epochs] * k, [None] * k
    epochs_run, steps_run = [cfg.epochs] * k, [0] * k
    start, step = time.perf_counter(), 0
    epoch_logs: list[list[dict[str, Any]]] = [[] for _ in range(k)]
    bar = progress(total=cfg.epochs, desc=f"training {k} CLIP-Adapters", unit="epoch")
    for epoch in range(cfg.epochs):
        losses = []
        for x, y in epoch_batches(data, gen, cfg.batch_size, per_epoch * cfg.batch_size):
            loss = stacked_loss(model(x), y)
            losses.append(loss.detach() / len(active))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _check_finite(loss, [model.w1, model.w2], step, epoch)
            _set_lr(opt, cfg.lr * warmup_cosine(step, total, warmup, constant))  # what LambdaLR would set
            opt.step()
            step += 1
        bar.update(1)
        record = {
            "epoch": epoch + 1,
            "loss": round(float(torch.stack(losses).mean()), 6),
            "lr": cfg.lr * warmup_cosine(step, total, warmup, constant),
        }
        for i in active:  # the candidates' mean loss; each one's selection score below
            epoch_logs[i].append(dict(record))
        if selecting and ((epoch + 1) % every == 0 or epoch + 1 in (cfg.epochs, race_epoch)):
            for slot, score in enumerate(evaluate_stacked(model, sel_x, sel_y)):
                i = active[slot]
                epoch_logs[i][-1].update(selection_accuracy=score[0], selection_loss=round(score[1], 6))
                if better(score, best[i]):
                    best[i], best_epoch[i], best_w[i] = (
                        score,
                        epoch + 1,
                        (model.w1[slot].detach().clone(), model.w2[slot].detach().clone()),
                    )
        if epoch + 1 == race_epoch and epoch + 1 < cfg.epochs:
            ranked = sorted(
                active,
                key=functools.cmp_to_key(
                    lambda a, b: -1 if better(best[a], best[b]) else (1 if better(best[b], best[a]) else 0)
                ),
            )
            survivors = [i for i in active if i in ranked[:race_keep]]
            for i in active:
                if i not in survivors:
                    epochs_run[i], steps_run[i] = epoch + 1, step
            opt = _keep_slots(model, opt, cfg, [active.index(i) for i in survivors])
            active = survivors
    bar.close()
    seconds = time.perf_counter() - start
    results = []
    for i in range(k):
        # Each candidate's best checkpoint (its last state without selection), in nn.Linear layout.
        w1, w2 = (
            best_w[i]
            if best_w[i] is not None
            else (model.w1[active.index(i)].detach(), model.w2[active.index(i)].detach())
        )
        info = {
            "epochs_run": epochs_run[i],
            "best_epoch": best_epoch[i],
            "steps": steps_run[i] or step,
            "train_seconds": seconds,
            "trained_together": k,
            "epochs": epoch_logs[i],
        }
        results.append((info, (w1.t().clone(), w2.t().clone())))
    return results


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _keep_slots(
    model: StackedAdapters, opt: torch.optim.Optimizer, cfg: TrainConfig, slots: list[int]
) -> torch.optim.Optimizer:
    """Shrink the stack to ``slots`` and carry the survivors' optimiser state (moments, step count) over."""
    old = [model.w1, model.w2]
    model.keep(slots)
    new_opt = make_optimizer([model.w1, model.w2], cfg)
    index = torch.tensor(slots)
    for p_old, p_new in zip(old, [model.w1, model.w2]):
        state = opt.state.get(p_old, {})
        new_opt.state[p_new] = {
            key: value[index].clone() if torch.is_tensor(value) and value.dim() > 0 else value
            for key, value in state.items()
        }
    _set_lr(new_opt, opt.param_groups[0]["lr"])
    return new_opt
