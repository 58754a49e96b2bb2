"""Shape geometry as radial lookup tables, for fast vectorised rasterisation.

Every shape is star-shaped about its centre, so its outline is a radius
``r(θ)``. A table of ``r`` and of ``r'/r`` over ``TABLE_BINS`` angles turns
"distance from a pixel to the outline" into two lookups and a few array
operations, which is what makes rendering cheap enough to feed pretraining
on the fly (no PIL drawing, no supersampling).
"""

from __future__ import annotations

import functools
import math

import numpy as np

TABLE_BINS = 1024
UNIT_AREA = 0.8 * math.pi  # every shape is scaled to this area at radius 1, so sizes look alike
CROSS_ARM = 0.34  # half-width of a cross arm relative to its half-length
STAR_INNER = 0.45  # inner radius of the five-pointed star relative to the outer one
DIAMOND_WIDTH = 0.62  # a diamond is a narrow rhombus, so a rotated square is not one
SEMICIRCLE_CENTRE = 0.45  # height of the rotation centre above the flat side (radius 1)


def _regular_polygon(n: int, start: float) -> np.ndarray:
    angles = start + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    angles = np.pi / 2 + np.pi * np.arange(10) / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, STAR_INNER)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross() -> np.ndarray:
    a = CROSS_ARM
    quarter = [(1, -a), (1, a), (a, a)]  # one arm's corners, then rotated four times
    points = []
    for k in range(4):
        c, s = math.cos(k * math.pi / 2), math.sin(k * math.pi / 2)
        points += [(x * c - y * s, x * s + y * c) for x, y in quarter]
    return np.array(points)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    points = np.stack([x, y + 2.5], axis=1)  # centre the bounding box on the origin
    return points / 17.0


def _semicircle() -> np.ndarray:
    angles = np.linspace(0, np.pi, 128)
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return points - np.array([0.0, SEMICIRCLE_CENTRE])  # flat side down, centred on its bounding box


def _vertices(shape: str) -> np.ndarray | None:
    return {
        "circle": None,
        "square": _regular_polygon(4, np.pi / 4),
        "triangle": _regular_polygon(3, np.pi / 2),
        "star": _star(),
        "cross": _cross(),
        "heart": _heart(),
        "diamond": np.array([(0, 1), (-DIAMOND_WIDTH, 0), (0, -1), (DIAMOND_WIDTH, 0)], dtype=float),
        "semicircle": _semicircle(),
    }[shape]


def _ray_radius(vertices: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Distance from the origin to the polygon along each angle (the farthest crossing)."""
    p, q = vertices, np.roll(vertices, -1, axis=0)
    u = np.stack([np.cos(angles), np.sin(angles)], axis=1)[:, None, :]  # [A, 1, 2]
    e = (q - p)[None]  # [1, E, 2]
    cross = lambda a, b: a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]  # noqa: E731
    denom = cross(u, e)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = cross(p[None], e) / denom  # distance along the ray
        s = cross(p[None], u) / denom  # position along the edge
    hit = (np.abs(denom) > 1e-12) & (s >= -1e-9) & (s <= 1 + 1e-9) & (t > 0)
    return np.where(hit, t, 0.0).max(axis=1)


@functools.lru_cache(maxsize=None)
def radial_table(shape: str) -> tuple[np.ndarray, np.ndarray]:
    """``(r, r'/r)`` for ``shape`` at ``TABLE_BINS`` angles, area-normalised (float32).

    Example:
        >>> r, slope = radial_table("circle")
        >>> r.shape == (TABLE_BINS,) and float(abs(slope).max()) < 1e-6
        True
    """
    angles = 2 * np.pi * np.arange(TABLE_BINS) / TABLE_BINS
    vertices = _vertices(shape)
    r = np.ones(TABLE_BINS) if vertices is None else _ray_radius(vertices, angles)
    area = 0.5 * np.mean(r**2) * 2 * np.pi
    r = r * math.sqrt(UNIT_AREA / area)
    log_r = np.log(r)
    slope = (np.roll(log_r, -1) - np.roll(log_r, 1)) / (2 * 2 * np.pi / TABLE_BINS)
    return r.astype(np.float32), slope.astype(np.float32)


def signed_distance(
    dx: np.ndarray,
    dy: np.ndarray,
    shape: str,
    radius: float,
    rotation: float,
    wobble: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Approximate signed distance in pixels to the outline (negative inside).

    ``dx``/``dy`` are pixel offsets from the centre with y pointing up;
    ``wobble = (amplitude, frequency, phase)`` bends the outline like a
    hand-drawn stroke.

    Example:
        >>> d = signed_distance(np.array([0.0, 20.0]), np.array([0.0, 0.0]), "circle", 10.0, 0.0)
        >>> bool(d[0] < 0 < d[1])
        True
    """
    r_table, slope_table = radial_table(shape)
    dist = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx) - rotation
    idx = (theta * (TABLE_BINS / (2 * np.pi))).astype(np.int32) % TABLE_BINS
    boundary = r_table[idx] * radius
    if wobble is not None:
        amplitude, frequency, phase = wobble
        boundary = boundary * (1 + amplitude * np.sin(frequency * theta + phase))
    # Radial distance overstates the true distance where the outline is slanted; r'/r corrects it.
    return (dist - boundary) / np.sqrt(1 + slope_table[idx] ** 2)
