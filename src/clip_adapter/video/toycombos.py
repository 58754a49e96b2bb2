"""The toy world's second class set: shape–action combinations, novel as *combinations* only.

Classes are a shape doing an action ("triangle moving left"): four shapes
(all asymmetric, so every action, rotations included, is visible on each)
times the eleven actions, 44 classes. The base-to-novel split follows the
"new shape–motion combinations" design: the shapes form two groups
and the actions two groups (time-reversed pairs kept together); base is group
1's shapes with group A's actions and group 2's shapes with group B's, novel
the crossed combinations. So every shape and every action is trained on, but
no novel combination is, and a novel class's time-reversed partner is novel
too. (The ``actions`` class set's split is harder: novel *actions*, motions
never fine-tuned on.)

Example:
    >>> len(combo_classes()), len(COMBO_BASE), len(COMBO_NOVEL)
    (44, 22, 22)
    >>> parse_combo("heart rotating clockwise")
    ('heart', 'rotating clockwise')
"""

from __future__ import annotations

from typing import Sequence

from .toyactions import BY_NAME, CLASSES, action_clauses, action_states, time_reversed_pairs

SHAPE_GROUPS = (("triangle", "heart"), ("semicircle", "diamond"))
ACTION_GROUP_A = (
    "growing",
    "moving left",
    "moving right",
    "rotating clockwise",
    "rotating counterclockwise",
    "shrinking",
)
ACTION_GROUP_B = tuple(a for a in CLASSES if a not in ACTION_GROUP_A)
TEMPLATE = "a photo of a {}."  # the class name carries the shape: "a photo of a triangle moving left."


def _combos(shapes: Sequence[str], actions: Sequence[str]) -> list[str]:
    return [f"{s} {a}" for s in shapes for a in actions]


def combo_classes() -> tuple[str, ...]:
    """All shape–action class names, sorted."""
    return tuple(sorted(_combos([s for g in SHAPE_GROUPS for s in g], CLASSES)))


COMBO_BASE = tuple(sorted(_combos(SHAPE_GROUPS[0], ACTION_GROUP_A) + _combos(SHAPE_GROUPS[1], ACTION_GROUP_B)))
COMBO_NOVEL = tuple(sorted(_combos(SHAPE_GROUPS[0], ACTION_GROUP_B) + _combos(SHAPE_GROUPS[1], ACTION_GROUP_A)))


def parse_combo(name: str) -> tuple[str, str]:
    """``"triangle moving left"`` → ``("triangle", "moving left")``."""
    shape, _, action = name.partition(" ")
    if action not in BY_NAME or not any(shape in g for g in SHAPE_GROUPS):
        raise ValueError(f"not a toy shape-action class: {name!r}")
    return shape, action


def combo_descriptions(names: Sequence[str]) -> dict[str, list[str]]:
    """Each class's clauses: its action's start, middle, end and motion clauses."""
    return {n: action_clauses(BY_NAME[parse_combo(n)[1]]) for n in names}


def combo_meta(names: Sequence[str]) -> dict:
    """The class-set part of ``meta.json``: templates, pairs, the base/novel split, the groups."""
    shapes = [s for g in SHAPE_GROUPS for s in g]
    pairs = [[f"{s} {a}", f"{s} {b}"] for s in shapes for a, b in time_reversed_pairs()]
    return {
        "classes": "shape-actions",
        "templates": [TEMPLATE],
        "time_reversed_pairs": [p for p in pairs if all(c in names for c in p)],
        "base": [c for c in COMBO_BASE if c in names],
        "novel": [c for c in COMBO_NOVEL if c in names],
        "shape_groups": [list(g) for g in SHAPE_GROUPS],
        "action_groups": [list(ACTION_GROUP_A), list(ACTION_GROUP_B)],
        "actions": action_states(),
    }
