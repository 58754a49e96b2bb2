"""Out-of-distribution (OOD) detection from a head's logits: scores, an accept threshold, metrics.

A few-shot head always answers with one of its classes, even for an image of
none of them. This module turns the head's logits into a score of how
in-distribution (ID) the image looks, picks the threshold that accepts a
stated share of ID validation images, and measures a score on ID and OOD
test images.

Conventions, everywhere in this module:

* **Higher score = more in-distribution.** An image is *accepted* (ID) when
  ``score >= threshold`` and flagged OOD otherwise; a non-finite score (from
  non-finite logits) is never ``>=`` anything, so it is flagged OOD.
* **Logits are what the heads output**: ``logit_scale · cos(image, class text)``
  (see :func:`clip_adapter.methods.base.cosine_logits`; the scale is about
  100 for CLIP and is ``head.meta["logit_scale"]``), plus SigLIP's constant
  ``logit_bias``, which no score below depends on except energy (a constant
  shift that the threshold absorbs).
* **ID is the positive class** for the true-positive rate (TPR: share of ID
  images accepted), the false-positive rate (FPR: share of OOD images
  accepted) and AUROC.
* Scores are computed in float64 on the CPU: MCM's softmax over cosines is
  nearly flat (values within ~1e-3 of ``1/C``), and float32 would turn its
  ranking into ties.

The scores:

* ``"mcm"`` — Maximum Concept Matching (Ming et al., "Delving into OOD
  Detection with Vision-Language Representations", NeurIPS 2022):
  ``max_i softmax(cos_i / τ)`` over the class prompts, with the paper's default
  ``τ = 1`` applied to the *cosine similarities* (not to the scaled logits).
  Since ``cos = logits / logit_scale``, MCM is ``max softmax(logits /
  (logit_scale · τ))``. With ``τ = 1`` the softmax is nearly uniform (every
  value lies in ``[1/C, e²/(e² + C − 1)]``), yet its ranking is what separates
  ID from OOD; the paper shows that large temperatures help and ``τ → 0``
  (i.e. MSP of CLIP's scaled logits) hurts.
* ``"msp"`` — maximum softmax probability (Hendrycks & Gimpel, ICLR 2017) of
  the logits as they are, ``max softmax(logits / T)`` with ``T = 1``; another
  ``T`` is ODIN's temperature scaling without its input perturbation.
* ``"energy"`` — the negative free energy (Liu et al., NeurIPS 2020):
  ``T · logsumexp(logits / T)``, ``T = 1``.

The threshold (:func:`threshold_for_tpr`) is the ``⌈tpr · n⌉``-th largest of
``n`` ID validation scores: the highest threshold that accepts at least
``tpr`` of them (the empirical ``1 − tpr`` quantile, as an order statistic,
no interpolation). On new ID images the accepted share is ``tpr`` only up to
sampling error, about ``sqrt(tpr · (1 − tpr) / n)`` (0.5 percentage points
for ``n = 2000``, 4.9 for ``n = 20``). FPR at 95 % TPR
(:func:`fpr_at_tpr`) uses the same threshold on the ID test scores.

Example:
    >>> import torch
    >>> val = torch.tensor([[30.0, 20.0, 10.0]]).repeat(40, 1) + (
    ...     torch.linspace(0, 8, 40)[:, None] * torch.tensor([1.0, 0, 0])
    ... )
    >>> detector = OODDetector.fit(val, "mcm", logit_scale=100.0)
    >>> detector.is_ood(torch.tensor([[33.0, 20.0, 10.0], [21.0, 20.0, 19.0]])).tolist()
    [False, True]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..core.errors import ArtifactError, ConfigError

SCORES = ("mcm", "msp", "energy")
DEFAULT_TPR = 0.95
# Below 20 validation images the 95 % threshold is simply the lowest score (⌈0.95 n⌉ = n),
# and the accepted share on new images is uncertain by more than ±5 points.
MIN_VALIDATION = 20
FORMAT = "clip-adapter-ood-detector"
VERSION = 1
_FIELDS = (
    "format",
    "version",
    "score",
    "temperature",
    "logit_scale",
    "threshold",
    "tpr",
    "n_validation",
    "num_classes",
)
_PROBABILITY_SLACK = 1e-9  # float64 rounding of a softmax maximum around its bounds 1/C and 1


# --- validation helpers ----------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_positive(name: str, value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_tpr(tpr: Any) -> float:
    if not _is_number(tpr) or not 0 < tpr < 1:
        raise ConfigError(
            f"tpr must be a number strictly between 0 and 1 (0.95 accepts 95 % of ID images), got {tpr!r}"
        )
    return float(tpr)


def _as_logits(logits: Any) -> torch.Tensor:
    """``[N, C]`` logits (C ≥ 2) as float64 on the CPU; non-finite values pass (they give non-finite scores)."""
    tensor = torch.as_tensor(logits)
    if tensor.ndim != 2 or tensor.shape[1] < 2:
        raise ConfigError(f"logits must be [images, classes] with at least 2 classes, got shape {tuple(tensor.shape)}")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ConfigError(f"logits must be real numbers, got dtype {tensor.dtype}")
    return tensor.detach().to("cpu", torch.float64)


def _as_scores(scores: Any, what: str, min_count: int = 1) -> torch.Tensor:
    """A 1-D float64 CPU tensor of finite scores, at least ``min_count`` of them."""
    tensor = torch.as_tensor(scores).detach().to("cpu", torch.float64)
    if tensor.ndim != 1:
        raise ConfigError(f"{what} must be a 1-D list of scores, got shape {tuple(tensor.shape)}")
    if tensor.numel() < min_count:
        raise ConfigError(f"{what}: need at least {min_count} scores, got {tensor.numel()}")
    bad = (~torch.isfinite(tensor)).nonzero().flatten()
    if bad.numel():
        first = int(bad[0])
        raise ConfigError(
            f"{what}: {bad.numel()} non-finite score(s), the first at index {first} ({float(tensor[first])})"
        )
    return tensor


def _accept_count(tpr: float, n: int) -> int:
    """How many of ``n`` ID scores a ``tpr`` threshold must accept: ``⌈tpr · n⌉`` (at least 1)."""
    # The epsilon keeps an exact product (0.95 · 20 = 19) from rounding up to 20 through float error.
    return max(1, min(n, math.ceil(tpr * n - 1e-9)))


def _kth_largest(scores: torch.Tensor, k: int) -> float:
    return float(torch.topk(scores, k).values[-1])


# --- scores ----------------------------------------------------------------------------------------


def mcm_score(logits: Any, logit_scale: float, tau: float = 1.0) -> torch.Tensor:
    """MCM: ``max softmax(cos / τ)`` with ``cos = logits / logit_scale`` (``[N, C] → [N]`` float64).

    Example:
        >>> import torch
        >>> s = mcm_score(torch.tensor([[30.0, 20.0], [25.0, 25.0]]), logit_scale=100.0)
        >>> [round(v, 4) for v in s.tolist()]  # softmax([0.3, 0.2]) and softmax([0.25, 0.25])
        [0.525, 0.5]
    """
    scale = _check_positive("logit_scale", logit_scale)
    tau = _check_positive("tau", tau)
    return torch.softmax(_as_logits(logits) / (scale * tau), dim=1).amax(dim=1)


def msp_score(logits: Any, temperature: float = 1.0) -> torch.Tensor:
    """MSP: ``max softmax(logits / T)`` (``[N, C] → [N]`` float64).

    Example:
        >>> import torch
        >>> [round(v, 4) for v in msp_score(torch.tensor([[2.0, 0.0], [0.0, 0.0]])).tolist()]
        [0.8808, 0.5]
    """
    temperature = _check_positive("temperature", temperature)
    return torch.softmax(_as_logits(logits) / temperature, dim=1).amax(dim=1)


def energy_score(logits: Any, temperature: float = 1.0) -> torch.Tensor:
    """Negative free energy ``T · logsumexp(logits / T)`` (``[N, C] → [N]`` float64; higher = more ID).

    Example:
        >>> import torch
        >>> round(energy_score(torch.tensor([[0.0, 0.0]])).item(), 4)  # log 2
        0.6931
    """
    temperature = _check_positive("temperature", temperature)
    return temperature * torch.logsumexp(_as_logits(logits) / temperature, dim=1)


def ood_scores(logits: Any, score: str, *, temperature: float = 1.0, logit_scale: float | None = None) -> torch.Tensor:
    """The named score (``"mcm"``, ``"msp"`` or ``"energy"``) of each row of ``logits``.

    ``temperature`` is MCM's τ (over cosines) or the T of MSP and energy;
    ``logit_scale`` is needed by MCM only, to turn logits back into cosines.

    Example:
        >>> import torch
        >>> ood_scores(torch.tensor([[1.0, 0.0]]), "energy").shape
        torch.Size([1])
    """
    if score not in SCORES:
        raise ConfigError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
    if score == "mcm":
        if logit_scale is None:
            raise ConfigError(
                "the mcm score needs the head's logit_scale (head.meta['logit_scale']) to recover cosines"
            )
        return mcm_score(logits, logit_scale, temperature)
    if logit_scale is not None:
        raise ConfigError(f"logit_scale applies to the mcm score only, not {score!r}")
    return msp_score(logits, temperature) if score == "msp" else energy_score(logits, temperature)


# --- threshold and metrics -------------------------------------------------------------------------


def threshold_for_tpr(id_scores: Any, tpr: float = DEFAULT_TPR) -> float:
    """The highest threshold accepting at least ``tpr`` of the ID validation scores (``score >= threshold``).

    It is the ``⌈tpr · n⌉``-th largest score (for ``tpr = 0.95`` and ``n = 100``,
    the 95th largest, i.e. the 6th smallest). Ties at the threshold are all
    accepted, so the share accepted on these scores is ``>= tpr``. Refuses
    ``tpr`` outside ``(0, 1)``, fewer than :data:`MIN_VALIDATION` scores and
    non-finite scores.

    Example:
        >>> threshold_for_tpr([float(i) for i in range(100)])  # accepts 5..99: 95 of 100
        5.0
    """
    tpr = _check_tpr(tpr)
    scores = _as_scores(id_scores, "ID validation scores", MIN_VALIDATION)
    return _kth_largest(scores, _accept_count(tpr, scores.numel()))


def tpr_standard_error(tpr: float, n: int) -> float:
    """Binomial standard error ``sqrt(tpr · (1 − tpr) / n)`` of the share accepted on new ID images.

    Example:
        >>> round(tpr_standard_error(0.95, 2000), 4)
        0.0049
    """
    tpr = _check_tpr(tpr)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    return math.sqrt(tpr * (1 - tpr) / n)


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve, ID positive: ``P(s_ID > s_OOD) + ½ P(s_ID = s_OOD)``.

    This is the Mann–Whitney U statistic over ``n_ID · n_OOD``: ties count a
    half, which equals the trapezoidal area under the ROC curve. Computed by
    binary search over the sorted OOD scores, so ``O(n log n)``.

    Example:
        >>> auroc([0.9, 0.8, 0.5], [0.5, 0.1])  # pairs won: 2 + 2 + (1 + ½) out of 6
        0.9166666666666666
    """
    pos = _as_scores(id_scores, "ID scores")
    neg = torch.sort(_as_scores(ood_scores, "OOD scores")).values
    below = torch.searchsorted(neg, pos, right=False)  # OOD scores strictly lower than each ID score
    at_or_below = torch.searchsorted(neg, pos, right=True)
    u = (below.double() + at_or_below.double()).sum() / 2
    return float(u / (pos.numel() * neg.numel()))


