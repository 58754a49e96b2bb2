"""Applying an artifact to images: the one path for ``predict``, the API's ``predict`` and ``serve``.

Each step is written once, here:

* :func:`encode_inputs` — image files, folders and PIL images to features (files through the feature cache);
* :func:`score_features` — features to the artifact's calibrated answer (logits calibrated as its trust
  record says, the softmax, the conformal sets, the out-of-distribution flags); ``eval`` scores through it too;
* :func:`prediction_records` — that answer as records, in the one shape below.

:func:`apply_artifact` is the last two (``serve`` calls it on the features of its micro-batches);
:func:`predict_images` is all three, plus a record for each image left out (``clip-adapter predict`` and
:meth:`clip_adapter.AdaptedCLIP.predict` call it).

**The prediction record** — the same keys from ``clip-adapter predict --format json`` (a JSON list of
them; the CSV has one row per image and rank), :meth:`~clip_adapter.AdaptedCLIP.predict` (a list of
dicts) and ``serve`` (``{"predictions": [...]}``), one per image, in input order:

* ``path`` — the image: its file path; ``None`` for a PIL image; for ``serve``, the upload's part name
  (``images[0] (a.png)``);
* ``label``, ``score`` — the most probable class and its probability (rounded to 6 places);
* ``top_k`` — ``[[label, probability], ...]``, most probable first, equal probabilities in class order;
* ``set`` — only when the artifact has a conformal predictor: its prediction set, most probable first;
* ``ood_score``, ``unknown`` — only when it has an OOD threshold: the score, and whether it is below. With
  ``reject``, an unknown image's ``label`` is ``"unknown"``; its ``score`` stays the top class's probability
  and ``top_k`` its ranking, so nothing is hidden;
* ``error`` — only for an image left out with ``skip_bad`` (then ``label`` and ``score`` are ``None``
  and ``top_k`` is empty): why.

Example:
    >>> import torch
    >>> from clip_adapter.trust.record import TrustedScores
    >>> probs = torch.tensor([[0.7, 0.2, 0.1]])
    >>> prediction_records(TrustedScores(probs.log(), probs), ["a", "b", "c"], top_k=2, paths=["x.png"])
    [{'path': 'x.png', 'label': 'a', 'score': 0.7, 'top_k': [['a', 0.7], ['b', 0.2]]}]
    >>> error_record("y.png", "image y.png is truncated")
    {'path': 'y.png', 'label': None, 'score': None, 'top_k': [], 'error': 'image y.png is truncated'}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from .core.errors import ConfigError, DataError
from .data.images import BadImage, checked_rgb, find_images
from .features import default_cache_dir, extract_images, image_store
from .features.transforms import eval_view
from .metrics import top_k as best_k
from .trust.record import TrustedScores, apply_trust

UNKNOWN = "unknown"
ImageInput = str | os.PathLike | Image.Image


def score_features(
    clf: Any, backbone: Any, features: torch.Tensor, cache_dir: str | os.PathLike | None
) -> TrustedScores:
    """The artifact's calibrated answer for ``features`` (zero-shot logits computed only if ZS-Norm needs them).

    Example:
        >>> # scores = score_features(clf, backbone, features, "~/.cache/clip-adapter"); scores.probs.shape
    """
    logits = clf.logits(features)

    def zero_shot() -> torch.Tensor:
        from .trust.fit import zero_shot_logits

        return zero_shot_logits(backbone, clf, features, cache_dir)

    return apply_trust(clf.trust, logits, zero_shot)


def check_reject(clf: Any, reject: bool, where: str = "--reject") -> None:
    """``reject`` needs an OOD threshold in the artifact; refuse in one line before any image is encoded.

    Example:
        >>> from types import SimpleNamespace
        >>> check_reject(SimpleNamespace(trust=None), False)  # nothing asked, nothing to check
    """
    if reject and (clf.trust is None or clf.trust.ood is None):
        raise ConfigError(
            f"{where} needs an artifact with an out-of-distribution threshold: "
            "fit one first with `clip-adapter ood ARTIFACT --data IN_DISTRIBUTION_IMAGES --out NEW`"
        )


def check_top_k(top_k: Any) -> None:
    """``top_k`` must be an integer of at least 1 (a bool is not one).

    Example:
        >>> check_top_k(0)
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: top_k must be an integer of at least 1, got 0
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be an integer of at least 1, got {top_k!r}")


