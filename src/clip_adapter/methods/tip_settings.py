"""Tip-Adapter's settings: the official per-dataset configs (shipped as data) and this toolkit's generic ones.

``tip_official.json`` holds the official code's per-dataset search ranges, steps, starting α/β and
Tip-Adapter-F epochs, with the commit they were read from; :mod:`.tip_adapter` resolves its
``settings`` option through these functions.

The generic values date from the first Tip-Adapter commit, before the official
configs were read in; their origin is not recorded, and they were not checked
on held-out data.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from ..core.errors import ArtifactError
from ..data.templates import dataset_key

OFFICIAL_FILE = Path(__file__).with_name("tip_official.json")
# This toolkit's settings for a dataset the official code has no config for (not the official code's;
# origin not recorded, see the module docstring).
GENERIC: dict[str, float] = {
    "alpha": 1.0,
    "beta": 1.0,
    "alpha_max": 10.0,
    "beta_max": 10.0,
    "alpha_steps": 20,
    "beta_steps": 200,
    "epochs": 20,
}


@functools.cache
def official_settings() -> dict[str, dict[str, Any]]:
    """The official per-dataset configs (``tip_official.json``), keyed by the toolkit's dataset names.

    Example:
        >>> official_settings()["oxford_flowers"]["search_scale"], official_settings()["imagenet"]["search_split"]
        ([50, 50], 'test')
    """
    try:
        return json.loads(OFFICIAL_FILE.read_text())["datasets"]
    except (OSError, ValueError, KeyError) as exc:  # a broken install, not a user input
        raise ArtifactError(
            f"{OFFICIAL_FILE}: cannot read Tip-Adapter's official settings ({exc}); reinstall clip-adapter"
        ) from None


def settings_values(name: str) -> dict[str, float]:
    """The option values of settings ``name`` (``generic`` or a dataset key), in this toolkit's option names.

    Example:
        >>> v = settings_values("oxford_pets")
        >>> v["beta_max"], v["alpha_max"], v["alpha"], v["beta_steps"], v["epochs"]
        (7.0, 3.0, 1.17, 200, 20)
    """
    if name == "generic":
        return dict(GENERIC)
    entry = official_settings()[name]
    (beta_max, alpha_max), (beta_steps, alpha_steps) = entry["search_scale"], entry["search_step"]
    return {
        "alpha": float(entry["init_alpha"]),
        "beta": float(entry["init_beta"]),
        "alpha_max": float(alpha_max),
        "beta_max": float(beta_max),
        "alpha_steps": int(alpha_steps),
        "beta_steps": int(beta_steps),
        "epochs": int(entry["train_epoch"]),
    }


def settings_for(dataset: str | None) -> str:
    """Which settings ``auto`` means for a dataset name: its official config if it is a standard dataset.

    Example:
        >>> settings_for("split_zhou_OxfordPets"), settings_for("food-101"), settings_for("my-photos")
        ('oxford_pets', 'food101', 'generic')
    """
    key = dataset_key(dataset)
    return key if key in official_settings() else "generic"
