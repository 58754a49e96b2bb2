"""clip-adapter: few-shot adaptation of a frozen CLIP on cached features.

The frozen encoders run once; every method trains on cached features.

Example:
    >>> import clip_adapter
    >>> sorted(clip_adapter.list_methods())[:2]
    ['cocoop', 'coop']
"""

__version__ = "0.1.0"

from .errors import ClipAdapterError  # noqa: E402
from .methods import list_methods  # noqa: E402

__all__ = ["ClipAdapterError", "__version__", "list_methods"]
