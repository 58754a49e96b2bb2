"""Downstream classification tasks of the toy world, written as real image folders.

A task fixes one or two attributes per class (``shape``: "circle";
``shape-color``: "red circle") and samples the rest; each image shows a
single object. :func:`write_task_dataset` writes ``images/<class>/<file>.png``
plus a CoOp-format ``split.json``, so the demo and tests read the same kind of
files a user's photos come in.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import check_choice, check_range
from ..io import atomic_dir, atomic_write_json
from ..outputs import claim_output_dir, is_own_output, mark_output_dir
from .render import DOMAINS, IMAGE_SIZE, render_array
from .world import COLOR_NAMES, POSITION_PHRASES, SHAPES, SIZES, Scene, sample_object

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
    attributes = {" ".join(combo): dict(zip(keys, combo)) for combo in itertools.product(*(values for _, values in axes))}
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
        split_json: dict = {split: _write_split(task, domain, tmp / IMAGE_DIR, split, n, seed, size) for split, n in counts.items()}
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
