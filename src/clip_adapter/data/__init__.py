"""Data: dataset readers, few-shot sampling, prompt templates, image loading."""

from .classnames import load_classname_map
from .dataset import (
    Dataset,
    Sample,
    clean_classname,
    load_dataset,
    read_coop_split,
    read_image_folder,
    write_coop_split,
)
from .images import load_rgb
from .sampler import FewShotSplit, sample_few_shot
from .templates import (
    DATASET_TEMPLATES,
    IMAGENET_ENSEMBLE,
    check_template,
    ensemble,
    mean_raw,
    prompts_for,
    resolve_templates,
)

__all__ = [
    "DATASET_TEMPLATES",
    "IMAGENET_ENSEMBLE",
    "Dataset",
    "FewShotSplit",
    "Sample",
    "check_template",
    "clean_classname",
    "ensemble",
    "load_classname_map",
    "load_dataset",
    "load_rgb",
    "mean_raw",
    "prompts_for",
    "read_coop_split",
    "read_image_folder",
    "resolve_templates",
    "sample_few_shot",
    "write_coop_split",
]
