"""The notebook API: fit, predict, evaluate, save and load in a few calls.

In the conventions of scikit-learn and Hugging Face: :func:`fit` returns a fitted
:class:`AdaptedCLIP`; ``predict`` takes file paths, folders or PIL images and returns one
record per image (a list of dicts: ``pandas.DataFrame(records)`` makes a table);
``evaluate`` returns the metrics; ``save_pretrained`` / :func:`load` write and read the
same artifact directories as the command line.

Example (the built-in toy world: offline, seconds):
    >>> import tempfile, pathlib, clip_adapter
    >>> from clip_adapter.toyworld import write_task_dataset
    >>> work = pathlib.Path(tempfile.mkdtemp())
    >>> photos = write_task_dataset("color", "night", work / "photos", 4, 2, 4, seed=0)
    >>> clf = clip_adapter.fit(photos, shots=4, cache_dir=work / "cache")
    >>> clf.classnames[:3]
    ['blue', 'cyan', 'green']
    >>> record = clf.predict([photos / "images" / "red" / "test_0000.png"], top_k=2)[0]
    >>> sorted(record), len(record["top_k"])
    (['label', 'path', 'score', 'top_k'], 2)
    >>> 0.0 <= clf.evaluate(photos, split="test")["accuracy"] <= 1.0
    True
    >>> again = clip_adapter.load(clf.save_pretrained(work / "artifact"), cache_dir=work / "cache")
    >>> again.predict([photos / "images" / "red" / "test_0000.png"])[0]["label"] == record["label"]
    True
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from PIL import Image

from .artifacts import Classifier, load_with_backbone
from .backbones import Backbone, create_backbone
from .data import load_dataset
from .data.classnames import ClassnameMap
from .data.dataset import SPLITS
from .data.images import BadImage, checked_rgb, find_images
from .errors import ClipAdapterError, ConfigError, DataError
from .features import extract_images, image_store
from .features.transforms import eval_view
from .inference import check_reject, prediction_records, score_features
from .io import quoted
from .methods import get_method
from .pipeline import FeatureConfig, RunConfig, evaluate_classifier, run_few_shot

ImageInput = str | os.PathLike | Image.Image


@dataclass
class AdaptedCLIP:
    """A trained few-shot classifier with the backbone it runs on.

    ``classifier`` is the artifact-level object (method head, class names, templates);
    ``result`` the run's record when it was fitted here (accuracy, chosen
    hyper-parameters, protocol), ``None`` when loaded.
    """

    classifier: Classifier
    backbone: Backbone
    features: FeatureConfig
    result: dict[str, Any] | None = None
    split: Any = None

    @property
    def classnames(self) -> list[str]:
        return list(self.classifier.classnames)

    @property
    def method(self) -> str:
        return self.classifier.method

    def logits(self, images: Sequence[ImageInput] | ImageInput) -> torch.Tensor:
        """Logits ``[N, C]`` for image files, folders (all their images, sorted) or PIL images (``[0, C]`` for none).

        A bad image raises a one-line DataError naming it (see :meth:`predict`).
        """
        encoded = self._encode(_as_list(images), skip_bad=False)
        return self.classifier.logits(encoded.features) if encoded.parts else torch.empty(0, len(self.classnames))

    def predict(self, images: Sequence[ImageInput] | ImageInput, top_k: int = 1, skip_bad: bool = False,
                reject: bool = False) -> list[dict[str, Any]]:
        """One record per image: ``path`` (or ``None`` for a PIL image), ``label``, ``score`` and the ``top_k`` list.

        Probabilities are calibrated as the artifact's trust record says; an
        artifact with a conformal predictor adds ``set``, one with an OOD
        threshold ``ood_score`` and ``unknown`` (``reject=True``: such an image's
        ``label`` is ``"unknown"``).

        Equal scores rank by class order, so the same call always gives the same answer.
        An empty list gives an empty list. PIL images pass the same checks as files
        (pixel limit, aspect ratio up to 100:1, no NaN/inf pixels, at least one pixel;
        other modes converted to RGB): a bad image, file or PIL, raises a one-line
        DataError naming it; with ``skip_bad=True`` it gets a record whose ``label``
        and ``score`` are ``None``, ``top_k`` empty and ``error`` the reason, so the
        records stay one per image, in input order.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k must be an integer of at least 1, got {top_k!r}")
        check_reject(self.classifier, reject, "reject=True")
        encoded = self._encode(_as_list(images), skip_bad)
        answered = iter(self._answers(encoded.features, top_k, reject) if encoded.parts else [])
        records: list[dict[str, Any]] = []
        for position, name in enumerate(encoded.names):
            if position in encoded.errors:
                records.append({"path": name, "label": None, "score": None, "top_k": [], "error": encoded.errors[position]})
                continue
            record = next(answered)
            records.append({"path": name, **record, "top_k": [tuple(pair) for pair in record["top_k"]]})
        return records

    def _answers(self, features: torch.Tensor, top_k: int, reject: bool) -> list[dict[str, Any]]:
        """The artifact's records for encoded images: one path with ``predict`` and ``serve`` (calibration, sets, OOD)."""
        scores = score_features(self.classifier, self.backbone, features, self.features.cache_path())
        return prediction_records(scores, self.classnames, top_k, reject)

    def evaluate(self, data: str | os.PathLike, split: str = "test", split_file: str | os.PathLike | None = None,
                 skip_bad: bool = False, classnames: ClassnameMap = None,
                 ood_data: str | os.PathLike | None = None) -> dict[str, Any]:
        """Accuracy, per-class accuracy and the confusion matrix on a dataset's ``split`` (``all``: every image).

        Classes are matched by name (``classnames`` renames the dataset's, as for
        :func:`fit`), so ``data`` may hold a subset of the classifier's classes:
        ``absent_classes`` names the others, and a class it was not trained on is
        refused. ``skip_bad=True`` leaves unreadable images out (listed under ``skipped``).
        ``calibration`` (ECE, NLL, Brier, AURC) is always there; ``conformal`` when the
        artifact has sets; ``ood`` (AUROC, FPR at 95 % TPR) with ``ood_data``, a folder
        of images of none of the classes.
        """
        if split not in (*SPLITS, "all"):
            raise ConfigError(f"split must be one of {', '.join((*SPLITS, 'all'))}, got {split!r}")
        with _api_wording():
            dataset = load_dataset(data, split_file, classnames=classnames)
            ood_images = find_images([ood_data]) if ood_data is not None else ()
            return evaluate_classifier(self.classifier, self.backbone, dataset, split, self.features.cache_path(),
                                       f"dataset {quoted(data)}", self.features.batch_size, skip_bad, ood_images)

    def save_pretrained(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the artifact directory (``config.json`` + ``model.safetensors`` [+ ``result.json``, ``split.json``])."""
        extra = {"result.json": self.result} if self.result else {}
        if self.split is not None:
            extra["split.json"] = self.split.to_json()
        return self.classifier.save_pretrained(directory, extra, overwrite=overwrite)

    def _store(self):
        return image_store(self.backbone, self.features.cache_path())

    def _encode(self, items: list[ImageInput], skip_bad: bool) -> "_Encoded":
        """Features in input order: files (through the cache; folders expanded) and PIL images (checked, then encoded directly)."""
        encoded = _Encoded([], [], {})
        for position, item in enumerate(items):
            if isinstance(item, Image.Image):
                self._encode_pil(item, f"input[{position}] (a PIL image)", skip_bad, encoded)
            elif isinstance(item, (str, os.PathLike)):
                with _api_wording():
                    self._encode_files(item, skip_bad, encoded)
            else:
                raise ConfigError(f"input[{position}] is a {type(item).__name__}; images are file paths, folders or PIL images")
        return encoded

    def _encode_pil(self, item: Image.Image, name: str, skip_bad: bool, encoded: "_Encoded") -> None:
        """The guards a file gets (:func:`~clip_adapter.data.images.checked_rgb`), then the evaluation view."""
        try:
            rgb, _ = checked_rgb(item, name)
        except BadImage as exc:
            if not skip_bad:
                raise
            encoded.skip(None, str(exc))
            return
        pixels = eval_view(rgb, self.backbone.preprocess).unsqueeze(0)
        encoded.add([None], self.backbone.encode_images(pixels).float().cpu())

    def _encode_files(self, item: str | os.PathLike, skip_bad: bool, encoded: "_Encoded") -> None:
        try:
            files = find_images([item])
        except DataError as exc:
            if not skip_bad:
                raise
            encoded.skip(str(item), str(exc))
            return
        feats, kept, stats = extract_images(self.backbone, files, self._store(), None, 0, self.features.batch_size, skip_bad, "images")
        reasons, good = dict(stats.skipped), set(kept)
        rows = iter(feats)
        for index, path in enumerate(files):
            if index in good:
                encoded.add([str(path)], next(rows).unsqueeze(0))
            else:
                encoded.skip(str(path), reasons.get(str(path), "could not be read"))


@dataclass
class _Encoded:
    """Encoded inputs: one name per image (input order), features of the good ones, and why the others were skipped."""

    names: list[str | None]
    parts: list[torch.Tensor]
    errors: dict[int, str]

    def add(self, names: list[str | None], features: torch.Tensor) -> None:
        self.names += names
        self.parts.append(features)

    def skip(self, name: str | None, reason: str) -> None:
        self.errors[len(self.names)] = _api_hints(reason)
        self.names.append(name)

    @property
    def features(self) -> torch.Tensor:
        return torch.cat(self.parts) if self.parts else torch.empty(0)


# Error messages are written for the command line; the API offers the same choices as keywords.
_CLI_TO_API = (
    (re.compile(r"use --skip-bad\b"), "pass skip_bad=True"),
    (re.compile(r"--skip-bad\b"), "skip_bad=True"),
    (re.compile(r"--classnames FILE\b"), "classnames={...}"),
    (re.compile(r"pass --allow-unknown-words\b"), "pass allow_unknown_words=True"),
    (re.compile(r"--allow-unknown-words\b"), "allow_unknown_words=True"),
    (re.compile(r"--template\b"), "templates=[...]"),
)


def _api_hints(message: str) -> str:
    """``message`` with every command-line option it suggests named as the API's keyword argument.

    Example:
        >>> _api_hints("image a.png is truncated (use --skip-bad to leave bad images out and list them)")
        'image a.png is truncated (pass skip_bad=True to leave bad images out and list them)'
    """
    for pattern, keyword in _CLI_TO_API:
        message = pattern.sub(keyword, message)
    return message


@contextlib.contextmanager
def _api_wording() -> Iterator[None]:
    """Re-raise a ClipAdapterError whose message suggests a command-line option with the API's keyword instead."""
    try:
        yield
    except ClipAdapterError as exc:
        message = str(exc)
        if _api_hints(message) == message:
            raise
        error = type(exc).__new__(type(exc))  # the same class (BadImage keeps its kind) without re-running __init__
        error.args = (_api_hints(message),)
        error.__dict__.update(exc.__dict__)
        raise error from None


def _as_list(images: Sequence[ImageInput] | ImageInput) -> list[ImageInput]:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    return list(images)


def fit(
    data: str | os.PathLike,
    backbone: str | Backbone = "toy",
    pretrained: str | None = None,
    shots: int = 16,
    method: str = "clip-adapter",
    seed: int = 1,
    split_file: str | os.PathLike | None = None,
    templates: Iterable[str] = (),
    cache_dir: str | os.PathLike = "",
    precision: str = "auto",
    device: str = "auto",
    skip_bad: bool = False,
    classnames: ClassnameMap = None,
    allow_unknown_words: bool = False,
    **options: Any,
) -> AdaptedCLIP:
    """Sample ``shots`` images per class from ``data``, fit ``method`` on a frozen CLIP, evaluate on the test split.

    ``options`` are the method's options (``clip-adapter methods NAME`` lists them), e.g.
    ``variant="both"``, ``alpha=0.6``. Hyper-parameters are chosen on the few-shot
    validation split; ``.result`` holds the test accuracy and everything that produced it.
    ``skip_bad``, ``classnames`` (a ``{"<folder or class name>": "<new name>"}`` dict or
    JSON file) and ``allow_unknown_words`` are ``train``'s ``--skip-bad``, ``--classnames``
    and ``--allow-unknown-words``. See the module docstring for a runnable example.
    """
    with _api_wording():
        bb = backbone if isinstance(backbone, Backbone) else create_backbone(backbone, pretrained, precision, device)
        features = FeatureConfig(cache_dir=str(cache_dir), skip_bad=skip_bad)
        run = RunConfig(method=method, shots=shots, seed=seed, templates=tuple(templates), allow_unknown_words=allow_unknown_words)
        config = get_method(method).make_config(**options)
        clf, result, split = run_few_shot(bb, load_dataset(data, split_file, classnames=classnames), run, config, features)
    return AdaptedCLIP(clf, bb, features, result, split)


def load(directory: str | os.PathLike, backbone: Backbone | None = None, cache_dir: str | os.PathLike = "", device: str = "auto") -> AdaptedCLIP:
    """Load an artifact written by :meth:`AdaptedCLIP.save_pretrained` or ``clip-adapter train``.

    Without ``backbone`` the one recorded in the artifact is rebuilt (same weights, or it is refused).
    """
    if backbone is not None:
        clf = Classifier.from_pretrained(directory, backbone=backbone)
    else:
        clf, backbone = load_with_backbone(directory, device=device)
    return AdaptedCLIP(clf, backbone, FeatureConfig(cache_dir=str(cache_dir)))


def bench_results(out: str | os.PathLike, protocol: str = "val") -> list[dict[str, Any]]:
    """Every finished run of a ``clip-adapter bench`` output as rows (``pandas.DataFrame(rows)`` makes the table).

    One row per (dataset, method, shots, seed): accuracy, zero-shot accuracy, fit seconds and the
    chosen hyper-parameters, as in ``results_<protocol>.csv``.

    Example:
        >>> bench_results("/no/such/bench")
        []
    """
    from .bench.aggregate import load_results

    return load_results(sorted(Path(out, "runs", protocol).rglob("*.json")))


__all__ = ["AdaptedCLIP", "bench_results", "fit", "load"]
