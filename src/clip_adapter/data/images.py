"""Open an image file as RGB, with one-line errors for everything that can go wrong.

Unusual modes are converted, and the conversion is reported, so a user knows
their 16-bit or CMYK files were changed on the way in. EXIF orientation is
applied, so a phone photo taken sideways is encoded upright.
"""

from __future__ import annotations

import contextlib
import os
import struct
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ..core.errors import DataError
from .issues import show

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
MAX_PIXELS = 89_478_485  # Pillow's own default; we make exceeding it an error, not a warning
LARGE_PIXELS = 40_000_000  # decodable but slow and memory-hungry: reported by `validate`
# Encoders resize the SHORT side to their input size (224-448 px), so the resized
# image has size**2 * (long/short) pixels: a 3 KB PNG of 1,000,000x1 would become
# 50 Gpx (150 GB) at 224 px. Phone panoramas are about 4:1 to 10:1, the widest
# stitched panoramas about 30:1; at 100:1 the resize stays under 12 Mpx (~135 MB
# as float32) even at 336 px, so no real photo is refused and no input can blow up.
MAX_ASPECT_RATIO = 100
# Version of what decoding produces from a file's bytes; part of the feature cache
# key, so features decoded differently are never reused. 2: EXIF orientation applied.
DECODE_VERSION = 2
EXIF_NOTE = "applied EXIF orientation"  # prefix of the note load_rgb returns when it rotated an image

ORIENTATION_TAG = 0x0112  # EXIF "Orientation": 1 upright, 2-8 the other rotations/mirrorings
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never silently grey


class BadImage(DataError):
    """An image that cannot be used; ``kind`` groups it in reports."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def is_image_name(path: str | os.PathLike) -> bool:
    """True for file names with a known image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def find_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to their image files (recursively, sorted); a missing path is an error.

    Example:
        >>> find_images(["/no/such.jpg"])
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: image not found: /no/such.jpg
    """
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*") if p.is_file() and is_image_name(p) and not p.name.startswith(".")
            )
            if not found:
                raise DataError(f"folder {show(item)} holds no image files")
            paths += found
        elif item.exists():
            paths.append(item)
        else:
            raise DataError(f"image not found: {show(item)}")
    return paths


def load_rgb(path: str | os.PathLike) -> tuple[Image.Image, list[str]]:
    """Decode ``path`` fully and return ``(rgb_image, notes)``.

    ``notes`` lists conversions that were made (e.g. ``"converted CMYK to RGB"``).
    Raises BadImage (a DataError; ``kind`` groups it) naming the file if it is
    missing, empty, not an image, truncated, a decompression bomb, of an
    extreme aspect ratio (checked from the header, before decoding) or holds
    NaN/inf pixels. The EXIF orientation is applied (and noted).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "g.png"
        >>> Image.new("L", (4, 4)).save(p)
        >>> img, notes = load_rgb(p)
        >>> img.mode, notes
        ('RGB', ['converted grayscale (L) to RGB'])
    """
    path = Path(path)
    name = show(path)
    with _one_line_errors(name):
        if not path.is_file():
            raise BadImage(f"image not found: {name}", "missing-file")
        if path.stat().st_size == 0:
            raise BadImage(f"image {name} is an empty (zero-byte) file", "zero-byte")
        with Image.open(path) as img:
            return _checked(img, name)


def checked_rgb(img: Image.Image, name: str = "PIL image") -> tuple[Image.Image, list[str]]:
    """The guards of :func:`load_rgb` for an image already in memory: ``(rgb_image, notes)``.

    A PIL image handed to the Python API never went through ``Image.open``'s own
    pixel limit, so without this a 100000x1 image would be resized to gigabytes,
    an all-NaN float image classified as if it were grey, and a 0x0 image crash
    the resize. Raises the same BadImage (a one-line DataError) as a file would,
    naming ``name``. The input is not modified.

    Example:
        >>> checked_rgb(Image.new("RGB", (0, 0)), "input 0")
        Traceback (most recent call last):
        ...
        clip_adapter.data.images.BadImage: image input 0 is 0x0: it has no pixels
    """
    if not isinstance(img, Image.Image):
        raise BadImage(f"image {name} is a {type(img).__name__}, not a PIL image, file or folder", "not-an-image")
    with _one_line_errors(name):
        return _checked(img, name)


@contextlib.contextmanager
def _one_line_errors(name: str) -> Iterator[None]:
    """Turn whatever Pillow raises while decoding ``name`` into one BadImage (``kind`` groups it in reports)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(
            f"image {name} exceeds Pillow's pixel limit (possible decompression bomb)", "decompression-bomb"
        ) from None
    except Image.UnidentifiedImageError:
        raise BadImage(f"image {name} cannot be decoded (not a readable image)", "not-an-image") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        reason = show(str(exc).split("\n")[0] or exc.__class__.__name__)
        raise BadImage(f"image {name} cannot be decoded ({reason})", "corrupt-image") from None


