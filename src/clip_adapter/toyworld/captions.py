"""Captions that test composition, and their perturbed twins, from toy-world scenes.

One place for every caption the compositionality benchmarks score and the
remedies train on (ARO, Yuksekgonul et al., ICLR 2023; the negation and
binding studies of the survey seed):

- **attribution**: "a red circle and a blue square" ↔ "a blue circle and a red
  square" (an attribute swapped between the two objects);
- **relation**: "a circle left of a square" ↔ "a square left of a circle"
  (the objects swapped around the relation);
- **order**: ARO's COCO/Flickr-Order perturbations (shuffle nouns and
  adjectives; shuffle everything but nouns and adjectives; shuffle trigrams;
  shuffle words within trigrams);
- **negation**: "a red circle and no blue square" ↔ "no red circle and a blue
  square" when the scene holds the red circle and no blue square.

Each true caption and its perturbation hold the same words (a bag-of-words
model scores them alike), so a model can only prefer the true one by reading
bindings, order or negation. Words come from the toy grammar, except the
negation words of :data:`NEGATION_WORDS`, which the shipped toy CLIP has never
seen (its tokenizer maps them to ``<unk>``): a remedy that teaches negation
must add them to the vocabulary.

Example:
    >>> import numpy as np
    >>> scene = two_object_scene(np.random.default_rng(0))
    >>> true, false = attribute_pair(scene)
    >>> sorted(true.split()) == sorted(false.split()) and true != false
    True
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .world import (
    COLOR_NAMES,
    FILL_WORDS,
    GENERIC_NOUNS,
    POSITION_PHRASES,
    SHAPES,
    SIZES,
    Scene,
    ToyObject,
    sample_object,
)

# Relation phrase → (position of the first-mentioned object, position of the second).
RELATIONS: dict[str, tuple[str, str]] = {
    "left of": ("left", "right"),
    "right of": ("right", "left"),
    "on top of": ("top", "bottom"),
    "at the bottom of": ("bottom", "top"),
}
ATTRIBUTES = ("color", "size", "fill")
NEGATION_WORDS = ("no", "not", "without")
NOUNS = frozenset(SHAPES) | frozenset(GENERIC_NOUNS)
ADJECTIVES = frozenset(COLOR_NAMES) | frozenset(SIZES) | frozenset(FILL_WORDS.values())
ORDER_KINDS = (
    "shuffle-nouns-adjectives",
    "shuffle-all-but-nouns-adjectives",
    "shuffle-trigrams",
    "shuffle-within-trigrams",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _words(obj: ToyObject, attribute: str) -> str:
    value = FILL_WORDS[obj.fill] if attribute == "fill" else getattr(obj, attribute)
    return f"{value} {obj.shape}"


def noun_phrase(obj: ToyObject, attribute: str = "color", article: bool = True) -> str:
    """``"a red circle"`` (``attribute`` is ``color``, ``size`` or ``fill``).

    Example:
        >>> noun_phrase(ToyObject("circle", "orange", "large", "left", "solid"))
        'an orange circle'
    """
    words = _words(obj, attribute)
    return f"{_article(words)} {words}" if article else words


def two_object_scene(rng: np.random.Generator, positions: tuple[str, str] | None = None, **fixed: str) -> Scene:
    """Two objects that differ in shape, colour, size and fill (so every swap changes the meaning).

    ``positions`` pins the objects' positions (a relation needs them); else
    they are two distinct random positions.

    Example:
        >>> s = two_object_scene(np.random.default_rng(1), positions=("left", "right"))
        >>> [o.position for o in s.objects], s.objects[0].shape != s.objects[1].shape
        (['left', 'right'], True)
    """
    if positions is None:
        picked = rng.permutation(5)[:2]
        positions = tuple(("left", "right", "top", "bottom", "center")[i] for i in picked)  # type: ignore[assignment]
    first = sample_object(rng, position=positions[0], **fixed)
    second = first
    while any(getattr(second, a) == getattr(first, a) for a in ("shape", "color", "size", "fill")):
        second = sample_object(rng, position=positions[1])
    return Scene((first, second))


def attribute_pair(scene: Scene, attribute: str = "color") -> tuple[str, str]:
    """(true caption, caption with ``attribute`` swapped between the two objects).

    Example:
        >>> a = ToyObject("circle", "red", "large", "left", "solid")
        >>> b = ToyObject("square", "blue", "small", "right", "outline")
        >>> attribute_pair(Scene((a, b)))
        ('a red circle and a blue square', 'a blue circle and a red square')
    """
    a, b = scene.objects[:2]
    swapped_a = ToyObject(a.shape, **{**_attrs(a), attribute: getattr(b, attribute)})
    swapped_b = ToyObject(b.shape, **{**_attrs(b), attribute: getattr(a, attribute)})
    true = f"{noun_phrase(a, attribute)} and {noun_phrase(b, attribute)}"
    return true, f"{noun_phrase(swapped_a, attribute)} and {noun_phrase(swapped_b, attribute)}"


def _attrs(obj: ToyObject) -> dict[str, str]:
    return {"color": obj.color, "size": obj.size, "position": obj.position, "fill": obj.fill}


def relation_scene(rng: np.random.Generator, relation: str | None = None) -> tuple[Scene, str]:
    """A two-object scene laid out for ``relation`` (random when ``None``), and the relation."""
    relation = relation or str(rng.choice(list(RELATIONS)))
    return two_object_scene(rng, positions=RELATIONS[relation]), relation


def relation_pair(scene: Scene, relation: str, attribute: str | None = None) -> tuple[str, str]:
    """(true caption, caption with the two objects swapped around ``relation``).

    ``attribute`` adds one attribute to each noun ("a red circle left of a blue square").

    Example:
        >>> a = ToyObject("circle", "red", "large", "left", "solid")
        >>> b = ToyObject("square", "blue", "small", "right", "outline")
        >>> relation_pair(Scene((a, b)), "left of")
        ('a circle left of a square', 'a square left of a circle')
    """
    a, b = scene.objects[:2]
    phrase = (lambda o: noun_phrase(o, attribute)) if attribute else (lambda o: f"{_article(o.shape)} {o.shape}")
    return f"{phrase(a)} {relation} {phrase(b)}", f"{phrase(b)} {relation} {phrase(a)}"


def absent_object(scene: Scene, rng: np.random.Generator) -> ToyObject:
    """An object whose shape and colour match none in ``scene`` (what a negation caption denies)."""
    shapes = [s for s in SHAPES if s not in {o.shape for o in scene.objects}]
    colors = [c for c in COLOR_NAMES if c not in {o.color for o in scene.objects}]
    return sample_object(rng, shape=str(rng.choice(shapes)), color=str(rng.choice(colors)))


def negation_pair(present: ToyObject, absent: ToyObject) -> tuple[str, str]:
    """(caption consistent with an image showing ``present`` and not ``absent``, its negation-flipped twin).

    The twins hold the same words except for the articles when exactly one
    phrase starts with a vowel ("an orange …"): a bag-of-words model could
    read that cue, so the negation suite draws scenes without it.

    Example:
        >>> a = ToyObject("circle", "red", "large", "left", "solid")
        >>> b = ToyObject("square", "blue", "small", "right", "outline")
        >>> negation_pair(a, b)
        ('a red circle and no blue square', 'no red circle and a blue square')
    """
    p, q = noun_phrase(present, article=False), noun_phrase(absent, article=False)
    return f"{_article(p)} {p} and no {q}", f"no {p} and {_article(q)} {q}"


def _shuffle_positions(words: list[str], keep: Callable[[str], bool], rng: np.random.Generator) -> list[str]:
    # Permute the words for which keep() is true among their own slots; others stay.
    slots = [i for i, w in enumerate(words) if keep(w)]
    out = list(words)
    for slot, source in zip(slots, rng.permutation(slots) if slots else []):
        out[slot] = words[int(source)]
    return out


def _trigrams(words: list[str]) -> list[list[str]]:
    return [words[i : i + 3] for i in range(0, len(words), 3)]


def order_perturbation(
    caption: str, kind: str, rng: np.random.Generator, is_content: Callable[[str], bool] | None = None
) -> str:
    """One ARO order perturbation of ``caption`` (``kind`` in :data:`ORDER_KINDS`).

    ``is_content`` says which words are nouns or adjectives; the default knows
    the toy grammar. A perturbation that happens to return the caption itself
    is possible for very short captions; callers drop those.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> order_perturbation("a red circle and a blue square", "shuffle-nouns-adjectives", rng)
        'a blue red and a circle square'
    """
    words = caption.split()
    content = is_content or (lambda w: w in NOUNS or w in ADJECTIVES)
    if kind == "shuffle-nouns-adjectives":
        return " ".join(_shuffle_positions(words, content, rng))
    if kind == "shuffle-all-but-nouns-adjectives":
        return " ".join(_shuffle_positions(words, lambda w: not content(w), rng))
    if kind == "shuffle-trigrams":
        groups = _trigrams(words)
        return " ".join(w for i in rng.permutation(len(groups)) for w in groups[int(i)])
    if kind == "shuffle-within-trigrams":
        return " ".join(w for g in _trigrams(words) for w in (g[int(i)] for i in rng.permutation(len(g))))
    raise ValueError(f"unknown order perturbation {kind!r}; choose from {', '.join(ORDER_KINDS)}")


def order_negatives(caption: str, rng: np.random.Generator, kinds: Sequence[str] = ORDER_KINDS) -> list[str]:
    """The distinct order perturbations of ``caption`` that differ from it (one per kind at most)."""
    out: list[str] = []
    for kind in kinds:
        text = order_perturbation(caption, kind, rng)
        if text != caption and text not in out:
            out.append(text)
    return out


def descriptive_caption(scene: Scene) -> str:
    """A long, fixed phrasing of a two-object scene, the material of the order perturbations.

    Every object gets its size, colour and position, so a shuffle moves
    meaning-bearing words (ARO perturbs COCO captions of similar length).

    Example:
        >>> a = ToyObject("circle", "red", "large", "left", "solid")
        >>> b = ToyObject("square", "blue", "small", "right", "outline")
        >>> descriptive_caption(Scene((a, b)))
        'a large red circle on the left and a small blue square on the right'
    """
    phrases = [f"{_article(o.size)} {o.size} {o.color} {o.shape} {POSITION_PHRASES[o.position]}" for o in scene.objects]
    return " and ".join(phrases)


def object_caption(obj: ToyObject, template: str = "a photo of {}.") -> str:
    """A single-object caption naming colour and shape (what the bias and probe studies compare against).

    Example:
        >>> object_caption(ToyObject("circle", "orange", "large", "left", "solid"))
        'a photo of an orange circle.'
    """
    return template.format(noun_phrase(obj, "color"))


def pair_caption(first: ToyObject, second: ToyObject) -> str:
    """``"a red circle and a blue square"``: two objects in the given mention order.

    Example:
        >>> a = ToyObject("circle", "red", "large", "left", "solid")
        >>> b = ToyObject("square", "blue", "small", "right", "outline")
        >>> pair_caption(b, a)
        'a blue square and a red circle'
    """
    return f"{noun_phrase(first)} and {noun_phrase(second)}"
