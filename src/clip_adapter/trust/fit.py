"""Fitting an artifact's trust record on labelled images, and writing the artifact that carries it.

The library behind ``clip-adapter calibrate``, ``clip-adapter conformal`` and
``clip-adapter ood``. Each command reads labelled images, computes the
artifact's logits on them (:func:`~.labelled.labelled_logits`, classes matched by name as
``eval`` matches them), fits one part of the :class:`~.record.TrustRecord`
(:func:`fit_calibration`, :func:`fit_conformal`, :func:`fit_ood`), records what
it was fitted on (:func:`provenance`, :func:`training_overlap`), and writes a
*new* artifact (:func:`write_trusted_artifact`): the input's
``model.safetensors``, ``result.json``, ``split.json`` and ``log.csv`` copied
byte for byte, its ``config.json`` with the new trust record (format version 2).
The new artifact is loaded back before it is installed and must give the very
same raw logits on the fitting images.

Which probabilities each part sees (so that what is fitted is what
``predict`` applies, see :func:`~.record.apply_trust`):

* calibration: the head's raw logits (and, for ZS-Norm, :func:`zero_shot_logits`);
* conformal: the softmax of the *calibrated* logits (the artifact's calibration applied first);
* OOD: the raw logits.

Example:
    >>> from clip_adapter.trust.calibration import Calibration, TemperatureScaling
    >>> record, notes = updated_record(TrustRecord(calibration=Calibration((TemperatureScaling(2.0),))),
    ...                                "calibration", Calibration((TemperatureScaling(1.5),)), {}, replace=True)
    >>> record.calibration.steps[0].temperature, notes
    (1.5, [])
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..core.errors import ArtifactError, ConfigError, DataError
from ..core.files import quoted
from .calibration import T_MAX, T_MIN, Calibration, calibration_report
from .conformal import calibrate as conformal_calibrate
from .conformal import check_alpha, conformal_report, min_calibration_size
from .ood import MIN_VALIDATION, OODDetector
from .ood import SCORES as OOD_SCORES
from .record import PARTS, TrustRecord, apply_trust

# ``--method`` of ``clip-adapter calibrate`` → the calibration steps, fitted in this order.
CALIBRATION_METHODS: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",),
    "zs-norm": ("zs-norm",),
    "zs-norm+temperature": ("zs-norm", "temperature"),
}
COPIED_FILES = ("model.safetensors", "result.json", "split.json", "log.csv")  # byte for byte, when present
MAX_SHOTS_CHECKED = (
    1_000_000  # few-shot splits list shots x classes (16 x 1,000 for ImageNet); beyond is not a few-shot split
)
MARGINAL_GUARANTEE = "P(true class in set) >= 1-alpha on average over exchangeable images"


# ---------------------------------------------------------------------------------------------- zero-shot


def zero_shot_logits(backbone: Any, clf: Any, feats: torch.Tensor, cache_dir: str | os.PathLike | None) -> torch.Tensor:
    """Zero-shot CLIP's logits ``[N, C]`` for image features ``feats`` ``[N, D]``: the artifact's classes and templates.

    The class text embeddings are the artifact's class names in each of its
    prompt templates, encoded by ``backbone`` (through the text cache in
    ``cache_dir``; ``""``/``None``: the default cache), normalised, averaged per
    class and renormalised (:func:`clip_adapter.data.ensemble`) — exactly the
    zero-shot baseline ``train`` reports. The logits are
    ``backbone.logit_scale · cos(feats, text)`` plus the backbone's
    ``logit_bias`` (SigLIP; 0 for CLIP), computed in float32 on the features'
    device without gradients. ``backbone`` must be the one the artifact was
    trained on (``load_with_backbone`` checks that). Used where ZS-Norm needs
    them: ``clip-adapter calibrate --method zs-norm`` and at predict time.

    Example:
        >>> zs = zero_shot_logits(backbone, clf, feats, cache_dir="")  # doctest: +SKIP
        >>> zs.shape == (feats.shape[0], len(clf.classnames))  # doctest: +SKIP
        True
    """
    from ..data import ensemble
    from ..features import default_cache_dir, prompt_embeddings
    from ..methods.base import cosine_logits

    templates = tuple(clf.templates)
    if not templates:
        raise ConfigError(
            "the artifact records no prompt templates, so the zero-shot logits (ZS-Norm) cannot be computed"
        )
    prompts = prompt_embeddings(backbone, list(clf.classnames), templates, cache_dir or default_cache_dir())
    text = ensemble(prompts, len(clf.classnames))
    feats = torch.as_tensor(feats)
    with torch.no_grad():
        logits = cosine_logits(
            feats.float(), text.to(device=feats.device, dtype=torch.float32), float(backbone.logit_scale)
        )
        return logits + float(getattr(backbone, "logit_bias", 0.0) or 0.0)


# ---------------------------------------------------------------------------------------------- images


@dataclass
class LabelledLogits:
    """An artifact's raw logits on labelled images, and what the images were.

    ``labels`` index the *artifact's* classes; ``paths``/``content_ids`` are the
    images kept (an unreadable one skipped with ``skip_bad`` is in ``skipped``).
    """

    features: torch.Tensor  # [N, D] image features
    logits: torch.Tensor  # [N, C] the head's raw logits (float32, CPU)
    labels: torch.Tensor  # [N] int64, indices into classnames
    classnames: list[str]  # the artifact's
    paths: list[Path]
    content_ids: list[str]  # SHA-256 of each image file's bytes
    split: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _zero_shot: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def zero_shot(self, backbone: Any, clf: Any, cache_dir: Any) -> torch.Tensor:
        """:func:`zero_shot_logits` of these images (computed once)."""
        if self._zero_shot is None:
            self._zero_shot = zero_shot_logits(backbone, clf, self.features, cache_dir).float().cpu()
        return self._zero_shot

    def per_class_counts(self) -> dict[str, int]:
        """Images per class, by the artifact's class names, for the classes that have any."""
        counts = torch.bincount(self.labels, minlength=len(self.classnames)).tolist()
        return {name: int(n) for name, n in zip(self.classnames, counts) if n}

    def absent_classes(self) -> list[str]:
        present = set(self.labels.tolist())
        return [name for i, name in enumerate(self.classnames) if i not in present]

    def fingerprint(self) -> str:
        """SHA-256 of the (image content, class) pairs, in sorted order: the same images give the same value."""
        lines = sorted(f"{cid}\t{self.classnames[int(y)]}" for cid, y in zip(self.content_ids, self.labels))
        return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def default_split(dataset: Any, where: str) -> str:
    """``val`` when the dataset has validation images; otherwise refuse, saying what to pass instead."""
    if dataset.count("val") > 0:
        return "val"
    raise DataError(
        f"{where} has no validation split to fit on; pass --split all with a separate folder of labelled images "
        "the model was not trained on (or --split test to use its test split)"
    )


