"""Quick in-memory evaluation of a backbone on toy tasks: zero-shot and linear probe.

These helpers skip the image files and the library's feature cache (the
benchmark and the demo go through those); they exist for the figures of the
shipped checkpoint and for the tests.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.base import Backbone
from .pretrain import to_pixels
from .tasks import Task, get_task

ENCODE_BATCH = 256
PROBE_STEPS = 200  # full-batch L-BFGS iterations: converged on ≤ 1,000 features
PROBE_WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)  # picked on the validation split


def encode_arrays(backbone: Backbone, images: np.ndarray) -> torch.Tensor:
    """L2-normalised image features of uint8 ``[N, S, S, 3]`` images rendered at the backbone's size."""
    feats = []
    for start in range(0, len(images), ENCODE_BATCH):
        pixels = to_pixels(images[start : start + ENCODE_BATCH], backbone.preprocess)
        feats.append(backbone.encode_images(pixels))
    return F.normalize(torch.cat(feats), dim=-1)


def class_embeddings(backbone: Backbone, task: str | Task) -> torch.Tensor:
    """L2-normalised text features of the task's prompts, in label order."""
    return F.normalize(backbone.encode_texts(get_task(task).prompts()), dim=-1)


def zero_shot_accuracy(backbone: Backbone, task: str | Task, features: torch.Tensor, labels: np.ndarray) -> float:
    """Accuracy of argmax cosine similarity to the class prompts, in percent."""
    predictions = (features @ class_embeddings(backbone, task).T).argmax(1).numpy()
    return float(100 * np.mean(predictions == labels))


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float) -> torch.nn.Linear:
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=PROBE_STEPS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def linear_probe_accuracy(
    train: tuple[torch.Tensor, np.ndarray], val: tuple[torch.Tensor, np.ndarray], test: tuple[torch.Tensor, np.ndarray]
) -> float:
    """Multinomial logistic regression on L2-normalised features; L2 strength picked on ``val``. Percent.

    Example:
        >>> x = F.normalize(torch.eye(4).repeat(4, 1), dim=-1); y = np.arange(4).repeat(1).tolist() * 4
        >>> linear_probe_accuracy((x, np.array(y)), (x, np.array(y)), (x, np.array(y)))
        100.0
    """
    n_classes = int(max(train[1].max(), test[1].max())) + 1
    score = lambda head, split: float(100 * np.mean(head(split[0]).argmax(1).numpy() == split[1]))  # noqa: E731
    with torch.enable_grad():
        heads = [_fit_logistic(train[0], torch.as_tensor(train[1]), n_classes, wd) for wd in PROBE_WEIGHT_DECAYS]
    with torch.no_grad():
        best = max(heads, key=lambda head: score(head, val))
        return score(best, test)


def few_shot_subset(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices of ``shots`` random examples per class."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in np.unique(labels)])
