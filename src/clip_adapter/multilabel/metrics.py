"""Multi-label metrics: mAP, F1 at a threshold chosen on validation, text feature similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """AP of one class: mean precision at the rank of each positive (scikit-learn's, no interpolation).

    Ties are broken by the original order (stable sort), so the value is deterministic.

    Example:
        >>> average_precision(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1.0, 0.0, 1.0]))
        0.8333333333333333
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    hits = targets[order].double()
    if hits.sum() == 0:
        return float("nan")
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=hits.dtype)
    return float((precision * hits).sum() / hits.sum())


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> tuple[float, list[float | None]]:
    """mAP over the classes with at least one positive, and each class's AP (None without positives).

    Example:
        >>> m, per_class = mean_average_precision(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.eye(2))
        >>> m, per_class
        (1.0, [1.0, 1.0])
    """
    per_class = [average_precision(scores[:, j], targets[:, j]) for j in range(targets.shape[1])]
    valid = [ap for ap in per_class if ap == ap]
    return (sum(valid) / len(valid) if valid else float("nan")), [ap if ap == ap else None for ap in per_class]


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` elementwise, 0 where ``den`` is 0 (no predictions: precision 0; no positives: recall 0)."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def f1_scores(probs: torch.Tensor, targets: torch.Tensor, threshold: float) -> dict[str, float]:
    """The multi-label papers' F1 figures at ``threshold`` (predicted: ``probs >= threshold``).

    ``overall_*`` (OP, OR, OF1) count true/false positives over every
    (image, class) pair. ``class_precision`` (CP) and ``class_recall`` (CR)
    are each class's precision and recall averaged over classes, and
    ``class_f1`` (CF1) is ``2·CP·CR / (CP + CR)``: the F1 *of the averages*,
    not the mean of per-class F1 (as in ML-GCN, ASL and the papers following
    them). A class without predictions has precision 0, one without positives
    recall 0, and an F1 whose precision and recall are both 0 is 0.

    Example:
        >>> r = f1_scores(torch.tensor([[0.9, 0.2], [0.8, 0.1]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 0.5)
        >>> r["overall_f1"], r["class_precision"], r["class_recall"], round(r["class_f1"], 4)
        (0.5, 0.25, 0.5, 0.3333)
    """
    pred = (probs >= threshold).float()
    tp, fp, fn = (pred * targets).sum(0), (pred * (1 - targets)).sum(0), ((1 - pred) * targets).sum(0)
    precision = float(tp.sum() / (tp.sum() + fp.sum())) if float(tp.sum() + fp.sum()) else 0.0
    recall = float(tp.sum() / (tp.sum() + fn.sum())) if float(tp.sum() + fn.sum()) else 0.0
    class_precision = float(_ratio(tp, tp + fp).mean()) if tp.numel() else 0.0
    class_recall = float(_ratio(tp, tp + fn).mean()) if tp.numel() else 0.0
    return {
        "overall_f1": _f1(precision, recall),
        "overall_precision": precision,
        "overall_recall": recall,
        "class_f1": _f1(class_precision, class_recall),
        "class_precision": class_precision,
        "class_recall": class_recall,
    }


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def choose_threshold(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """The probability threshold with the best overall F1 on ``probs`` (validation), ties to the lowest.

    Candidates are the midpoints between consecutive distinct scores (and
    0.5 when there are none), so the choice does not depend on a grid. Each
    candidate's counts come from one sort, cumulative sums and a binary
    search (O(n log n) in the number of scores), and its F1 is computed with
    the same float operations as :func:`f1_scores`, so the choice is the one
    evaluating every candidate with :func:`f1_scores` would make.

    Example:
        >>> round(choose_threshold(torch.tensor([[0.9, 0.3], [0.6, 0.2]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])), 4)
        0.45
    """
    scores, order = torch.sort(probs.flatten())
    values = torch.unique_consecutive(scores)
    if len(values) < 2:
        return 0.5
    candidates = (values[1:] + values[:-1]) / 2
    # Positives at or above each sorted position: tp_from[i] = sum(targets[order][i:]).
    hits = targets.flatten()[order].float()
    tp_from = torch.cat([hits.flip(0).cumsum(0).flip(0), hits.new_zeros(1)])
    # A midpoint may round onto a neighbouring score: search for it as it is, as ``probs >= t`` compares it.
    first = torch.searchsorted(scores, candidates, right=False)
    tp, predicted, positives = tp_from[first], (len(scores) - first).float(), hits.sum()
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp)).double()
    recall = (tp / positives if float(positives) else torch.zeros_like(tp)).double()
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(precision))
    return float(candidates[int(torch.argmax(f1))])  # argmax returns the first maximum: the lowest threshold


def mean_offdiagonal_similarity(features: torch.Tensor) -> float:
    """Mean cosine similarity between distinct rows (e.g. the class text features).

    Example:
        >>> mean_offdiagonal_similarity(torch.eye(3))
        0.0
    """
    x = F.normalize(features.detach().float(), dim=-1)
    sim = x @ x.T
    n = sim.shape[0]
    return float((sim.sum() - torch.diagonal(sim).sum()) / max(1, n * (n - 1)))
