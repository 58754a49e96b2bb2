"""Accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from typing import Any, Sequence

import torch


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C, C]`` counts; row = true class, column = predicted class.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_report(logits: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str]) -> dict[str, Any]:
    """Accuracy, mean per-class accuracy, per-class accuracy by name, the confusion matrix, and calibration.

    ``calibration`` holds top-label ECE (15 equal-width bins), MCE, NLL, Brier,
    AURC and the reliability-diagram bins of the softmax of ``logits``
    (:func:`clip_adapter.trust.calibration.calibration_report`), so every place
    that reports accuracy reports how far to trust the confidence too.
    """
    from .trust.calibration import calibration_report

    num_classes = len(classnames)
    if len(labels) == 0:
        return {
            "accuracy": None,
            "num_images": 0,
            "per_class_accuracy": {},
            "confusion_matrix": [],
            "calibration": None,
        }
    matrix = confusion_matrix(logits.argmax(dim=1), labels, num_classes)
    support = matrix.sum(dim=1)
    per_class = {
        name: (matrix[i, i].item() / support[i].item()) if support[i] > 0 else None for i, name in enumerate(classnames)
    }
    present = [v for v in per_class.values() if v is not None]
    return {
        "accuracy": matrix.diagonal().sum().item() / len(labels),
        "mean_per_class_accuracy": sum(present) / len(present) if present else None,
        "num_images": len(labels),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
        "calibration": calibration_report(logits.detach().float().cpu(), labels.cpu()),
    }


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1] (0 for an empty set)."""
    return (logits.argmax(dim=1) == labels).float().mean().item() if len(labels) else 0.0


def top_k(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most probable classes per row; equal probabilities rank by class index (deterministic).

    Example:
        >>> top_k(torch.tensor([[0.2, 0.4, 0.4]]), 2)[1].tolist()
        [[1, 2]]
    """
    values, indices = torch.sort(probs, dim=1, descending=True, stable=True)
    return values[:, :k], indices[:, :k]
