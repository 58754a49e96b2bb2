"""The toy actions: what each of the eleven looks like, their time reversals and the base/novel split.

Shared by the clip writer (:mod:`.toyclips`) and the shape–action class set
(:mod:`.toycombos`); it imports neither.

Example:
    >>> len(CLASSES), BY_NAME["moving left"].reverse
    (11, 'moving right')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Action:
    """One action class: what it looks like at the start, middle and end, and its time reversal."""

    name: str
    start: str
    middle: str
    end: str
    motion: str
    reverse: str | None = None


ACTIONS: tuple[Action, ...] = (
    Action(
        "moving left",
        "a shape on the right",
        "a shape in the center",
        "a shape on the left",
        "a shape moving from the right to the left",
        "moving right",
    ),
    Action(
        "moving right",
        "a shape on the left",
        "a shape in the center",
        "a shape on the right",
        "a shape moving from the left to the right",
        "moving left",
    ),
    Action(
        "moving up",
        "a shape at the bottom",
        "a shape in the center",
        "a shape at the top",
        "a shape moving from the bottom to the top",
        "moving down",
    ),
    Action(
        "moving down",
        "a shape at the top",
        "a shape in the center",
        "a shape at the bottom",
        "a shape moving from the top to the bottom",
        "moving up",
    ),
    Action("growing", "a small shape", "a shape", "a large shape", "a small shape becoming large", "shrinking"),
    Action("shrinking", "a large shape", "a shape", "a small shape", "a large shape becoming small", "growing"),
    Action("appearing", "an empty background", "a faint shape", "a shape", "a shape fading in", "disappearing"),
    Action("disappearing", "a shape", "a faint shape", "an empty background", "a shape fading out", "appearing"),
    Action(
        "rotating clockwise",
        "a shape leaning to the left",
        "an upright shape",
        "a shape leaning to the right",
        "a shape turning clockwise",
        "rotating counterclockwise",
    ),
    Action(
        "rotating counterclockwise",
        "a shape leaning to the right",
        "an upright shape",
        "a shape leaning to the left",
        "a shape turning counterclockwise",
        "rotating clockwise",
    ),
    Action(
        "changing color",
        "a shape in one color",
        "a shape",
        "a shape in another color",
        "a shape changing its color",
        None,
    ),
)
CLASSES = tuple(sorted(a.name for a in ACTIONS))
BY_NAME = {a.name: a for a in ACTIONS}
# Base actions are seen in training, novel ones only at test (base-to-novel protocol); each
# time-reversed pair stays on one side, so a novel pair is new in both directions.
BASE = ("appearing", "disappearing", "growing", "moving left", "moving right", "shrinking")
NOVEL = tuple(c for c in CLASSES if c not in BASE)


def time_reversed_pairs() -> list[list[str]]:
    """The ``[a, b]`` class pairs whose clips are each other's reversal (each pair once).

    Example:
        >>> time_reversed_pairs()[0]
        ['appearing', 'disappearing']
    """
    return sorted(list(pair) for pair in {tuple(sorted((a.name, a.reverse))) for a in ACTIONS if a.reverse})


def action_clauses(action: Action) -> list[str]:
    """An action's description clauses: its start, middle and end states and its motion."""
    return [action.start, action.middle, action.end, action.motion]


def action_states(actions: Sequence[str] = CLASSES) -> dict[str, dict[str, str | None]]:
    """What ``meta.json`` records of each action: its states, motion and time reversal."""
    return {
        a.name: {"start": a.start, "middle": a.middle, "end": a.end, "motion": a.motion, "reverse": a.reverse}
        for a in ACTIONS
        if a.name in actions
    }


def descriptions(actions: Sequence[str] = CLASSES) -> dict[str, list[str]]:
    """The description file's content: each action's :func:`action_clauses`."""
    return {a.name: action_clauses(a) for a in sorted(ACTIONS, key=lambda a: a.name) if a.name in actions}
