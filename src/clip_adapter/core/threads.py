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


def apply_thread_setting() -> None:
    """Honour ``CLIP_ADAPTER_THREADS`` (the encoders' thread count) if set.

    On a machine shared with other jobs, fewer threads than cores can be much
    faster: OpenMP threads that wait for a busy core stall every operation.
    """
    import os

    from .errors import ConfigError

    value = os.environ.get("CLIP_ADAPTER_THREADS", "").strip()
    if not value:
        return
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"CLIP_ADAPTER_THREADS must be a positive integer, got {value!r}")
    torch.set_num_threads(int(value))
