"""Prompt templates: one per benchmark dataset (CoOp's choices) and the 7-template ImageNet ensemble.

A class embedding from several templates is the average of the normalised
per-template embeddings, renormalised (CLIP's prompt ensembling).
"""

from __future__ import annotations

import string
from typing import Sequence

import torch
import torch.nn.functional as F

from ..core.errors import ClipAdapterError, ConfigError

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

# The names CoOp's files and folders give the same datasets: split_zhou_*.json stems and the
# DATASETS.md folder names, so a split file passed on its own still gets its dataset's template.
DATASET_ALIASES: dict[str, str] = {
    "split_zhou_caltech101": "caltech101",
    "caltech-101": "caltech101",
    "split_zhou_oxfordpets": "oxford_pets",
    "split_zhou_stanfordcars": "stanford_cars",
    "split_zhou_oxfordflowers": "oxford_flowers",
    "split_zhou_food101": "food101",
    "food-101": "food101",
    "split_zhou_sun397": "sun397",
    "split_zhou_describabletextures": "dtd",
    "split_zhou_eurosat": "eurosat",
    "split_zhou_ucf101": "ucf101",
}


def dataset_key(name: str | None) -> str | None:
    """The toolkit's name for a dataset given by a CoOp file or folder name, if it is a standard one.

    A ``:part`` suffix (base-to-new's ``oxford_pets:base``) names a part of the dataset,
    which keeps the dataset's templates and settings.

    Example:
        >>> dataset_key("split_zhou_OxfordPets"), dataset_key("food-101"), dataset_key("my-photos")
        ('oxford_pets', 'food101', None)
        >>> dataset_key("dtd:new")
        'dtd'
    """
    if not name:
        return None
    key = name.split(":", 1)[0].strip().lower()
    key = DATASET_ALIASES.get(key, key)
    return key if key in DATASET_TEMPLATES else None


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


def check_template(template: object, where: str, error: type[ClipAdapterError] = ConfigError) -> str:
    """Return ``template`` if ``str.format`` can fill it with exactly one class name, else raise ``error``.

    The one checker for every template a user can give (``--template``, a
    split file's ``meta.templates``): exactly one ``{}`` and no other field
    (``{x}``, ``{0}``, ``{:>9}``, ``{!r}``) nor a stray ``{`` or ``}``, which
    would otherwise fail (or silently misformat) only after the images were
    encoded. ``{{`` and ``}}`` are literal braces and fine.

    Example:
        >>> check_template("a {{sketch}} of a {}.", "--template")
        'a {{sketch}} of a {}.'
        >>> check_template("a photo of {x}.", "--template")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: --template: prompt template 'a photo of {x}.' has the field '{x}';
        it must contain exactly one '{}' for the class name (write '{{' and '}}' for literal braces)
    """
    if not isinstance(template, str):
        raise error(f"{where}: prompt template {template!r} must be a string")
    hint = "it must contain exactly one '{}' for the class name (write '{{' and '}}' for literal braces)"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # "Single '{' encountered in format string" and the like
        raise error(f"{where}: prompt template {template!r} is not a valid template ({exc}); {hint}") from None
    fields = [(name, spec, conv) for _, name, spec, conv in parsed if name is not None]
    for name, spec, conv in fields:
        if (name, spec, conv) != ("", "", None):
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise error(f"{where}: prompt template {template!r} has the field {shown!r}; {hint}")
    if len(fields) != 1:
        raise error(f"{where}: prompt template {template!r} has {len(fields)} '{{}}' fields; {hint}")
    return template


def resolve_templates(
    spec: str | Sequence[str] | None, dataset: str | None = None, where: str = "--template"
) -> tuple[str, ...]:
    """Turn a user's template option into a tuple of checked ``{}`` templates.

    ``spec`` may be ``None`` (the dataset's default, else "a photo of a {}."),
    a named set (``imagenet-ensemble``), one template, or several (named sets
    among them are expanded). Every template is checked here, before any
    encoding, with :func:`check_template`; ``where`` names the source in errors.

    Example:
        >>> resolve_templates(None, "dtd")
        ('{} texture.',)
        >>> len(resolve_templates("imagenet-ensemble"))
        7
    """
    if spec is None or spec == "" or spec == "default":
        return (DATASET_TEMPLATES.get(dataset_key(dataset) or "", DEFAULT_TEMPLATE),)
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise ConfigError(f"{where}: no prompt templates given")
    templates: list[str] = []
    for i, item in enumerate(items):
        named = NAMED_TEMPLATE_SETS.get(item) if isinstance(item, str) else None
        source = where if len(items) == 1 else f"{where} #{i + 1}"
        templates += named if named else [check_template(item, source)]
    return tuple(templates)


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
