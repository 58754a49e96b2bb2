"""The remedies: each a config dataclass and a registered :class:`~.base.Recipe` that yields a backbone checkpoint."""

from .base import RECIPES, Recipe, RecipeConfig
from . import labclip, negation, negclip  # noqa: F401  (registers them)

__all__ = ["RECIPES", "Recipe", "RecipeConfig"]
