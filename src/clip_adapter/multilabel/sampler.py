"""Few-shot sampling for multi-label data: at least K images per label.

With several labels per image, "K images per class" cannot hold exactly.
The rule here (the greedy one of the multi-label few-shot literature):
labels are visited from the rarest to the most frequent (ties by class
index); for each, images holding it are drawn at random (seeded) from those
not yet chosen until the label appears in at least K chosen images, counting
images chosen for earlier labels. Every label then has at least K images; a
frequent label riding along with rare ones may have more. A label with fewer
than K images in the pool is an error in strict mode (training shots) and
takes all it has otherwise (validation shots).
"""

from __future__ import annotations

import torch

from ..core.errors import DataError


def sample_few_shot(
    targets: torch.Tensor,
    shots: int,
    seed: int,
    classes: tuple[str, ...] | list[str],
    exclude: set[int] | None = None,
    strict: bool = True,
    where: str = "train",
) -> list[int]:
    """Row indices of ``targets`` (``[n, C]`` 0/1) giving every label at least ``shots`` images.

    ``exclude`` rows are never picked (e.g. training shots when validation
    shots come from the same pool). Returns sorted indices.

    Example:
        >>> y = torch.tensor([[1, 0], [1, 1], [0, 1], [1, 0]], dtype=torch.float32)
        >>> picked = sample_few_shot(y, 1, seed=0, classes=("a", "b"))
        >>> bool((y[picked].sum(0) >= 1).all())
        True
    """
    if shots < 1:
        raise DataError(f"shots must be at least 1, got {shots}")
    exclude = exclude or set()
    gen = torch.Generator().manual_seed(seed)
    chosen: list[int] = []
    counts = torch.zeros(targets.shape[1])
    frequency = targets.sum(0)
    for label in sorted(range(targets.shape[1]), key=lambda j: (float(frequency[j]), j)):
        pool = [int(i) for i in targets[:, label].nonzero().flatten() if int(i) not in exclude and int(i) not in chosen]
        order = [pool[i] for i in torch.randperm(len(pool), generator=gen).tolist()]
        while counts[label] < shots and order:
            row = order.pop(0)
            chosen.append(row)
            counts += targets[row]
        if counts[label] < shots and strict:
            raise DataError(
                f"label {classes[label]!r} has {int(counts[label])} {where} images, fewer than --shots {shots}"
            )
    return sorted(chosen)
