"""What a remedy costs: zero-shot accuracy on the toy world's classification tasks.

The toy tasks ``shape`` and ``color`` (single objects, photo domain, the test
split of seed 0 that the toy benchmarks use), classified by the zero-shot
method with each task's prompt template. Only meaningful for toy backbones:
the tasks' words are the toy vocabulary.

Example:
    >>> from clip_adapter.backbones import create_backbone
    >>> material = zero_shot_material(("shape",), per_class=2)
    >>> r = zero_shot_accuracy(create_backbone("toy", precision="fp32"), material)
    >>> sorted(r), 0 <= r["shape"]["accuracy"] <= 1
    (['shape'], True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..backbones.base import Backbone
from ..core.config import check_range
from ..features.rendered import zero_shot_accuracy as rendered_accuracy
from ..toyworld.tasks import get_task, task_images

TASKS = ("shape", "color")
DOMAIN = "photo"


@dataclass
class TaskMaterial:
    """A task's rendered test images and labels."""

    task: str
    images: np.ndarray
    labels: torch.Tensor


def zero_shot_material(tasks: tuple[str, ...] = TASKS, per_class: int = 100, seed: int = 0) -> list[TaskMaterial]:
    """Render ``per_class`` test images per class of each task."""
    check_range("zero-shot images per class", per_class, 1, 100_000)
    out = []
    for name in tasks:
        images, labels = task_images(get_task(name), DOMAIN, per_class, seed, "test")
        out.append(TaskMaterial(name, images, torch.from_numpy(labels)))
    return out


def zero_shot_accuracy(backbone: Backbone, material: list[TaskMaterial], batch_size: int = 64) -> dict[str, dict]:
    """Zero-shot accuracy per task (``accuracy``, ``chance``, ``n``)."""
    out = {}
    for m in material:
        task = get_task(m.task)
        accuracy = rendered_accuracy(backbone, m.images, m.labels.numpy(), task.prompts(), batch_size=batch_size)
        out[m.task] = {"accuracy": accuracy, "chance": 1 / len(task.classes), "n": len(m.labels)}
    return out
