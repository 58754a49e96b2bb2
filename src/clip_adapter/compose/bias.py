"""The multi-object biases: does the image side follow the larger object, the text side the first-mentioned one?

The controlled study of the survey seed, on toy-world pairs of objects
``(A, B)`` that differ in shape and colour, placed on opposite sides (never
overlapping). Object size and mention order vary independently:

- **image side**: each two-object image (A large and B small, then A small
  and B large) is classified between the two single-object captions ("a
  photo of a red circle.", "a photo of a blue square."): how often it
  follows the **larger** object (0.5 = no bias). Also the top-1 over every
  colour-shape caption: how often it names the larger, the smaller, or neither.
- **text side**: each two-object caption ("a red circle and a blue square",
  then in the other order) is matched against single-object images of A and
  of B (same size, centred): how often it follows the **first-mentioned**
  object (0.5 = no bias).
- **interaction**: each two-object image against the two orders of its
  caption: how often the caption that mentions the larger object first
  wins, and the 2×2 table of mean cosines (A large / small × A mentioned
  first / second).

Ties count half. Scenes come from a fixed seed (1004).

Example:
    >>> from clip_adapter.backbones import create_backbone
    >>> material = bias_material(BiasConfig(pairs=4))
    >>> result = measure_bias(create_backbone("toy", precision="fp32"), material)
    >>> sorted(result)[:3], 0 <= result["image_follows_larger"] <= 1
    (['image_follows_larger', 'image_top1', 'interaction'], True)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..backbones.base import Backbone
from ..core.config import Config, check_range, check_seed, option
from ..features.rendered import encode_arrays, encode_captions
from ..toyworld.captions import object_caption, pair_caption
from ..toyworld.render import render_array
from ..toyworld.world import COLOR_NAMES, SHAPES, Scene, ToyObject, sample_object
from .encode import rowwise_cosine, win

OPPOSITE = (("left", "right"), ("top", "bottom"))  # far enough apart that a large and a small object never touch
DOMAIN = "photo"


@dataclass
class BiasConfig(Config):
    """How many object pairs, from which seed."""

    pairs: int = option(200, "object pairs of the bias study")
    seed: int = option(1004, "seed of the pairs (1000 and above: apart from every training stream)")
    batch_size: int = option(64, "encoder batch size")

    def validate(self) -> None:
        check_range("bias pairs", self.pairs, 1, 100_000)
        check_seed("bias seed", self.seed)


@dataclass
class BiasMaterial:
    """Rendered images and captions of the study (shared by every model benchmarked)."""

    pairs: list[tuple[ToyObject, ToyObject]]
    two_object: np.ndarray  # [2P, H, W, 3]: pair p with A large at 2p, with B large at 2p + 1
    single: np.ndarray  # [2P, ...]: A alone at 2p, B alone at 2p + 1
    classes: list[tuple[str, str]] = field(default_factory=list)  # every (colour, shape): the top-1 vocabulary


def object_pair(rng: np.random.Generator) -> tuple[ToyObject, ToyObject]:
    """Two objects of different shape and colour on opposite sides (sizes set later)."""
    positions = OPPOSITE[int(rng.integers(2))]
    if rng.random() < 0.5:
        positions = positions[::-1]
    a = sample_object(rng, position=positions[0])
    b = a
    while b.shape == a.shape or b.color == a.color:
        b = sample_object(rng, position=positions[1])
    return a, b


def bias_material(config: BiasConfig = BiasConfig()) -> BiasMaterial:
    """Render the study's images (deterministic in ``config.seed``)."""
    config.validate()
    pairs, two, single = [], [], []
    for p in range(config.pairs):
        rng = np.random.default_rng([config.seed, p])
        a, b = object_pair(rng)
        pairs.append((a, b))
        for big_a in (True, False):
            scene = Scene(
                (replace(a, size="large" if big_a else "small"), replace(b, size="small" if big_a else "large"))
            )
            two.append(render_array(scene, DOMAIN, rng))
        size = str(rng.choice(["small", "large"]))
        for obj in (a, b):
            single.append(render_array(Scene((replace(obj, size=size, position="center"),)), DOMAIN, rng))
    classes = [(c, s) for c in COLOR_NAMES for s in SHAPES]
    return BiasMaterial(pairs, np.stack(two), np.stack(single), classes)


