"""Draw scenes as RGB images in named rendering styles ("domains").

``photo`` is the diverse pretraining mix (random background brightness, tint
and gradient, colour jitter, contrast, noise, blur, jittered position, size
and rotation); the in-domain figures use it too. The held-out domains are
shifts the tiny CLIP never sees in pretraining, designed so the shape stays in
the image:

- ``sketch``: thin, faint, wobbly, broken coloured pencil outlines on white squared
  notebook paper (the grid is a strong edge pattern pretraining never shows);
- ``night``: dark scene, strong blue-green colour cast, sensor noise;
- ``pixel``: coarse mosaic with a posterised palette (an 8-bit game look);
- ``negative``: a film negative of the photo style (colours inverted).

Every random choice comes from the generator passed in, so a seed fixes the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .shapes import signed_distance
from .world import COLORS, Scene, ToyObject

IMAGE_SIZE = 64
DOMAINS = ("photo", "sketch", "night", "pixel", "negative")
ANCHORS = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1), "center": (0, 0)}
ANCHOR_OFFSET = 0.25  # off-centre anchors sit this fraction of the side from the centre
RADIUS = {"small": 0.12, "large": 0.21}  # fraction of the side
POSITION_JITTER = 0.04  # fraction of the side, uniform in each direction
SIZE_JITTER = (0.88, 1.12)
ROTATION_JITTER = math.radians(15)  # small, so a square never turns into a diamond


@dataclass(frozen=True)
class Placement:
    """Where and how big an object lands, in pixels (y down)."""

    cx: float
    cy: float
    radius: float
    rotation: float


def place(obj: ToyObject, rng: np.random.Generator, size: int) -> Placement:
    """Jittered pixel placement of ``obj`` in a ``size``-pixel image."""
    ax, ay = ANCHORS[obj.position]
    jx, jy = rng.uniform(-POSITION_JITTER, POSITION_JITTER, 2)
    cx = (0.5 + ANCHOR_OFFSET * ax + jx) * size
    cy = (0.5 + ANCHOR_OFFSET * ay + jy) * size
    radius = RADIUS[obj.size] * size * rng.uniform(*SIZE_JITTER)
    return Placement(cx, cy, radius, rng.uniform(-ROTATION_JITTER, ROTATION_JITTER))


def _window(p: Placement, size: int, margin: float = 1.3) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    # Only pixels near the object are touched: this is most of the speed.
    reach = p.radius * margin + 2
    y0, y1 = max(0, int(p.cy - reach)), min(size, int(math.ceil(p.cy + reach)) + 1)
    x0, x1 = max(0, int(p.cx - reach)), min(size, int(math.ceil(p.cx + reach)) + 1)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    return slice(y0, y1), slice(x0, x1), xs - p.cx, p.cy - ys


def _coverage(sd: np.ndarray) -> np.ndarray:
    return np.clip(0.5 - sd, 0.0, 1.0)  # one-pixel anti-aliased edge


def object_alpha(obj: ToyObject, p: Placement, dx: np.ndarray, dy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coverage in [0, 1] of ``obj`` drawn solid, outlined or striped (photo-like styles)."""
    sd = signed_distance(dx, dy, obj.shape, p.radius, p.rotation)
    inside = _coverage(sd)
    if obj.fill == "solid":
        return inside
    thickness = max(1.5, p.radius * rng.uniform(0.2, 0.3))
    band = inside * np.clip(sd + thickness + 0.5, 0.0, 1.0)
    if obj.fill == "outline":
        return band
    angle, period = rng.uniform(0, math.pi), rng.uniform(3.0, 5.0)
    phase = (dx * math.cos(angle) + dy * math.sin(angle)) / period
    stripes = np.clip(2.5 * np.sin(2 * math.pi * phase) + 0.5, 0.0, 1.0)
    return np.maximum(band, inside * stripes)


def _jittered_color(name: str, rng: np.random.Generator, spread: float = 0.04) -> np.ndarray:
    base = np.asarray(COLORS[name], dtype=np.float32)
    return np.clip((base + rng.normal(0, spread, 3)) * rng.uniform(0.88, 1.08), 0, 1).astype(np.float32)


