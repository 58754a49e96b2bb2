"""What an artifact records about trusting its answers, and how it applies it to new images.

A :class:`TrustRecord` rides in the artifact's ``config.json`` (key ``trust``;
an artifact that has one is format version 2, so a reader that predates it
refuses it instead of silently ignoring the sets and thresholds). Its parts are
each optional and fitted on labelled images by ``clip-adapter calibrate``,
``clip-adapter conformal`` and ``clip-adapter ood``:

* ``calibration``: steps applied to the head's logits (ZS-Norm, temperature);
* ``conformal``: a split-conformal predictor over the *calibrated* softmax;
* ``ood``: an out-of-distribution detector over the head's *raw* logits (MCM
  reads cosines, which calibration would rescale).

``provenance`` says, per part, what it was fitted on (images, their fingerprint,
whether they overlap the training shots), since a guarantee is only as good as
the exchangeability of those images with the ones it is used on.

Example:
    >>> import torch
    >>> from clip_adapter.trust.calibration import Calibration, TemperatureScaling
    >>> rec = TrustRecord(calibration=Calibration((TemperatureScaling(2.0),)))
    >>> TrustRecord.from_dict(rec.to_dict(), num_classes=3) == rec
    True
    >>> apply_trust(rec, torch.tensor([[4.0, 0.0, 0.0]])).logits.tolist()
    [[2.0, 0.0, 0.0]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..core.errors import ArtifactError, ConfigError
from .calibration import Calibration
from .conformal import ConformalPredictor
from .ood import OODDetector

PARTS = ("calibration", "conformal", "ood")


@dataclass(frozen=True)
class TrustRecord:
    """The optional calibration, conformal predictor and OOD detector of one artifact."""

    calibration: Calibration | None = None
    conformal: ConformalPredictor | None = None
    ood: OODDetector | None = None
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def is_empty(self) -> bool:
        return self.calibration is None and self.conformal is None and self.ood is None

    def replace(self, part: str, value: Any, provenance: dict[str, Any]) -> "TrustRecord":
        """A copy with ``part`` set to ``value`` and its provenance recorded."""
        if part not in PARTS:
            raise ValueError(f"unknown trust part {part!r}")
        values = {name: getattr(self, name) for name in PARTS}
        values[part] = value
        return TrustRecord(**values, provenance={**self.provenance, part: provenance})

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "conformal": None if self.conformal is None else self.conformal.to_dict(),
            "ood": None if self.ood is None else self.ood.to_dict(),
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: Any, num_classes: int, where: str = "trust") -> "TrustRecord":
        """Read and check a record; every failure is one ArtifactError naming ``where`` and the part."""
        if not isinstance(data, dict) or set(data) - {*PARTS, "provenance"}:
            raise ArtifactError(f"{where}: must be an object with keys {', '.join(PARTS)}, provenance")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise ArtifactError(f"{where}: provenance must be an object")
        calibration = _part(data, "calibration", lambda d: Calibration.from_dict(d), where)
        conformal = _part(
            data, "conformal", lambda d: ConformalPredictor.from_dict(d, where=f"{where}.conformal"), where
        )
        ood = _part(data, "ood", OODDetector.from_dict, where)
        if conformal is not None and conformal.n_classes != num_classes:
            raise ArtifactError(
                f"{where}.conformal: fitted for {conformal.n_classes} classes, the head has {num_classes}"
            )
        if ood is not None and ood.num_classes != num_classes:
            raise ArtifactError(f"{where}.ood: fitted for {ood.num_classes} classes, the head has {num_classes}")
        return cls(calibration, conformal, ood, dict(provenance))


def _part(data: dict[str, Any], name: str, read: Callable[[Any], Any], where: str) -> Any:
    value = data.get(name)
    if value is None:
        return None
    try:
        return read(value)
    except ArtifactError as exc:
        raise ArtifactError(f"{where}.{name}: {exc}") from None
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}.{name} is malformed ({' '.join(str(exc).split())})") from None


@dataclass
class TrustedScores:
    """What an artifact says about a batch of images once its trust record is applied."""

    logits: torch.Tensor  # calibrated (the raw logits when there is no calibration)
    probs: torch.Tensor  # softmax of ``logits``
    sets: torch.Tensor | None = None  # [N, C] bool: the conformal prediction sets
    ood_scores: torch.Tensor | None = None  # [N]: higher means more like the training classes
    is_ood: torch.Tensor | None = None  # [N] bool: below the detector's threshold
    raw: torch.Tensor | None = None  # the head's logits before calibration


def apply_trust(
    record: TrustRecord | None,
    logits: torch.Tensor,
    zero_shot_logits: Callable[[], torch.Tensor] | torch.Tensor | None = None,
) -> TrustedScores:
    """Calibrate ``logits``, then build conformal sets and OOD flags as ``record`` says.

    ``zero_shot_logits`` (a tensor, or a function computing it only when a
    ZS-Norm step needs it) are the zero-shot logits of the same images.
    """
    raw = logits.detach().float().cpu()
    calibrated = raw
    if record is not None and record.calibration is not None:
        zs = None
        if record.calibration.needs_zero_shot:
            zs = zero_shot_logits() if callable(zero_shot_logits) else zero_shot_logits
            if zs is None:
                raise ConfigError("this artifact's calibration (ZS-Norm) needs the zero-shot logits of the images")
            zs = zs.detach().to(torch.float64).cpu()
        calibrated = record.calibration.apply(raw.to(torch.float64), zs).float()
    probs = torch.softmax(calibrated, dim=1)
    out = TrustedScores(calibrated, probs, raw=raw)
    if record is not None and record.conformal is not None:
        out.sets = record.conformal.predict_sets(probs.to(torch.float64), logits=raw)
    if record is not None and record.ood is not None:
        out.ood_scores = record.ood.scores(raw)
        out.is_ood = record.ood.is_ood(raw)
    return out


__all__ = ["PARTS", "TrustRecord", "TrustedScores", "apply_trust"]