def prediction_records(
    scores: TrustedScores, classnames: Sequence[str], top_k: int, reject: bool = False, paths: Sequence[str | None] = ()
) -> list[dict[str, Any]]:
    """One record per row of ``scores``, named by ``paths`` (see the module docstring); ties rank by class order.

    ``paths`` gives each record's ``path`` (``None`` where there are fewer paths than rows).

    Example:
        >>> from clip_adapter.trust.record import TrustedScores
        >>> probs = torch.tensor([[0.25, 0.75]])
        >>> prediction_records(TrustedScores(probs.log(), probs), ["cat", "dog"], top_k=1, paths=["a.png"])
        [{'path': 'a.png', 'label': 'dog', 'score': 0.75, 'top_k': [['dog', 0.75]]}]
    """
    rows = scores.probs.shape[0]
    if rows == 0:
        return []
    values, indices = best_k(scores.probs, min(top_k, scores.probs.shape[1]))
    names = list(paths) + [None] * (rows - len(paths))
    records = []
    for n in range(rows):
        ranked = [[classnames[int(i)], round(float(v), 6)] for v, i in zip(values[n], indices[n])]
        record: dict[str, Any] = {"path": names[n], "label": ranked[0][0], "score": ranked[0][1], "top_k": ranked}
        if scores.sets is not None:
            members = scores.sets[n].nonzero().flatten().tolist()
            record["set"] = [classnames[i] for i in sorted(members, key=lambda i: -float(scores.probs[n, i]))]
        if scores.is_ood is not None:
            record["ood_score"] = round(float(scores.ood_scores[n]), 6)
            record["unknown"] = bool(scores.is_ood[n])
            if reject and record["unknown"]:
                record["label"] = UNKNOWN
        records.append(record)
    return records


def error_record(path: str | None, reason: str) -> dict[str, Any]:
    """The record of an image left out (``skip_bad``): no answer, and why (see the module docstring).

    Example:
        >>> error_record(None, "input[0] (a PIL image) is 0x0: it has no pixels")["top_k"]
        []
    """
    return {"path": path, "label": None, "score": None, "top_k": [], "error": reason}


