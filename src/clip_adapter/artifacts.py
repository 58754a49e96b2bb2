"""A trained classifier on disk: ``config.json`` + ``model.safetensors``, nothing else.

``config.json`` names the method and its final config (chosen hyper-parameters
included), the shapes of the head, the backbone (name, pretrained, id), the
class names, the templates and the library version. ``model.safetensors``
holds the head's tensors (adapter weights, text classifier, …). Loading checks
every shape and value against the config before use and refuses a backbone
other than the one trained on.

Loading trusts nothing in the files: every field is type- and range-checked
(class names a list of unique non-empty strings, templates with one ``{}``,
logit scale in ``(0, MAX_LOGIT_SCALE]``), every size ``head_meta`` declares
is checked against the backbone's ``embed_dim`` and against the tensor shapes
in the safetensors *header* (read without the data), and the head is first
built on the meta device (no memory) to compare its expected tensors with the
file — all before anything is allocated. Weights must be finite and below
``MAX_ABS_WEIGHT``. Each failure is one ArtifactError naming file and field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .core.config import SEED_MAX
from .core.errors import ArtifactError, ClipAdapterError
from .core.files import atomic_dir, load_tensors, read_json, save_tensors, to_json
from .methods import Head, get_method
from .trust.record import TrustRecord

FORMAT = "clip-adapter-artifact"
FORMAT_VERSION = 1
# An artifact with a trust record (calibration, conformal sets, OOD threshold) is version 2: a reader
# that knows only version 1 refuses it rather than answer without the sets and thresholds it carries.
TRUST_FORMAT_VERSION = 2
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
MAX_META_INT = 10_000_000  # no head dimension is near this; a bigger one is a hostile or broken file
MAX_TENSOR_ELEMENTS = 2_000_000_000
# CLIP learns its logit scale clamped at 100 (open_clip: ln 100); 10x that leaves room for other
# recipes, while a scale beyond it turns every softmax into a hard arg-max of noise.
MAX_LOGIT_SCALE = 1000.0
# Heads act on CLIP features of norm ~1 (normalised) to tens (raw). Measured on synthetic features,
# the largest |weight| of every trained head was 0.4 (zero-shot, CLIP-Adapter) to 7 (linear probe);
# a weight of 1e6 moves a logit by 1e6 per unit of feature, where the softmax is a hard arg-max and
# float32 logits keep < 0.1 resolution: five orders of magnitude of margin, and still no real head.
MAX_ABS_WEIGHT = 1e6


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
    trust: TrustRecord | None = (
        None  # calibration, conformal sets, OOD threshold (clip-adapter calibrate/conformal/ood)
    )

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` for raw image features ``[B, D]`` from the same backbone (before any calibration)."""
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
            **({"format_version": TRUST_FORMAT_VERSION, "trust": self.trust.to_dict()} if self._has_trust() else {}),
        }

    def _has_trust(self) -> bool:
        return self.trust is not None and not self.trust.is_empty()

    def save_pretrained(
        self, directory: str | os.PathLike, extra_json: dict[str, Any] | None = None, overwrite: bool = False
    ) -> Path:
        """Write the artifact directory atomically (a complete new one, or the old one untouched).

        ``extra_json`` maps file names to objects written beside the weights
        (the run's ``result.json``, its sampled ``split.json``), in the same
        atomic step. An existing ``directory`` is replaced only if it holds a
        clip-adapter artifact and nothing else, and only with ``overwrite``;
        anything else there is refused (OutputError), never deleted.
        """
        from .core.outputs import claim_output_dir, is_own_output, mark_output_dir

        directory = claim_output_dir(directory, "artifact", overwrite=overwrite, option="artifact directory")
        with atomic_dir(directory, may_replace=lambda p: overwrite and is_own_output(p, "artifact")) as tmp:
            mark_output_dir(tmp, "artifact")
            (tmp / CONFIG_FILE).write_text(to_json(self.config_dict()))
            save_tensors(tmp / WEIGHTS_FILE, self.head.state_dict(), metadata={"format": FORMAT})
            for name, obj in (extra_json or {}).items():  # JSON objects, or text (a CSV log) as it is
                (tmp / name).write_text(obj if isinstance(obj, str) else to_json(obj))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, backbone: Any = None) -> "Classifier":
        """Load an artifact; with ``backbone``, refuse it unless it is the one trained on.

        Every field and size is checked (see the module docstring) before any
        tensor is allocated; a failure is a one-line ArtifactError naming the
        file and the field.
        """
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
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, OverflowError) as exc:
            reason = " ".join(f"{exc.__class__.__name__}: {exc}".split())  # one line, whatever the message
            raise ArtifactError(f"artifact {directory}/{CONFIG_FILE} is malformed ({reason})") from None


