"""Multi-label recognition end to end: encode once, sample shots, train a head, evaluate.

Pooled image features (zero-shot, CLIP-Adapter) and dense ones (Unmix-CLIP)
both come from the on-disk feature cache, as do the prompts' text features.
The decision threshold of F1 is chosen on the validation shots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..backbones.base import Backbone
from ..core.errors import ConfigError
from ..features import default_cache_dir, extract_images, extract_texts, image_store, text_store
from ..features.dense import dense_store, extract_dense
from .config import MultiLabelConfig
from .data import MultiLabelDataset, MultiLabelSample
from .heads import TextHead, build_head
from .metrics import choose_threshold, f1_scores, mean_average_precision, mean_offdiagonal_similarity
from .sampler import sample_few_shot
from .train import train_head


@dataclass
class MultiLabelModel:
    """A trained multi-label head with what it needs to be applied and saved."""

    config: MultiLabelConfig
    classes: tuple[str, ...]
    backbone: dict[str, Any]  # Backbone.describe() of the encoder it was trained on
    head: TextHead
    threshold: float = 0.5
    records: list[dict[str, float]] = field(default_factory=list)

    @torch.no_grad()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits ``[n, N]`` for pooled ``[n, d]`` or dense ``[n, HW, d]`` features (per ``head.dense``)."""
        self.head.eval()
        return (
            torch.cat([self.head(b) for b in features.split(256)])
            if len(features)
            else torch.empty(0, len(self.classes))
        )

    @torch.no_grad()
    def text_similarity(self) -> dict[str, float]:
        """Mean off-diagonal cosine of the class text features: CLIP's (before) and the head's (after)."""
        return {
            "before": mean_offdiagonal_similarity(self.head.text_pos),
            "after": mean_offdiagonal_similarity(self.head.class_text()),
        }


def encode_split(
    backbone: Backbone, samples: list[MultiLabelSample], dense: bool, cache_dir: str | os.PathLike, batch_size: int = 64
) -> torch.Tensor:
    """Cached features of ``samples``: dense ``[n, HW, d]`` or pooled ``[n, d]`` (raw, unnormalised)."""
    paths = [s.path for s in samples]
    if dense:
        return extract_dense(backbone, paths, dense_store(backbone, cache_dir), batch_size)
    features, _, _ = extract_images(
        backbone, paths, image_store(backbone, cache_dir), batch_size=batch_size, bad_hint=None
    )  # the multilabel commands have no --skip-bad
    return features


def class_texts(
    backbone: Backbone, classes: tuple[str, ...], cfg: MultiLabelConfig, cache_dir: str | os.PathLike
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw text features of every class's positive and negative prompt, ``([N, d], [N, d])``."""
    pos, neg = cfg.prompts(classes)
    features = extract_texts(backbone, pos + neg, text_store(backbone, cache_dir))
    return features[: len(pos)], features[len(pos) :]


@dataclass
class FewShot:
    """The sampled shots: indices into the train split and into the validation pool (``val_split``)."""

    shots: int
    seed: int
    train: list[int]
    val: list[int]
    val_split: str

    def to_json(self, dataset: MultiLabelDataset) -> dict[str, Any]:
        rel = lambda s: os.path.relpath(s.path, dataset.source.parent)  # noqa: E731
        return {
            "shots": self.shots,
            "seed": self.seed,
            "rule": "at least K images per label, rarest label first",
            "train": [rel(dataset.splits["train"][i]) for i in self.train],
            "val": [rel(dataset.splits[self.val_split][i]) for i in self.val],
            "val_split": self.val_split,
        }


def sample_shots(dataset: MultiLabelDataset, shots: int, seed: int) -> FewShot:
    """K-per-label training shots from ``train``; validation shots from ``val`` (else the rest of ``train``).

    Example:
        >>> # fs = sample_shots(read_multilabel("labels.json"), 16, seed=1)
    """
    train_y = dataset.targets("train")
    train = sample_few_shot(train_y, shots, seed, dataset.classes)
    if dataset.splits.get("val"):
        val = sample_few_shot(dataset.targets("val"), shots, seed, dataset.classes, strict=False, where="val")
        return FewShot(shots, seed, train, val, "val")
    val = sample_few_shot(train_y, shots, seed, dataset.classes, exclude=set(train), strict=False, where="val")
    return FewShot(shots, seed, train, val, "train")


def scale_for(cfg: MultiLabelConfig, backbone: Backbone) -> float:
    return cfg.logit_scale or backbone.logit_scale


def fit(
    backbone: Backbone,
    dataset: MultiLabelDataset,
    cfg: MultiLabelConfig,
    shots: int,
    seed: int,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
) -> tuple[MultiLabelModel, FewShot]:
    """Train ``cfg.method`` on ``shots`` images per label (seed ``seed``) and choose its threshold on validation.

    Example:
        >>> # model, shots = fit(bb, read_multilabel("labels.json"), MultiLabelConfig(), shots=16, seed=1)
    """
    if cfg.dense and not backbone.supports_dense:
        raise ConfigError(
            f"method {cfg.method} needs dense image features, which backbone {backbone.id} does not provide"
        )
    cache_dir = cache_dir or default_cache_dir()
    fs = sample_shots(dataset, shots, seed)
    pos, neg = class_texts(backbone, dataset.classes, cfg, cache_dir)
    head = build_head(cfg, pos, neg, scale_for(cfg, backbone))
    train_samples = [dataset.splits["train"][i] for i in fs.train]
    x = encode_split(backbone, train_samples, cfg.dense, cache_dir, batch_size)
    records = train_head(head, x, dataset.targets("train")[fs.train], cfg)
    model = MultiLabelModel(cfg, dataset.classes, backbone.describe(), head, records=records)
    val_samples = [dataset.splits[fs.val_split][i] for i in fs.val]
    val_probs = torch.sigmoid(model.logits(encode_split(backbone, val_samples, cfg.dense, cache_dir, batch_size)))
    model.threshold = choose_threshold(val_probs, dataset.targets(fs.val_split)[fs.val]) if len(val_samples) else 0.5
    return model, fs


def evaluate(
    model: MultiLabelModel,
    backbone: Backbone,
    dataset: MultiLabelDataset,
    split: str = "test",
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """mAP, F1 at the model's threshold and the text similarity before/after on ``split``.

    Example:
        >>> # evaluate(model, bb, read_multilabel("labels.json"))["mAP"]
    """
    if tuple(dataset.classes) != tuple(model.classes):
        raise ConfigError(
            f"the dataset's classes ({', '.join(dataset.classes[:5])}…) "
            f"are not the model's ({', '.join(model.classes[:5])}…)"
        )
    features = encode_split(
        backbone, dataset.split(split), model.config.dense, cache_dir or default_cache_dir(), batch_size
    )
    targets = dataset.targets(split)
    logits = model.logits(features)
    m_ap, per_class = mean_average_precision(logits, targets)
    f1 = f1_scores(torch.sigmoid(logits), targets, model.threshold)
    return {
        "method": model.config.method,
        "split": split,
        "n_images": len(targets),
        "mAP": 100 * m_ap,
        "per_class_AP": {c: (None if ap is None else 100 * ap) for c, ap in zip(model.classes, per_class)},
        "threshold": model.threshold,
        **{k: 100 * v for k, v in f1.items()},
        "text_similarity": model.text_similarity(),
    }
