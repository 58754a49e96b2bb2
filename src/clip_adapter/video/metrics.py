"""Video classification metrics: top-1, top-5, per-class accuracy, and accuracy within time-reversed pairs."""

from __future__ import annotations

import statistics
from typing import Any, Sequence

import torch

from ..metrics import classification_report


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and population std (ddof 0), as Open-VCLIP/FROSTER report over splits and seeds.

    Example:
        >>> mean_std([0.5, 0.7])
        {'mean': 0.6, 'std': 0.09999999999999998}
    """
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float | None:
    """Fraction of rows whose label is among the ``k`` highest logits (ties ranked by class index).

    Example:
        >>> top_k_accuracy(torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.0, 0.1]]), torch.tensor([2, 1]), 2)
        0.5
    """
    if len(labels) == 0:
        return None
    k = min(k, logits.shape[1])
    order = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]
    return (order == labels[:, None]).any(dim=1).float().mean().item()


def pair_accuracy(logits: torch.Tensor, labels: torch.Tensor, pairs: Sequence[Sequence[int]]) -> dict[str, Any]:
    """How often a clip of a paired class outscores its time-reversed partner (chance: 0.5).

    ``pairs`` are ``(a, b)`` class indices whose clips differ only in time
    order ("moving left" / "moving right"); a tie counts as half.

    Example:
        >>> pair_accuracy(torch.tensor([[2.0, 1.0], [2.0, 1.0]]), torch.tensor([0, 1]), [(0, 1)])["accuracy"]
        0.5
    """
    partner = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    rows = [i for i, y in enumerate(labels.tolist()) if y in partner]
    if not rows:
        return {"accuracy": None, "num_clips": 0, "chance": 0.5}
    idx = torch.tensor(rows)
    own = logits[idx, labels[idx]]
    other = logits[idx, torch.tensor([partner[int(labels[i])] for i in rows])]
    wins = (own > other).float() + 0.5 * (own == other).float()
    return {"accuracy": wins.mean().item(), "num_clips": len(rows), "chance": 0.5}


def video_report(
    logits: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str], pairs: Sequence[Sequence[int]] = ()
) -> dict[str, Any]:
    """Top-1, top-5, mean per-class and per-class accuracy, confusion matrix, chance,
    and (with ``pairs``) pair accuracy.

    Example:
        >>> r = video_report(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), ["a", "b"])
        >>> r["top1"], r["top5"], r["per_class_accuracy"]
        (0.5, 1.0, {'a': 0.5, 'b': None})
    """
    report = classification_report(logits, labels, classnames)
    report["num_clips"] = report.pop("num_images")
    report["top1"] = report["accuracy"]
    report["top5"] = top_k_accuracy(logits, labels, 5)
    report["chance_top1"] = 1.0 / len(classnames) if classnames else None
    if pairs:
        report["time_reversed_pairs"] = pair_accuracy(logits, labels, pairs)
    return report
