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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from PIL import Image

from .artifacts import Classifier, load_with_backbone
from .backbones import Backbone, create_backbone
from .data import load_dataset
from .data.images import find_images
from .data.dataset import SPLITS
from .errors import ConfigError, DataError
from .features import extract_images, image_store
from .features.transforms import eval_view
from .metrics import classification_report
from .metrics import top_k as best_k
from .methods import get_method
from .pipeline import FeatureConfig, RunConfig, run_few_shot

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
        """Logits ``[N, C]`` for image files, folders (all their images, sorted) or PIL images."""
        return self.classifier.logits(self._features(_as_list(images))[0])

    def predict(self, images: Sequence[ImageInput] | ImageInput, top_k: int = 1) -> list[dict[str, Any]]:
        """One record per image: ``path`` (or ``None`` for a PIL image), ``label``, ``score`` and the ``top_k`` list.

        Equal scores rank by class order, so the same call always gives the same answer.
        """
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        feats, names = self._features(_as_list(images))
        probs = torch.softmax(self.classifier.logits(feats), dim=1)
        values, indices = best_k(probs, min(top_k, probs.shape[1]))
        records = []
        for n, name in enumerate(names):
            ranked = [(self.classnames[int(i)], round(float(v), 6)) for v, i in zip(values[n], indices[n])]
            records.append({"path": name, "label": ranked[0][0], "score": ranked[0][1], "top_k": ranked})
        return records

    def evaluate(self, data: str | os.PathLike, split: str = "test", split_file: str | os.PathLike | None = None) -> dict[str, Any]:
        """Accuracy, per-class accuracy and the confusion matrix on a dataset's ``split`` (``all``: every image)."""
        dataset = load_dataset(data, split_file)
        if dataset.classnames != self.classnames:
            raise DataError(f"dataset {data} has classes {dataset.classnames[:3]}… but the classifier has {self.classnames[:3]}…")
        samples = [s for name in SPLITS for s in dataset.split(name)] if split == "all" else dataset.split(split)
        if not samples:
            raise DataError(f"dataset {data} has no {split} images")
        feats, kept, _ = extract_images(self.backbone, [s.path for s in samples], self._store(), None, 0,
                                        self.features.batch_size, self.features.skip_bad, split)
        labels = torch.tensor([samples[i].label for i in kept])
        return classification_report(self.classifier.logits(feats), labels, self.classnames)

    def save_pretrained(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the artifact directory (``config.json`` + ``model.safetensors`` [+ ``result.json``, ``split.json``])."""
        extra = {"result.json": self.result} if self.result else {}
        if self.split is not None:
            extra["split.json"] = self.split.to_json()
        return self.classifier.save_pretrained(directory, extra, overwrite=overwrite)

    def _store(self):
        return image_store(self.backbone, self.features.cache_path())

    def _features(self, items: list[ImageInput]) -> tuple[torch.Tensor, list[str | None]]:
        """Features in input order: files (through the cache; folders expanded) and PIL images (encoded directly)."""
        parts: list[torch.Tensor] = []
        names: list[str | None] = []
        for item in items:
            if isinstance(item, Image.Image):
                pixels = eval_view(item.convert("RGB"), self.backbone.preprocess).unsqueeze(0)
                parts.append(self.backbone.encode_images(pixels).float().cpu())
                names.append(None)
            else:
                files = find_images([item])
                feats, _, _ = extract_images(self.backbone, files, self._store(), None, 0, self.features.batch_size, False, "images")
                parts.append(feats)
                names += [str(p) for p in files]
        return (torch.cat(parts) if parts else torch.empty(0, self.backbone.embed_dim)), names


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
    **options: Any,
) -> AdaptedCLIP:
    """Sample ``shots`` images per class from ``data``, fit ``method`` on a frozen CLIP, evaluate on the test split.

    ``options`` are the method's options (``clip-adapter methods NAME`` lists them), e.g.
    ``variant="both"``, ``alpha=0.6``. Hyper-parameters are chosen on the few-shot
    validation split; ``.result`` holds the test accuracy and everything that produced it.
    See the module docstring for a runnable example.
    """
    bb = backbone if isinstance(backbone, Backbone) else create_backbone(backbone, pretrained, precision, device)
    features = FeatureConfig(cache_dir=str(cache_dir))
    run = RunConfig(method=method, shots=shots, seed=seed, templates=tuple(templates))
    config = get_method(method).make_config(**options)
    clf, result, split = run_few_shot(bb, load_dataset(data, split_file), run, config, features)
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
