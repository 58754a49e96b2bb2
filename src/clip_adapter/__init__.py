"""clip-adapter: few-shot adaptation of a frozen CLIP on cached features.

The frozen encoders run once; every method trains on cached features.
``clip_adapter.fit(folder, backbone=..., shots=16)`` trains a classifier,
``clip_adapter.load(directory)`` reads one back (see :mod:`clip_adapter.api`).

Example:
    >>> import clip_adapter
    >>> sorted(clip_adapter.list_methods())[:2]
    ['auto', 'clap']
"""

__version__ = "0.1.0"

from .api import AdaptedCLIP, bench_results, fit, load  # noqa: E402
from .errors import ClipAdapterError  # noqa: E402
from .methods import list_methods  # noqa: E402

__all__ = ["AdaptedCLIP", "ClipAdapterError", "__version__", "bench_results", "fit", "list_methods", "load"]