def check_backbone(expected: dict[str, Any], backbone: Any, where: str) -> None:
    """Refuse a backbone whose id differs from the one recorded in an artifact."""
    if backbone is not None and backbone.id != expected.get("id"):
        raise ArtifactError(
            f"{where} was trained on backbone {expected.get('id')} but was given {backbone.id}; "
            f"load it with --backbone {expected.get('name')} --pretrained <the same weights>"
        )


def _build(config: dict[str, Any], directory: Path, backbone: Any) -> Classifier:
    where = f"{directory}/{CONFIG_FILE}"
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ArtifactError(f"{where} is not a clip-adapter artifact config")
    version = config.get("format_version")
    if isinstance(version, bool) or version not in (FORMAT_VERSION, TRUST_FORMAT_VERSION):  # true == 1 in Python
        raise ArtifactError(f"{directory}: artifact format version {version!r} is not supported")
    if (version == TRUST_FORMAT_VERSION) != ("trust" in config):
        raise ArtifactError(
            f"{where}: format version {version} "
            f"{'needs' if version == TRUST_FORMAT_VERSION else 'has no'} a trust section"
        )
    method_cls = get_method(_field(config, "method", str, where))
    meta = _checked_meta(config.get("head_meta"), directory)
    classnames = checked_classnames(config.get("classnames"), where)
    if len(classnames) != meta["num_classes"]:
        raise ArtifactError(f"{where}: {len(classnames)} class names but the head has {meta['num_classes']} classes")
    templates = checked_templates(config.get("templates", []), where)
    backbone_info = checked_backbone_record(config.get("backbone"), where)
    # How hyper-parameters were chosen: a free-form record, carried and shown, never computed with.
    selection = _field(config, "selection", dict, where) if "selection" in config else {}
    check_backbone(backbone_info, backbone, f"artifact {directory}")
    _check_embed_dim(meta, backbone_info, backbone, where)
    method_config = method_cls.Config.from_dict(_field(config, "method_config", dict, where), where=where)
    weights = directory / WEIGHTS_FILE
    header = read_header(weights)  # names, dtypes and shapes only: no tensor data read yet
    _check_sizes_in_file(meta, header, where, weights)
    _check_header(header, _expected_state(method_cls, method_config, meta, backbone), weights)
    head = method_cls.build_head(method_config, meta, backbone)  # every size now matches the file's tensors
    state = load_tensors(weights, "artifact weights", {k: v[1] for k, v in header.items()})
    _check_magnitudes(state, weights)
    head.load_state_dict(state)
    head.eval()
    trust = (
        TrustRecord.from_dict(config["trust"], meta["num_classes"], f"{where}: trust") if "trust" in config else None
    )
    return Classifier(config["method"], head, classnames, templates, dict(backbone_info), dict(selection), trust)