# ---------------------------------------------------------------------------------------------- overlap


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def _recorded_shots(artifact_dir: Path) -> tuple[dict[str, list[str]], Path | None, str | None] | str:
    """The relative paths of the artifact's training and validation shots, its dataset root, its protocol;
    or why not."""
    from ..core.files import read_json

    try:
        split = read_json(artifact_dir / "split.json", "artifact split", ArtifactError)
    except ArtifactError as exc:
        return f"the artifact's split.json cannot be read ({exc})"
    if not isinstance(split, dict) or not isinstance(split.get("train"), list):
        return "the artifact's split.json lists no training shots"
    shots: dict[str, list[str]] = {}
    for name in ("train", "val"):
        entries = split.get(name) or []
        if not isinstance(entries, list):
            return f"the artifact's split.json {name} entry is not a list"
        if len(entries) > MAX_SHOTS_CHECKED:
            return (
                f"the artifact's split.json lists {len(entries)} {name} images, "
                f"more than the {MAX_SHOTS_CHECKED} checked"
            )
        shots[name] = [e[0] for e in entries if isinstance(e, list) and e and isinstance(e[0], str)]
    root, protocol = None, None
    try:
        result = read_json(artifact_dir / "result.json", "artifact result", ArtifactError)
    except ArtifactError:
        result = None
    if isinstance(result, dict):
        data = result.get("data")
        if isinstance(data, dict) and isinstance(data.get("root"), str) and data["root"]:
            root = Path(data["root"])
        protocol = result.get("protocol") if isinstance(result.get("protocol"), str) else None
    return shots, root, protocol


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def training_overlap(
    artifact_dir: str | os.PathLike, data_root: str | os.PathLike, images: LabelledLogits
) -> dict[str, Any]:
    """How many of ``images`` are the artifact's training shots (and validation shots), by path and by content.

    The shots are the ``train`` and ``val`` entries of the artifact's
    ``split.json``, relative to the dataset root its ``result.json`` records.
    An image counts as a shot when its resolved path is a shot's resolved path
    (symlinks followed; no file is read for this), or when its bytes equal
    those of a shot file that lies inside ``data_root`` (the ``--data`` folder:
    a training image copied under another name there). Shot files outside
    ``data_root`` are compared by path only: nothing is read from a path the
    artifact names outside the data given on the command line.

    Returns ``{"checked", "training_shots", "validation_shots", "how", "protocol"}``;
    the counts are None when ``checked`` is False (``how`` then says why).
    """
    from ..features.extract import content_id

    artifact_dir = Path(artifact_dir)
    recorded = _recorded_shots(artifact_dir)
    if isinstance(recorded, str):
        return {"checked": False, "training_shots": None, "validation_shots": None, "how": recorded, "protocol": None}
    shots, root, protocol = recorded
    if root is None:
        return {
            "checked": False,
            "training_shots": None,
            "validation_shots": None,
            "protocol": protocol,
            "how": "the artifact's result.json records no dataset root, so its shots cannot be located",
        }
    by_path: dict[Path, int] = {}
    for i, p in enumerate(images.paths):
        r = _resolved(p)
        if r is not None:
            by_path.setdefault(r, i)
    by_content: dict[str, list[int]] = {}
    for i, cid in enumerate(images.content_ids):
        by_content.setdefault(cid, []).append(i)
    data_root_resolved = _resolved(Path(data_root))
    counts = {}
    for name, rels in shots.items():
        hits: set[int] = set()
        for rel in rels:
            shot = _resolved(root / rel)
            if shot is None:
                continue
            if shot in by_path:
                hits.add(by_path[shot])
            elif data_root_resolved is not None and _inside(shot, data_root_resolved) and _regular_file(shot):
                hits.update(by_content.get(content_id(shot), ()))
        counts[name] = len(hits)
    return {
        "checked": True,
        "training_shots": counts["train"],
        "validation_shots": counts["val"],
        "protocol": protocol,
        "how": "resolved paths against the shots in the artifact's split.json; file contents for shots inside --data",
    }


