"""Downstream classification tasks of the toy world, written as real image folders.

A task fixes one or two attributes per class (``shape``: "circle";
``shape-color``: "red circle") and samples the rest; each image shows a
single object. :func:`write_task_dataset` writes ``images/<class>/<file>.png``
plus a CoOp-format ``split.json``, so the demo and tests read the same kind of
files a user's photos come in.

:func:`write_ood_images` draws images outside a task's classes, for testing
out-of-distribution detection (:mod:`clip_adapter.trust.ood`): objects of
attribute combinations no class has (``novel``; for the built-in tasks only
once classes are held out, since each one uses every shape, colour, size or
position the world has) or scenes with no object at all (``empty``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..core.config import check_choice, check_range
from ..core.errors import ConfigError
from ..core.files import atomic_dir, atomic_write_json
from ..core.outputs import claim_output_dir, is_own_output, mark_output_dir, register_kind
from .render import DOMAINS, IMAGE_SIZE, render_array
from .world import (
    COLOR_NAMES,
    FILLS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    sample_object,
    scene_attributes,
)

SPLITS = ("train", "val", "test")
IMAGE_DIR = "images"
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class Task:
    """A classification task: class names (sorted; label = index), their attributes, a prompt template.

    Example:
        >>> TASKS["shape-color"].classes[:2]
        ('blue circle', 'blue cross')
    """

    name: str
    template: str
    attributes: dict[str, dict[str, str]] = field(repr=False)  # class name → fixed object attributes

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted(self.attributes))

    def prompts(self) -> list[str]:
        """One prompt per class, in label order."""
        return [self.template.format(name) for name in self.classes]


def _product(template: str, name: str, *axes: tuple[str, tuple[str, ...]]) -> Task:
    keys = [key for key, _ in axes]
    attributes = {
        " ".join(combo): dict(zip(keys, combo)) for combo in itertools.product(*(values for _, values in axes))
    }
    return Task(name, template, attributes)


_position_by_phrase = {phrase: {"position": pos} for pos, phrase in POSITION_PHRASES.items()}
TASKS: dict[str, Task] = {
    "shape": _product("a photo of a {}.", "shape", ("shape", SHAPES)),
    "color": _product("a photo of a {} shape.", "color", ("color", COLOR_NAMES)),
    "shape-color": _product("a photo of a {}.", "shape-color", ("color", COLOR_NAMES), ("shape", SHAPES)),
    "size-shape": _product("a photo of a {}.", "size-shape", ("size", SIZES), ("shape", SHAPES)),
    "position": Task("position", "a photo of a shape {}.", _position_by_phrase),
}


def get_task(task: str | Task) -> Task:
    """Look a task up by name."""
    if isinstance(task, Task):
        return task
    check_choice("task", task, TASKS)
    return TASKS[task]


def task_scene(task: Task, label: int, rng: np.random.Generator) -> Scene:
    """A one-object scene of class ``label``; unfixed attributes are random."""
    fixed = dict(task.attributes[task.classes[label]])
    return Scene((sample_object(rng, position=fixed.pop("position", None), **fixed),))


def task_images(
    task: str | Task, domain: str, n_per_class: int, seed: int = 0, split: str = "test", size: int = IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n_per_class`` images per class in memory: uint8 ``[N, size, size, 3]`` and labels.

    The scene of each image depends on ``(seed, split, class, index)`` but not
    on the domain, so every domain shows the same scenes in a different style.

    Example:
        >>> images, labels = task_images("shape", "sketch", 2)
        >>> images.shape, labels.tolist()[:4]
        ((16, 64, 64, 3), [0, 0, 1, 1])
    """
    task = get_task(task)
    images, labels = [], []
    for label in range(len(task.classes)):
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, SPLITS.index(split), label, i])
            images.append(render_array(task_scene(task, label, rng), domain, rng, size))
            labels.append(label)
    if not images:  # an empty split (0 per class) is allowed: no images, not a numpy error
        return np.zeros((0, size, size, 3), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    return np.stack(images), np.array(labels, dtype=np.int64)


def folder_name(class_name: str) -> str:
    """Class folder name: spaces become underscores ("red circle" → "red_circle")."""
    return class_name.replace(" ", "_")


def write_task_dataset(
    task: str | Task,
    domain: str,
    out_dir: str | Path,
    n_per_class_train: int = 32,
    n_per_class_val: int = 8,
    n_per_class_test: int = 32,
    seed: int = 0,
    size: int = IMAGE_SIZE,
    overwrite: bool = False,
) -> Path:
    """Write an ImageFolder plus a CoOp-format ``split.json`` for ``task`` in ``domain``.

    Layout: ``out_dir/images/<class_folder>/<split>_<i>.png``, ``out_dir/split.json``
    (``{"train": [[path relative to images/, label, classname], ...], "val": ..., "test": ...}``)
    with the task's prompt template, domain and seed under ``"meta"`` (read back
    as the dataset's templates). The directory is built beside ``out_dir`` and
    renamed into place when complete; an existing ``out_dir`` is refused unless
    it is a toy dataset this tool wrote and ``overwrite`` is set.

    Example:
        >>> import tempfile, json, pathlib
        >>> out = write_task_dataset("shape", "sketch", pathlib.Path(tempfile.mkdtemp()) / "d", 1, 1, 1)
        >>> json.loads((out / "split.json").read_text())["train"][0]
        ['circle/train_0000.png', 0, 'circle']
    """
    task = get_task(task)
    check_choice("domain", domain, DOMAINS)
    counts = dict(zip(SPLITS, (n_per_class_train, n_per_class_val, n_per_class_test)))
    for split, n in counts.items():
        check_range(f"n_per_class_{split}", n, 0)
    out_dir = claim_output_dir(out_dir, "toy-dataset", overwrite=overwrite)
    with atomic_dir(out_dir, may_replace=lambda p: overwrite and is_own_output(p, "toy-dataset")) as tmp:
        mark_output_dir(tmp, "toy-dataset")
        split_json: dict = {
            split: _write_split(task, domain, tmp / IMAGE_DIR, split, n, seed, size) for split, n in counts.items()
        }
        split_json["meta"] = {"task": task.name, "domain": domain, "templates": [task.template], "seed": seed}
        atomic_write_json(tmp / SPLIT_FILE, split_json)
    return out_dir


def _write_split(task: Task, domain: str, root: Path, split: str, n: int, seed: int, size: int) -> list[list]:
    images, labels = task_images(task, domain, n, seed, split, size)
    entries = []
    for k, (image, label) in enumerate(zip(images, labels)):
        name = task.classes[label]
        rel = f"{folder_name(name)}/{split}_{k % max(n, 1):04d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="RGB").save(root / rel)
        entries.append([rel, int(label), name])
    return entries


# --- out-of-distribution draws ---------------------------------------------------------------------

OOD_SOURCES = ("novel", "empty")
OOD_FILE = "ood.json"
# The output kind of an OOD folder, and the files at its top level.
OOD_KIND = register_kind("toy-ood", r"^(images|ood\.json)$")
# A second seed word that no split index (0–2) takes keeps OOD streams apart from the ID splits'
# (seed, split, class, i).
_OOD_STREAM = 1000
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": COLOR_NAMES,
    "size": SIZES,
    "position": POSITIONS,
    "fill": FILLS,
}


