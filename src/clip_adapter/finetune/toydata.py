"""Toy-world training and validation items for the compositional remedies.

Every item is an image (a rendered scene), its true caption and hard-negative
captions with the same words (:mod:`clip_adapter.toyworld.captions`). Items are
drawn from ``numpy.random.default_rng([seed, role, index])``: a seed fixes them
exactly, and training (role 0), validation (role 1) and the plain pretraining
mix (role 2) never share a scene. Training and validation seeds must be below
:data:`TRAIN_SEED_LIMIT`; the compositional benchmarks use seeds from there up,
so nothing a remedy trains or selects on is ever measured.

Example:
    >>> items = attribution_items(seed=0, n=2)
    >>> len(items), sorted(items[0].caption.split()) == sorted(items[0].negatives[0].split())
    (2, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.base import PreprocessConfig
from ..core.errors import ConfigError
from ..toyworld.captions import (
    ATTRIBUTES,
    NEGATION_WORDS,
    absent_object,
    attribute_pair,
    negation_pair,
    noun_phrase,
    relation_pair,
    relation_scene,
    two_object_scene,
)
from ..toyworld.pretrain import render_batch, to_pixels
from ..toyworld.render import render_array
from ..toyworld.world import Scene, ToyObject, sample_scene

TRAIN_SEED_LIMIT = 1000  # seeds >= this are the benchmarks'
ROLE_TRAIN, ROLE_VAL, ROLE_PLAIN = 0, 1, 2


@dataclass
class Item:
    """One image with its true caption and hard negatives (captions it must score below the true one)."""

    image: np.ndarray  # uint8 [H, W, 3]
    caption: str
    negatives: list[str] = field(default_factory=list)
    kind: str = ""


def check_train_seed(seed: int, name: str = "seed") -> int:
    """Refuse a seed that would draw benchmark scenes (``>= TRAIN_SEED_LIMIT``)."""
    if not 0 <= seed < TRAIN_SEED_LIMIT:
        raise ConfigError(
            f"{name} {seed} is not a training seed: use 0..{TRAIN_SEED_LIMIT - 1} "
            f"(the benchmarks use {TRAIN_SEED_LIMIT} and up)"
        )
    return seed


def _rng(seed: int, role: int, index: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, role, salt, index])


def _render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    return render_array(scene, "photo", rng)


def attribution_item(rng: np.random.Generator, attributes: Sequence[str] = ATTRIBUTES) -> Item:
    """A two-object scene; the caption names one attribute per object, the negatives swap each attribute.

    The caption's attribute is drawn from ``attributes``; negatives are that
    caption with the attribute swapped between the objects, plus the two
    objects' other attribute swaps of the same phrasing when they exist.
    """
    scene = two_object_scene(rng)
    attribute = str(rng.choice(list(attributes)))
    true, false = attribute_pair(scene, attribute)
    return Item(_render(scene, rng), true, [false], f"attribution-{attribute}")


def relation_item(rng: np.random.Generator) -> Item:
    """A two-object scene laid out for a relation; the negative swaps the objects around it."""
    scene, relation = relation_scene(rng)
    attribute = None if rng.random() < 0.5 else "color"
    true, false = relation_pair(scene, relation, attribute)
    return Item(_render(scene, rng), true, [false], "relation")


NEGATION_TEMPLATES = (
    "{p} and no {q}",
    "no {q} and {p}",
    "{p} without {aq}",
    "{p} and not {aq}",
)


def negation_captions(present: Sequence[str], absent: Sequence[str], rng: np.random.Generator) -> tuple[str, str]:
    """(caption true of a scene showing ``present`` and not ``absent``, its negation-flipped twin).

    Phrases are bare noun phrases ("red circle"); a template from
    :data:`NEGATION_TEMPLATES` joins one present and one absent phrase, and the
    twin applies the same template with the roles swapped (so it holds the same
    words). Labels of real data go through the same templates.

    Example:
        >>> true, flipped = negation_captions(["red circle"], ["blue square"], np.random.default_rng(0))
        >>> sorted(true.split()) == sorted(flipped.split()) and true != flipped
        True
    """
    p, q = str(rng.choice(list(present))), str(rng.choice(list(absent)))
    template = NEGATION_TEMPLATES[int(rng.integers(len(NEGATION_TEMPLATES)))]

    def fill(pos: str, neg: str) -> str:
        return template.format(p=f"{_article(pos)} {pos}", q=neg, aq=f"{_article(neg)} {neg}")

    return fill(p, q), fill(q, p)


def _article(words: str) -> str:
    return "an" if words[:1] in "aeiou" else "a"


def negation_item(rng: np.random.Generator, benchmark_form: bool = False) -> Item:
    """A scene of one or two objects, a caption denying an absent object, and its flipped twin.

    ``benchmark_form`` uses the one phrasing of :func:`~clip_adapter.toyworld.captions.negation_pair`
    (what validation and the benchmarks score); training draws from all templates.
    """
    scene = sample_scene(rng, n_objects=int(rng.integers(1, 3)))
    absent = absent_object(scene, rng)
    if benchmark_form:
        true, false = negation_pair(scene.objects[0], absent)
    else:
        present = [noun_phrase(o, article=False) for o in scene.objects]
        true, false = negation_captions(present, [noun_phrase(absent, article=False)], rng)
    return Item(_render(scene, rng), true, [false], "negation")


ITEM_MAKERS: dict[str, Callable[[np.random.Generator], Item]] = {
    "attribution": attribution_item,
    "attribution-color": lambda rng: attribution_item(rng, ("color",)),
    "relation": relation_item,
    "negation": negation_item,
    "negation-benchmark": lambda rng: negation_item(rng, benchmark_form=True),
}


def make_items(kind: str, seed: int, n: int, role: int = ROLE_TRAIN) -> list[Item]:
    """``n`` items of ``kind`` (a key of :data:`ITEM_MAKERS`), item ``i`` a function of ``(seed, role, kind, i)``
    only."""
    maker = ITEM_MAKERS[kind]
    salt = list(ITEM_MAKERS).index(kind)
    return [maker(_rng(seed, role, i, salt)) for i in range(n)]


def attribution_items(seed: int, n: int, role: int = ROLE_TRAIN) -> list[Item]:
    """Attribution items (see :func:`attribution_item`)."""
    return make_items("attribution", seed, n, role)


def plain_items(seed: int, n: int, batch: int = 64) -> list[Item]:
    """Ordinary pretraining pairs (1–3 object scenes, one random caption each), to keep zero-shot skills."""
    out: list[Item] = []
    for step in range((n + batch - 1) // batch):
        images, texts = render_batch(
            seed * 7919 + 13, step, batch
        )  # a stream the shipped pretraining (seed 0) never drew
        out += [Item(img, text, [], "plain") for img, text in zip(images, texts)]
    return out[:n]


def pixels(images: np.ndarray | Sequence[np.ndarray], preprocess: PreprocessConfig) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` renders → the backbone's normalised input ``[B, 3, S, S]`` (bilinear resize when sizes
    differ)."""
    batch = np.ascontiguousarray(np.stack(list(images)) if not isinstance(images, np.ndarray) else images)
    x = to_pixels(batch, PreprocessConfig(image_size=batch.shape[1], mean=preprocess.mean, std=preprocess.std))
    if x.shape[-1] != preprocess.image_size:
        x = F.interpolate(
            x, size=(preprocess.image_size, preprocess.image_size), mode="bilinear", align_corners=False, antialias=True
        )
    return x


__all__ = [
    "ITEM_MAKERS",
    "Item",
    "NEGATION_TEMPLATES",
    "NEGATION_WORDS",
    "ROLE_PLAIN",
    "ROLE_TRAIN",
    "ROLE_VAL",
    "TRAIN_SEED_LIMIT",
    "ToyObject",
    "attribution_items",
    "check_train_seed",
    "make_items",
    "negation_captions",
    "pixels",
    "plain_items",
]
