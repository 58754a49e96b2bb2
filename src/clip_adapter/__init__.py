"""clip-adapter: few-shot adaptation of a frozen CLIP on cached features.

The frozen encoders run once; every method trains on cached features.
``clip_adapter.fit(folder, backbone=..., shots=16)`` trains a classifier,
``clip_adapter.load(directory)`` reads one back (see :mod:`clip_adapter.api`).

Example:
    >>> import clip_adapter
    >>> sorted(clip_adapter.list_methods())[:2]
    ['auto', 'clap']
"""

from ._version import __version__
from .api import AdaptedCLIP, bench_results, fit, load
from .core.errors import ClipAdapterError
from .methods import list_methods

__all__ = ["AdaptedCLIP", "ClipAdapterError", "__version__", "bench_results", "fit", "list_methods", "load"]
