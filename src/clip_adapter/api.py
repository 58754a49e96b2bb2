"""The notebook API: fit, predict, evaluate, save and load in a few calls.

In the conventions of scikit-learn and Hugging Face: :func:`fit` returns a fitted
:class:`AdaptedCLIP`; ``predict`` takes file paths, folders or PIL images and returns one
record per image (a list of dicts: ``pandas.DataFrame(records)`` makes a table), the records
``clip-adapter predict --format json`` and ``serve`` give (the shape: :mod:`clip_adapter.inference`);
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
from .core.errors import ClipAdapterError, ConfigError
from .core.files import quoted
from .data import load_dataset
from .data.classnames import ClassnameMap
from .data.dataset import SPLITS
from .data.images import find_images
from .inference import ImageInput, check_reject, check_top_k, encode_inputs, predict_images
from .methods import get_method
from .pipeline import FeatureConfig, RunConfig, evaluate_classifier, run_few_shot


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
        with _api_wording():
            encoded = encode_inputs(
                self.backbone,
                _as_list(images),
                cache_dir=self.features.cache_path(),
                batch_size=self.features.batch_size,
            )
        return self.classifier.logits(encoded.features) if encoded.rows else torch.empty(0, len(self.classnames))

    def predict(
        self, images: Sequence[ImageInput] | ImageInput, top_k: int = 1, skip_bad: bool = False, reject: bool = False
    ) -> list[dict[str, Any]]:
        """One prediction record per image: ``path`` (``None`` for a PIL image), ``label``, ``score``, ``top_k``.

        The records of ``clip-adapter predict --format json`` and ``serve``, from the same function
        (:func:`clip_adapter.inference.predict_images`; the shape is in :mod:`clip_adapter.inference`):
        probabilities calibrated as the artifact's trust record says; an artifact with a conformal
        predictor adds ``set``, one with an OOD threshold ``ood_score`` and ``unknown`` (``reject=True``:
        such an image's ``label`` is ``"unknown"``).

        Equal scores rank by class order, so the same call always gives the same answer.
        An empty list gives an empty list. PIL images pass the same checks as files
        (pixel limit, aspect ratio up to 100:1, no NaN/inf pixels, at least one pixel;
        other modes converted to RGB): a bad image, file or PIL, raises a one-line
        DataError naming it; with ``skip_bad=True`` it gets a record whose ``label``
        and ``score`` are ``None``, ``top_k`` empty and ``error`` the reason, so the
        records stay one per image, in input order.
        """
        check_top_k(top_k)
        check_reject(self.classifier, reject, "reject=True")
        with _api_wording():
            records = predict_images(
                self.classifier,
                self.backbone,
                _as_list(images),
                top_k=top_k,
                reject=reject,
                skip_bad=skip_bad,
                cache_dir=self.features.cache_path(),
                batch_size=self.features.batch_size,
            )
        for record in records:
            if "error" in record:  # the reasons are worded for the command line
                record["error"] = _api_hints(record["error"])
        return records

    def evaluate(
        self,
        data: str | os.PathLike,
        split: str = "test",
        split_file: str | os.PathLike | None = None,
        skip_bad: bool = False,
        classnames: ClassnameMap = None,
        ood_data: str | os.PathLike | None = None,
    ) -> dict[str, Any]:
        """Accuracy, per-class accuracy and the confusion matrix on a dataset's ``split`` (``all``: every image).

        Classes are matched by name (``classnames`` renames the dataset's, as for
        :func:`fit`), so ``data`` may hold a subset of the classifier's classes:
        ``absent_classes`` names the others, and a class it was not trained on is
        refused. ``skip_bad=True`` leaves unreadable images out (listed under ``skipped``).
        ``calibration`` (ECE, NLL, Brier, AURC) is always there; ``conformal`` when the
        artifact has sets; ``ood`` (AUROC, FPR at 95 % TPR) with ``ood_data``, a folder
        of images of none of the classes. The same function as ``clip-adapter eval``
        (:func:`evaluate_artifact`).
        """
        with _api_wording():
            return evaluate_artifact(
                self.classifier,
                self.backbone,
                data,
                split,
                split_file=split_file,
                classnames=classnames,
                skip_bad=skip_bad,
                ood_data=ood_data,
                cache_dir=self.features.cache_path(),
                batch_size=self.features.batch_size,
            )

    def save_pretrained(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the artifact directory (``config.json`` + ``model.safetensors``
        [+ ``result.json``, ``split.json``])."""
        extra = {"result.json": self.result} if self.result else {}
        if self.split is not None:
            extra["split.json"] = self.split.to_json()
        return self.classifier.save_pretrained(directory, extra, overwrite=overwrite)


def evaluate_artifact(
    clf: Classifier,
    backbone: Backbone,
    data: str | os.PathLike,
    split: str = "test",
    *,
    split_file: str | os.PathLike | None = None,
    classnames: ClassnameMap = None,
    skip_bad: bool = False,
    ood_data: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """An artifact's report on ``data``'s ``split``: the path of ``clip-adapter eval`` and :meth:`AdaptedCLIP.evaluate`.

    Loads the dataset (``split_file``, ``classnames`` as for :func:`fit`), then
    :func:`~clip_adapter.pipeline.evaluate_classifier`, which scores through
    :func:`clip_adapter.inference.score_features` as ``predict`` does; ``ood_data`` (a folder of images
    of none of the classes) adds the ``ood`` figures. Errors are worded for the command line.

    Example:
        >>> evaluate_artifact(None, None, "photos", split="holdout")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: split must be one of train, val, test, all, got 'holdout'
    """
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"split must be one of {', '.join((*SPLITS, 'all'))}, got {split!r}")
    dataset = load_dataset(data, split_file, classnames=classnames)
    ood_images = find_images([ood_data]) if ood_data else ()
    where = f"dataset {quoted(data)}"
    return evaluate_classifier(clf, backbone, dataset, split, cache_dir, where, batch_size, skip_bad, ood_images)


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
        run = RunConfig(
            method=method, shots=shots, seed=seed, templates=tuple(templates), allow_unknown_words=allow_unknown_words
        )
        config = get_method(method).make_config(**options)
        clf, result, split = run_few_shot(
            bb, load_dataset(data, split_file, classnames=classnames), run, config, features
        )
    return AdaptedCLIP(clf, bb, features, result, split)


def load(
    directory: str | os.PathLike,
    backbone: Backbone | None = None,
    cache_dir: str | os.PathLike = "",
    device: str = "auto",
) -> AdaptedCLIP:
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


__all__ = ["AdaptedCLIP", "bench_results", "evaluate_artifact", "fit", "load"]
