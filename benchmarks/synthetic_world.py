"""Synthetic cached features with real structure, at any dataset's size (for the speed benchmarks).

Each class has a prototype ``p_c`` (unit-ish, random); its prompt embedding is
``p_c`` plus a little noise. Images of the target domain are moved by a
**shared domain shift** (an offset ``s`` and a low-rank linear distortion
``B p_c`` common to all classes: what an adapter is for) plus a small
**per-class shift**; each image adds instance noise and each cached view
augmentation noise. Raw features are scaled by 5 (CLIP features are not unit
length). Zero-shot is far from perfect (51 % at 1,000 classes with these defaults) and an
adapter that undoes the shared shift gains on it.

Example:
    >>> data, test_x, test_y = make_world(classes=10, shots=2, dim=32, test_per_class=3)
    >>> tuple(data.train.shape), tuple(test_x.shape)
    ((20, 10, 32), (30, 32))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clip_adapter.methods import FewShotData


def make_world(
    classes: int,
    shots: int,
    dim: int = 1024,
    views: int = 10,
    val_per_class: int | None = None,
    test_per_class: int = 10,
    seed: int = 0,
    shift: float = 2.0,
    per_class_shift: float = 0.3,
    noise: float = 0.2,
) -> tuple[FewShotData, torch.Tensor, torch.Tensor]:
    """``(FewShotData, test_x, test_y)`` of the sizes given (val: min(shots, 4) per class, the CoOp rule)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    protos = F.normalize(randn(classes, dim), dim=-1)
    text = F.normalize(protos + 0.3 * randn(classes, dim) / dim**0.5, dim=-1)
    rank = max(1, dim // 32)
    distort = randn(dim, rank) @ randn(rank, dim) / (rank * dim) ** 0.5  # shared low-rank distortion
    offset = 3 * shift * F.normalize(randn(dim), dim=0)
    centres = (
        protos + shift * protos @ distort.t() + offset + per_class_shift * F.normalize(randn(classes, dim), dim=-1)
    )

    def images(per_class: int, n_views: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(classes).repeat_interleave(per_class)
        base = centres[labels] + noise * randn(len(labels), dim)  # noise: std per direction
        if n_views == 1:
            return 5.0 * base, labels
        return 5.0 * (base[:, None, :] + 0.5 * noise * randn(len(labels), n_views, dim)), labels

    val = min(shots, 4) if val_per_class is None else val_per_class
    train_x, train_y = images(shots, views)
    val_x, val_y = images(val, 1)
    test_x, test_y = images(test_per_class, 1)
    names = [f"class{i}" for i in range(classes)]
    data = FewShotData(train_x, train_y, val_x, val_y, text, 100.0, names, seed=1)
    return data, test_x, test_y


# The slow reference recipes, measured on a short run and scaled up (``scale.py --skip-slow``,
# ``sweep.py --extrapolate``): method -> (config overrides of the short run, factor to the full
# run, what was measured). The factors are upper bounds: the short run's fixed costs are scaled too.
SHORT_RUNS = {
    "tip-adapter-f": ({"epochs": 1}, 20, "1 of 20 epochs (+ the α/β search) measured, × 20 (upper bound)"),
    "clap": ({"epochs": 1}, 300, "1 of 300 epochs measured, × 300"),
    "linear-probe": (
        {"max_iter": 2, "bisection_steps": 0},
        150 * 23 / 7,
        "7 fits × 2 iterations measured; × 150 × 23/7 (upper bound)",
    ),
}
