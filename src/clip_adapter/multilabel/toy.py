"""A multi-label task of the toy world: scenes of 2–3 objects, labelled with the shapes present.

:func:`write_toy_multilabel` renders the scenes as PNG files and writes the
``labels.json`` that :func:`~clip_adapter.multilabel.data.read_multilabel`
reads, so the toy task goes through the same reader as a user's COCO or VOC
label file. Every object in a scene has a different shape and position;
colour, size and fill are random.

The toy CLIP's vocabulary is closed (words it lacks become ``<unk>``), and it
has no word for "containing" or "without": :data:`TOY_PROMPTS` are prompts it
can read (the method's defaults stay the paper's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..core.config import check_choice, check_range
from ..core.files import atomic_dir, atomic_write_json
from ..core.outputs import claim_output_dir, is_own_output, mark_output_dir
from ..toyworld.render import DOMAINS, IMAGE_SIZE, render_array
from ..toyworld.world import POSITIONS, SHAPES, Scene, sample_object
from .kinds import DATASET_KIND

LABEL_FILE = "labels.json"
IMAGE_DIR = "images"
SPLIT_NAMES = ("train", "val", "test")
# Positive and negative prompts the toy vocabulary reads in full (checked in the tests).
TOY_PROMPTS = {"positive_template": "a photo of a {}.", "negative_template": "a photo of an object."}


def toy_scene(rng: np.random.Generator, min_objects: int = 2, max_objects: int = 3) -> Scene:
    """A scene of ``min_objects``–``max_objects`` objects with distinct shapes and positions.

    Example:
        >>> scene = toy_scene(np.random.default_rng(0))
        >>> 2 <= len({o.shape for o in scene.objects}) == len(scene.objects) <= 3
        True
    """
    n = int(rng.integers(min_objects, max_objects + 1))
    shapes = rng.permutation(len(SHAPES))[:n]
    positions = rng.permutation(len(POSITIONS))[:n]
    return Scene(tuple(sample_object(rng, position=POSITIONS[p], shape=SHAPES[s]) for s, p in zip(shapes, positions)))


def write_toy_multilabel(
    out_dir: str | Path,
    domain: str = "photo",
    n_train: int = 240,
    n_val: int = 120,
    n_test: int = 400,
    seed: int = 0,
    min_objects: int = 2,
    max_objects: int = 3,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir/images/<split>_<i>.png`` and ``out_dir/labels.json`` (classes: the 8 toy shapes).

    Built beside ``out_dir`` and renamed into place when complete; an
    existing ``out_dir`` is refused unless it is this writer's and
    ``overwrite`` is set.

    Example:
        >>> import tempfile, json, pathlib
        >>> out = write_toy_multilabel(pathlib.Path(tempfile.mkdtemp()) / "d", "photo", 2, 1, 1)
        >>> sorted(json.loads((out / "labels.json").read_text())["train"])
        ['images/train_0000.png', 'images/train_0001.png']
    """
    check_choice("domain", domain, DOMAINS)
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        check_range(f"{name} images", n, 0)
    check_range("min_objects", min_objects, 1, len(POSITIONS))
    check_range("max_objects", max_objects, min_objects, len(POSITIONS))
    out_dir = claim_output_dir(out_dir, DATASET_KIND, overwrite=overwrite)
    with atomic_dir(out_dir, may_replace=lambda p: overwrite and is_own_output(p, DATASET_KIND)) as tmp:
        mark_output_dir(tmp, DATASET_KIND)
        (tmp / IMAGE_DIR).mkdir()
        labels: dict = {"classes": sorted(SHAPES)}
        for k, (split, n) in enumerate(zip(SPLIT_NAMES, (n_train, n_val, n_test))):
            labels[split] = _write_split(tmp, split, k, n, domain, seed, min_objects, max_objects)
        labels["meta"] = {"domain": domain, "seed": seed, "objects": [min_objects, max_objects], **TOY_PROMPTS}
        atomic_write_json(tmp / LABEL_FILE, labels)
    return out_dir


def _write_split(
    root: Path, split: str, k: int, n: int, domain: str, seed: int, lo: int, hi: int
) -> dict[str, list[str]]:
    entries = {}
    for i in range(n):
        # The scene depends on (seed, split, index), not on the domain: every domain shows the same scenes.
        rng = np.random.default_rng([seed, k, i])
        scene = toy_scene(rng, lo, hi)
        rel = f"{IMAGE_DIR}/{split}_{i:04d}.png"
        Image.fromarray(render_array(scene, domain, rng, IMAGE_SIZE), mode="RGB").save(root / rel)
        entries[rel] = sorted(o.shape for o in scene.objects)
    return entries
