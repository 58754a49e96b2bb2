"""What ``clip-adapter gap`` runs once its options are parsed: :class:`GapConfig` and :func:`measure_gap`.

Every input is checked before any encoding: the options (the config), the dataset path, the output
folder, the cache, the templates and, with the retrieval comparison, that the split holds queries and
a gallery; the backbone loads last.

Example:
    >>> GapConfig(inversion_lr=0)
    Traceback (most recent call last):
    ...
    clip_adapter.core.errors.ConfigError: --inversion-lr must be in (0, 10], got 0.0
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..backbones import Backbone
from ..core.config import Config, check_choice, check_seed, option
from ..core.errors import ConfigError, DataError
from ..core.files import quoted
from ..core.outputs import check_cache_dir, claim_output_dir, is_own_output
from ..core.threads import torch_threads
from ..data import load_dataset
from ..features import default_cache_dir
from ..pipeline import templates_for
from .analyse import (
    KIND,
    SPLIT_CHOICES,
    analyse,
    dataset_embeddings,
    figures,
    inverted_retrieval,
    query_gallery,
    split_samples,
    write_outputs,
)
from .inversion import InversionConfig
from .retrieval import format_table

_OTI, _OTI_HELP = InversionConfig(), InversionConfig.help_texts()


@dataclass
class GapConfig(Config):
    """What ``gap`` measures: the split, histograms, seed, encoder batch, and the optional retrieval comparison.

    The ``inversion_*`` fields are :class:`InversionConfig`'s (defaults and help from there), named as the
    command's options; :meth:`inversion_config` builds it, with the seed.

    Example:
        >>> GapConfig(inversion_steps=10).inversion_config().steps
        10
    """

    split: str = option("test", "images to measure: train, val, test or all")
    bins: int = option(50, "histogram bins on [-1, 1]")
    seed: int = option(0, "seed of subsampling and of the pseudo-token initialisation")
    batch_size: int = option(64, "encoder batch size")
    skip_bad: bool = option(False, "leave unreadable images out and list them")
    inversion: bool = option(False, "also compare image→image with OTI text→image retrieval")
    queries_per_class: int = option(2, "queries per class")
    inversion_steps: int = option(_OTI.steps, "OTI " + _OTI_HELP["steps"])
    inversion_lr: float = option(_OTI.lr, "OTI " + _OTI_HELP["lr"])
    inversion_template: str = option(_OTI.template, _OTI_HELP["template"])
    inversion_batch: int = option(_OTI.batch_size, _OTI_HELP["batch_size"])
    inversion_threads: int = option(
        0, "torch threads while inverting (0: leave as is; 1 is fastest for small encoders on a busy CPU)"
    )

    def validate(self) -> None:
        check_choice("split", self.split, SPLIT_CHOICES)
        for name in ("bins", "batch_size", "queries_per_class"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.inversion_threads < 0:
            raise ConfigError(f"inversion_threads must be a non-negative integer, got {self.inversion_threads}")
        check_seed("seed", self.seed)
        self.inversion_config()

    def inversion_config(self) -> InversionConfig:
        """The OTI settings; an invalid one is named as its option (``--inversion-lr must be …``)."""
        try:
            return InversionConfig(
                steps=self.inversion_steps,
                lr=self.inversion_lr,
                template=self.inversion_template,
                batch_size=self.inversion_batch,
                seed=self.seed,
            )
        except ConfigError as exc:  # its messages start with the field name: steps, lr, template, batch_size
            message = str(exc)
            message = "batch" + message[len("batch_size") :] if message.startswith("batch_size") else message
            raise ConfigError(f"--inversion-{message}") from None


def measure_gap(
    config: GapConfig,
    load_backbone: Callable[[], tuple[Backbone, Any]],
    data: str,
    out: str | os.PathLike,
    *,
    split_file: str | None = None,
    classnames: str | None = None,
    templates: Sequence[str] | None = None,
    cache_dir: str | os.PathLike = "",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Measure the gap on ``data`` and write ``gap.json`` and the PNGs to ``out``; return the result.

    ``load_backbone``: the backbone and the artifact's adaptation (None without one;
    :func:`clip_adapter.apps.retrieval.adaptation_for`), called once every input has been checked.

    Example:
        >>> # result = measure_gap(GapConfig(), lambda: (create_backbone("toy"), None), "photos", "gap-photos")
        >>> # print(summary(result, "gap-photos"), end="")
    """
    if not Path(data).exists():
        raise DataError(f"dataset not found: {quoted(data)}")
    inputs = [data, split_file]
    claim_output_dir(out, KIND, overwrite=overwrite, inputs=inputs)
    check_cache_dir(cache_dir or default_cache_dir(), inputs)
    dataset = load_dataset(data, split_file, classnames=classnames)
    chosen = templates_for(dataset, tuple(templates) if templates else None)  # a bad --template before any encoding
    if config.inversion:  # a split too small for queries and a gallery is refused before any encoding
        query_gallery(torch.tensor([s.label for s in split_samples(dataset, config.split)]), config.queries_per_class)
    backbone, adaptation = load_backbone()
    emb = dataset_embeddings(
        backbone, dataset, config.split, cache_dir or default_cache_dir(), chosen, config.batch_size, config.skip_bad
    )
    result = analyse(emb, adaptation, config.bins, config.seed)
    result.update(
        backbone=backbone.describe(),
        dataset=str(dataset.root),
        split=config.split,
        templates=list(emb.templates),
        skipped=emb.skipped,
    )
    pngs = figures(emb, result, adaptation)
    if config.inversion:
        with torch_threads(config.inversion_threads or None):
            result["retrieval"] = inverted_retrieval(backbone, emb, config.queries_per_class, config.inversion_config())
    write_outputs(Path(out), result, pngs, lambda p: overwrite and is_own_output(p, KIND))
    return result


