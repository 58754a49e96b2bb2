"""The toy world's compositionality suites, written as files in the suite format of :mod:`.suites`.

Four suites, each from its own fixed seed (all ≥ 1000: the remedies train on
scenes drawn from seeds below 1000, so no benchmark scene is a training scene):

- ``attribution``: two-object scenes, colour, size or fill swapped between
  the objects (subtype = the attribute);
- ``relation``: two objects laid out for "left of", "right of", "on top of",
  "at the bottom of", swapped around the relation (subtype = the relation);
- ``order``: a long descriptive caption and its four ARO order perturbations
  (``false_kinds`` names each; scored per kind);
- ``negation``: one- or two-object scenes, "a red circle and no blue square"
  against "no red circle and a blue square" (subtype = object count); no
  orange object is stated or denied, since "an orange …" would give the two
  captions different articles, a cue a bag-of-words model could read.

Images are rendered in the photo domain at the toy world's 64 pixels.

Example:
    >>> import tempfile, pathlib
    >>> from clip_adapter.compose.suites import read_suite
    >>> out = write_toy_suites(pathlib.Path(tempfile.mkdtemp()) / "suites", items_per_suite=4)
    >>> [read_suite(out / name).items[0].subtype for name in SUITES]
    ['color', 'left of', None, 'one-object']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..core.config import check_range
from ..core.errors import ConfigError
from ..core.files import atomic_dir, atomic_write_json
from ..core.outputs import claim_output_dir, is_own_output, mark_output_dir
from ..toyworld.captions import (
    ATTRIBUTES,
    ORDER_KINDS,
    RELATIONS,
    absent_object,
    attribute_pair,
    descriptive_caption,
    negation_pair,
    noun_phrase,
    order_perturbation,
    relation_pair,
    relation_scene,
    two_object_scene,
)
from ..toyworld.render import render_array
from ..toyworld.world import Scene, sample_object, scene_attributes
from .kinds import SUITES_KIND
from .suites import IMAGE_DIR, ITEMS_FILE

SUITE_SEEDS = {"attribution": 1000, "relation": 1001, "order": 1002, "negation": 1003}
SUITES = tuple(SUITE_SEEDS)
ITEMS_PER_SUITE = 240  # items a toy suite holds unless told otherwise
DOMAIN = "photo"
PERTURB_TRIES = 8  # a short caption's shuffle can return it unchanged: draw again a few times

Draft = tuple[Scene, dict[str, Any]]  # the scene to render and the item's captions and metadata


def attribution_item(rng: np.random.Generator, index: int) -> Draft:
    """Colour, size and fill swaps in turn."""
    attribute = ATTRIBUTES[index % len(ATTRIBUTES)]
    scene = two_object_scene(rng)
    true, false = attribute_pair(scene, attribute)
    return scene, {
        "true_caption": true,
        "false_captions": [false],
        "subtype": attribute,
        "false_kinds": [f"swap-{attribute}"],
    }


def relation_item(rng: np.random.Generator, index: int) -> Draft:
    """Each relation in turn; the objects swapped around it."""
    relation = tuple(RELATIONS)[index % len(RELATIONS)]
    scene, relation = relation_scene(rng, relation)
    true, false = relation_pair(scene, relation)
    return scene, {
        "true_caption": true,
        "false_captions": [false],
        "subtype": relation,
        "false_kinds": ["swap-objects"],
    }


def order_item(rng: np.random.Generator, index: int) -> Draft:
    """A descriptive caption and one perturbation per ARO kind (kinds that only reproduce it are left out)."""
    scene = two_object_scene(rng)
    true = descriptive_caption(scene)
    false, kinds = [], []
    for kind in ORDER_KINDS:
        for _ in range(PERTURB_TRIES):
            text = order_perturbation(true, kind, rng)
            if text != true and text not in false:
                false.append(text)
                kinds.append(kind)
                break
    return scene, {"true_caption": true, "false_captions": false, "false_kinds": kinds}


def negation_item(rng: np.random.Generator, index: int) -> Draft:
    """One- and two-object scenes in turn; the first object is stated present, an absent one denied."""
    two = index % 2 == 1
    while True:  # an "orange" phrase would give the pair different articles ("an"/"a"): a word cue, not negation
        scene = two_object_scene(rng) if two else Scene((sample_object(rng),))
        absent = absent_object(scene, rng)
        if not any(noun_phrase(o, article=False)[0] in "aeiou" for o in (scene.objects[0], absent)):
            break
    true, false = negation_pair(scene.objects[0], absent)
    return scene, {
        "true_caption": true,
        "false_captions": [false],
        "subtype": "two-object" if two else "one-object",
        "absent": absent.__dict__.copy(),
    }


MAKERS: dict[str, Callable[[np.random.Generator, int], Draft]] = {
    "attribution": attribution_item,
    "relation": relation_item,
    "order": order_item,
    "negation": negation_item,
}


def suite_drafts(name: str, n_items: int) -> list[tuple[Scene, dict[str, Any], np.random.Generator]]:
    """The scenes, captions and render generators of suite ``name`` (deterministic in its seed and the index)."""
    if name not in MAKERS:
        raise ConfigError(f"unknown toy suite {name!r}; choose from {', '.join(SUITES)}")
    seed, out = SUITE_SEEDS[name], []
    for index in range(n_items):
        scene, item = MAKERS[name](np.random.default_rng([seed, index]), index)
        out.append((scene, item, np.random.default_rng([seed, index, 1])))
    return out


def _write_suite(root: Path, name: str, n_items: int) -> None:
    images = root / IMAGE_DIR
    images.mkdir(parents=True)
    items = []
    for index, (scene, item, render_rng) in enumerate(suite_drafts(name, n_items)):
        rel = f"{IMAGE_DIR}/{index:05d}.png"
        Image.fromarray(render_array(scene, DOMAIN, render_rng), mode="RGB").save(root / rel)
        items.append({"image": rel, **item, "scene": list(scene_attributes(scene))})
    atomic_write_json(root / ITEMS_FILE, items)


def write_toy_suites(
    out_dir: str | os.PathLike,
    items_per_suite: int = ITEMS_PER_SUITE,
    suites: tuple[str, ...] = SUITES,
    overwrite: bool = False,
) -> Path:
    """Write each of ``suites`` as ``out_dir/<suite>/{images/, items.json}``; return ``out_dir``.

    ``out_dir`` must be new or empty, or (with ``overwrite``) our own earlier
    suites; the folder is built beside it and renamed into place when complete.
    See the module docstring for the example.
    """
    check_range("items_per_suite", items_per_suite, 1, 1_000_000)
    unknown = [s for s in suites if s not in MAKERS]
    if unknown or not suites:
        raise ConfigError(
            f"unknown toy suite {unknown[0]!r}; choose from {', '.join(SUITES)}"
            if unknown
            else "no toy suite asked for"
        )
    out = claim_output_dir(out_dir, SUITES_KIND, overwrite=overwrite, option="--write-toy-suites")
    with atomic_dir(out, may_replace=lambda p: overwrite and is_own_output(p, SUITES_KIND)) as tmp:
        for name in suites:
            _write_suite(tmp / name, name, items_per_suite)
        mark_output_dir(tmp, SUITES_KIND)
    return out