def _caption_index(texts: list[str]) -> dict[str, int]:
    return {t: i for i, t in enumerate(texts)}


def measure_bias(backbone: Backbone, material: BiasMaterial, batch_size: int = 64) -> dict:
    """The three bias figures and the interaction table for ``backbone`` (see the module docstring)."""
    a_caps = [object_caption(a) for a, _ in material.pairs]
    b_caps = [object_caption(b) for _, b in material.pairs]
    ab = [pair_caption(a, b) for a, b in material.pairs]
    ba = [pair_caption(b, a) for a, b in material.pairs]
    vocab = [object_caption(ToyObject(s, c, "large", "center", "solid")) for c, s in material.classes]
    texts = sorted(set(a_caps + b_caps + ab + ba + vocab))
    index, emb = _caption_index(texts), encode_captions(backbone, texts)
    pick = lambda caps: emb[[index[t] for t in caps]]  # noqa: E731
    two = encode_arrays(backbone, material.two_object, batch_size)
    single = encode_arrays(backbone, material.single, batch_size)
    a_large, b_large = two[0::2], two[1::2]
    ta, tb, t_ab, t_ba = pick(a_caps), pick(b_caps), pick(ab), pick(ba)
    image_larger = torch.cat(
        [
            win(rowwise_cosine(a_large, ta), rowwise_cosine(a_large, tb)),
            win(rowwise_cosine(b_large, tb), rowwise_cosine(b_large, ta)),
        ]
    )
    ia, ib = single[0::2], single[1::2]
    text_first = torch.cat(
        [
            win(rowwise_cosine(t_ab, ia), rowwise_cosine(t_ab, ib)),
            win(rowwise_cosine(t_ba, ib), rowwise_cosine(t_ba, ia)),
        ]
    )
    cells = {
        ("A large", "A first"): rowwise_cosine(a_large, t_ab),
        ("A large", "A second"): rowwise_cosine(a_large, t_ba),
        ("A small", "A first"): rowwise_cosine(b_large, t_ab),
        ("A small", "A second"): rowwise_cosine(b_large, t_ba),
    }
    large_first = torch.cat(
        [
            win(cells["A large", "A first"], cells["A large", "A second"]),
            win(cells["A small", "A second"], cells["A small", "A first"]),
        ]
    )
    return {
        "pairs": len(material.pairs),
        "image_follows_larger": float(image_larger.mean()),
        "image_top1": _top1(two, pick(vocab), material),
        "text_follows_first": float(text_first.mean()),
        "interaction": {
            "large_first_caption_wins": float(large_first.mean()),
            "mean_cosine": {f"{row}, {col}": float(v.mean()) for (row, col), v in cells.items()},
        },
    }


def _top1(images: torch.Tensor, vocab: torch.Tensor, material: BiasMaterial) -> dict[str, float]:
    """Top-1 over every colour-shape caption: share naming the larger object, the smaller one, neither."""
    top = (images @ vocab.T).argmax(dim=1).tolist()
    larger = smaller = 0
    for p, (a, b) in enumerate(material.pairs):
        for big, small, k in ((a, b, 2 * p), (b, a, 2 * p + 1)):
            name = material.classes[top[k]]
            larger += name == (big.color, big.shape)
            smaller += name == (small.color, small.shape)
    n = len(top)
    return {
        "larger": larger / n,
        "smaller": smaller / n,
        "neither": (n - larger - smaller) / n,
        "chance_each": 1 / len(material.classes),
    }