def _dist_line(name: str, stats: dict[str, Any]) -> str:
    if not stats.get("count"):
        return f"  {name:<22} (no pairs)"
    q = stats["quantiles"]
    cells = [stats["mean"], *(q.get(k, float("nan")) for k in ("0.05", "0.5", "0.95"))]
    return f"  {name:<22} " + " ".join(f"{v:>7.3f}" for v in cells)


def summary(result: dict[str, Any], out: str | os.PathLike) -> str:
    """The one-screen summary ``gap`` prints: the gap, the cosine distributions, the adapter's change, retrieval.

    Example:
        >>> stats = {"count": 3, "mean": 0.5, "quantiles": {"0.05": 0.1, "0.5": 0.5, "0.95": 0.9}}
        >>> gap = {"centroid_distance": 0.8, "centroid_cosine": 0.68}
        >>> raw = {"n_images": 4, "n_texts": 2, "gap": gap, "matched": stats}
        >>> print(summary({"raw": raw, "split": "test", "backbone": {"id": "toy/toy-cnn/x"}}, "gap"), end="")
        backbone toy/toy-cnn/x; 4 test images, 2 class prompts
        modality gap (distance between the normalised image and text centroids): 0.8000 (centroid cosine 0.680)
          cosine similarity         mean     q05  median     q95
          image-text (own class)   0.500   0.100   0.500   0.900
        wrote gap/gap.json, similarities.png, projection.png
    """
    raw = result["raw"]
    lines = [
        f"backbone {result['backbone']['id']}; {raw['n_images']} {result['split']} images, {raw['n_texts']} "
        f"class prompts",
        f"modality gap (distance between the normalised image and text centroids): "
        f"{raw['gap']['centroid_distance']:.4f}"
        f" (centroid cosine {raw['gap']['centroid_cosine']:.3f})",
        f"  {'cosine similarity':<22} {'mean':>7} {'q05':>7} {'median':>7} {'q95':>7}",
    ]
    names = (
        ("intra_image", "image-image"),
        ("intra_text", "text-text"),
        ("cross_modal", "image-text (all)"),
        ("matched", "image-text (own class)"),
    )
    lines += [_dist_line(label, raw[key]) for key, label in names if key in raw]
    if "adapted" in result:
        ad, change = result["adapted"], result["change"]
        lines.append(
            f"with the adapter: gap {raw['gap']['centroid_distance']:.4f} -> "
            f"{ad['gap']['centroid_distance']:.4f}"
            f" ({change['centroid_distance']:+.4f})"
        )
        lines += [_dist_line(label, ad[key]) for key, label in names if key in ad]
    if "retrieval" in result:
        r = result["retrieval"]
        lines.append(
            f"retrieval on the {result['split']} split ({r['n_queries']} queries, {r['n_gallery']} gallery "
            f"images, "
            f"relevant = {r['relevance']}; OTI mean cosine to its image {r['inversion']['mean_cosine']}):"
        )
        lines.append(format_table(r))
    lines.append(f"wrote {quoted(Path(out) / 'gap.json')}, similarities.png, projection.png")
    return "\n".join(lines) + "\n"
