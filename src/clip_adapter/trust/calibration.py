"""Calibration: how far a head's confidence is from its accuracy, and post-hoc fixes that keep its predictions.

Metrics (on logits, or probabilities with ``inputs="probs"``, plus integer labels), all fractions in [0, 1]
unless said otherwise:

* :func:`expected_calibration_error` — top-label ECE. Confidence is the max softmax probability. The
  [0, 1] range is cut into ``n_bins`` equal-width bins (15 by default, as in Guo et al., 2017 and the
  CLIP-calibration papers that follow them); a bin is ``(lo, hi]``, closed on the right, and the first bin
  also holds a confidence of exactly 0. ECE = Σ_b (n_b / N) · |accuracy_b − mean confidence_b|.
* :func:`negative_log_likelihood` — mean cross-entropy, natural log (nats).
* :func:`brier_score` — the original multi-class Brier score: mean over samples of
  Σ_c (p_c − 1[c = y])², in [0, 2] (not divided by the number of classes).
* :func:`aurc` — area under the risk–coverage curve of selective classification by confidence.
* :func:`reliability_diagram` — per-bin count, mean confidence and accuracy, and a confidence histogram.
* :func:`calibration_report` — all of the above as a JSON-able dict.

Calibrators map logits to logits and never change a prediction (up to float rounding):

* :class:`TemperatureScaling` — ``logits / T`` with ``T`` fitted by NLL on held-out logits.
* :class:`ZSNorm` — per sample, rescale the adapted logits to the zero-shot logits' range
  (Murugesan et al., ECCV 2024, "Robust calibration of large vision-language adapters").
* :class:`Calibration` — an ordered list of such steps, fitted in order (``zs-norm`` then ``temperature``
  by default), saved as plain JSON (``to_dict``/``from_dict``, never pickle).

:func:`logit_range_penalty` is the same paper's idea as a training loss: keep an adapter's per-sample logit
range within the zero-shot one.

Example:
    >>> import torch
    >>> logits, labels = torch.tensor([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0]]), torch.tensor([0, 1, 1])
    >>> round(calibration_report(logits, labels)["ece"], 4)
    0.3153
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Sequence, Union

import torch
import torch.nn.functional as F

from ..core.errors import ArtifactError, ConfigError

DEFAULT_BINS = 15
T_MIN, T_MAX = 0.01, 100.0  # the temperature is clamped here: beyond, logits are all-flat or all-one-hot
MIN_FIT_SAMPLES = 2  # one image cannot tell over-confidence from a lucky answer
PROB_CLAMP = 1e-12  # NLL from probabilities: a zero probability on the true class costs -log(1e-12), not inf
PROB_SUM_TOLERANCE = 1e-3  # probability rows may sum to 1 within this (float32 softmax outputs do)
FORMAT = "clip-adapter/calibration"
VERSION = 1

Inputs = Literal["logits", "probs"]


# ---------------------------------------------------------------------------------------------- inputs


def _short(value: Any) -> str:
    """A value for a one-line message: its repr, cut short (a tensor or a long list must not flood it)."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _as_scores(scores: Any, where: str) -> torch.Tensor:
    """A ``[N, C]`` finite floating tensor, or a one-line ConfigError naming ``where``."""
    tensor = torch.as_tensor(scores)
    if tensor.dim() != 2:
        raise ConfigError(f"{where}: expected a [samples, classes] tensor, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ConfigError(f"{where}: expected floating-point scores, got {tensor.dtype}")
    if tensor.shape[1] < 1:
        raise ConfigError(f"{where}: needs at least one class, got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).any(dim=1).nonzero()[0])
        raise ConfigError(f"{where}: non-finite value (nan or inf) in row {bad}")
    return tensor


def _as_labels(labels: Any, num_samples: int, num_classes: int, where: str) -> torch.Tensor:
    """``[N]`` class indices in ``[0, C)`` as int64 on the CPU, or a one-line ConfigError."""
    tensor = torch.as_tensor(labels)
    if tensor.dim() != 1 or len(tensor) != num_samples:
        raise ConfigError(f"{where}: expected {num_samples} labels (one per row), got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ConfigError(f"{where}: labels must be integer class indices, got {tensor.dtype}")
    tensor = tensor.detach().to("cpu", torch.int64)
    if num_samples and (int(tensor.min()) < 0 or int(tensor.max()) >= num_classes):
        bad = int(tensor.min()) if int(tensor.min()) < 0 else int(tensor.max())
        raise ConfigError(f"{where}: label {bad} is out of range for {num_classes} classes (0..{num_classes - 1})")
    return tensor


def _check_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {_short(n_bins)}")
    return n_bins


@dataclass(frozen=True)
class _Scored:
    """Probabilities, log-probabilities and labels, float64 on the CPU: the metrics' one input form."""

    probs: torch.Tensor
    log_probs: torch.Tensor
    labels: torch.Tensor

    @property
    def confidence(self) -> torch.Tensor:
        return self.probs.max(dim=1).values

    @property
    def correct(self) -> torch.Tensor:
        # argmax ties go to the lowest class index, as in torch.argmax and torchmetrics
        return self.probs.argmax(dim=1) == self.labels


def _prepare(scores: Any, labels: Any, inputs: Inputs, where: str) -> _Scored:
    """Validate and convert once; float64 so binning and AURC ties do not depend on float32 rounding."""
    if inputs not in ("logits", "probs"):
        raise ConfigError(f"{where}: inputs must be 'logits' or 'probs', got {_short(inputs)}")
    tensor = _as_scores(scores, where).detach().to("cpu", torch.float64)
    target = _as_labels(labels, tensor.shape[0], tensor.shape[1], where)
    if inputs == "logits":
        log_probs = F.log_softmax(tensor, dim=1)  # exact NLL even where softmax underflows to 0
        return _Scored(log_probs.exp(), log_probs, target)
    if bool((tensor < 0).any()) or bool((tensor > 1).any()):
        raise ConfigError(f"{where}: probabilities must lie in [0, 1] (pass inputs='logits' for logits)")
    sums = tensor.sum(dim=1)
    if len(sums) and float((sums - 1).abs().max()) > PROB_SUM_TOLERANCE:
        row = int((sums - 1).abs().argmax())
        raise ConfigError(f"{where}: probabilities in row {row} sum to {float(sums[row]):.6g}, not 1")
    return _Scored(tensor, tensor.clamp_min(PROB_CLAMP).log(), target)


def _nonempty(scored: _Scored, where: str) -> _Scored:
    if len(scored.labels) == 0:
        raise ConfigError(f"{where}: no samples")
    return scored


# ---------------------------------------------------------------------------------------------- metrics


def bin_edges(n_bins: int = DEFAULT_BINS) -> torch.Tensor:
    """The ``n_bins + 1`` equal-width bin edges over [0, 1] (float64).

    Example:
        >>> bin_edges(4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    return torch.linspace(0.0, 1.0, _check_bins(n_bins) + 1, dtype=torch.float64)


def _bin_index(confidence: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin of each confidence: ``(lo, hi]``, with 0 put in the first bin.

    ``bucketize(right=False)`` returns ``i`` with ``edges[i-1] < x <= edges[i]``, i.e. right-closed bins;
    a confidence of exactly 1.0 (float softmax saturates at logit gaps of ~17 in float32) lands in the last
    bin, not in an extra one.
    """
    index = torch.bucketize(confidence, bin_edges(n_bins), right=False) - 1
    return index.clamp(0, n_bins - 1)


def _bin_sums(scored: _Scored, n_bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per bin: sample count, sum of confidences, number correct (float64, length ``n_bins``)."""
    confidence = scored.confidence
    index = _bin_index(confidence, n_bins)
    zeros = torch.zeros(n_bins, dtype=torch.float64)
    counts = zeros.scatter_add(0, index, torch.ones_like(confidence))
    conf_sum = zeros.scatter_add(0, index, confidence)
    correct_sum = zeros.scatter_add(0, index, scored.correct.to(torch.float64))
    return counts, conf_sum, correct_sum


def expected_calibration_error(
    scores: Any, labels: Any, n_bins: int = DEFAULT_BINS, *, inputs: Inputs = "logits"
) -> float:
    """Top-label expected calibration error in [0, 1], ``n_bins`` equal-width bins ``(lo, hi]``.

    ECE = Σ_b (n_b / N) · |accuracy_b − mean confidence_b| with confidence the max softmax probability.
    Equals torchmetrics' ``MulticlassCalibrationError(n_bins=n_bins, norm="l1")`` except for confidences
    exactly on a bin edge: torchmetrics' bins are ``[lo, hi)`` and it counts a confidence of exactly 1.0 in
    an extra bin of its own (Lightning-AI/torchmetrics#3510); here edges belong to the bin below, as in
    Guo et al.'s reference code.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])  # right at 0.9, wrong at 0.6: (0.1 + 0.6) / 2
        >>> round(expected_calibration_error(probs, torch.tensor([0, 1]), inputs="probs"), 6)
        0.35
    """
    scored = _nonempty(_prepare(scores, labels, inputs, "ece"), "ece")
    counts, conf_sum, correct_sum = _bin_sums(scored, _check_bins(n_bins))
    # Σ_b (n_b/N)|acc_b − conf_b| = Σ_b |correct_b − Σconf_b| / N: no division by empty bins
    return float((correct_sum - conf_sum).abs().sum() / counts.sum())


def maximum_calibration_error(
    scores: Any, labels: Any, n_bins: int = DEFAULT_BINS, *, inputs: Inputs = "logits"
) -> float:
    """Largest |accuracy − mean confidence| over the non-empty bins (MCE), in [0, 1].

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
        >>> round(maximum_calibration_error(probs, torch.tensor([0, 1]), inputs="probs"), 6)
        0.6
    """
    scored = _nonempty(_prepare(scores, labels, inputs, "mce"), "mce")
    counts, conf_sum, correct_sum = _bin_sums(scored, _check_bins(n_bins))
    filled = counts > 0
    return float(((correct_sum[filled] - conf_sum[filled]) / counts[filled]).abs().max())


def negative_log_likelihood(scores: Any, labels: Any, *, inputs: Inputs = "logits") -> float:
    """Mean cross-entropy in nats; from probabilities, each is clamped at 1e-12 first (finite, JSON-able).

    Example:
        >>> round(negative_log_likelihood(torch.tensor([[0.0, 0.0]]), torch.tensor([1])), 4)  # log 2
        0.6931
    """
    scored = _nonempty(_prepare(scores, labels, inputs, "nll"), "nll")
    return float(F.nll_loss(scored.log_probs, scored.labels))


def brier_score(scores: Any, labels: Any, *, inputs: Inputs = "logits") -> float:
    """Multi-class Brier score: mean over samples of Σ_c (p_c − onehot_c)², in [0, 2].

    This is Brier's (1950) original form, as in the calibration papers' tables; some libraries divide it
    by the number of classes, or score only the top class — not here.

    Example:
        >>> brier_score(torch.tensor([[0.75, 0.25]]), torch.tensor([0]), inputs="probs")
        0.125
    """
    scored = _nonempty(_prepare(scores, labels, inputs, "brier"), "brier")
    onehot = F.one_hot(scored.labels, scored.probs.shape[1]).to(torch.float64)
    return float(((scored.probs - onehot) ** 2).sum(dim=1).mean())


def aurc(scores: Any, labels: Any, *, inputs: Inputs = "logits") -> float:
    """Area under the risk–coverage curve (fraction in [0, 1]; lower is better).

    Samples are ranked by confidence, highest first; the risk at coverage k/N is the error rate among the
    top k; AURC is the mean of the N risks. Tied confidences cannot be ranked by the classifier, so a tie
    group counts at its *expected* risk over all orders of the group (each of its samples carries the
    group's mean error): the result does not depend on the order of the samples.

    Example:
        >>> aurc(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]), inputs="probs")  # (0/1 + 1/2) / 2
        0.25
    """
    scored = _nonempty(_prepare(scores, labels, inputs, "aurc"), "aurc")
    return float(_aurc(scored.confidence, scored.correct))


def _aurc(confidence: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(confidence, descending=True, stable=True)
    errors = (~correct[order]).to(torch.float64)
    _, group, sizes = torch.unique_consecutive(confidence[order], return_inverse=True, return_counts=True)
    # E[errors among the first m of a randomly ordered tie group] = m · (group errors / group size)
    group_rate = torch.zeros(len(sizes), dtype=torch.float64).scatter_add(0, group, errors) / sizes
    expected_errors = group_rate[group].cumsum(0)
    coverage_counts = torch.arange(1, len(errors) + 1, dtype=torch.float64)
    return (expected_errors / coverage_counts).mean()


def reliability_diagram(
    scores: Any, labels: Any, n_bins: int = DEFAULT_BINS, *, inputs: Inputs = "logits"
) -> dict[str, Any]:
    """What a reliability diagram and its confidence histogram plot, as JSON-able lists.

    Returns ``bin_edges`` (``n_bins + 1`` floats; bins ``(lo, hi]``, the first also holding 0), and per bin
    ``count`` (int), ``fraction`` (count / N: the confidence histogram), ``mean_confidence`` and
    ``accuracy`` (fractions; ``None`` for an empty bin).

    Example:
        >>> d = reliability_diagram(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]), 2, inputs="probs")
        >>> d["count"], d["accuracy"], d["mean_confidence"]
        ([0, 2], [None, 0.5], [None, 0.75])
    """
    scored = _prepare(scores, labels, inputs, "reliability diagram")
    return _diagram(scored, _check_bins(n_bins))


def _diagram(scored: _Scored, n_bins: int) -> dict[str, Any]:
    counts, conf_sum, correct_sum = _bin_sums(scored, n_bins)
    total = float(counts.sum())

    def per_bin(sums: torch.Tensor) -> list[float | None]:
        return [float(s / c) if c > 0 else None for s, c in zip(sums, counts)]

    return {
        "bin_edges": bin_edges(n_bins).tolist(),
        "count": [int(c) for c in counts],
        "fraction": [float(c) / total if total else 0.0 for c in counts],
        "mean_confidence": per_bin(conf_sum),
        "accuracy": per_bin(correct_sum),
    }


def calibration_report(
    scores: Any, labels: Any, n_bins: int = DEFAULT_BINS, *, inputs: Inputs = "logits"
) -> dict[str, Any]:
    """Every calibration measure of one prediction set, as plain floats, ints and lists (JSON-able).

    Keys: ``num_samples``, ``num_classes``, ``n_bins``; fractions in [0, 1]: ``accuracy``,
    ``mean_confidence``, ``ece``, ``mce``, ``aurc``; ``nll`` (nats); ``brier`` (in [0, 2]);
    ``reliability`` (see :func:`reliability_diagram`; its ``fraction`` is the confidence histogram).
    With no samples the scalars are ``None``.

    Example:
        >>> r = calibration_report(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        >>> r["accuracy"], round(r["ece"], 3), round(r["brier"], 3), r["aurc"]
        (0.5, 0.425, 0.549, 0.25)
    """
    n_bins = _check_bins(n_bins)
    scored = _prepare(scores, labels, inputs, "calibration report")
    report: dict[str, Any] = {
        "num_samples": len(scored.labels),
        "num_classes": int(scored.probs.shape[1]),
        "n_bins": n_bins,
    }
    names = ("accuracy", "mean_confidence", "ece", "mce", "nll", "brier", "aurc")
    if len(scored.labels) == 0:
        return {**report, **dict.fromkeys(names), "reliability": _diagram(scored, n_bins)}
    counts, conf_sum, correct_sum = _bin_sums(scored, n_bins)
    filled = counts > 0
    onehot = F.one_hot(scored.labels, scored.probs.shape[1]).to(torch.float64)
    values = {
        "accuracy": scored.correct.to(torch.float64).mean(),
        "mean_confidence": scored.confidence.mean(),
        "ece": (correct_sum - conf_sum).abs().sum() / counts.sum(),
        "mce": ((correct_sum[filled] - conf_sum[filled]) / counts[filled]).abs().max(),
        "nll": F.nll_loss(scored.log_probs, scored.labels),
        "brier": ((scored.probs - onehot) ** 2).sum(dim=1).mean(),
        "aurc": _aurc(scored.confidence, scored.correct),
    }
    return {**report, **{name: float(values[name]) for name in names}, "reliability": _diagram(scored, n_bins)}


# ---------------------------------------------------------------------------------------------- calibrators


def _fit_inputs(logits: Any, labels: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out logits (float64, CPU) and labels for fitting, or a one-line ConfigError."""
    tensor = _as_scores(logits, where).detach().to("cpu", torch.float64)
    target = _as_labels(labels, tensor.shape[0], tensor.shape[1], where)
    if len(target) < MIN_FIT_SAMPLES:
        raise ConfigError(f"{where}: needs at least {MIN_FIT_SAMPLES} held-out samples, got {len(target)}")
    return tensor, target


def _check_temperature(value: Any) -> str | None:
    """Why ``value`` is not a usable temperature, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"temperature must be a number, got {_short(value)}"
    if not math.isfinite(value) or not T_MIN <= value <= T_MAX:
        return f"temperature must be a finite number in [{T_MIN}, {T_MAX}], got {_short(value)}"
    return None


def _nll_slope(scores: torch.Tensor, true_logit: torch.Tensor, beta: float) -> tuple[float, float]:
    """First and second derivative in ``β = 1/T`` of the mean NLL of ``softmax(β · scores)``.

    NLL(β) = mean(logsumexp(β z) − β z_y), so NLL' = mean(E_p[z] − z_y) and NLL'' = mean(Var_p[z]) ≥ 0.
    """
    probs = torch.softmax(beta * scores, dim=1)
    mean = (probs * scores).sum(dim=1)
    variance = (probs * (scores - mean[:, None]) ** 2).sum(dim=1)  # centred: no cancellation
    return float((mean - true_logit).mean()), float(variance.mean())


def _fit_inverse_temperature(scores: torch.Tensor, target: torch.Tensor) -> float:
    """The NLL-minimising ``β = 1/T`` in ``[1/T_MAX, 1/T_MIN]``, by Newton's method kept inside a bracket.

    The NLL is convex in β, so its slope is non-decreasing: the slope's sign at each iterate shrinks the
    bracket around the minimum, and a Newton step that would leave it is replaced by a (geometric) bisection.
    Deterministic, and about ten evaluations where a derivative-free search needs fifty.
    """
    true_logit = scores.gather(1, target[:, None]).squeeze(1)
    low, high = 1.0 / T_MAX, 1.0 / T_MIN
    if _nll_slope(scores, true_logit, low)[0] >= 0:
        return low  # even the softest allowed logits are not soft enough
    if _nll_slope(scores, true_logit, high)[0] <= 0:
        return high  # e.g. every sample right with a margin: the NLL falls as T → 0
    beta = 1.0
    for _ in range(200):
        slope, curvature = _nll_slope(scores, true_logit, beta)
        if slope == 0:
            return beta
        low, high = (low, beta) if slope > 0 else (beta, high)
        step = beta - slope / curvature if curvature > 0 else math.nan
        new = step if low < step < high else math.sqrt(low * high)
        if abs(new - beta) <= 1e-12 * beta:
            return new
        beta = new
    return beta


@dataclass(frozen=True)
class TemperatureScaling:
    """``logits / T`` with one temperature ``T`` in [0.01, 100] fitted by NLL (Guo et al., 2017).

    ``T > 1`` softens over-confident logits; the argmax never changes. Fitting minimises the mean NLL over
    ``1/T`` in [1/100, 1/0.01] (float64): the NLL is convex in ``1/T``, so a bracketed Newton search finds
    the optimum, or the bound it lies beyond, deterministically.

    Example:
        >>> TemperatureScaling(2.0).apply(torch.tensor([[4.0, 0.0]])).tolist()
        [[2.0, 0.0]]
    """

    temperature: float = 1.0
    kind: ClassVar[str] = "temperature"

    def __post_init__(self) -> None:
        problem = _check_temperature(self.temperature)
        if problem:
            raise ConfigError(problem)

    @classmethod
    def fit(cls, logits: Any, labels: Any, zero_shot_logits: Any = None) -> "TemperatureScaling":
        """The NLL-optimal temperature on held-out ``logits`` and ``labels`` (``zero_shot_logits`` unused).

        Rows with all-equal logits carry no information about ``T``; if every row is so, ``T = 1``.
        """
        scores, target = _fit_inputs(logits, labels, "temperature scaling fit")
        if bool((scores.amax(dim=1) == scores.amin(dim=1)).all()):
            return cls(1.0)  # the NLL is flat in T: keep the logits as they are

        beta = _fit_inverse_temperature(scores, target)
        return cls(min(max(1.0 / beta, T_MIN), T_MAX))  # 1 / (1 / 0.01) may round just outside the range

    def apply(self, logits: torch.Tensor, zero_shot_logits: torch.Tensor | None = None) -> torch.Tensor:
        """``logits / T`` (any shape, dtype and device kept; differentiable)."""
        return logits / self.temperature

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "temperature": float(self.temperature)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "temperature step") -> "TemperatureScaling":
        """Read back :meth:`to_dict`'s output; ArtifactError (one line) for anything else."""
        _check_step_keys(data, cls.kind, {"temperature"}, where)
        problem = _check_temperature(data["temperature"])
        if problem:
            raise ArtifactError(f"{where}: {problem}")
        return cls(float(data["temperature"]))


def zs_norm(logits: torch.Tensor, zero_shot_logits: torch.Tensor) -> torch.Tensor:
    """Per sample, map the logits' range [min z, max z] affinely onto the zero-shot range [min z0, max z0].

    ``z' = (z − min z) / (max z − min z) · (max z0 − min z0) + min z0`` over the last (class) dimension —
    ZS-Norm of Murugesan et al. (ECCV 2024). Differentiable, so it also serves as a training-time
    normalisation. A row with ``max z == min z`` (no preference at all) becomes the mean of its zero-shot
    row, a constant: it stays uniform after softmax rather than borrowing the zero-shot prediction. The
    argmax is kept (a positive affine map) unless the zero-shot row itself is constant.

    Example:
        >>> zs_norm(torch.tensor([[10.0, 0.0, 5.0]]), torch.tensor([[1.0, 3.0, 2.0]])).tolist()
        [[3.0, 1.0, 2.0]]
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(zero_shot_logits, torch.Tensor):
        raise ConfigError("zs-norm: logits and zero-shot logits must be tensors")
    if logits.shape != zero_shot_logits.shape or logits.dim() < 1:
        raise ConfigError(
            f"zs-norm: logits {tuple(logits.shape)} and zero-shot logits {tuple(zero_shot_logits.shape)} "
            "must have the same [samples, classes] shape"
        )
    low, high = logits.amin(dim=-1, keepdim=True), logits.amax(dim=-1, keepdim=True)
    zs_low, zs_high = zero_shot_logits.amin(dim=-1, keepdim=True), zero_shot_logits.amax(dim=-1, keepdim=True)
    spread = high - low
    flat = spread == 0
    # a safe denominator keeps both the value and the gradient of flat rows finite (torch.where's other branch)
    scaled = (logits - low) / torch.where(flat, torch.ones_like(spread), spread) * (zs_high - zs_low) + zs_low
    return torch.where(flat, zero_shot_logits.mean(dim=-1, keepdim=True).expand_as(logits), scaled)


@dataclass(frozen=True)
class ZSNorm:
    """ZS-Norm as a post-hoc step: :func:`zs_norm` with the zero-shot logits of the same images. Nothing to fit.

    Example:
        >>> ZSNorm().apply(torch.tensor([[8.0, 0.0, 2.0]]), torch.tensor([[0.5, 0.25, 0.0]])).tolist()
        [[0.5, 0.0, 0.125]]
    """

    kind: ClassVar[str] = "zs-norm"

    @classmethod
    def fit(cls, logits: Any = None, labels: Any = None, zero_shot_logits: Any = None) -> "ZSNorm":
        """ZS-Norm has no parameters; the signature matches the other steps'."""
        return cls()

    def apply(self, logits: torch.Tensor, zero_shot_logits: torch.Tensor | None = None) -> torch.Tensor:
        if zero_shot_logits is None:
            raise ConfigError("zs-norm: needs the zero-shot logits of the same images (zero_shot_logits=...)")
        return zs_norm(logits, zero_shot_logits)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, data: Any, where: str = "zs-norm step") -> "ZSNorm":
        _check_step_keys(data, cls.kind, set(), where)
        return cls()


Step = Union[TemperatureScaling, ZSNorm]
STEPS: dict[str, type[TemperatureScaling] | type[ZSNorm]] = {
    TemperatureScaling.kind: TemperatureScaling,
    ZSNorm.kind: ZSNorm,
}


def _check_step_keys(data: Any, kind: str, fields: set[str], where: str) -> None:
    """A step record must be exactly ``{"kind": kind, **fields}``: an unknown key could change its meaning."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("kind") != kind:
        raise ArtifactError(f"{where}: expected kind {kind!r}, got {_short(data.get('kind'))}")
    missing, unknown = sorted(fields - set(data)), sorted(set(data) - fields - {"kind"})
    if missing:
        raise ArtifactError(f"{where}: missing {missing[0]!r}")
    if unknown:
        raise ArtifactError(f"{where}: unknown key {_short(unknown[0])}")


@dataclass(frozen=True)
class Calibration:
    """Calibration steps applied in order, e.g. ZS-Norm then a temperature fitted on ZS-normalised logits.

    Example:
        >>> logits, zs = torch.tensor([[9.0, 1.0], [1.0, 5.0]]), torch.tensor([[0.3, 0.2], [0.1, 0.4]])
        >>> cal = Calibration.fit(logits, torch.tensor([0, 0]), zero_shot_logits=zs)
        >>> [step.kind for step in cal.steps], Calibration.from_dict(cal.to_dict()) == cal
        (['zs-norm', 'temperature'], True)
        >>> cal.apply(logits, zs).argmax(dim=1).tolist()
        [0, 1]
    """

    steps: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        for step in self.steps:
            if not isinstance(step, (TemperatureScaling, ZSNorm)):
                raise ConfigError(f"calibration: unknown step {_short(step)}; steps: {', '.join(STEPS)}")

    @property
    def needs_zero_shot(self) -> bool:
        """Whether :meth:`apply` needs the zero-shot logits (a ZS-Norm step)."""
        return any(isinstance(step, ZSNorm) for step in self.steps)

    @classmethod
    def fit(
        cls,
        logits: Any,
        labels: Any,
        steps: Sequence[str] = ("zs-norm", "temperature"),
        zero_shot_logits: Any = None,
    ) -> "Calibration":
        """Fit ``steps`` (names from :data:`STEPS`) in order on held-out data, each on the previous one's output.

        ConfigError (one line) for an unknown step, too few samples, labels out of range, mismatched shapes
        or non-finite logits; ``zero_shot_logits`` is required when ``"zs-norm"`` is a step.
        """
        if isinstance(steps, str):
            steps = (steps,)  # "temperature" alone, not its letters
        for name in steps:
            if name not in STEPS:
                raise ConfigError(f"calibration: unknown step {_short(name)}; steps: {', '.join(STEPS)}")
        current, target = _fit_inputs(logits, labels, "calibration fit")
        zero_shot = None
        if "zs-norm" in steps:
            if zero_shot_logits is None:
                raise ConfigError("calibration fit: the zs-norm step needs the zero-shot logits of the same images")
            zero_shot = (
                _as_scores(zero_shot_logits, "calibration fit: zero-shot logits").detach().to("cpu", torch.float64)
            )
            if zero_shot.shape != current.shape:
                raise ConfigError(
                    f"calibration fit: zero-shot logits {tuple(zero_shot.shape)} and logits {tuple(current.shape)} "
                    "must have the same shape"
                )
        fitted: list[Step] = []
        for name in steps:
            step = STEPS[name].fit(current, target, zero_shot)
            current = step.apply(current, zero_shot)
            fitted.append(step)
        return cls(tuple(fitted))

    def apply(self, logits: torch.Tensor, zero_shot_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The calibrated logits (same shape); ``zero_shot_logits`` of the same images when a step needs them."""
        if self.needs_zero_shot and zero_shot_logits is None:
            raise ConfigError("calibration: the zs-norm step needs the zero-shot logits of the same images")
        for step in self.steps:
            logits = step.apply(logits, zero_shot_logits)
        return logits

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``{"format", "version", "steps": [{"kind": ..., ...}, ...]}``."""
        return {"format": FORMAT, "version": VERSION, "steps": [step.to_dict() for step in self.steps]}

    @classmethod
    def from_dict(cls, data: Any, where: str = "calibration") -> "Calibration":
        """Read back :meth:`to_dict`'s output, refusing (ArtifactError, one line) anything it would not write."""
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"format", "version", "steps"})
        if unknown:
            raise ArtifactError(f"{where}: unknown key {_short(unknown[0])}")
        if data.get("format") != FORMAT:
            raise ArtifactError(f"{where}: format must be {FORMAT!r}, got {_short(data.get('format'))}")
        if data.get("version") != VERSION or isinstance(data.get("version"), bool):
            raise ArtifactError(f"{where}: unsupported version {_short(data.get('version'))} (this reads {VERSION})")
        steps = data.get("steps")
        if not isinstance(steps, list):
            raise ArtifactError(f"{where}: steps must be a list, got {type(steps).__name__}")
        parsed: list[Step] = []
        for i, step in enumerate(steps, 1):
            kind = step.get("kind") if isinstance(step, dict) else None
            if kind not in STEPS:
                raise ArtifactError(f"{where}: step {i} has unknown kind {_short(kind)}; kinds: {', '.join(STEPS)}")
            parsed.append(STEPS[kind].from_dict(step, where=f"{where}: step {i} ({kind})"))
        return cls(tuple(parsed))