def holdout_task(task: str | Task, held_out: Sequence[str]) -> Task:
    """``task`` without the ``held_out`` classes, which then become its novel (out-of-class) objects.

    Example:
        >>> holdout_task("shape", ["heart", "star"]).classes
        ('circle', 'cross', 'diamond', 'semicircle', 'square', 'triangle')
    """
    task = get_task(task)
    unknown = [name for name in held_out if name not in task.attributes]
    if unknown:
        raise ConfigError(
            f"held-out class(es) {', '.join(map(repr, unknown))} are not classes of task {task.name!r} "
            f"(its classes: {', '.join(task.classes)})"
        )
    kept = {name: attrs for name, attrs in task.attributes.items() if name not in set(held_out)}
    if len(kept) < 2:
        raise ConfigError(
            f"holding out {len(set(held_out))} of task {task.name!r}'s {len(task.classes)} classes "
            "leaves fewer than 2; a classifier needs at least 2"
        )
    return Task(task.name, task.template, kept)


def _class_keys(task: Task) -> list[str]:
    keys = sorted({key for attrs in task.attributes.values() for key in attrs})
    unknown = [key for key in keys if key not in ATTRIBUTE_VALUES]
    if unknown:
        raise ConfigError(f"task {task.name!r} fixes attributes the toy world has no values for: {', '.join(unknown)}")
    return keys


def novel_classes(task: str | Task) -> list[dict[str, str]]:
    """Every combination of the attributes ``task``'s classes fix that matches none of its classes.

    A class that leaves an attribute unfixed matches every value of it. The
    order is the world's vocabulary order (``SHAPES``, ``COLOR_NAMES``, …). Empty
    for every built-in task: each covers its attributes' full range.

    Example:
        >>> novel_classes("shape")
        []
        >>> novel_classes(holdout_task("size-shape", ["large heart", "small star"]))
        [{'shape': 'star', 'size': 'small'}, {'shape': 'heart', 'size': 'large'}]
    """
    task = get_task(task)
    keys = _class_keys(task)
    combos = (dict(zip(keys, values)) for values in itertools.product(*(ATTRIBUTE_VALUES[k] for k in keys)))
    fixed = list(task.attributes.values())
    return [combo for combo in combos if not any(all(combo[k] == v for k, v in attrs.items()) for attrs in fixed)]


