"""Scoring helpers shared by the compositionality measures: cosines, tie-aware wins (encoding: features.rendered)."""

from __future__ import annotations

import torch

TIE = 1e-6  # cosines this close are a tie: a model that cannot tell two captions apart gets half the credit


def win(better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """Credit of ``better`` over ``worse`` elementwise: 1 if higher, 0.5 if tied (within :data:`TIE`), 0 if lower.

    Example:
        >>> win(torch.tensor([0.5, 0.2, 0.3]), torch.tensor([0.1, 0.2, 0.4])).tolist()
        [1.0, 0.5, 0.0]
    """
    diff = better - worse
    return torch.where(diff.abs() <= TIE, torch.full_like(diff, 0.5), (diff > 0).float())


def rowwise_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``cos(a_i, b_i)`` for normalised rows, summed per row (never a matmul: equal rows give bit-equal cosines)."""
    return (a * b).sum(-1)
