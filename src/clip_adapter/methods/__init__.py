"""Methods, one module each, behind one registry.

Example:
    >>> from clip_adapter.methods import list_methods
    >>> "clip-adapter" in list_methods()
    True
"""

from __future__ import annotations

import importlib

from .base import METHODS, FewShotData, FitResult, Head, Method, cosine_logits, evaluate_head, get_method

# Each module registers itself on import (adding a method: one module, one line here).
_MODULES = ("zero_shot", "clip_adapter", "linear_probe", "tip_adapter", "coop", "cocoop", "clap", "gda", "auto")
for _name in _MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.names()


__all__ = [
    "FewShotData",
    "FitResult",
    "Head",
    "METHODS",
    "Method",
    "cosine_logits",
    "evaluate_head",
    "get_method",
    "list_methods",
]
