"""Zero-shot accuracy of any backbone on the toy world's tasks, in-domain (photo) and on the shifted renderings."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones import Backbone
from ..features.rendered import encode_arrays
from ..toyworld import DOMAINS, get_task, task_images

EVAL_TASKS = ("shape", "color", "shape-color", "size-shape", "position")
IN_DOMAIN = "photo"
EVAL_BATCH = 256


def render_eval_images(
    tasks: Sequence[str], domains: Sequence[str], per_class: int, seed: int = 0, split: str = "test"
) -> dict:
    """``{(task, domain): (uint8 images, labels)}`` of one split: render once, score many models.

    Choose between models on ``split="val"`` and report on ``test`` (the scenes of a split do not depend on the domain).
    """
    return {(t, d): task_images(t, d, per_class, seed=seed, split=split) for t in tasks for d in domains}


def encode(backbone: Backbone, images: np.ndarray) -> torch.Tensor:
    """Normalised image embeddings of uint8 images through the backbone's evaluation transform, in batches."""
    return encode_arrays(backbone, images, EVAL_BATCH)


def zero_shot(backbone: Backbone, rendered: dict) -> dict[str, dict[str, float]]:
    """``{task: {domain: accuracy %}}`` plus ``summary`` (mean in-domain and mean over the shifted domains).

    Example:
        >>> from clip_adapter.backbones import create_backbone
        >>> r = zero_shot(create_backbone("toy", precision="fp32"), render_eval_images(["shape"], ["photo"], 2))
        >>> r["shape"]["photo"] > 50, sorted(r["summary"])
        (True, ['in_domain', 'shifted'])
    """
    out: dict[str, dict[str, float]] = {}
    texts: dict[str, torch.Tensor] = {}
    for (task, domain), (images, labels) in rendered.items():
        if task not in texts:
            texts[task] = F.normalize(backbone.encode_texts(get_task(task).prompts()).float(), dim=-1)
        predictions = (encode(backbone, images) @ texts[task].T).argmax(1)
        out.setdefault(task, {})[domain] = round(
            100.0 * float((predictions == torch.from_numpy(labels)).float().mean()), 2
        )
    cells = [(d, acc) for task in out for d, acc in out[task].items()]
    summary = {
        "in_domain": _mean([a for d, a in cells if d == IN_DOMAIN]),
        "shifted": _mean([a for d, a in cells if d != IN_DOMAIN]),
    }
    return {**out, "summary": summary}


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 2) if values else float("nan")


def images_per_second(backbone: Backbone, images: np.ndarray, repeats: int = 3) -> float:
    """Encoder throughput on ``images`` (best of ``repeats``, after one warm-up batch)."""
    encode(backbone, images[:EVAL_BATCH])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encode(backbone, images)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


__all__ = ["DOMAINS", "EVAL_TASKS", "IN_DOMAIN", "encode", "images_per_second", "render_eval_images", "zero_shot"]
