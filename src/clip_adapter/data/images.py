"""Open an image file as RGB, with one-line errors for everything that can go wrong.

Unusual modes are converted, and the conversion is reported, so a user knows
their 16-bit or CMYK files were changed on the way in.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from ..errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
MAX_PIXELS = 89_478_485  # Pillow's own default; we make exceeding it an error, not a warning
LARGE_PIXELS = 40_000_000  # decodable but slow and memory-hungry: reported by `validate`

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never silently grey


class BadImage(DataError):
    """An image that cannot be used; ``kind`` groups it in reports."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def is_image_name(path: str | os.PathLike) -> bool:
    """True for file names with a known image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_rgb(path: str | os.PathLike) -> tuple[Image.Image, list[str]]:
    """Decode ``path`` fully and return ``(rgb_image, notes)``.

    ``notes`` lists conversions that were made (e.g. ``"converted CMYK to RGB"``).
    Raises DataError naming the file if it is missing, empty, not an image,
    truncated, or a decompression bomb.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "g.png"
        >>> Image.new("L", (4, 4)).save(p)
        >>> img, notes = load_rgb(p)
        >>> img.mode, notes
        ('RGB', ['converted grayscale (L) to RGB'])
    """
    path = Path(path)
    if not path.is_file():
        raise BadImage(f"image not found: {path}", "missing-file")
    if path.stat().st_size == 0:
        raise BadImage(f"image {path} is an empty (zero-byte) file", "zero-byte")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise BadImage(f"image {path} is {img.width}x{img.height}, a possible decompression bomb", "decompression-bomb")
                img.load()
                return _to_rgb(img)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"image {path} exceeds Pillow's pixel limit (possible decompression bomb)", "decompression-bomb") from None
    except Image.UnidentifiedImageError:
        raise BadImage(f"image {path} cannot be decoded (not a readable image)", "not-an-image") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        reason = str(exc).split("\n")[0] or exc.__class__.__name__
        raise BadImage(f"image {path} cannot be decoded ({reason})", "corrupt-image") from None


def _to_rgb(img: Image.Image) -> tuple[Image.Image, list[str]]:
    mode = img.mode
    if mode == "RGB":
        return img.copy(), []
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # convert("RGB") would clip 16-bit values to 255 (a white image): rescale instead.
        array = np.asarray(img, dtype=np.float64)
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