def _paint(canvas: np.ndarray, scene: Scene, rng: np.random.Generator, alpha_fn, color_fn) -> None:
    size = canvas.shape[0]
    for obj in scene.objects:
        p = place(obj, rng, size)
        ys, xs, dx, dy = _window(p, size)
        alpha = alpha_fn(obj, p, dx, dy, rng)[..., None]
        canvas[ys, xs] = canvas[ys, xs] * (1 - alpha) + color_fn(obj.color, rng) * alpha


def _background(size: int, rng: np.random.Generator, gray: float, tint: float, gradient: float) -> np.ndarray:
    color = np.clip(gray + rng.normal(0, tint, 3), 0, 1).astype(np.float32)
    canvas = np.broadcast_to(color, (size, size, 3)).copy()
    if gradient > 0:
        angle = rng.uniform(0, 2 * math.pi)
        ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
        field = math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]
        canvas += gradient * field[..., None]
    return canvas


def _blur(img: np.ndarray) -> np.ndarray:
    # Separable [1, 2, 1] / 4 with edge replication.
    for axis in (0, 1):
        pad = np.pad(img, [(1, 1) if a == axis else (0, 0) for a in range(3)], mode="edge")
        lo, mid, hi = (np.take(pad, range(k, k + img.shape[axis]), axis=axis) for k in range(3))
        img = 0.25 * lo + 0.5 * mid + 0.25 * hi
    return img


PHOTO_GRAY = (0.08, 0.8)  # background brightness range; white paper stays out of pretraining


def render_photo(scene: Scene, rng: np.random.Generator, size: int) -> np.ndarray:
    """The diverse pretraining mix (also the in-domain style)."""
    gradient = rng.uniform(0, 0.25) if rng.random() < 0.5 else 0.0
    canvas = _background(size, rng, rng.uniform(*PHOTO_GRAY), 0.05, gradient)
    _paint(canvas, scene, rng, object_alpha, _jittered_color)
    contrast = rng.uniform(0.7, 1.0)
    canvas = canvas.mean() + contrast * (canvas - canvas.mean())
    if rng.random() < 0.25:
        canvas = _blur(canvas)
    return canvas + rng.normal(0, rng.uniform(0, 0.05), canvas.shape).astype(np.float32)


