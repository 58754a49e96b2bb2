"""Re-running an artifact and zero-shot CLIP on the run's test images (through the feature cache).

``result.json`` records the adapted model's per-class accuracy and confusion matrix but
only zero-shot's overall accuracy; the per-class comparison, the worst-classified images
and the adapter's effect on features need the test features themselves. They come from
the feature cache the run filled (nothing is re-encoded when it is still there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...core.errors import ClipAdapterError
from ...metrics import classification_report
from ...trust.fit import zero_shot_logits
from .fields import MALFORMED, mapping, text
from .run_files import RunFiles, TestImages


@dataclass
class Evaluation:
    """Test features, both models' probabilities and reports, and what was skipped."""

    paths: list[Path]
    labels: torch.Tensor
    features: torch.Tensor
    probs: torch.Tensor
    zero_shot_probs: torch.Tensor
    report: dict[str, Any]
    zero_shot_report: dict[str, Any]
    head: Any
    backbone_name: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    logits: torch.Tensor | None = None  # the head's raw logits (before any calibration of the artifact's trust record)
    zero_shot_logits: torch.Tensor | None = None
    trust: Any = None  # the artifact's TrustRecord, as the loader read it (None without one)


def cache_dir_for(run: RunFiles, cache_dir: str | os.PathLike | None) -> Path:
    """``--cache-dir`` if given, else the default cache.

    Never the cache folder the run's ``result.json`` records: a received artifact
    must not choose a folder this command reads features from and writes shards into.
    """
    from ...features import default_cache_dir

    return Path(cache_dir) if cache_dir else default_cache_dir()


def evaluate(run: RunFiles, images: TestImages, cache_dir: Path, device: str = "auto") -> Evaluation | str:
    """Both models on ``images``; a sentence (for the page) when the backbone cannot be rebuilt here."""
    from ...artifacts import load_with_backbone

    malformed = _malformed_backbone(run)
    if malformed:
        return (
            f"config.json {malformed} is missing or malformed, "
            "so the backbone could not be rebuilt and nothing was re-evaluated"
        )
    if not images.paths:
        return "none of the test images lie inside --data"
    try:
        clf, backbone = load_with_backbone(run.directory, device=device)
    except ClipAdapterError as exc:
        return f"the backbone could not be rebuilt here, so nothing was re-evaluated ({exc})"
    feats, kept, skipped = _test_features(backbone, images, cache_dir)
    if not kept:
        return "none of the test images could be read"
    labels = torch.tensor([images.labels[i] for i in kept])
    logits = clf.logits(feats)
    zs_logits = zero_shot_logits(
        backbone, clf, feats, cache_dir
    )  # the one predict's ZS-Norm uses (logit bias included)
    return Evaluation(
        [images.paths[i] for i in kept],
        labels,
        feats,
        torch.softmax(logits, 1),
        torch.softmax(zs_logits, 1),
        classification_report(logits, labels, clf.classnames),
        classification_report(zs_logits, labels, clf.classnames),
        clf.head,
        str(backbone.name),
        skipped,
        logits.detach(),
        zs_logits.detach(),
        getattr(clf, "trust", None),
    )


def _malformed_backbone(run: RunFiles) -> str | None:
    """The first ``backbone`` field the loader would trip on (it expects strings), or ``None``."""
    config = run.config_fields
    if not isinstance(config.get("backbone", mapping), dict):
        return "backbone"
    backbone = config.sub("backbone")
    for key in ("name", "pretrained", "precision", "id"):
        if backbone.get(key, text) is MALFORMED:
            return f"backbone.{key}"
    return None if backbone.has("name") else "backbone.name"


def _test_features(
    backbone: Any, images: TestImages, cache_dir: Path
) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    from ...features import extract_images, image_store

    # skip_bad: an image gone bad since training is listed on the page, not a failed report
    feats, kept, stats = extract_images(
        backbone, images.paths, image_store(backbone, cache_dir), None, 0, 64, True, "test"
    )
    return feats.float(), kept, list(stats.skipped)


def worst(evaluation: Evaluation, count: int) -> list[dict[str, Any]]:
    """The ``count`` test images with the lowest probability on their true class (wrong ones first)."""
    true_p = evaluation.probs.gather(1, evaluation.labels.view(-1, 1)).squeeze(1)
    order = torch.argsort(true_p, stable=True)[:count].tolist()
    out = []
    for i in order:
        pred = int(evaluation.probs[i].argmax())
        out.append(
            {
                "path": evaluation.paths[i],
                "true": int(evaluation.labels[i]),
                "pred": int(pred),
                "p_pred": float(evaluation.probs[i, pred]),
                "p_true": float(true_p[i]),
                "zero_shot_pred": int(evaluation.zero_shot_probs[i].argmax()),
            }
        )
    return out


def flips(evaluation: Evaluation) -> dict[str, int]:
    """How the adapted model's test predictions differ from zero-shot's: fixed, broken, changed."""
    pred = evaluation.probs.argmax(1)
    zs = evaluation.zero_shot_probs.argmax(1)
    right, zs_right = pred == evaluation.labels, zs == evaluation.labels
    return {
        "fixed": int((right & ~zs_right).sum()),
        "broken": int((~right & zs_right).sum()),
        "changed": int((pred != zs).sum()),
        "total": int(len(pred)),
    }
