"""The remedies: each a config dataclass and a registered :class:`~.base.Recipe` that yields a backbone checkpoint."""

from . import labclip, negation, negclip  # noqa: F401  (registers them)
from .base import RECIPES, Recipe, RecipeConfig

__all__ = ["RECIPES", "Recipe", "RecipeConfig"]
