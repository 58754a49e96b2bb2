"""An artifact's raw logits on labelled images: what ``calibrate``, ``conformal`` and ``ood`` fit on.

Apart from :mod:`.fit` because it encodes the images through the run pipeline
(:func:`~clip_adapter.pipeline.encode_labelled`, the path ``eval`` takes) while the
pipeline uses :mod:`.fit` (``eval --ood-data`` reads its MCM scale there): here
the two meet without an import circle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..features.extract import content_id
from ..pipeline import encode_labelled
from .fit import LabelledLogits


def labelled_logits(
    clf: Any,
    backbone: Any,
    dataset: Any,
    split: str,
    cache_dir: Any,
    where: str,
    batch_size: int = 64,
    skip_bad: bool = False,
) -> LabelledLogits:
    """The artifact's raw logits on ``dataset``'s ``split`` (``all``: every image), classes matched by name.

    As ``eval`` does (:func:`~clip_adapter.pipeline.evaluate_classifier`): a
    class the artifact was not trained on is refused (one DataError naming it),
    a subset of its classes is fine. Features come through the feature cache
    (``cache_dir``; ``""``: the default cache).
    """
    feats, labels, kept, read = encode_labelled(clf, backbone, dataset, split, cache_dir, where, batch_size, skip_bad)
    with torch.no_grad():
        logits = clf.logits(feats).detach().float().cpu()
    paths = [Path(read.samples[i].path) for i in kept]
    return LabelledLogits(
        feats,
        logits,
        labels,
        list(clf.classnames),
        paths,
        [content_id(p) for p in paths],
        split,
        list(read.stats.skipped),
    )
