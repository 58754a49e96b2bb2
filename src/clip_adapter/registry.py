"""A small name → object registry that rejects duplicates and bad names."""

from __future__ import annotations

import re
from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class Registry(Generic[T]):
    """Maps kebab-case names to objects.

    Example:
        >>> methods = Registry("method")
        >>> @methods.register("zero-shot")
        ... class ZeroShot: ...
        >>> methods.get("zero-shot").__name__, methods.names()
        ('ZeroShot', ['zero-shot'])
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

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
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
