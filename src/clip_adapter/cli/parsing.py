"""Small parsers for comma-separated options."""

from __future__ import annotations

from ..errors import ConfigError


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
