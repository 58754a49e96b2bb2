"""Small parsers for comma-separated options."""

from __future__ import annotations

import argparse

from ..core.config import SEED_MAX
from ..core.errors import ConfigError


def int_list(text: str, option: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]``; a bad item is a one-line error naming the option."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} is empty")
    return values


def name_list(text: str, option: str) -> list[str]:
    """``"a, b"`` → ``["a", "b"]``; empty is an error."""
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise ConfigError(f"{option} is empty")
    return values


def _bounded_int(lo: int, hi: int | None, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _bounded_int(1, None, "a positive integer")
count_int = _bounded_int(0, None, "a non-negative integer")
seed_int = _bounded_int(0, SEED_MAX, f"a seed in 0..{SEED_MAX}")


def bounded_int_list(text: str, option: str, lo: int, hi: int | None = None) -> list[int]:
    """:func:`int_list` whose items must lie in ``lo..hi``."""
    values = int_list(text, option)
    for value in values:
        if value < lo or (hi is not None and value > hi):
            raise ConfigError(f"{option}: {value} is out of range {lo}..{hi if hi is not None else 'inf'}")
    return values


def float_pair(text: str, option: str) -> tuple[float, float]:
    """``"0.08,1"`` → ``(0.08, 1.0)``; anything else is a one-line error naming the option."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise ConfigError(f"{option} must be two comma-separated numbers, got {text!r}") from None
    if len(values) != 2 or not all(v == v for v in values):
        raise ConfigError(f"{option} must be two comma-separated numbers, got {text!r}")
    return values  # type: ignore[return-value]
