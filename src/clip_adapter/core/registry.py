"""A small name → object registry that rejects duplicates and bad names."""

from __future__ import annotations

import importlib
import re
from typing import Callable, Generic, Iterator, Mapping, TypeVar

from .errors import ConfigError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class Registry(Generic[T]):
    """Maps kebab-case names to objects.

    ``providers`` maps a name to the module that registers it when imported; that
    module is imported on the name's first lookup (and by :meth:`names`). So a
    registry can list an entry whose code lives in a layer above it without
    importing that layer, and a caller gets the entry without importing it first.

    Example:
        >>> methods = Registry("method")
        >>> @methods.register("zero-shot")
        ... class ZeroShot: ...
        >>> methods.get("zero-shot").__name__, methods.names()
        ('ZeroShot', ['zero-shot'])
    """

    def __init__(self, kind: str, providers: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._providers = dict(providers or {})

    def register(self, name: str) -> Callable[[T], T]:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} is not kebab-case (a-z, 0-9, '-')")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")

        def add(obj: T) -> T:
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        self._provide(name)
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        for name in list(self._providers):
            self._provide(name)
        return sorted(self._items)

    def _provide(self, name: str) -> None:
        """Import the module that provides ``name``, once, if it is not registered yet."""
        module = self._providers.get(name)
        if module is None or name in self._items:
            return
        importlib.import_module(module)
        if name not in self._items:
            raise RuntimeError(f"{module} was named as the provider of {self.kind} {name!r} but did not register it")

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._providers

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