# ---------------------------------------------------------------------------------------------- training-time


def logit_range_penalty(adapted_logits: torch.Tensor, zero_shot_logits: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``relu(range(adapted) − range(zero-shot))²``, ``range = max − min`` over classes.

    Follows Murugesan et al. (ECCV 2024): adapters miscalibrate because they inflate the per-sample logit
    range, so constraining it to the zero-shot range restores calibration. Only an *excess* range is
    penalised (a narrower range is left to the task loss); the squared hinge is differentiable, including at
    0, and is 0 when the ranges match. The zero-shot logits are a fixed reference: no gradient reaches them.
    An empty batch gives 0.

    Example:
        >>> logit_range_penalty(torch.tensor([[5.0, 1.0], [1.0, 2.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
        tensor(2.)
    """
    if adapted_logits.shape != zero_shot_logits.shape or adapted_logits.dim() < 1:
        raise ConfigError(
            f"logit range penalty: adapted logits {tuple(adapted_logits.shape)} and zero-shot logits "
            f"{tuple(zero_shot_logits.shape)} must have the same [samples, classes] shape"
        )
    if adapted_logits.numel() == 0:
        return adapted_logits.sum() * 0.0  # keeps dtype, device and the graph
    adapted_range = adapted_logits.amax(dim=-1) - adapted_logits.amin(dim=-1)
    reference = zero_shot_logits.detach()
    zs_range = reference.amax(dim=-1) - reference.amin(dim=-1)
    return F.relu(adapted_range - zs_range).pow(2).mean()


__all__ = [
    "DEFAULT_BINS",
    "STEPS",
    "T_MAX",
    "T_MIN",
    "Calibration",
    "TemperatureScaling",
    "ZSNorm",
    "aurc",
    "bin_edges",
    "brier_score",
    "calibration_report",
    "expected_calibration_error",
    "logit_range_penalty",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "reliability_diagram",
    "zs_norm",
]
