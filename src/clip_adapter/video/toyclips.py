"""The toy world in motion: short clips of one toy shape doing something, written as real mp4 files.

Eleven actions, ten of them in **time-reversed pairs** whose clips differ only
in frame order (``moving left`` is ``moving right`` played backwards; likewise
up/down, growing/shrinking, appearing/disappearing, rotating clockwise /
counterclockwise), so any score that ignores frame order — frame averaging —
cannot tell a pair apart. ``changing color`` has no partner.

:func:`write_toy_videos` writes, from a fixed seed, both layouts users hold:

* ``videos/<class_folder>/<split>_<i>.mp4`` (a folder per class; H.264 via PyAV);
* ``train.csv``/``val.csv``/``test.csv`` (``videos/…/x.mp4,label``, relative to
  the folder), ``classmap.json`` (``{"0": "appearing", …}``);
* ``descriptions.json``: per class, clauses written from the action's scene
  metadata (its start, middle and end states, and the motion), for STDD's
  prompt-level matching;
* ``meta.json``: seed, sizes, templates, the time-reversed pairs, the
  base/novel split of the actions, and each action's states.

``classes="shape-actions"`` writes the second class set instead: 44 shape–action
combinations whose novel classes are unseen combinations (:mod:`.toycombos`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.config import Config, check_range, check_seed, option
from ..core.errors import ConfigError
from ..core.files import atomic_dir, atomic_write_bytes, atomic_write_json
from ..core.outputs import claim_output_dir, is_own_output, mark_output_dir
from ..toyworld.render import PHOTO_GRAY, Placement, object_alpha
from ..toyworld.world import COLOR_NAMES, COLORS, FILLS, SHAPES, ToyObject
from .kinds import TOY_VIDEOS
from .toyactions import BASE, BY_NAME, CLASSES, NOVEL, action_states, descriptions, time_reversed_pairs
from .toycombos import combo_classes, combo_descriptions, combo_meta, parse_combo

SPLITS = ("train", "val", "test")
TEMPLATE = "a photo of a shape {}."  # toy-vocabulary words where it has them; motion words become <unk>
ASYMMETRIC_SHAPES = ("triangle", "heart", "semicircle", "diamond")  # a rotation of these is visible
TRAVEL = 0.27  # a move goes from 0.5 - TRAVEL to 0.5 + TRAVEL of the side
RADIUS = 0.13  # fraction of the side, for everything that does not grow or shrink
SIZE_RANGE = (0.08, 0.25)  # growing: from the first to the second
TURN = math.radians(90)  # total turn of a rotating clip


def _state(action: str, u: float, clip: dict) -> tuple[float, float, float, float, float, np.ndarray]:
    """Centre x, y, radius, rotation, opacity and colour at time ``u`` in [0, 1] (pixels as fractions, y down)."""
    cx, cy, radius, rotation, opacity, color = clip["cx"], clip["cy"], RADIUS, clip["rotation"], 1.0, clip["color"]
    lo, hi = 0.5 - TRAVEL, 0.5 + TRAVEL
    if action.startswith("moving"):
        forward = action in ("moving right", "moving down")
        pos = lo + (hi - lo) * (u if forward else 1 - u)
        cx, cy = (pos, cy) if action in ("moving left", "moving right") else (cx, pos)
    elif action in ("growing", "shrinking"):
        radius = SIZE_RANGE[0] + (SIZE_RANGE[1] - SIZE_RANGE[0]) * (u if action == "growing" else 1 - u)
    elif action in ("appearing", "disappearing"):
        opacity = float(np.clip(((u if action == "appearing" else 1 - u) - 0.25) / 0.5, 0.0, 1.0))
    elif action.startswith("rotating"):
        # Centred on the clip's base angle, so the two directions show the same set of angles.
        # A positive angle turns counterclockwise (y up).
        rotation += TURN * ((0.5 - u) if action == "rotating clockwise" else (u - 0.5))
    elif action == "changing color":
        color = clip["color"] if u < clip["switch"] else clip["color2"]
    return cx, cy, radius, rotation, opacity, color


def _clip_params(action: str, rng: np.random.Generator, shape: str | None = None) -> dict:
    """Everything about one clip that does not change over time (``shape``: this one, else drawn)."""
    shapes = ASYMMETRIC_SHAPES if action.startswith("rotating") else SHAPES
    names = rng.permutation(len(COLOR_NAMES))[:2]
    drawn = str(shapes[rng.integers(len(shapes))])  # drawn either way, in its old place: the other draws stay the same
    color = lambda i: np.clip(np.asarray(COLORS[COLOR_NAMES[i]]) + rng.normal(0, 0.03, 3), 0, 1)  # noqa: E731
    return {
        "object": ToyObject(
            shape or drawn, COLOR_NAMES[names[0]], "small", "center", str(FILLS[rng.integers(len(FILLS))])
        ),
        "cx": 0.5 + rng.uniform(-0.04, 0.04),
        "cy": 0.5 + rng.uniform(-0.04, 0.04),
        "rotation": rng.uniform(-0.2, 0.2),
        "color": color(names[0]),
        "color2": color(names[1]),
        "switch": rng.uniform(0.35, 0.65),
        "background": np.clip(rng.uniform(*PHOTO_GRAY) + rng.normal(0, 0.04, 3), 0, 1),
        "alpha_seed": int(rng.integers(1 << 31)),
        "noise": rng.uniform(0.0, 0.03),
    }


def render_clip(action: str, rng: np.random.Generator, frames: int = 16, size: int = 64) -> np.ndarray:
    """uint8 ``[frames, size, size, 3]`` of one clip of ``action``; every random choice comes from ``rng``.

    Example:
        >>> clip = render_clip("moving left", np.random.default_rng(0), frames=8, size=32)
        >>> clip.shape
        (8, 32, 32, 3)
    """
    return render_clip_object(action, rng, frames, size)[0]


def render_clip_object(
    action: str, rng: np.random.Generator, frames: int = 16, size: int = 64, shape: str | None = None
) -> tuple[np.ndarray, ToyObject]:
    """:func:`render_clip`'s frames and the clip's shape (its shape and colour name caption it).

    Example:
        >>> frames, obj = render_clip_object("growing", np.random.default_rng(0), frames=4, size=32)
        >>> frames.shape, obj.shape in SHAPES
        ((4, 32, 32, 3), True)
    """
    if action not in BY_NAME:
        raise ValueError(f"unknown toy action {action!r}; choose from {', '.join(CLASSES)}")
    clip = _clip_params(action, rng, shape)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        cx, cy, radius, rotation, opacity, color = _state(action, t / max(frames - 1, 1), clip)
        p = Placement(cx * size, cy * size, radius * size, rotation)
        # The same generator for every frame, so stripes and outlines do not flicker.
        alpha = (
            object_alpha(clip["object"], p, xs - p.cx, p.cy - ys, np.random.default_rng(clip["alpha_seed"]))[..., None]
            * opacity
        )
        canvas = clip["background"] * (1 - alpha) + color * alpha + rng.normal(0, clip["noise"], (size, size, 3))
        out[t] = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out, clip["object"]


def encode_mp4(frames: np.ndarray, fps: int = 8) -> bytes:
    """H.264 mp4 bytes of uint8 ``[T, H, W, 3]`` frames (even sides), the same bytes on every run and CPU.

    One encoder thread, and x264's plain C code paths (``asm=0``): its SIMD rate
    control is not reproducible on AVX-512 CPUs (measured here: 3 to 11 of 40 toy
    clips came out different between two encodes of the same frames), and the C
    paths give one output whatever the CPU. Toy clips are tiny: about 20 ms a clip.

    Example:
        >>> data = encode_mp4(np.zeros((4, 16, 16, 3), dtype=np.uint8))
        >>> data[4:8]
        b'ftyp'
    """
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "14", "threads": "1", "preset": "fast", "x264-params": "asm=0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def folder_name(class_name: str) -> str:
    """``"moving left"`` → ``"moving_left"``."""
    return class_name.replace(" ", "_")


def select_actions(actions: str | Sequence[str] | None) -> tuple[str, ...]:
    """The actions a dataset holds, sorted: all (None), ``"base"``, ``"novel"``, or names (a list or ``"a,b,c"``).

    A source set and a disjoint target set (the zero-shot cross-dataset protocol) are two choices here.

    Example:
        >>> select_actions("moving up,moving down")
        ('moving down', 'moving up')
        >>> select_actions("novel") == NOVEL
        True
    """
    if actions is None:
        return CLASSES
    if isinstance(actions, str):
        named = {"base": BASE, "novel": NOVEL, "all": CLASSES}.get(actions.strip())
        actions = named if named is not None else [a.strip() for a in actions.split(",") if a.strip()]
    unknown = [a for a in actions if a not in BY_NAME]
    if unknown:
        raise ConfigError(
            f"unknown toy action(s) {', '.join(map(repr, unknown))} in --actions; choose from "
            f"{', '.join(CLASSES)} (or base, novel, all)"
        )
    repeated = sorted({a for a in actions if list(actions).count(a) > 1})
    if repeated:
        raise ConfigError(f"toy action(s) named twice in --actions: {', '.join(repeated)}")
    if len(actions) < 2:
        raise ConfigError(f"--actions needs at least two toy actions, got {len(actions)}")
    return tuple(sorted(actions))


def toy_meta(
    seed: int, frames: int, size: int, fps: int, counts: dict[str, int], actions: Sequence[str] = CLASSES
) -> dict:
    """What ``meta.json`` records: how the clips were made, the pairs, and the base/novel split (of ``actions``)."""
    return {
        "format": "clip-adapter-toy-videos",
        "seed": seed,
        "frames": frames,
        "size": size,
        "fps": fps,
        "clips_per_class": counts,
        "templates": [TEMPLATE],
        "time_reversed_pairs": [p for p in time_reversed_pairs() if all(a in actions for a in p)],
        "base": [a for a in BASE if a in actions],
        "novel": [a for a in NOVEL if a in actions],
        "actions": action_states(actions),
    }


CLASS_SETS = ("actions", "shape-actions")


@dataclass
class ToyVideoConfig(Config):
    """What :func:`write_toy_videos` writes: clips per split and class, their frames and size, the seed, the classes.

    Example:
        >>> ToyVideoConfig(size=33)
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: size must be even (H.264 with 4:2:0 chroma), got 33
    """

    train: int = option(16, "training clips per class")
    val: int = option(4, "validation clips per class")
    test: int = option(8, "test clips per class")
    frames: int = option(16, "frames per clip")
    size: int = option(64, "frame side in pixels, even")
    fps: int = option(8, "frames per second of the mp4 files")
    seed: int = option(0, "rendering seed")
    actions: str | None = option(
        None,
        "comma-separated actions to write, or base / novel (None: all 11): a source set "
        "and a disjoint target set for `video cross-dataset`",
    )
    classes: str = option(
        "actions",
        "actions: the 11 actions, novel = unseen actions; shape-actions: 44 shape-action "
        "classes, novel = unseen combinations of trained shapes and actions",
    )

    def validate(self) -> None:
        for split in SPLITS:
            check_range(f"clips per class ({split})", getattr(self, split), 0, 10_000)
        check_range("frames", self.frames, 2, 512)
        check_range("size", self.size, 16, 1024)
        check_range("fps", self.fps, 1, 120)
        check_seed("seed", self.seed)
        if self.size % 2:
            raise ConfigError(f"size must be even (H.264 with 4:2:0 chroma), got {self.size}")
        if self.classes not in CLASS_SETS:
            raise ConfigError(f"unknown toy class set {self.classes!r}; choose from {', '.join(CLASS_SETS)}")


def write_toy_videos(
    out_dir: str | Path,
    train: int = ToyVideoConfig.train,
    val: int = ToyVideoConfig.val,
    test: int = ToyVideoConfig.test,
    frames: int = ToyVideoConfig.frames,
    size: int = ToyVideoConfig.size,
    fps: int = ToyVideoConfig.fps,
    seed: int = ToyVideoConfig.seed,
    overwrite: bool = False,
    actions: str | Sequence[str] | None = None,
    classes: str = ToyVideoConfig.classes,
) -> Path:
    """Write the toy action dataset (both layouts, descriptions, meta) to ``out_dir``; return it.

    A clip depends only on ``(seed, split, class, index)``, so the same
    arguments give the same files, and an action's clips are the same in a
    dataset of a subset of ``actions`` (see :func:`select_actions`; labels
    index the subset). ``classes``: ``"actions"`` (the 11 actions, novel =
    unseen actions) or ``"shape-actions"`` (44 shape–action combinations,
    novel = unseen combinations: :mod:`.toycombos`; ``actions`` must then be
    None). ``out_dir`` must be new, empty, or (with ``overwrite``) a toy video
    dataset this tool wrote. The settings are :class:`ToyVideoConfig`'s.

    Example:
        >>> import tempfile, pathlib
        >>> out = write_toy_videos(pathlib.Path(tempfile.mkdtemp()) / "toy", 1, 0, 1, frames=8, size=32)
        >>> (out / "train.csv").read_text().splitlines()[0]
        'videos/appearing/train_0000.mp4,0'
    """
    ToyVideoConfig(
        train=train, val=val, test=test, frames=frames, size=size, fps=fps, seed=seed, classes=classes
    )  # checks
    counts = dict(zip(SPLITS, (train, val, test)))
    chosen, specs, described, meta = _class_set(classes, actions)
    meta = {**toy_meta(seed, frames, size, fps, counts, chosen if classes == "actions" else CLASSES), **meta}
    out_dir = claim_output_dir(out_dir, TOY_VIDEOS, overwrite=overwrite)
    with atomic_dir(out_dir, may_replace=lambda p: overwrite and is_own_output(p, TOY_VIDEOS)) as tmp:
        mark_output_dir(tmp, TOY_VIDEOS)
        for split, n in counts.items():
            rows = _write_split(tmp, split, n, frames, size, fps, seed, specs)
            atomic_write_bytes(tmp / f"{split}.csv", "".join(f"{rel},{label}\n" for rel, label in rows).encode())
        atomic_write_json(tmp / "classmap.json", {str(i): name for i, name in enumerate(chosen)})
        atomic_write_json(tmp / "descriptions.json", described)
        atomic_write_json(tmp / "meta.json", meta)
    return out_dir


def _class_set(classes: str, actions: str | Sequence[str] | None) -> tuple[tuple[str, ...], list[tuple], dict, dict]:
    """Class names, ``(name, action, shape, seed index)`` per class, descriptions and meta overrides of a class set."""
    if classes == "actions":
        chosen = select_actions(actions)
        # Seeded by the action's place among all actions, so a subset's clips match the full set's.
        return chosen, [(a, a, None, CLASSES.index(a)) for a in chosen], descriptions(chosen), {}
    if actions is not None:
        raise ConfigError("--actions selects among the 11 actions; it does not combine with --classes shape-actions")
    chosen = combo_classes()
    specs = [(name, parse_combo(name)[1], parse_combo(name)[0], len(CLASSES) + i) for i, name in enumerate(chosen)]
    return chosen, specs, combo_descriptions(chosen), combo_meta(chosen)


def _write_split(
    root: Path,
    split: str,
    n: int,
    frames: int,
    size: int,
    fps: int,
    seed: int,
    specs: Sequence[tuple[str, str, str | None, int]],
) -> list[tuple[str, int]]:
    rows = []
    for label, (name, action, shape, index) in enumerate(specs):
        for i in range(n):
            rng = np.random.default_rng([seed, SPLITS.index(split), index, i])
            rel = f"videos/{folder_name(name)}/{split}_{i:04d}.mp4"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            frames_ = render_clip_object(action, rng, frames, size, shape)[0]
            atomic_write_bytes(root / rel, encode_mp4(frames_, fps))
            rows.append((rel, label))
    return rows