def _checked(img: Image.Image, name: str) -> tuple[Image.Image, list[str]]:
    """Every guard, in order: size from the header (before any pixel is decoded), decode, orientation, mode."""
    _check_size(img, name)
    img.load()
    img, notes = _upright(img, name)
    rgb, converted = _to_rgb(img, name)
    return rgb, notes + converted


def size_problem(
    width: int, height: int, max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT_RATIO
) -> str | None:
    """Which size limit a ``width`` × ``height`` picture breaks (images and video frames alike); None when none.

    Example:
        >>> size_problem(640, 480), size_problem(4000, 2), size_problem(0, 5)
        (None, 'extreme-aspect-ratio', 'zero-size')
    """
    if width < 1 or height < 1:
        return "zero-size"
    if width * height > max_pixels:
        return "decompression-bomb"
    if max(width, height) > max_aspect * min(width, height):
        return "extreme-aspect-ratio"
    return None


def _check_size(img: Image.Image, name: str) -> None:
    width, height = img.size
    kind = size_problem(width, height, MAX_PIXELS, MAX_ASPECT_RATIO)  # read at call time: a patched limit applies
    if kind == "zero-size":
        raise BadImage(f"image {name} is {width}x{height}: it has no pixels", kind)
    if kind == "decompression-bomb":
        raise BadImage(f"image {name} is {width}x{height}, a possible decompression bomb", kind)
    if kind == "extreme-aspect-ratio":
        raise BadImage(
            f"image {name} is {width}x{height}, an aspect ratio beyond {MAX_ASPECT_RATIO}:1; resizing its short side "
            "to the encoder's input size would need absurd memory (crop it into tiles)",
            kind,
        )


def _upright(img: Image.Image, name: str) -> tuple[Image.Image, list[str]]:
    """Apply the EXIF orientation tag, as photo viewers do (phones store rotated photos sideways plus a tag)."""
    try:
        orientation = img.getexif().get(ORIENTATION_TAG, 1)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, struct.error):
        return img, []  # an unreadable EXIF block: the pixels are still good, used as stored
    if orientation not in range(2, 9):
        return img, []
    try:
        upright = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, struct.error) as exc:
        raise BadImage(
            f"image {name} has an EXIF orientation that cannot be applied ({exc.__class__.__name__})", "corrupt-image"
        ) from None
    return upright, [f"{EXIF_NOTE} {orientation} (stored rotated or mirrored)"]


def _to_rgb(img: Image.Image, name: str) -> tuple[Image.Image, list[str]]:
    mode = img.mode
    if mode == "RGB":
        return img.copy(), []
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # convert("RGB") would clip 16-bit values to 255 (a white image): rescale instead.
        array = np.asarray(img, dtype=np.float64)
        if not np.isfinite(array).all():  # NaN/inf would reach the encoder as garbage (and warn, naming no file)
            bad = int(array.size - np.isfinite(array).sum())
            raise BadImage(f"image {name} holds {bad} non-finite (NaN or infinite) pixel values", "non-finite-pixels")
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        gray = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB"), [f"rescaled {mode} (high bit depth) to 8-bit RGB"]
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Transparent pixels have arbitrary colour underneath: composite on white.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas, [f"composited {mode} with transparency onto white"]
    names = {"L": "grayscale (L)", "1": "bilevel (1)", "P": "palette (P)", "CMYK": "CMYK", "YCbCr": "YCbCr"}
    return img.convert("RGB"), [f"converted {names.get(mode, mode)} to RGB"]
