"""The modality gap of a backbone on a dataset (``clip-adapter gap``): statistics, figures, inverted retrieval.

Images of one split are encoded through the feature cache (centre view, as ``eval`` does), texts
are the dataset's class prompts (every class × template, through the text cache). With a
CLIP-Adapter artifact, the same statistics are computed on its adapted features (the visual
adapter on images, the text adapter, if any, on prompts; :func:`clip_adapter.apps.retrieval.adaptation_for`,
in the space of :mod:`clip_adapter.features.adaptation`) and the change is reported. The output folder holds
``gap.json``, ``similarities.png`` and ``projection.png`` (joint PCA of both modalities).

Example (toy world: offline, seconds):
    >>> import tempfile, pathlib
    >>> from clip_adapter.backbones import create_backbone
    >>> from clip_adapter.data import load_dataset
    >>> from clip_adapter.toyworld import write_task_dataset
    >>> work = pathlib.Path(tempfile.mkdtemp())
    >>> data = load_dataset(write_task_dataset("shape", "photo", work / "d", 1, 1, 2))
    >>> bb = create_backbone("toy", precision="fp32")
    >>> emb = dataset_embeddings(bb, data, "test", work / "cache")
    >>> result = analyse(emb)
    >>> 0 < result["raw"]["gap"]["centroid_distance"] < 2
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..backbones import Backbone
from ..core.errors import DataError
from ..core.files import atomic_dir, to_json
from ..core.outputs import mark_output_dir, register_kind
from ..data import Dataset
from ..features import extract_images, image_store, prompt_embeddings
from ..features.adaptation import Adaptation
from ..pipeline import templates_for
from .inversion import InversionConfig
from .plots import histograms_png, projection_png
from .retrieval import retrieval_comparison
from .stats import compare, gap_statistics, joint_pca

KIND = register_kind("gap", r"^(gap\.json|similarities\.png|projection\.png)$")  # what `gap --out` holds
FILES = ("gap.json", "similarities.png", "projection.png")
SPLIT_CHOICES = ("train", "val", "test", "all")


@dataclass
class Embeddings:
    """Images of a split and class prompts, raw, with their labels and where they came from."""

    image: torch.Tensor
    image_labels: torch.Tensor
    text: torch.Tensor
    text_labels: torch.Tensor
    classnames: list[str]
    templates: tuple[str, ...]
    split: str
    skipped: list[str]


def split_samples(dataset: Dataset, split: str) -> list:
    """The samples of ``split`` (``all``: every split), or a one-line DataError when there are none."""
    if split not in SPLIT_CHOICES:
        raise DataError(f"split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    names = ("train", "val", "test") if split == "all" else (split,)
    samples = [s for name in names for s in dataset.splits.get(name, [])]
    if not samples:
        raise DataError(f"dataset {dataset.name!r} has no images in its {split} split")
    return samples


def dataset_embeddings(
    backbone: Backbone,
    dataset: Dataset,
    split: str,
    cache_dir: str | os.PathLike,
    templates: Sequence[str] | None = None,
    batch_size: int = 64,
    skip_bad: bool = False,
) -> Embeddings:
    """Encode (or read from the cache) ``split``'s images and every class prompt. See the module example."""
    samples = split_samples(dataset, split)
    paths = [s.path for s in samples]
    feats, kept, stats = extract_images(
        backbone, paths, image_store(backbone, cache_dir), None, 0, batch_size, skip_bad, split
    )
    chosen = templates_for(dataset, tuple(templates) if templates else None)
    text = prompt_embeddings(backbone, dataset.classnames, chosen, cache_dir)
    text_labels = torch.arange(len(dataset.classnames)).repeat_interleave(len(chosen))
    labels = torch.tensor([samples[i].label for i in kept], dtype=torch.long)
    return Embeddings(
        feats.float(),
        labels,
        text.float(),
        text_labels,
        list(dataset.classnames),
        chosen,
        split,
        [path for path, _ in stats.skipped],
    )


def analyse(emb: Embeddings, adaptation: Adaptation | None = None, bins: int = 50, seed: int = 0) -> dict[str, Any]:
    """Gap statistics of the raw features and, with ``adaptation``, of the adapted ones and the change."""
    raw = gap_statistics(emb.image, emb.text, emb.image_labels, emb.text_labels, bins, seed)
    result: dict[str, Any] = {
        "raw": raw,
        "projection": "joint PCA of the L2-normalised image and text embeddings (pooled, centred)",
    }
    if adaptation is not None:
        image, text = adapted(emb, adaptation)
        result["adapted"] = gap_statistics(image, text, emb.image_labels, emb.text_labels, bins, seed)
        result["change"] = compare(raw, result["adapted"])
        result["artifact"] = adaptation.fingerprint
    return result


def adapted(emb: Embeddings, adaptation: Adaptation) -> tuple[torch.Tensor, torch.Tensor]:
    """The artifact's adapted (normalised) image and text features."""
    normalise = torch.nn.functional.normalize
    with torch.no_grad():
        return adaptation.image(normalise(emb.image, dim=-1)), adaptation.text(normalise(emb.text, dim=-1))


def figures(emb: Embeddings, result: dict[str, Any], adaptation: Adaptation | None = None) -> dict[str, bytes]:
    """``similarities.png`` and ``projection.png`` for a result of :func:`analyse` (which gains
    ``explained_variance``)."""
    sets = {"raw": result["raw"], **({"adapted": result["adapted"]} if "adapted" in result else {})}
    projections = {"raw": joint_pca(emb.image, emb.text)}
    if adaptation is not None:
        projections["adapted"] = joint_pca(*adapted(emb, adaptation))
    result["explained_variance"] = {name: p[2] for name, p in projections.items()}
    return {
        "similarities.png": histograms_png(sets),
        "projection.png": projection_png(projections, emb.image_labels.tolist(), emb.text_labels.tolist()),
    }


def query_gallery(labels: torch.Tensor, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the queries (the first ``per_class`` images of each class, in split order) and of the gallery
    (the rest).

    Example:
        >>> import torch
        >>> q, g = query_gallery(torch.tensor([0, 0, 1, 1, 1]), 1)
        >>> q.tolist(), g.tolist()
        ([0, 2], [1, 3, 4])
    """
    taken: dict[int, int] = {}
    query = []
    for i, label in enumerate(labels.tolist()):
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            query.append(i)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[query] = False
    gallery = torch.nonzero(mask).flatten()
    if not len(gallery) or not len(query):
        raise DataError(
            f"the split has too few images for {per_class} queries per class and a gallery; "
            "use fewer --queries-per-class"
        )
    return torch.tensor(query, dtype=torch.long), gallery


def inverted_retrieval(backbone: Backbone, emb: Embeddings, per_class: int, config: InversionConfig) -> dict[str, Any]:
    """Image→image vs OTI text→image retrieval on the split: queries per class, the rest as gallery,
    same class = relevant."""
    q, g = query_gallery(emb.image_labels, per_class)
    out = retrieval_comparison(backbone, emb.image[q], emb.image_labels[q], emb.image[g], emb.image_labels[g], config)
    out["relevance"] = "same class"
    return out


def write_outputs(out: Path, result: dict[str, Any], pngs: dict[str, bytes], may_replace) -> Path:
    """Write ``gap.json`` and the PNGs into ``out`` in one atomic step (marked as a ``gap`` output)."""
    with atomic_dir(out, may_replace=may_replace) as tmp:
        (tmp / "gap.json").write_text(to_json(result))
        for name, data in pngs.items():
            (tmp / name).write_bytes(data)
        mark_output_dir(tmp, KIND)
    return out