def _field(config: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = config.get(key)
    if not isinstance(value, kind):
        raise ArtifactError(f"{where}: {key} must be a JSON {_JSON_NAMES[kind]}, got {_short(value)}")
    return value


_JSON_NAMES = {str: "string", dict: "object", list: "list"}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checked_classnames(names: Any, where: str) -> list[str]:
    """Class names as a list of unique, non-empty strings, else a one-line ArtifactError.

    Example:
        >>> checked_classnames(["cat", "dog"], "config.json")
        ['cat', 'dog']
        >>> checked_classnames("cat", "config.json")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ArtifactError: config.json: classnames must be a list of strings, got 'cat'
    """
    if not isinstance(names, list):
        raise ArtifactError(f"{where}: classnames must be a list of strings, got {_short(names)}")
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ArtifactError(f"{where}: classnames[{i}] = {_short(name)} is not a non-empty string")
        if name in seen:
            raise ArtifactError(f"{where}: classnames[{i}] = {name!r} appears twice; class names must be unique")
        seen.add(name)
    return list(names)


def checked_templates(templates: Any, where: str) -> tuple[str, ...]:
    """Prompt templates as a tuple of strings with exactly one ``{}`` each, else an ArtifactError."""
    from .data.templates import check_template

    if not isinstance(templates, list):
        raise ArtifactError(f"{where}: templates must be a list of strings, got {_short(templates)}")
    return tuple(check_template(t, f"{where}: templates[{i}]", ArtifactError) for i, t in enumerate(templates))


def _checked_meta(meta: Any, directory: Path) -> dict[str, Any]:
    where = f"{directory}/{CONFIG_FILE}"
    if not isinstance(meta, dict):
        raise ArtifactError(f"{where}: head_meta must be an object")
    for key in ("num_classes", "embed_dim"):
        if isinstance(meta.get(key), bool) or not isinstance(meta.get(key), int):
            raise ArtifactError(f"{where}: head_meta.{key} must be an integer, got {_short(meta.get(key))}")
    for key, value in meta.items():
        if isinstance(value, bool) and "scale" in key:
            raise ArtifactError(f"{where}: head_meta.{key} = {value!r} is not a number")
        if isinstance(value, bool):
            continue  # a flag (Tip-Adapter's trainable_keys)
        if isinstance(value, int):
            if not 0 < value <= MAX_META_INT:
                raise ArtifactError(f"{where}: head_meta.{key} = {value} is out of range 1..{MAX_META_INT}")
        elif isinstance(value, float):
            _check_meta_float(key, value, where)
        else:
            raise ArtifactError(f"{where}: head_meta.{key} = {_short(value)} is not a number")
    return meta


def _check_meta_float(key: str, value: float, where: str) -> None:
    if "scale" in key:  # every logit scale a head multiplies by
        if not 0.0 < value <= MAX_LOGIT_SCALE:
            raise ArtifactError(f"{where}: head_meta.{key} = {value} is out of range (0, {MAX_LOGIT_SCALE:g}]")
    elif not (value == value and abs(value) < 1e6):
        raise ArtifactError(f"{where}: head_meta.{key} = {value} is not a sane number")


def _check_embed_dim(meta: dict[str, Any], info: dict[str, Any], backbone: Any, where: str) -> None:
    """The head's embed_dim must be the backbone's (given, or as recorded in the artifact)."""
    claims = [("the backbone recorded in the artifact", info.get("embed_dim"))]
    if backbone is not None:
        claims.append((f"backbone {backbone.id}", backbone.embed_dim))
    for source, dim in claims:
        if isinstance(dim, int) and not isinstance(dim, bool) and dim != meta["embed_dim"]:
            raise ArtifactError(f"{where}: head_meta.embed_dim = {meta['embed_dim']} but {source} has embed_dim {dim}")


def read_header(path: Path) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` of a safetensors file, from its header alone (no tensor data is read).

    Example:
        >>> import tempfile
        >>> from clip_adapter.core.files import save_tensors
        >>> p = Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> save_tensors(p, {"w": torch.zeros(2, 3)})
        >>> read_header(p)
        {'w': (torch.float32, (2, 3))}
    """
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ArtifactError(f"artifact weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = {}
            for name in handle.keys():
                part = handle.get_slice(name)
                header[name] = (_DTYPES.get(part.get_dtype()), tuple(int(d) for d in part.get_shape()))
    except (SafetensorError, OSError, ValueError, RuntimeError, OverflowError) as exc:
        raise ArtifactError(
            f"artifact weights {path} is not a valid safetensors file ({' '.join(str(exc).split())})"
        ) from None
    return header


_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _check_sizes_in_file(meta: dict[str, Any], header: dict[str, Any], where: str, weights: Path) -> None:
    """Every size head_meta declares must be a dimension of a tensor the file really holds.

    Checked before anything is built: a config claiming ``embed_dim`` 10**7
    would otherwise make the head allocate terabytes before any shape check.
    """
    dims = {d for _, shape in header.values() for d in shape}
    total = sum(_numel(shape) for _, shape in header.values())
    if total > MAX_TENSOR_ELEMENTS:
        raise ArtifactError(f"{weights}: {total} tensor elements, more than the {MAX_TENSOR_ELEMENTS} a head can need")
    for key, value in meta.items():
        if isinstance(value, int) and not isinstance(value, bool) and value not in dims:
            raise ArtifactError(
                f"{where}: head_meta.{key} = {value} is not a dimension of any tensor shape in {weights.name}"
            )


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


class _ShapeOnlyBackbone:
    """Stands in for a backbone while a head is built on the meta device: the same shapes, no compute."""

    def __init__(self, backbone: Any) -> None:
        self._backbone = backbone
        self._length = int(backbone.tokenize([""]).shape[1])
        self._width = int(backbone.embed_tokens(torch.zeros(1, 1, dtype=torch.long)).shape[-1])
        self.device = torch.device("meta")

    def tokenize(self, texts: Any) -> torch.Tensor:
        return torch.zeros(len(texts), self._length, dtype=torch.long)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*tokens.shape, self._width, dtype=self._backbone.dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backbone, name)


def _expected_state(
    method_cls: Any, config: Any, meta: dict[str, Any], backbone: Any
) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """Names, dtypes and shapes of the head's state, from a head built on the meta device (nothing allocated)."""
    stand_in = _ShapeOnlyBackbone(backbone) if backbone is not None else None
    with torch.device("meta"):
        head = method_cls.build_head(config, meta, stand_in)
    return {k: (v.dtype, tuple(v.shape)) for k, v in head.state_dict().items()}


def _check_header(header: dict[str, Any], expected: dict[str, Any], weights: Path) -> None:
    missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing:
        raise ArtifactError(f"artifact weights {weights}: missing tensor(s) {', '.join(missing)}")
    if extra:
        raise ArtifactError(f"artifact weights {weights}: unexpected tensor(s) {', '.join(extra)}")
    for name, (dtype, shape) in expected.items():
        got_dtype, got_shape = header[name]
        if got_shape != shape:
            raise ArtifactError(
                f"artifact weights {weights}: tensor {name!r} has shape {list(got_shape)}, expected {list(shape)}"
            )
        if got_dtype != dtype:
            raise ArtifactError(f"{weights}: tensor {name!r} is {got_dtype}, expected {dtype}")


def _check_magnitudes(state: dict[str, torch.Tensor], weights: Path) -> None:
    for name, tensor in state.items():
        if tensor.is_floating_point() and tensor.numel() and float(tensor.abs().max()) > MAX_ABS_WEIGHT:
            raise ArtifactError(
                f"{weights}: tensor {name!r} holds values up to {float(tensor.abs().max()):.3g}, beyond the "
                f"{MAX_ABS_WEIGHT:g} no trained head comes near; the file is corrupt or not a trained head"
            )


PRECISIONS = ("auto", "bf16", "fp32")
# Architecture names, open_clip tags, checkpoint paths and ids are short; PATH_MAX is 4096 on Linux.
MAX_RECORD_CHARS = 4096
RANDOM_INIT = "random-init:"


def checked_backbone_record(info: Any, where: str) -> dict[str, Any]:
    """The ``backbone`` object of an artifact config, every field loading reads type- and range-checked.

    Loading rebuilds the backbone from this record (``name``, ``pretrained``,
    ``precision``, the init seed in ``id``) and compares ids, so a number where
    a name belongs, or a 5,000-digit seed, must be a one-line ArtifactError
    here rather than a crash deep inside the backbone factory.

    Example:
        >>> checked_backbone_record({"name": "toy", "id": "toy/toy-cnn/random-init:7"}, "config.json")["name"]
        'toy'
        >>> checked_backbone_record({"name": 7, "id": "x"}, "config.json")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ArtifactError: config.json: backbone.name must be a non-empty string, got 7
    """
    if not isinstance(info, dict):
        raise ArtifactError(f"{where}: backbone must be a JSON object, got {_short(info)}")
    for key, required in (("name", True), ("id", True), ("pretrained", False), ("provider", False)):
        _check_record_text(info, key, required, where)
    if info.get("precision", "auto") not in PRECISIONS:
        raise ArtifactError(
            f"{where}: backbone.precision must be one of {', '.join(PRECISIONS)}, got {_short(info.get('precision'))}"
        )
    dim = info.get("embed_dim")
    if "embed_dim" in info and (isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= MAX_META_INT):
        raise ArtifactError(f"{where}: backbone.embed_dim must be an integer in 1..{MAX_META_INT}, got {_short(dim)}")
    recorded_seed(info, where)
    return info


def _check_record_text(info: dict[str, Any], key: str, required: bool, where: str) -> None:
    """``info[key]`` is a short, printable, non-empty string (``None`` or absent allowed unless ``required``)."""
    value = info.get(key)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_RECORD_CHARS or not value.isprintable():
        raise ArtifactError(f"{where}: backbone.{key} must be a non-empty string, got {_short(value)}")


def recorded_seed(info: dict[str, Any], where: str) -> int:
    """The init seed in a ``…/random-init:<seed>`` backbone id (0 for real weights), range-checked.

    The digits are counted before ``int()`` sees them: Python refuses to parse
    more than 4,300 digits with a ValueError, and no seed needs more than 10.
    """
    weights = str(info.get("id", "")).rsplit("/", 1)[-1]
    if not weights.startswith(RANDOM_INIT):
        return 0
    seed = weights[len(RANDOM_INIT) :]
    if not (seed.isascii() and seed.isdigit()) or len(seed) > len(str(SEED_MAX)) or int(seed) > SEED_MAX:
        raise ArtifactError(f"{where}: backbone.id {_short(info.get('id'))} has no valid init seed (0..{SEED_MAX})")
    return int(seed)


def load_with_backbone(
    directory: str | os.PathLike,
    backbone: str | None = None,
    pretrained: str | None = None,
    precision: str | None = None,
    device: str = "auto",
) -> tuple[Classifier, Any]:
    """An artifact and the backbone it was trained on, rebuilt from its record (or the overrides given).

    A backbone whose weights differ from the recorded ones is refused by id.

    Example:
        >>> clf, bb = load_with_backbone("runs/pets")  # doctest: +SKIP
    """
    directory = Path(directory)
    where = f"{directory}/{CONFIG_FILE}"
    if not directory.is_dir():
        raise ArtifactError(f"artifact directory not found: {directory}")
    config = read_json(directory / CONFIG_FILE, "artifact config", ArtifactError)
    if not isinstance(config, dict) or "backbone" not in config:
        raise ArtifactError(f"artifact {where} records no backbone")
    info = checked_backbone_record(config["backbone"], where)
    model = _rebuild_backbone(info, where, backbone, pretrained, precision, device)
    return Classifier.from_pretrained(directory, backbone=model), model


def _rebuild_backbone(
    info: dict[str, Any], where: str, name: str | None, pretrained: str | None, precision: str | None, device: str
) -> Any:
    """The recorded backbone (or the overrides given); a record the factory refuses is the artifact's fault.

    With no override every argument comes from the file, so a refusal (an
    architecture open_clip does not know, weights that cannot be found) is
    reported as an ArtifactError naming the file, never as a bad option.
    """
    from .backbones import create_backbone, resolve_device

    resolve_device(device)  # a missing GPU is the caller's option, not the artifact's fault
    args = (
        name or info["name"],
        pretrained or info.get("pretrained"),
        precision or info.get("precision", "auto"),
        device,
        recorded_seed(info, where),
    )
    if name or pretrained or precision:
        return create_backbone(*args)
    try:
        return create_backbone(*args)
    except ArtifactError:
        raise
    except ClipAdapterError as exc:
        raise ArtifactError(f"{where}: the recorded backbone {info['name']!r} cannot be rebuilt ({exc})") from None
