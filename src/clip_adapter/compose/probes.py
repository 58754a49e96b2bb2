"""Binding probes: is "which colour goes with which shape" in each embedding, and does the cosine use it?

The seed's test (CLIP "behaves like a bag of words cross-modally but not
uni-modally"): on two-object scenes that always hold an object of a target
shape (say a circle) and a distractor of another shape and colour,

- an **image probe** (logistic regression on the frozen, normalised image
  embeddings) predicts the circle's colour;
- a **text probe** does the same from the frozen embeddings of the scenes'
  captions ("a blue square and a red circle", target first or second at random);
- the **cross-modal** answer to the same question is the cosine's: the colour
  ``c`` whose caption "a photo of a {c} circle." is closest to the image.

Chance is 1/8 (eight colours). A model that sees only the *set* of colours
and shapes (a bag of words) cannot beat 1/2 on any of them: both colours are
equally likely to be the circle's. Probes are trained on ``train`` scenes per
target shape, their L2 strength chosen on the last fifth of those, and tested
on ``test`` other scenes; the figures are means over the target shapes.
Scenes come from a fixed seed (1005).

Example:
    >>> from clip_adapter.backbones import create_backbone
    >>> material = probe_material(ProbeConfig(shapes=("circle",), train=20, test=8))
    >>> r = measure_probes(create_backbone("toy", precision="fp32"), material)
    >>> r["chance"], sorted(r["per_shape"])
    (0.125, ['circle'])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..backbones.base import Backbone
from ..core.config import Config, check_range, check_seed, option
from ..core.errors import ConfigError
from ..core.threads import torch_threads
from ..features.rendered import encode_arrays, encode_captions
from ..methods.linear_probe import fit_logistic
from ..toyworld.captions import object_caption, pair_caption
from ..toyworld.render import render_array
from ..toyworld.world import COLOR_NAMES, SHAPES, Scene, ToyObject, sample_object
from .bias import OPPOSITE

C_GRID = (1.0, 10.0, 100.0)  # inverse L2 strengths tried on the held-out fifth of the training scenes
MAX_ITER = 100
DOMAIN = "photo"


@dataclass
class ProbeConfig(Config):
    """Target shapes, scenes per shape for training and testing, seed."""

    shapes: tuple[str, ...] = option(("circle", "square", "star"), "target shapes: the probes predict their colour")
    train: int = option(300, "probe training scenes per shape")
    test: int = option(150, "probe test scenes per shape")
    seed: int = option(1005, "seed of the scenes (1000 and above: apart from every training stream)")
    batch_size: int = option(64, "encoder batch size")

    def validate(self) -> None:
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown or not self.shapes:
            raise ConfigError(f"probe shape {unknown[0]!r} is not a toy shape" if unknown else "no probe shape given")
        check_range("probe train scenes", self.train, 10, 100_000)
        check_range("probe test scenes", self.test, 1, 100_000)
        check_seed("probe seed", self.seed)


@dataclass
class ShapeMaterial:
    """The rendered scenes, captions and labels (target's colour index) of one target shape."""

    shape: str
    images: np.ndarray
    captions: list[str]
    labels: torch.Tensor
    n_train: int


def _scene(rng: np.random.Generator, shape: str) -> tuple[Scene, str, int]:
    positions = OPPOSITE[int(rng.integers(2))][:: 1 if rng.random() < 0.5 else -1]
    target = sample_object(rng, position=positions[0], shape=shape)
    other = target
    while other.shape == shape or other.color == target.color:
        other = sample_object(rng, position=positions[1])
    text = pair_caption(target, other) if rng.random() < 0.5 else pair_caption(other, target)
    return Scene((target, other)), text, COLOR_NAMES.index(target.color)


def probe_material(config: ProbeConfig = ProbeConfig()) -> list[ShapeMaterial]:
    """Render every target shape's scenes (deterministic in ``config.seed``)."""
    config.validate()
    out = []
    for s, shape in enumerate(config.shapes):
        images, texts, labels = [], [], []
        for i in range(config.train + config.test):
            rng = np.random.default_rng([config.seed, SHAPES.index(shape), i])
            scene, text, label = _scene(rng, shape)
            images.append(render_array(scene, DOMAIN, rng))
            texts.append(text)
            labels.append(label)
        out.append(ShapeMaterial(shape, np.stack(images), texts, torch.tensor(labels), config.train))
    return out


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, n_train: int, num_classes: int) -> float:
    """Test accuracy of a logistic probe fit on the first ``n_train`` rows (C chosen on their last fifth, then refit).

    Example:
        >>> x = torch.randn(60, 4); y = (x[:, 0] > 0).long()
        >>> probe_accuracy(x, y, 40, 2) > 0.8
        True
    """
    n_fit = n_train - max(1, n_train // 5)
    with torch_threads(1), torch.enable_grad():  # tiny matrices: one thread is fastest

        def val_acc(c: float) -> float:
            linear = fit_logistic(x[:n_fit], y[:n_fit], num_classes, c, MAX_ITER)
            return float((linear(x[n_fit:n_train]).argmax(1) == y[n_fit:n_train]).float().mean())

        best = max(C_GRID, key=val_acc)  # the first of equals: the strongest regularisation
        linear = fit_logistic(x[:n_train], y[:n_train], num_classes, best, MAX_ITER)
        with torch.no_grad():
            return float((linear(x[n_train:]).argmax(1) == y[n_train:]).float().mean())


def measure_probes(backbone: Backbone, material: list[ShapeMaterial], batch_size: int = 64) -> dict:
    """Image probe, text probe and cross-modal accuracy per target shape and their means."""
    per_shape = {}
    for m in material:
        image = encode_arrays(backbone, m.images, batch_size)
        text = encode_captions(backbone, m.captions)
        choices = encode_captions(
            backbone, [object_caption(ToyObject(m.shape, c, "large", "center", "solid")) for c in COLOR_NAMES]
        )
        test = slice(m.n_train, None)
        cross = (image[test] @ choices.T).argmax(1) == m.labels[test]
        per_shape[m.shape] = {
            "image_probe": probe_accuracy(image, m.labels, m.n_train, len(COLOR_NAMES)),
            "text_probe": probe_accuracy(text, m.labels, m.n_train, len(COLOR_NAMES)),
            "cross_modal": float(cross.float().mean()),
            "train": m.n_train,
            "test": len(m.labels) - m.n_train,
        }
    mean = lambda key: sum(r[key] for r in per_shape.values()) / len(per_shape)  # noqa: E731
    return {
        "image_probe": mean("image_probe"),
        "text_probe": mean("text_probe"),
        "cross_modal": mean("cross_modal"),
        "chance": 1 / len(COLOR_NAMES),
        "bag_of_words_ceiling": 0.5,
        "per_shape": per_shape,
    }