def fpr_at_tpr(id_scores: Any, ood_scores: Any, tpr: float = DEFAULT_TPR) -> float:
    """Share of OOD scores accepted at the highest threshold that accepts at least ``tpr`` of ID scores.

    The threshold convention is :func:`threshold_for_tpr`'s (the ``⌈tpr · n⌉``-th
    largest ID score), i.e. the first ROC point with TPR ``>= tpr``; with
    ``tpr = 0.95`` this is the usual "FPR95".

    Example:
        >>> fpr_at_tpr([float(i) for i in range(100)], [4.0, 5.0, 50.0, 99.5])  # threshold 5.0
        0.75
    """
    tpr = _check_tpr(tpr)
    pos = _as_scores(id_scores, "ID scores")
    neg = _as_scores(ood_scores, "OOD scores")
    threshold = _kth_largest(pos, _accept_count(tpr, pos.numel()))
    return float((neg >= threshold).double().mean())


# --- the detector record ---------------------------------------------------------------------------


def _bad(field: str, expected: str, value: Any) -> ArtifactError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ArtifactError(f"OOD detector: field {field!r} must be {expected}, got {shown}")


@dataclass(frozen=True)
class OODDetector:
    """A fitted OOD detector: which score, its temperature, the threshold and how it was chosen.

    ``temperature`` is MCM's τ or the T of MSP/energy; ``logit_scale`` (MCM
    only, else None) turns logits into cosines; ``threshold`` accepted
    ``>= tpr`` of ``n_validation`` ID validation images of a
    ``num_classes``-class head. Build one with :meth:`fit`; save it with
    :meth:`to_dict` (JSON-able) and read it back with :meth:`from_dict`,
    which refuses any malformed or out-of-range field.

    Example:
        >>> import torch
        >>> val = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)) * 3
        >>> detector = OODDetector.fit(val, "energy")
        >>> OODDetector.from_dict(detector.to_dict()) == detector
        True
        >>> round(float(1 - detector.is_ood(val).double().mean()), 2)  # share of validation images accepted
        0.96
    """

    score: str
    temperature: float
    threshold: float
    tpr: float
    n_validation: int
    num_classes: int
    logit_scale: float | None = None

    @classmethod
    def fit(
        cls,
        val_logits: Any,
        score: str = "mcm",
        tpr: float = DEFAULT_TPR,
        temperature: float = 1.0,
        logit_scale: float | None = None,
    ) -> "OODDetector":
        """Score the ID validation logits and take :func:`threshold_for_tpr` of them.

        ``val_logits`` are the head's logits on held-out ID images (not the
        training shots, whose scores are optimistically high).
        """
        tpr = _check_tpr(tpr)
        scores = ood_scores(val_logits, score, temperature=temperature, logit_scale=logit_scale)
        threshold = threshold_for_tpr(scores, tpr)
        num_classes = int(torch.as_tensor(val_logits).shape[1])
        scale = None if logit_scale is None else float(logit_scale)
        return cls(score, float(temperature), threshold, tpr, int(scores.numel()), num_classes, scale)

    def scores(self, logits: Any) -> torch.Tensor:
        """This detector's score of each row of ``[N, num_classes]`` logits (float64, CPU)."""
        tensor = torch.as_tensor(logits)
        # Another head's logits would be scored without complaint, against a threshold that means nothing for them.
        if tensor.ndim == 2 and tensor.shape[1] != self.num_classes:
            raise ConfigError(
                f"the OOD detector was fitted on {self.num_classes}-class logits; got shape {tuple(tensor.shape)}"
            )
        return ood_scores(tensor, self.score, temperature=self.temperature, logit_scale=self.logit_scale)

    def is_ood(self, logits: Any) -> torch.Tensor:
        """Boolean ``[N]`` (CPU): True where the score is below the threshold (or not finite)."""
        return ~(self.scores(logits) >= self.threshold)

    @property
    def tpr_standard_error(self) -> float:
        """Sampling error of the share of new ID images accepted: ``sqrt(tpr (1 − tpr) / n_validation)``."""
        return tpr_standard_error(self.tpr, self.n_validation)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (every number finite), readable by :meth:`from_dict`."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "score": self.score,
            "temperature": self.temperature,
            "logit_scale": self.logit_scale,
            "threshold": self.threshold,
            "tpr": self.tpr,
            "n_validation": self.n_validation,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OODDetector":
        """Read a :meth:`to_dict` record, checking every field; anything malformed is a one-line ArtifactError."""
        if not isinstance(data, Mapping):
            raise ArtifactError(f"OOD detector: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in _FIELDS if k not in data]
        unknown = sorted(str(k) for k in data if k not in _FIELDS)
        if missing or unknown:
            raise ArtifactError(f"OOD detector: missing fields {missing}, unknown fields {unknown}")
        if data["format"] != FORMAT or type(data["version"]) is not int or data["version"] != VERSION:
            raise ArtifactError(
                f"OOD detector: not a {FORMAT} version {VERSION} record "
                f"(format {data['format']!r}, version {data['version']!r})"
            )
        score = data["score"]
        if score not in SCORES:
            raise _bad("score", f"one of {', '.join(SCORES)}", score)
        return cls(
            score=score,
            temperature=_finite(data, "temperature", positive=True),
            threshold=_threshold(data, score),
            tpr=_finite(data, "tpr", lo=0.0, hi=1.0),
            n_validation=_integer(data, "n_validation", MIN_VALIDATION),
            num_classes=_integer(data, "num_classes", 2),
            logit_scale=_logit_scale(data, score),
        )


def _finite(
    data: Mapping[str, Any], key: str, positive: bool = False, lo: float | None = None, hi: float | None = None
) -> float:
    value = data[key]
    ok = _is_number(value) and math.isfinite(value)
    ok = ok and (not positive or value > 0) and (lo is None or value > lo) and (hi is None or value < hi)
    if not ok:
        expected = (
            "a finite number" + (" > 0" if positive else "") + (f" in ({lo:g}, {hi:g})" if lo is not None else "")
        )
        raise _bad(key, expected, value)
    return float(value)


def _integer(data: Mapping[str, Any], key: str, lo: int) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise _bad(key, f"an integer >= {lo}", value)
    return value


def _logit_scale(data: Mapping[str, Any], score: str) -> float | None:
    if score == "mcm":
        return _finite(data, "logit_scale", positive=True)
    if data["logit_scale"] is not None:
        raise _bad("logit_scale", f"null for the {score} score (only mcm uses it)", data["logit_scale"])
    return None


def _threshold(data: Mapping[str, Any], score: str) -> float:
    value = _finite(data, "threshold")
    classes = _integer(data, "num_classes", 2)
    # A maximum softmax lies in [1/C, 1]: a threshold outside can accept everything or nothing.
    if score in ("mcm", "msp") and not 1 / classes - _PROBABILITY_SLACK <= value <= 1 + _PROBABILITY_SLACK:
        raise _bad("threshold", f"a probability in [1/{classes}, 1] for the {score} score", value)
    return value


__all__ = [
    "DEFAULT_TPR",
    "MIN_VALIDATION",
    "SCORES",
    "OODDetector",
    "auroc",
    "energy_score",
    "fpr_at_tpr",
    "mcm_score",
    "msp_score",
    "ood_scores",
    "threshold_for_tpr",
    "tpr_standard_error",
]