def resolve_ood_source(task: str | Task, source: str = "auto") -> str:
    """``"novel"`` or ``"empty"``; ``"auto"`` is novel where the task leaves combinations uncovered, else empty.

    Example:
        >>> resolve_ood_source("shape"), resolve_ood_source(holdout_task("shape", ["heart"]))
        ('empty', 'novel')
    """
    task = get_task(task)
    check_choice("source", source, ("auto", *OOD_SOURCES))
    if source == "empty":
        return source
    if novel_classes(task):
        return "novel"
    if source == "novel":
        raise ConfigError(
            f"task {task.name!r} covers every {'/'.join(_class_keys(task))} the toy world has, so no object "
            "is outside its classes; hold classes out (--holdout) or draw empty scenes (--source empty)"
        )
    return "empty"


def ood_scene(novel: Sequence[dict[str, str]], source: str, rng: np.random.Generator) -> Scene:
    """One out-of-class scene: an object of a random ``novel`` combination, or (``"empty"``) no object.

    Example:
        >>> ood_scene([{"shape": "heart"}], "novel", np.random.default_rng(0)).objects[0].shape
        'heart'
    """
    if source == "empty":
        return Scene(())
    if not novel:
        raise ConfigError("no novel attribute combination to draw")
    fixed = dict(novel[int(rng.integers(len(novel)))])
    return Scene((sample_object(rng, position=fixed.pop("position", None), **fixed),))


def task_ood_images(
    task: str | Task, domain: str, n: int, seed: int = 0, source: str = "auto", size: int = IMAGE_SIZE
) -> tuple[np.ndarray, list[Scene]]:
    """Render ``n`` images outside ``task``'s classes: uint8 ``[n, size, size, 3]`` and their scenes.

    Image ``i`` depends on ``(seed, i)`` and the source only, so a seed fixes
    the draws; unfixed attributes (colour, size, fill, …) are random as in
    :func:`task_images`.

    Example:
        >>> images, scenes = task_ood_images(holdout_task("shape", ["heart"]), "sketch", 2)
        >>> images.shape, [s.objects[0].shape for s in scenes]
        ((2, 64, 64, 3), ['heart', 'heart'])
    """
    task = get_task(task)
    check_choice("domain", domain, DOMAINS)
    check_range("n", n, 1)
    source = resolve_ood_source(task, source)
    novel = novel_classes(task) if source == "novel" else []
    images, scenes = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, _OOD_STREAM, OOD_SOURCES.index(source), i])
        scenes.append(ood_scene(novel, source, rng))
        images.append(render_array(scenes[-1], domain, rng, size))
    return np.stack(images), scenes


def write_ood_images(
    task: str | Task,
    domain: str,
    out_dir: str | Path,
    n: int = 64,
    seed: int = 0,
    source: str = "auto",
    size: int = IMAGE_SIZE,
    overwrite: bool = False,
) -> Path:
    """Write ``n`` out-of-class images as ``out_dir/images/<source>/ood_<i>.png`` plus ``out_dir/ood.json``.

    ``ood.json`` holds ``"meta"`` (task, its known classes, domain, seed,
    source) and ``"images"``: for each file (relative to ``images/``) the
    objects of its scene, so a test can check that none is of a task class.
    Output folders are claimed and replaced exactly as :func:`write_task_dataset`'s.

    Example:
        >>> import tempfile, json, pathlib
        >>> out = write_ood_images("shape", "night", pathlib.Path(tempfile.mkdtemp()) / "o", n=1)
        >>> json.loads((out / "ood.json").read_text())["images"]
        [{'file': 'empty/ood_0000.png', 'objects': []}]
    """
    task = get_task(task)
    check_choice("domain", domain, DOMAINS)
    check_range("n", n, 1)
    source = resolve_ood_source(task, source)  # refused before the folder is claimed
    out_dir = claim_output_dir(out_dir, OOD_KIND, overwrite=overwrite)
    images, scenes = task_ood_images(task, domain, n, seed, source, size)
    with atomic_dir(out_dir, may_replace=lambda p: overwrite and is_own_output(p, OOD_KIND)) as tmp:
        mark_output_dir(tmp, OOD_KIND)
        (tmp / IMAGE_DIR / source).mkdir(parents=True)
        entries = []
        for i, (image, scene) in enumerate(zip(images, scenes)):
            rel = f"{source}/ood_{i:04d}.png"
            Image.fromarray(image, mode="RGB").save(tmp / IMAGE_DIR / rel)
            entries.append({"file": rel, "objects": list(scene_attributes(scene))})
        meta = {
            "task": task.name,
            "known_classes": list(task.classes),
            "domain": domain,
            "seed": seed,
            "source": source,
        }
        atomic_write_json(tmp / OOD_FILE, {"meta": meta, "images": entries})
    return out_dir
