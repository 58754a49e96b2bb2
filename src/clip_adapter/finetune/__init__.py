"""Fine-tuning the encoders themselves: the one home for training a backbone (not a head on cached features).

- :mod:`.trainable`: a backbone's encoders with gradients, the parts to unfreeze chosen, the toy vocabulary grown;
- :mod:`.trainer`: the settings of the one encoder loop (:func:`clip_adapter.core.optim.train_encoder`: AdamW,
  warm-up + cosine, clipping, CSV log, validation-based selection), taking any ``loss_at(step)`` and ``validate()``;
- :mod:`.checkpoint`: the output, a backbone checkpoint every command loads with ``--pretrained``;
- :mod:`.recipes`: the remedies for CLIP's bag-of-words behaviour — ``labclip``, ``negclip``, ``negation``.

Example:
    >>> sorted(RECIPES.names())
    ['labclip', 'negation', 'negclip']
"""

from ..core.outputs import register_kind
from .recipes import RECIPES, Recipe, RecipeConfig
from .run import FinetuneResult, finetune, recipe_config
from .trainable import TrainableClip
from .trainer import TrainerConfig, TrainResult, train

# The output kind of `clip-adapter finetune --out` (checkpoint.OUTPUT_KIND), and the files it may hold.
register_kind("finetune", r"^(toy_clip\.(safetensors|json)|finetuned\.(safetensors|json)|finetune_log\.csv)$")

__all__ = [
    "RECIPES",
    "FinetuneResult",
    "Recipe",
    "RecipeConfig",
    "TrainResult",
    "TrainableClip",
    "TrainerConfig",
    "finetune",
    "recipe_config",
    "train",
]
