"""The toy world's semantics: objects, scenes and the captions that describe them.

Nothing here draws pixels (that is :mod:`.render`); a scene is a small frozen
record of 1–3 objects, each with a shape, colour, size, position and fill,
and a caption is one of many phrasings of it. Everything is driven by a
``numpy.random.Generator``, so a seed fixes scenes and captions exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# No hexagon or pentagon: at 64 pixels they are nearly circles and the tiny CLIP confuses them.
SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "diamond", "semicircle")
# sRGB in [0, 1]; chosen to stay distinguishable under the in-domain colour jitter.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.13, 0.13),
    "orange": (0.96, 0.52, 0.08),
    "yellow": (0.93, 0.84, 0.10),
    "green": (0.13, 0.63, 0.22),
    "cyan": (0.10, 0.76, 0.84),
    "blue": (0.14, 0.26, 0.90),
    "purple": (0.53, 0.20, 0.76),
    "pink": (0.97, 0.47, 0.74),
}
COLOR_NAMES = tuple(COLORS)
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
FILLS = ("solid", "outline", "striped")

POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
FILL_WORDS = {"solid": "solid", "outline": "outlined", "striped": "striped"}
PREFIXES = ("", "a photo of", "an image of", "a picture of", "a rendering of", "there is", "this is", "a drawing of")
GENERIC_NOUNS = ("shape", "object")  # stand in for the shape when a caption omits it
OBJECT_COUNTS = (1, 2, 3)
OBJECT_COUNT_PROBS = (0.65, 0.2, 0.15)  # downstream tasks show one object, so most scenes do too

# How often a caption mentions each attribute (the shape is almost always named).
MENTION_PROB = {"shape": 0.9, "color": 0.75, "size": 0.45, "fill": 0.35, "position": 0.35}
MULTI_MENTION_SCALE = 0.7  # multi-object captions are long: mention less of each object
POSTFIX_COLOR_PROB = 0.15  # "a circle in red" rather than "a red circle"
PERIOD_PROB = 0.5


@dataclass(frozen=True)
class ToyObject:
    """One object of a scene.

    Example:
        >>> ToyObject("circle", "red", "large", "left", "solid").shape
        'circle'
    """

    shape: str
    color: str
    size: str
    position: str
    fill: str


@dataclass(frozen=True)
class Scene:
    """An ordered tuple of objects at distinct positions (drawn in that order)."""

    objects: tuple[ToyObject, ...]


def sample_object(rng: np.random.Generator, position: str | None = None, **fixed: str) -> ToyObject:
    """Sample an object; any attribute given in ``fixed`` (or ``position``) is kept.

    Example:
        >>> obj = sample_object(np.random.default_rng(0), shape="star")
        >>> obj.shape
        'star'
    """
    pick = lambda values: str(values[rng.integers(len(values))])  # noqa: E731
    return ToyObject(
        shape=fixed.get("shape") or pick(SHAPES),
        color=fixed.get("color") or pick(COLOR_NAMES),
        size=fixed.get("size") or pick(SIZES),
        position=position or pick(POSITIONS),
        fill=fixed.get("fill") or pick(FILLS),
    )


def sample_scene(rng: np.random.Generator, n_objects: int | None = None) -> Scene:
    """Sample a scene of ``n_objects`` (default: 1–3 at random) at distinct positions.

    Example:
        >>> a = sample_scene(np.random.default_rng(7))
        >>> a == sample_scene(np.random.default_rng(7))
        True
    """
    if n_objects is None:
        n_objects = int(rng.choice(OBJECT_COUNTS, p=OBJECT_COUNT_PROBS))
    if not 1 <= n_objects <= len(POSITIONS):
        raise ValueError(f"a scene holds 1 to {len(POSITIONS)} objects, not {n_objects}")
    positions = rng.permutation(len(POSITIONS))[:n_objects]
    return Scene(tuple(sample_object(rng, position=POSITIONS[p]) for p in positions))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe_object(obj: ToyObject, rng: np.random.Generator, scale: float = 1.0) -> str:
    """A noun phrase for one object, with each attribute mentioned at random.

    Example:
        >>> describe_object(ToyObject("star", "red", "small", "top", "solid"), np.random.default_rng(1))
        'a small star at the top'
    """
    say = {k: rng.random() < p * (scale if k != "shape" else 1.0) for k, p in MENTION_PROB.items()}
    noun = obj.shape if say["shape"] else GENERIC_NOUNS[rng.integers(len(GENERIC_NOUNS))]
    postfix_color = say["color"] and rng.random() < POSTFIX_COLOR_PROB
    adjectives = [obj.size] if say["size"] else []
    adjectives += [FILL_WORDS[obj.fill]] if say["fill"] else []
    adjectives += [obj.color] if say["color"] and not postfix_color else []
    words = adjectives + [noun]
    phrase = f"{_article(words[0])} {' '.join(words)}"
    if postfix_color:
        phrase += f" in {obj.color}"
    if say["position"]:
        phrase += f" {POSITION_PHRASES[obj.position]}"
    return phrase


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One random phrasing of ``scene``: objects joined with "and", attributes sometimes omitted.

    Example:
        >>> scene = Scene((ToyObject("circle", "red", "large", "left", "solid"),))
        >>> caption(scene, np.random.default_rng(3))
        'a rendering of a red circle on the left.'
    """
    scale = 1.0 if len(scene.objects) == 1 else MULTI_MENTION_SCALE
    order = rng.permutation(len(scene.objects))
    phrases = [describe_object(scene.objects[i], rng, scale) for i in order]
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    prefix = PREFIXES[rng.integers(len(PREFIXES))]
    text = f"{prefix} {body}" if prefix else body
    return text + "." if rng.random() < PERIOD_PROB else text


def vocabulary_words() -> list[str]:
    """Every word the grammar can produce (plus class-name words), sorted.

    Example:
        >>> {"circle", "red", "left", "photo"} <= set(vocabulary_words())
        True
    """
    texts: list[str] = [*SHAPES, *COLOR_NAMES, *SIZES, *FILL_WORDS.values(), *GENERIC_NOUNS, "in", "a", "an", "and"]
    texts += [*POSITION_PHRASES.values(), *PREFIXES]
    words = {w for text in texts for w in text.split()}
    return sorted(words | set(POSITIONS) | set(FILLS))


def scene_attributes(scene: Scene) -> Sequence[dict[str, str]]:
    """The scene as plain dicts (for JSON logs and tests)."""
    return [obj.__dict__.copy() for obj in scene.objects]
