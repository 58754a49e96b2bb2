"""Validated configuration dataclasses, serialised with every result.

A config is a dataclass whose fields carry a default and a help text; it
validates itself on construction, serialises with sorted keys, and reads back
from JSON written by a newer version with a warning for unknown keys rather
than a crash.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing
import warnings
from typing import Any, Callable, NamedTuple, TypeVar

from .errors import ConfigError

C = TypeVar("C", bound="Config")
SEED_MAX = 2**32 - 1  # every RNG the project seeds (Python, numpy, torch.manual_seed) accepts 0..2**32-1


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and a help text (shown by the CLI)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a default_factory for mutable defaults")
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


class Default(NamedTuple):
    """A new default together with a new help text, for :func:`defaults`."""

    value: Any
    help: str


def defaults(**values: Any) -> Callable[[type], type]:
    """Give inherited config fields new defaults in one line (put it under ``@dataclass``).

    A field is declared once, in the config that owns it (the optimiser's in
    :mod:`clip_adapter.core.optim`); a config that trains with other values says
    only the values, or a :class:`Default` when the help text changes too.
    The field keeps its place and its type.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Base(Config):
        ...     lr: float = option(1e-3, "learning rate")
        ...     steps: int = option(10, "steps")
        >>> @dataclass
        ... @defaults(lr=5e-4, steps=Default(20, "steps (the recipe's)"))
        ... class Recipe(Base):
        ...     pass
        >>> Recipe().to_dict(), Recipe.help_texts()["steps"]
        ({'lr': 0.0005, 'steps': 20}, "steps (the recipe's)")
    """

    def apply(cls: type) -> type:
        inherited = _inherited_fields(cls)
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for name, value in values.items():
            if name not in inherited:
                raise TypeError(f"{cls.__name__}: no inherited field {name!r} to give a default")
            base = inherited[name]
            new = value if isinstance(value, Default) else Default(value, base.metadata.get("help", ""))
            annotations[name] = base.type
            setattr(cls, name, option(new.value, new.help))
        cls.__annotations__ = annotations
        return cls

    return apply


def _inherited_fields(cls: type) -> dict[str, dataclasses.Field]:
    found: dict[str, dataclasses.Field] = {}
    for base in reversed(cls.__mro__[1:]):  # nearer bases win, as attribute lookup does
        found.update(getattr(base, "__dataclass_fields__", {}))
    return found


class Config:
    """Mixin for config dataclasses: validation, JSON round-trip, help texts.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Demo(Config):
        ...     rate: float = option(0.5, "a ratio in [0, 1]")
        ...     def validate(self):
        ...         check_range("rate", self.rate, 0.0, 1.0)
        >>> Demo.from_dict({"rate": 0.25}).to_dict()
        {'rate': 0.25}
    """

    def __post_init__(self) -> None:
        self._coerce_types()
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for an invalid value; subclasses extend this."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            warnings.warn(f"{where}: ignoring unknown key(s) {', '.join(unknown)} (written by a newer version?)")
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def help_texts(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    def _coerce_types(self) -> None:
        # JSON has no tuples and writes 1.0 as 1; bring values back to the declared type.
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            setattr(self, f.name, _coerce(f.name, value, hints.get(f.name), type(self).__name__))


def _coerce(name: str, value: Any, hint: Any, owner: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is None or hint is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0], owner) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{owner}.{name}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(name, v, item, owner) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{owner}.{name}: expected {hint.__name__}, got {value!r}")
    return value


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    """Raise ConfigError unless ``lo <= value <= hi`` (either bound optional)."""
    if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise ConfigError(f"{name} must be in {bounds}, got {value!r}")


def check_choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def check_seed(name: str, value: object) -> int:
    """``value`` as an int seed every RNG accepts (0..:data:`SEED_MAX`), else a ConfigError naming ``name``.

    Checked before any RNG sees it: torch raises an opaque RuntimeError for a
    seed past 2**64 and numpy a ValueError past 2**32, and only later.

    Example:
        >>> check_seed("--seed", 7)
        7
        >>> check_seed("--init-seed", 10**20)
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: --init-seed 100000000000000000000 is out of range 0..4294967295
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer in 0..{SEED_MAX}, got {value!r}")
    if not 0 <= int(value) <= SEED_MAX:
        raise ConfigError(f"{name} {value} is out of range 0..{SEED_MAX}")
    return int(value)