def overlap_messages(overlap: dict[str, Any], n: int, what: str) -> tuple[list[str], list[str]]:
    """``(warnings, notes)``, one line each, about ``n`` ``what`` images that are the artifact's own shots."""
    warnings_, notes = [], []
    if not overlap["checked"]:
        notes.append(
            f"could not check whether the {what} images include the artifact's training shots: {overlap['how']}"
        )
        return warnings_, notes
    if overlap["training_shots"]:
        warnings_.append(
            f"{overlap['training_shots']} of the {n} {what} images are training shots of this artifact: "
            "its answers on them are over-confident, so what is fitted on them will not hold on new images; "
            "use images it was not trained on"
        )
    if overlap["validation_shots"]:
        notes.append(
            f"{overlap['validation_shots']} of the {n} {what} images are the validation shots its hyper-parameters "
            "were chosen on (a mild optimism; a separate folder avoids it)"
        )
    if overlap["protocol"] == "full-val":
        notes.append(
            "its hyper-parameters were chosen on the dataset's whole validation split (protocol full-val): "
            "fitting on that split again is mildly optimistic"
        )
    return warnings_, notes


def provenance(
    images: LabelledLogits,
    data: str | os.PathLike,
    overlap: dict[str, Any],
    *,
    split_file: str | os.PathLike | None = None,
    classnames_file: str | os.PathLike | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What a part was fitted on, as JSON: the data, split, counts, fingerprint and overlap with the training shots."""
    record = {
        "data": str(_resolved(Path(data)) or data),
        "split_file": None if split_file is None else str(_resolved(Path(split_file)) or split_file),
        "classnames_file": None
        if classnames_file is None
        else str(_resolved(Path(classnames_file)) or classnames_file),
        "split": images.split,
        "num_images": len(images),
        "per_class_counts": images.per_class_counts(),
        "absent_classes": images.absent_classes(),
        "images_fingerprint": images.fingerprint(),
        "skipped": [[path, reason] for path, reason in images.skipped],
        "overlap_with_training_shots": overlap["training_shots"],
        "overlap_with_validation_shots": overlap["validation_shots"],
        "overlap_check": overlap["how"],
        "library_version": __version__,
    }
    return {**record, **extra}


# ---------------------------------------------------------------------------------------------- the record


def present_parts(artifact_dir: str | os.PathLike) -> set[str]:
    """The trust parts an artifact's ``config.json`` holds, read cheaply (before any backbone is built).

    Only for refusing early; anything unreadable gives ``set()`` and is
    reported by the full load that follows.
    """
    from ..core.files import read_json

    try:
        config = read_json(Path(artifact_dir) / "config.json", "artifact config", ArtifactError)
    except (ArtifactError, OSError, ValueError, RecursionError):
        return set()
    trust = config.get("trust") if isinstance(config, dict) else None
    return {part for part in PARTS if isinstance(trust, dict) and trust.get(part) is not None}


def check_refit(parts: set[str] | TrustRecord | None, part: str, replace: bool, where: str) -> None:
    """Refuse (ConfigError, one line) fitting ``part`` over what the artifact holds, unless ``replace``."""
    if isinstance(parts, TrustRecord):
        parts = {name for name in PARTS if getattr(parts, name) is not None}
    parts = parts or set()
    if replace:
        return
    if part in parts:
        what = {
            "calibration": "is already calibrated",
            "conformal": "already has a conformal predictor",
            "ood": "already has an OOD detector",
        }[part]
        hint = " (calibrating an artifact twice)" if part == "calibration" else ""
        also = (
            " (which also drops its conformal predictor, stale under a new calibration)"
            if part == "calibration" and "conformal" in parts
            else ""
        )
        raise ConfigError(
            f"{where} {what}{hint}; pass --replace to fit a new {_noun(part)} in its place{also}, "
            "or start from the artifact without one"
        )
    if part == "calibration" and "conformal" in parts:
        raise ConfigError(
            f"{where} has a conformal predictor fitted on its current probabilities, which a new calibration "
            "would make stale; pass --replace to calibrate and drop it (then run `clip-adapter conformal` again)"
        )


def _noun(part: str) -> str:
    return {"calibration": "calibration", "conformal": "conformal predictor", "ood": "OOD detector"}[part]


def updated_record(
    current: TrustRecord | None,
    part: str,
    value: Any,
    part_provenance: dict[str, Any],
    replace: bool = False,
    where: str = "the artifact",
) -> tuple[TrustRecord, list[str]]:
    """``current`` with ``part`` set to ``value``; and warnings (one line each) about what was dropped.

    Fitting a part already present is refused unless ``replace``. A new
    calibration changes the probabilities a conformal predictor was fitted on:
    it is refused unless ``replace``, and then the conformal part is dropped
    (with a warning). The OOD detector reads raw logits and is kept.
    """
    if part not in PARTS:
        raise ValueError(f"unknown trust part {part!r}")
    current = current or TrustRecord()
    check_refit(current, part, replace, where)
    warnings_: list[str] = []
    if part == "calibration" and current.conformal is not None:
        provenance_ = {k: v for k, v in current.provenance.items() if k != "conformal"}
        current = TrustRecord(current.calibration, None, current.ood, provenance_)
        warnings_.append(
            "dropped the artifact's conformal predictor: it was fitted on the old calibration's probabilities; "
            "run `clip-adapter conformal` on the new artifact to fit it again"
        )
    return current.replace(part, value, part_provenance), warnings_


# ---------------------------------------------------------------------------------------------- fitting


@dataclass
class Fitted:
    """One fitted part, what to record about it, and the lines to show the user."""

    value: Any
    record: dict[str, Any]  # merged into the part's provenance
    summary: list[str]
    warnings: list[str] = field(default_factory=list)


def _metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    report = calibration_report(logits.double(), labels)
    return {k: report[k] for k in ("accuracy", "ece", "nll", "brier")}


def fit_calibration(images: LabelledLogits, method: str, zero_shot: Callable[[], torch.Tensor] | None = None) -> Fitted:
    """Fit ``method`` (a key of :data:`CALIBRATION_METHODS`) on the images' raw logits.

    ``zero_shot`` computes the images' zero-shot logits (needed by ZS-Norm).
    The ECE/NLL before and after are measured on the same images (in-sample:
    optimistic).
    """
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    steps = CALIBRATION_METHODS[method]
    zs = None
    if "zs-norm" in steps:
        if zero_shot is None:
            raise ConfigError("calibration method zs-norm needs the zero-shot logits of the images")
        zs = zero_shot().double()
    calibration = Calibration.fit(images.logits.double(), images.labels, steps, zero_shot_logits=zs)
    calibrated = calibration.apply(images.logits.double(), zs)
    before, after = _metrics(images.logits, images.labels), _metrics(calibrated, images.labels)
    temperature = next((s.temperature for s in calibration.steps if s.kind == "temperature"), None)
    n = len(images)
    shown_t = f": temperature {temperature:.4g}" if temperature is not None else ""
    summary = [
        f"calibration {method} fitted on {n} images{shown_t}",
        (
            f"on those images (in-sample, optimistic): ECE {100 * before['ece']:.2f}% -> {100 * after['ece']:.2f}%, "
            f"NLL {before['nll']:.4f} -> {after['nll']:.4f}; "
            f"predictions unchanged (accuracy {100 * after['accuracy']:.2f}%)"
        ),
    ]
    record = {
        "method": method,
        "temperature": temperature,
        "in_sample": {"before": before, "after": after, "note": "measured on the images it was fitted on"},
    }
    warnings_ = []
    if temperature is not None and temperature <= T_MIN:
        warnings_.append(
            f"the temperature stopped at its lower bound {T_MIN:g}: every one of the {n} images is classified right "
            "with a margin, so the fit only says 'sharpen'; fit on more, or more varied, held-out images"
        )
    elif temperature is not None and temperature >= T_MAX:
        warnings_.append(
            f"the temperature stopped at its upper bound {T_MAX:g}: on these {n} images the logits say almost "
            "nothing about the labels (are the images and classes the ones the artifact was trained for?)"
        )
    return Fitted(calibration, record, summary, warnings_)


def conformal_guarantee(alpha: float, n: int, class_conditional: bool, randomized: bool) -> str:
    """The coverage statement a conformal predictor calibrated on ``n`` images makes, in one sentence."""
    target = f"{1 - alpha:.6g}"
    if class_conditional:
        text = (
            f"for each class with at least {min_calibration_size(alpha)} calibration images, "
            f"P(true class in set | that class) >= {target} on average over exchangeable images of that class; "
            "a class with fewer is in every set"
        )
    else:
        text = f"P(true class in set) >= {target} (1-alpha) on average over exchangeable images"
    text += f", over the draw of the {n} calibration images and of the new image"
    return text + ("; randomized sets may be empty" if randomized else "")


def fit_conformal(
    images: LabelledLogits,
    calibration: Calibration | None,
    alpha: float,
    *,
    score: str = "lac",
    randomized: bool = False,
    class_conditional: bool = False,
    lam: float | None = None,
    k_reg: int | None = None,
    seed: int = 0,
    zero_shot: Callable[[], torch.Tensor] | None = None,
) -> Fitted:
    """Split-conformal calibration on the images' *calibrated* softmax (the artifact's calibration applied first).

    The probabilities come from :func:`~.record.apply_trust` with the
    artifact's calibration alone, the very path ``predict`` takes, so the sets
    fitted here are the sets it gives. Refuses (ConfigError) an ``alpha``
    outside (0, 1) or one the number of images cannot support.
    """
    alpha = check_alpha(alpha)
    record = TrustRecord(calibration=calibration)
    trusted = apply_trust(record, images.logits, zero_shot)
    probs = trusted.probs.double()
    # U hashes the head's raw logits, as apply_trust does at prediction: saturated probability rows repeat.
    keys = trusted.raw if randomized else None
    predictor = conformal_calibrate(
        probs,
        images.labels,
        alpha,
        score=score,
        randomized=randomized,
        class_conditional=class_conditional,
        lam=lam,
        k_reg=k_reg,
        seed=seed,
        logits=keys,
    )
    report = conformal_report(predictor.predict_sets(probs, logits=keys), images.labels, alpha)
    n = len(images)
    guarantee = conformal_guarantee(alpha, n, class_conditional, randomized)
    summary = [
        f"conformal ({score}{', randomized' if randomized else ''}"
        f"{', class-conditional' if class_conditional else ''}) "
        f"calibrated on {n} images at alpha={alpha:g}"
        + ("" if calibration is None else f", on the artifact's calibrated probabilities ({_steps(calibration)})"),
        f"guarantee: {guarantee}",
        f"on those images (in-sample): coverage {100 * report['coverage']:.2f}%, "
        f"mean set size {report['mean_set_size']:.3g}",
    ]
    recorded = {
        "alpha": alpha,
        "score": score,
        "randomized": randomized,
        "class_conditional": class_conditional,
        "guarantee": guarantee,
        "calibrated_probabilities": None if calibration is None else _steps(calibration),
        "in_sample": {
            "coverage": report["coverage"],
            "mean_set_size": report["mean_set_size"],
            "empty_set_fraction": report["empty_set_fraction"],
        },
    }
    return Fitted(predictor, recorded, summary)


def _steps(calibration: Calibration) -> str:
    return " then ".join(
        s.kind if s.kind != "temperature" else f"temperature {s.temperature:.4g}" for s in calibration.steps
    )


def ood_logit_scale(clf: Any, backbone: Any) -> float:
    """The scale that turns the head's logits back into cosines: ``head.meta['logit_scale']`` (else the backbone's)."""
    scale = (
        getattr(clf.head, "meta", {}).get("logit_scale") if isinstance(getattr(clf.head, "meta", None), dict) else None
    )
    return float(scale if scale is not None else backbone.logit_scale)


def fit_ood(
    images: LabelledLogits,
    score: str = "mcm",
    tpr: float = 0.95,
    temperature: float = 1.0,
    logit_scale: float | None = None,
    method: str | None = None,
) -> Fitted:
    """An :class:`~.ood.OODDetector` on the images' *raw* logits (held-out in-distribution images).

    ``logit_scale`` is needed by MCM (see :func:`ood_logit_scale`).
    """
    if score not in OOD_SCORES:
        raise ConfigError(f"OOD score must be one of {', '.join(OOD_SCORES)}, got {score!r}")
    check_tpr(tpr)
    detector = OODDetector.fit(images.logits.double(), score, tpr, temperature, logit_scale if score == "mcm" else None)
    accepted = float((~detector.is_ood(images.logits.double())).double().mean())
    n, se = len(images), detector.tpr_standard_error
    meaning = (
        f"accepts at least {100 * tpr:.4g}% of these {n} in-distribution images; on new in-distribution images about "
        f"{100 * tpr:.4g}% +/- {100 * 2 * se:.2g} points (2 standard errors); how many out-of-distribution images it "
        "flags is not known until measured on some"
    )
    summary = [
        f"OOD detector ({score}) fitted on {n} in-distribution images: threshold {detector.threshold:.6g}",
        meaning,
    ]
    warnings_ = []
    if score == "mcm" and method == "linear-probe" and logit_scale is not None:
        warnings_.append(
            "MCM reads logits as scaled cosines; a linear-probe head's are not, so MCM acts here as MSP at "
            f"temperature {logit_scale:g} (--score msp or energy may suit it better)"
        )
    record = {
        "score": score,
        "tpr": tpr,
        "temperature": temperature,
        "threshold": detector.threshold,
        "accepted_in_sample": accepted,
        "tpr_standard_error": se,
        "meaning": meaning,
    }
    return Fitted(detector, record, summary, warnings_)


def check_tpr(tpr: Any) -> float:
    if isinstance(tpr, bool) or not isinstance(tpr, (int, float)) or not 0 < tpr < 1:
        raise ConfigError(
            f"--tpr must be a number strictly between 0 and 1 (0.95 accepts 95% of in-distribution images), got {tpr!r}"
        )
    return float(tpr)


def check_enough(
    part: str, n: int, alpha: float | None = None, class_conditional: bool = False, where: str = ""
) -> None:
    """Refuse early (before any image is encoded) a set too small for ``part``: n images, one line."""
    if part == "conformal" and not class_conditional and alpha is not None and n < min_calibration_size(alpha):
        raise ConfigError(
            f"{where}: {n} calibration image(s) cannot support alpha={alpha:g}: the set would hold every class; "
            f"need at least {min_calibration_size(alpha)} (n >= 1/alpha - 1)"
        )
    if part == "ood" and n < MIN_VALIDATION:
        raise ConfigError(f"{where}: {n} in-distribution image(s); the OOD threshold needs at least {MIN_VALIDATION}")
    if part == "calibration" and n < 2:
        raise ConfigError(f"{where}: {n} image(s); calibration needs at least 2")


# ---------------------------------------------------------------------------------------------- writing


def trusted_config(config: dict[str, Any], record: TrustRecord) -> dict[str, Any]:
    """An artifact config with ``record`` as its trust section (format version 2; version 1 when it is empty)."""
    from ..artifacts import FORMAT_VERSION, TRUST_FORMAT_VERSION

    out = {k: v for k, v in config.items() if k != "trust"}
    if record.is_empty():
        out["format_version"] = FORMAT_VERSION
    else:
        out["format_version"] = TRUST_FORMAT_VERSION
        out["trust"] = record.to_dict()
    return out


def write_trusted_artifact(
    source: str | os.PathLike,
    out: str | os.PathLike,
    record: TrustRecord,
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike | None] = (),
    backbone: Any = None,
    expected: Any = None,
    check_features: torch.Tensor | None = None,
) -> Path:
    """Write a new artifact at ``out``: ``source``'s files byte for byte, its config with ``record`` as the trust
    section.

    ``out`` goes through :func:`~clip_adapter.core.outputs.claim_output_dir` (new or
    empty, or our own artifact with ``overwrite``; never ``source`` itself, nor
    inside ``source`` or ``inputs``) and is built in a temporary folder
    installed atomically (:func:`~clip_adapter.core.files.atomic_dir`, marked and
    ledgered as an artifact). Before installing, the new artifact is loaded
    with ``Classifier.from_pretrained`` (on ``backbone``); with ``expected``
    (the classifier the record was fitted for) its weights must be equal
    tensor for tensor and, with ``check_features``, its raw logits equal
    (bit for bit on the CPU); otherwise nothing is installed (ArtifactError).
    ``source`` is only read.
    """
    from ..artifacts import CONFIG_FILE, Classifier
    from ..core.files import atomic_dir, read_json, to_json
    from ..core.outputs import claim_output_dir, is_own_output, mark_output_dir

    source = Path(source)
    out = claim_output_dir(out, "artifact", overwrite=overwrite, inputs=[source, *inputs])
    config = read_json(source / CONFIG_FILE, "artifact config", ArtifactError)
    if not isinstance(config, dict):
        raise ArtifactError(f"{quoted(source / CONFIG_FILE)} is not a clip-adapter artifact config")
    files = []
    for name in COPIED_FILES:
        path = source / name
        if not os.path.lexists(path):
            continue
        if path.is_symlink() or not _regular_file(path):
            raise ArtifactError(
                f"{quoted(path)} is not a regular file (a link or special file); copy the artifact's real files"
            )
        files.append(path)
    with atomic_dir(out, may_replace=lambda p: overwrite and is_own_output(p, "artifact")) as tmp:
        mark_output_dir(tmp, "artifact")
        for path in files:
            shutil.copyfile(path, tmp / path.name)
        (tmp / CONFIG_FILE).write_text(to_json(trusted_config(config, record)), encoding="utf-8")
        loaded = Classifier.from_pretrained(tmp, backbone=backbone)
        if expected is not None:
            _check_same_classifier(loaded, expected, check_features, source)
    return out


def _check_same_classifier(loaded: Any, expected: Any, features: torch.Tensor | None, source: Path) -> None:
    """The written artifact's head must be the one fitted for: same tensors, same raw logits."""
    changed = (
        f"the new artifact's head differs from the one loaded from {quoted(source)} "
        "(was it changed meanwhile?); nothing was written"
    )
    mine, theirs = loaded.head.state_dict(), expected.head.state_dict()
    if mine.keys() != theirs.keys() or any(not torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine):
        raise ArtifactError(changed)
    if features is None:
        return
    with torch.no_grad():
        again, before = loaded.logits(features).float().cpu(), expected.logits(features).float().cpu()
    # Bit for bit on the CPU; an accelerator may order a reduction differently from one call to the next.
    same = (
        torch.equal(again, before)
        if features.device.type == "cpu"
        else torch.allclose(again, before, rtol=1e-5, atol=1e-5)
    )
    if not same:
        raise ArtifactError(changed)


def same_images(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Whether two parts' provenance name the same fitting images (same fingerprint, or same data and split)."""
    if not isinstance(a, dict):
        return False
    if a.get("images_fingerprint") and a.get("images_fingerprint") == b.get("images_fingerprint"):
        return True
    return (
        bool(a.get("data"))
        and a.get("data") == b.get("data")
        and a.get("split") == b.get("split")
        and a.get("split_file") == b.get("split_file")
    )


__all__ = [
    "CALIBRATION_METHODS",
    "Fitted",
    "LabelledLogits",
    "check_enough",
    "check_refit",
    "conformal_guarantee",
    "default_split",
    "fit_calibration",
    "fit_conformal",
    "fit_ood",
    "ood_logit_scale",
    "present_parts",
    "provenance",
    "same_images",
    "training_overlap",
    "trusted_config",
    "updated_record",
    "write_trusted_artifact",
    "zero_shot_logits",
]