def apply_artifact(
    clf: Any,
    backbone: Any,
    features: torch.Tensor,
    paths: Sequence[str | None],
    top_k: int,
    reject: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """The records of encoded images ``features`` ``[N, D]``: :func:`score_features`, then :func:`prediction_records`.

    ``cache_dir`` holds the text features ZS-Norm calibration needs (``None``/``""``: the default cache).

    Example:
        >>> # apply_artifact(clf, backbone, backbone.encode_images(pixels), ["images[0] (a.png)"], top_k=5)
    """
    scores = score_features(clf, backbone, features, cache_dir or default_cache_dir())
    return prediction_records(scores, clf.classnames, top_k, reject, paths)


def predict_images(
    clf: Any,
    backbone: Any,
    images: Sequence[ImageInput],
    *,
    top_k: int = 1,
    reject: bool = False,
    skip_bad: bool = False,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
) -> list[dict[str, Any]]:
    """One record per image of ``images`` (files, folders expanded in sorted order, PIL images), in input order.

    A bad image raises a one-line DataError naming it (its hint names ``--skip-bad``: the API rewords it);
    with ``skip_bad`` it gets an :func:`error_record` instead. Files are encoded through the feature cache
    in ``cache_dir`` (``None``/``""``: the default one), ``batch_size`` at a time.

    Example:
        >>> # predict_images(clf, backbone, ["photos/new/"], top_k=3)[0]["top_k"]  # [[label, p], ...]
    """
    check_top_k(top_k)
    check_reject(clf, reject)
    encoded = encode_inputs(backbone, images, cache_dir=cache_dir, batch_size=batch_size, skip_bad=skip_bad)
    good = [name for position, name in enumerate(encoded.names) if position not in encoded.errors]
    answers = iter(apply_artifact(clf, backbone, encoded.features, good, top_k, reject, cache_dir) if good else [])
    return [
        error_record(name, encoded.errors[position]) if position in encoded.errors else next(answers)
        for position, name in enumerate(encoded.names)
    ]


@dataclass
class Encoded:
    """Encoded inputs: one name per image (input order), the good ones' features, and why the others were left out."""

    names: list[str | None] = field(default_factory=list)
    rows: dict[int, torch.Tensor] = field(default_factory=dict)  # position → feature row
    errors: dict[int, str] = field(default_factory=dict)  # position → reason

    def add(self, name: str | None, row: torch.Tensor | None) -> int:
        """Append an image (its feature row, or ``None`` until it is encoded); its position."""
        self.names.append(name)
        if row is not None:
            self.rows[len(self.names) - 1] = row
        return len(self.names) - 1

    def skip(self, name: str | None, reason: str) -> None:
        self.errors[self.add(name, None)] = reason

    @property
    def features(self) -> torch.Tensor:
        """``[N, D]`` for the good images, in input order (``[0]`` for none)."""
        return torch.stack([self.rows[i] for i in sorted(self.rows)]) if self.rows else torch.empty(0)


def encode_inputs(
    backbone: Any,
    items: Sequence[ImageInput],
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    skip_bad: bool = False,
) -> Encoded:
    """Features in input order: files and folders through the feature cache, PIL images checked and encoded directly.

    Consecutive files and folders go to the encoder together (one batched pass, not one call per file);
    a PIL image flushes them first, so the first bad input in input order is the one reported.

    Example:
        >>> encode_inputs(None, []).names
        []
    """
    encoded, pending = Encoded(), []
    for position, item in enumerate(items):
        if isinstance(item, Image.Image):
            _encode_files(backbone, pending, encoded, cache_dir, batch_size, skip_bad)
            _encode_pil(backbone, item, f"input[{position}] (a PIL image)", skip_bad, encoded)
        elif isinstance(item, (str, os.PathLike)):
            _expand(item, skip_bad, encoded, pending)
        else:
            raise ConfigError(
                f"input[{position}] is a {type(item).__name__}; images are file paths, folders or PIL images"
            )
    _encode_files(backbone, pending, encoded, cache_dir, batch_size, skip_bad)
    return encoded


def _expand(item: str | os.PathLike, skip_bad: bool, encoded: Encoded, pending: list[tuple[int, Path]]) -> None:
    """Reserve a position for each image file of ``item`` (a missing path or an empty folder: an error, or skipped)."""
    try:
        files = find_images([item])
    except DataError as exc:
        if not skip_bad:
            raise
        encoded.skip(str(item), str(exc))
        return
    pending.extend((encoded.add(str(path), None), path) for path in files)


def _encode_files(
    backbone: Any,
    pending: list[tuple[int, Path]],
    encoded: Encoded,
    cache_dir: str | os.PathLike | None,
    batch_size: int,
    skip_bad: bool,
) -> None:
    """Encode the reserved files in one :func:`extract_images` pass; empty ``pending`` afterwards."""
    if not pending:
        return
    store = image_store(backbone, cache_dir or default_cache_dir())
    files = [path for _, path in pending]
    feats, kept, stats = extract_images(backbone, files, store, None, 0, batch_size, skip_bad, "images")
    reasons, rows = dict(stats.skipped), dict(zip(kept, feats))
    for index, (position, path) in enumerate(pending):
        if index in rows:
            encoded.rows[position] = rows[index]
        else:
            encoded.errors[position] = reasons.get(str(path), "could not be read")
    pending.clear()


def _encode_pil(backbone: Any, item: Image.Image, name: str, skip_bad: bool, encoded: Encoded) -> None:
    """The guards a file gets (:func:`~clip_adapter.data.images.checked_rgb`), then the evaluation view."""
    try:
        rgb, _ = checked_rgb(item, name)
    except BadImage as exc:
        if not skip_bad:
            raise
        encoded.skip(None, str(exc))
        return
    pixels = eval_view(rgb, backbone.preprocess).unsqueeze(0)
    encoded.add(None, backbone.encode_images(pixels).float().cpu()[0])


__all__ = [
    "UNKNOWN",
    "Encoded",
    "apply_artifact",
    "check_reject",
    "check_top_k",
    "encode_inputs",
    "error_record",
    "predict_images",
    "prediction_records",
    "score_features",
]
