"""Thread count for small tensor work.

Heads on cached features multiply matrices of a few thousand elements; at that
size OpenMP's fork/join costs more than the arithmetic, and when another
process holds the cores it can cost milliseconds per op. Such work runs on one
thread; the encoders keep all of them.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (``None``: leave as is).

    Example:
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
