"""Matplotlib plumbing for every figure the library draws: the Agg backend, PNG bytes, text drawn as text.

The figure modules (:mod:`clip_adapter.apps.report.figures`, :mod:`clip_adapter.bench.plots`,
:mod:`clip_adapter.compose.plots`, :mod:`clip_adapter.gap.plots`) draw; this module
only hands them pyplot and turns a finished figure into bytes. matplotlib is
imported on first use, so importing a figure module stays cheap.

Example:
    >>> plt = pyplot()
    >>> fig, ax = plt.subplots(figsize=(1, 1))
    >>> png_bytes(fig)[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

import functools
import io
from typing import Any, Callable, TypeVar

PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}
Draw = TypeVar("Draw", bound=Callable[..., bytes])


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display; never opens a window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain_text(draw: Draw) -> Draw:
    """Run a figure function with text drawn as text (creation and saving both read the setting).

    Labels that come from files (class names, log columns) may hold ``$``: matplotlib
    would otherwise read ``$…$`` as mathtext, and an unbalanced ``$`` is an exception.
    """

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> bytes:
        with pyplot().rc_context(PLAIN_TEXT):
            return draw(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def png_bytes(fig) -> bytes:
    """``fig`` saved as PNG bytes, then closed."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