def _sketch_alpha(obj: ToyObject, p: Placement, dx: np.ndarray, dy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    alpha = np.zeros_like(dx)
    for _ in range(int(rng.integers(2, 4))):  # loose pencil passes that never quite coincide
        wobble = (rng.uniform(0.04, 0.09), float(rng.integers(2, 6)), rng.uniform(0, 2 * math.pi))
        shift = rng.uniform(-1.2, 1.2, 2)
        sd = signed_distance(dx - shift[0], dy - shift[1], obj.shape, p.radius, p.rotation, wobble)
        width = rng.uniform(0.3, 0.55)  # half-width in pixels: a thin, faint line
        gaps = np.clip(3 * np.sin(rng.uniform(3, 7) * np.arctan2(dy, dx) + rng.uniform(0, 6.3)) + 2.5, 0, 1)
        alpha = np.maximum(alpha, rng.uniform(0.5, 0.85) * gaps * np.clip(width + 0.5 - np.abs(sd), 0, 1))
    return alpha


RULED_SPACING = (4.5, 7.0)  # pixels between notebook lines (at IMAGE_SIZE)
RULED_INK = np.array([0.45, 0.62, 0.9], dtype=np.float32)  # faint blue rules
MARGIN_INK = np.array([0.9, 0.35, 0.35], dtype=np.float32)  # red margin line


def _rules(size: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Intensity in [0, 1] of evenly spaced one-pixel lines along one axis."""
    spacing = rng.uniform(*RULED_SPACING) * scale
    t = np.arange(size, dtype=np.float32) + 0.5 - rng.uniform(0, spacing)
    return np.clip(1.0 - np.abs((t + spacing / 2) % spacing - spacing / 2) / (0.7 * scale), 0, 1)


def _ruled_paper(size: int, rng: np.random.Generator) -> np.ndarray:
    """White squared notebook paper: faint blue rules both ways and, sometimes, a red margin."""
    paper = _background(size, rng, rng.uniform(0.94, 1.0), 0.01, 0.0)
    scale = size / IMAGE_SIZE
    rows, cols = _rules(size, rng, scale)[:, None], _rules(size, rng, scale)[None, :]
    ink = (rng.uniform(0.35, 0.6) * np.maximum(rows, cols))[..., None]
    paper = paper * (1 - ink) + RULED_INK * ink
    if rng.random() < 0.5:
        x = np.arange(size, dtype=np.float32) + 0.5 - rng.uniform(6, 12) * scale
        margin = 0.5 * np.clip(1.0 - np.abs(x) / (0.8 * scale), 0, 1)[None, :, None]
        paper = paper * (1 - margin) + MARGIN_INK * margin
    return paper + rng.normal(0, 0.015, paper.shape).astype(np.float32)


def render_sketch(scene: Scene, rng: np.random.Generator, size: int) -> np.ndarray:
    """Coloured pencil outlines on white squared notebook paper."""
    paper = _ruled_paper(size, rng)
    pencil = lambda name, r: _jittered_color(name, r, 0.03) * np.float32(0.85)  # noqa: E731
    _paint(paper, scene, rng, _sketch_alpha, pencil)
    return paper


NIGHT_CAST = np.array([0.55, 0.95, 1.45], dtype=np.float32)  # sodium-free night: blue-green


def render_night(scene: Scene, rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark scene under a strong blue-green cast with sensor noise."""
    canvas = _background(size, rng, rng.uniform(0.05, 0.15), 0.02, 0.0)
    _paint(canvas, scene, rng, object_alpha, _jittered_color)
    light = rng.uniform(0.3, 0.45)
    cast = NIGHT_CAST * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    canvas = canvas * light * cast + np.float32(0.03)
    return canvas + rng.normal(0, rng.uniform(0.03, 0.06), canvas.shape).astype(np.float32)


PIXEL_BLOCK = 4  # side of one mosaic cell in pixels (at IMAGE_SIZE)
PIXEL_LEVELS = 4  # palette levels per channel


def render_pixel(scene: Scene, rng: np.random.Generator, size: int) -> np.ndarray:
    """A coarse mosaic with a posterised palette."""
    canvas = _background(size, rng, rng.uniform(0.1, 0.9), 0.05, 0.0)
    _paint(canvas, scene, rng, object_alpha, _jittered_color)
    block = max(2, round(PIXEL_BLOCK * size / IMAGE_SIZE))
    cells = size // block
    coarse = canvas[: cells * block, : cells * block].reshape(cells, block, cells, block, 3).mean(axis=(1, 3))
    coarse = np.round(np.clip(coarse, 0, 1) * (PIXEL_LEVELS - 1)) / (PIXEL_LEVELS - 1)
    full = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)
    out = np.broadcast_to(coarse.mean(axis=(0, 1)), canvas.shape).copy()
    out[: full.shape[0], : full.shape[1]] = full
    return out


def render_negative(scene: Scene, rng: np.random.Generator, size: int) -> np.ndarray:
    """A film negative of the photo style: every colour is inverted (red reads as cyan)."""
    return 1.0 - np.clip(render_photo(scene, rng, size), 0.0, 1.0)


RENDERERS = {
    "photo": render_photo,
    "sketch": render_sketch,
    "night": render_night,
    "pixel": render_pixel,
    "negative": render_negative,
}


def render_array(
    scene: Scene, domain: str = "photo", rng: np.random.Generator | int = 0, size: int = IMAGE_SIZE
) -> np.ndarray:
    """Render ``scene`` as a ``[size, size, 3]`` uint8 array.

    Example:
        >>> from clip_adapter.toyworld.world import sample_scene
        >>> scene = sample_scene(np.random.default_rng(0))
        >>> render_array(scene, "sketch", rng=1).shape
        (64, 64, 3)
    """
    if domain not in RENDERERS:
        raise ValueError(f"unknown domain {domain!r}; choose from {', '.join(DOMAINS)}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    image = RENDERERS[domain](scene, rng, size)
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def render_image(
    scene: Scene, domain: str = "photo", rng: np.random.Generator | int = 0, size: int = IMAGE_SIZE
) -> Image.Image:
    """Render ``scene`` as an RGB PIL image in the style ``domain``.

    Example:
        >>> from clip_adapter.toyworld.world import sample_scene
        >>> render_image(sample_scene(np.random.default_rng(0)), "night", rng=3).size
        (64, 64)
    """
    return Image.fromarray(render_array(scene, domain, rng, size), mode="RGB")
