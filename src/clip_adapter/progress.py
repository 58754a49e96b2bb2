"""Progress bars that turn into nothing when output is not a terminal."""

from __future__ import annotations

import os
import sys
from typing import Any


def progress(total: int | None = None, desc: str = "", unit: str = "it", **kwargs: Any):
    """A tqdm bar on a TTY (stderr), silent otherwise or when CLIP_ADAPTER_NO_PROGRESS is set.

    Example:
        >>> bar = progress(total=3, desc="demo")
        >>> bar.update(3); bar.close()
    """
    from tqdm.auto import tqdm

    disable = not sys.stderr.isatty() or bool(os.environ.get("CLIP_ADAPTER_NO_PROGRESS"))
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True, **kwargs)
