"""A trained classifier on disk: ``config.json`` + ``model.safetensors``, nothing else.

``config.json`` names the method and its final config (chosen hyper-parameters
included), the shapes of the head, the backbone (name, pretrained, id), the
class names, the templates and the library version. ``model.safetensors``
holds the head's tensors (adapter weights, text classifier, …). Loading checks
every shape and value against the config before use and refuses a backbone
other than the one trained on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import ArtifactError, ClipAdapterError
from .io import atomic_dir, load_tensors, read_json, save_tensors, to_json
from .methods import Head, get_method

FORMAT = "clip-adapter-artifact"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
MAX_META_INT = 10_000_000  # no head dimension is near this; a bigger one is a hostile or broken file
MAX_TENSOR_ELEMENTS = 2_000_000_000


@dataclass
class Classifier:
    """A method's trained head plus everything needed to use it on new images.

    Example:
        >>> clf = Classifier.from_pretrained("runs/pets")  # doctest: +SKIP
        >>> clf.classnames[:2]  # doctest: +SKIP
        ['abyssinian', 'american bulldog']
    """

    method: str
    head: Head
    classnames: list[str]
    templates: tuple[str, ...]
    backbone: dict[str, Any]
    selection: dict[str, Any] = field(default_factory=dict)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` for raw image features ``[B, D]`` from the same backbone."""
        return self.head.predict_logits(features)

    def config_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "method": self.method,
            "method_config": self.head.config.to_dict(),
            "head_meta": self.head.meta,
            "backbone": self.backbone,
            "classnames": list(self.classnames),
            "templates": list(self.templates),
            "selection": self.selection,
        }

    def save_pretrained(self, directory: str | os.PathLike, extra_json: dict[str, Any] | None = None) -> Path:
        """Write the artifact directory atomically (a complete new one, or the old one untouched).

        ``extra_json`` maps file names to objects written beside the weights
        (the run's ``result.json``, its sampled ``split.json``), in the same
        atomic step.
        """
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            (tmp / CONFIG_FILE).write_text(to_json(self.config_dict()))
            save_tensors(tmp / WEIGHTS_FILE, self.head.state_dict(), metadata={"format": FORMAT})
            for name, obj in (extra_json or {}).items():
                (tmp / name).write_text(to_json(obj))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, backbone: Any = None) -> "Classifier":
        """Load an artifact; with ``backbone``, refuse it unless it is the one trained on."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ArtifactError(f"artifact directory not found: {directory}")
        config = read_json(directory / CONFIG_FILE, "artifact config", ArtifactError)
        try:
            return _build(config, directory, backbone)
        except ArtifactError:
            raise
        except ClipAdapterError as exc:
            raise ArtifactError(f"artifact {directory}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"artifact {directory}/{CONFIG_FILE} is malformed ({exc.__class__.__name__}: {exc})") from None


def check_backbone(expected: dict[str, Any], backbone: Any, where: str) -> None:
    """Refuse a backbone whose id differs from the one recorded in an artifact."""
    if backbone is not None and backbone.id != expected.get("id"):
        raise ArtifactError(
            f"{where} was trained on backbone {expected.get('id')} but was given {backbone.id}; "
            f"load it with --backbone {expected.get('name')} --pretrained <the same weights>"
        )


def _build(config: dict[str, Any], directory: Path, backbone: Any) -> Classifier:
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ArtifactError(f"{directory}/{CONFIG_FILE} is not a clip-adapter artifact config")
    if config.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{directory}: artifact format version {config.get('format_version')!r} is not supported")
    method_cls = get_method(config["method"])
    meta = _checked_meta(config["head_meta"], directory)
    classnames = [str(c) for c in config["classnames"]]
    if len(classnames) != meta.get("num_classes"):
        raise ArtifactError(f"{directory}: {len(classnames)} class names but the head has {meta.get('num_classes')} classes")
    backbone_info = dict(config["backbone"])
    check_backbone(backbone_info, backbone, f"artifact {directory}")
    method_config = method_cls.Config.from_dict(config["method_config"], where=f"{directory}/{CONFIG_FILE}")
    head = method_cls.build_head(method_config, meta, backbone)
    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    state = load_tensors(directory / WEIGHTS_FILE, "artifact weights", expected)
    for name, tensor in state.items():
        if tensor.dtype != head.state_dict()[name].dtype:
            raise ArtifactError(f"{directory}/{WEIGHTS_FILE}: tensor {name!r} is {tensor.dtype}, expected {head.state_dict()[name].dtype}")
    head.load_state_dict(state)
    head.eval()
    templates = tuple(str(t) for t in config.get("templates", ()))
    return Classifier(config["method"], head, classnames, templates, backbone_info, dict(config.get("selection", {})))


def _checked_meta(meta: Any, directory: Path) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise ArtifactError(f"{directory}/{CONFIG_FILE}: head_meta must be an object")
    product = 1
    for key, value in meta.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not 0 < value <= MAX_META_INT:
                raise ArtifactError(f"{directory}/{CONFIG_FILE}: head_meta.{key} = {value} is out of range")
            product *= value if key in ("num_classes", "embed_dim", "num_keys") else 1
        elif isinstance(value, float):
            if not (value == value and abs(value) < 1e6):
                raise ArtifactError(f"{directory}/{CONFIG_FILE}: head_meta.{key} = {value} is not a sane number")
    if product > MAX_TENSOR_ELEMENTS:
        raise ArtifactError(f"{directory}/{CONFIG_FILE}: head_meta declares tensors too large to be real")
    return meta
