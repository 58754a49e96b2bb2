"""Linear probe (Radford et al., 2021, Appendix A.3): L2-regularised logistic regression on frozen features.

Full-batch L-BFGS on L2-normalised image features, the regularisation
strength ``C`` (sklearn's convention: ``C = 1/λ``) searched on the selection
split as the CLIP paper and CoOp's ``lpclip`` do: a coarse sweep over
``1e-6 … 1e6``, then a bisection in log space around the best value.

Code vs paper: CoOp's probe fits one un-augmented view per image; here each
image is the mean of its cached augmented views (one sample per image, as
there, and ten times cheaper than fitting every view: a probe is ~23 full
L-BFGS fits). Features are L2-normalised so one ``C`` scale suits every
backbone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, check_range, option
from ..threads import torch_threads
from .base import FewShotData, FitResult, Head, Method, better, evaluate_head, register, selection_record
from .zero_shot import base_meta

COARSE_C = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)  # CoOp lpclip's sweep


@dataclass
class LinearProbeConfig(Config):
    """Logistic regression options."""

    c: float = option(1.0, "inverse regularisation strength (used as is with protocol none)")
    bisection_steps: int = option(8, "log-space bisection steps after the coarse sweep")
    max_iter: int = option(300, "L-BFGS iterations per fit")

    def validate(self) -> None:
        check_range("c", self.c, 1e-12, 1e12)
        check_range("bisection_steps", self.bisection_steps, 0, 64)
        check_range("max_iter", self.max_iter, 1, 100_000)


class LinearProbeHead(Head):
    """``W · normalise(f) + b``."""

    def __init__(self, config: Config, meta: dict[str, Any]) -> None:
        super().__init__(config, meta)
        self.linear = nn.Linear(meta["embed_dim"], meta["num_classes"])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(F.normalize(features, dim=-1))


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, c: float, max_iter: int) -> nn.Linear:
    """Multinomial logistic regression, ``min Σ CE + ||W||² / (2C)`` (bias unpenalised), by L-BFGS."""
    linear = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")
    weight = 1.0 / (2.0 * c * len(x))  # the sum-form objective divided by N

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(x), y) + weight * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return linear


@register("linear-probe")
class LinearProbe(Method):
    """Linear probe on frozen CLIP image features, C searched on validation.

    Example:
        >>> LinearProbe.make_config(c=0.5).bisection_steps
        8
    """

    Config = LinearProbeConfig
    Head = LinearProbeHead
    uses_text = False  # class names never reach the classifier (zero-shot is only reported beside it)

    def fit(self, data: FewShotData) -> FitResult:
        cfg: LinearProbeConfig = self.config
        x, y = F.normalize(data.train_means(), dim=-1), data.train_labels
        sel_x, sel_y = data.selection
        history: list[dict[str, Any]] = []

        def fit_c(c: float) -> tuple[LinearProbeHead, tuple[float, float]]:
            head = LinearProbeHead(cfg.replace(c=c), base_meta(data))
            head.linear.load_state_dict(fit_logistic(x, y, data.num_classes, c, cfg.max_iter).state_dict())
            score = evaluate_head(head, sel_x, sel_y)
            history.append({"c": c, "selection_accuracy": score[0], "selection_loss": score[1]})
            return head.eval(), score

        with torch_threads(1):
            if data.protocol == "none" or len(sel_y) == 0:
                head, _ = fit_c(cfg.c)
                return FitResult(head, selection_record(data.protocol, {}, {"c": cfg.c}), None, history)
            head, score = self._search(fit_c)
        grid = {"c_coarse": list(COARSE_C), "bisection_steps": cfg.bisection_steps}
        return FitResult(head, selection_record(data.protocol, grid, {"c": head.config.c}), score[0], history)

    def _search(self, fit_c):
        best_head, best_score = None, None
        for c in COARSE_C:
            head, score = fit_c(c)
            if better(score, best_score):
                best_head, best_score = head, score
        left, right = math.log10(best_head.config.c) - 1, math.log10(best_head.config.c) + 1
        for _ in range(self.config.bisection_steps):  # CoOp lpclip: keep the better end, move to the midpoint
            (lh, ls), (rh, rs) = fit_c(10**left), fit_c(10**right)
            for head, score in ((lh, ls), (rh, rs)):
                if better(score, best_score):
                    best_head, best_score = head, score
            mid = (left + right) / 2
            left, right = (left, mid) if not better(rs, ls) else (mid, right)
        return best_head, best_score
