"""Prompt templates: one per benchmark dataset (CoOp's choices) and the 7-template ImageNet ensemble.

A class embedding from several templates is the average of the normalised
per-template embeddings, renormalised (CLIP's prompt ensembling).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError

DEFAULT_TEMPLATE = "a photo of a {}."

# CoOp's CUSTOM_TEMPLATES, keyed by the dataset names used throughout the toolkit.
DATASET_TEMPLATES: dict[str, str] = {
    "imagenet": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "oxford_pets": "a photo of a {}, a type of pet.",
    "stanford_cars": "a photo of a {}.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "food101": "a photo of {}, a type of food.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "sun397": "a photo of a {}.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "ucf101": "a photo of a person doing {}.",
}

# The 7 templates Tip-Adapter and CLIP-Adapter ensemble for ImageNet.
IMAGENET_ENSEMBLE: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

NAMED_TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"imagenet-ensemble": IMAGENET_ENSEMBLE}


def resolve_templates(spec: str | Sequence[str] | None, dataset: str | None = None) -> tuple[str, ...]:
    """Turn a user's template option into a tuple of ``{}`` templates.

    ``spec`` may be ``None`` (the dataset's default, else "a photo of a {}."),
    a named set (``imagenet-ensemble``), one template, or several.

    Example:
        >>> resolve_templates(None, "dtd")
        ('{} texture.',)
        >>> len(resolve_templates("imagenet-ensemble"))
        7
    """
    if spec is None or spec == "" or spec == "default":
        return (DATASET_TEMPLATES.get(dataset or "", DEFAULT_TEMPLATE),)
    if isinstance(spec, str):
        spec = NAMED_TEMPLATE_SETS.get(spec, (spec,))
    templates = tuple(spec)
    for template in templates:
        if template.count("{}") != 1:
            raise ConfigError(f"prompt template {template!r} must contain exactly one '{{}}' for the class name")
    return templates


def prompts_for(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """All prompts, class-major: ``[t.format(c) for c in classnames for t in templates]``."""
    return [template.format(name) for name in classnames for template in templates]


def ensemble(prompt_embeddings: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class embeddings ``[C, D]`` from class-major prompt embeddings ``[C*T, D]``.

    Each prompt embedding is normalised, the T of a class averaged, and the
    average renormalised; with one template this is just normalisation.
    """
    per_class = F.normalize(prompt_embeddings.float(), dim=-1).view(num_classes, -1, prompt_embeddings.shape[-1])
    return F.normalize(per_class.mean(dim=1), dim=-1)


def mean_raw(prompt_embeddings: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class mean of the raw (un-normalised) prompt embeddings ``[C, D]``.

    CLAP anchors its prototypes here, as its official code does: the norm of
    these vectors sets how strongly its penalty pulls against the loss.
    """
    return prompt_embeddings.float().view(num_classes, -1, prompt_embeddings.shape[-1]).mean(dim=1)
