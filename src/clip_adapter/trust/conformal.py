"""Split conformal prediction sets for classifiers, from softmax probabilities.

A few-shot head answers with one class; conformal prediction turns its softmax
probabilities into a *set* of classes that contains the true class for at
least ``1 - alpha`` of exchangeable test images, whatever the head (Vovk et
al.; Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction",
2021). The recipe followed here is the one Conf-OT (Silva-Rodríguez et al.,
CVPR 2025, github.com/jusiro/CLIP-Conformal) applies to CLIP heads:

1. score each calibration image with a *nonconformity score* of its true class
   (higher = the class fits worse);
2. ``q_hat`` = the ``k``-th smallest calibration score, ``k = ⌈(n+1)(1-α)⌉``;
3. a test image's set is every class whose score is ``<= q_hat``.

Conventions, everywhere in this module:

* **Inputs are probabilities**, ``[N, C]`` rows summing to 1 (softmax of the
  head's logits, at whatever temperature it was calibrated with): logits are
  refused. Everything is computed in float64 on the CPU, so calibration and
  prediction scores are bit-identical for identical rows.
* **Ranks are 1-based** in descending probability; equal probabilities rank
  by class index (a stable sort), so every result is deterministic.
* **Scores** (:func:`class_scores`): ``"lac"`` = ``1 - p_y`` (Sadinle et al.
  2019, "THR" in torchcp); ``"aps"`` = the sorted mass down to and including
  ``y`` (Romano et al. 2020); ``"raps"`` = APS ``+ lam * max(0, rank_y -
  k_reg)`` (Angelopoulos et al., ICLR 2021). The randomised APS/RAPS scores
  subtract ``U * p_y``, ``U`` in [0, 1) one per image, a hash of the seed and
  the image's *noise key* (:func:`row_noise`; see "Randomness" below).
* **Randomised = exact, ties included.** A randomised predictor (any score,
  LAC too) ranks calibration pairs ``(s, U)`` lexicographically: ``q_hat``
  is the score of the ``k``-th pair and ``q_tie`` its ``U``, and a class
  whose score equals ``q_hat`` exactly is in the set when the image's
  ``U <= q_tie``. Without this, tied scores make coverage ``>= 1 - α`` and
  possibly far above it: a head whose probabilities saturate (exactly 1.0 in
  float64 for most images, as GDA's do on easy data) gives LAC scores that
  all tie at 0, and the sets over-cover (0.96 where 0.90 was asked). With
  the ``U`` tie-break coverage is ``1 - α`` up to ``1/(n+1)`` whatever the
  ties, at the price of some empty sets (an image the head is sure of may get
  none: exactness needs it).
* **The quantile** (:func:`conformal_quantile`) is the ``k``-th order
  statistic, ``k = ⌈(n+1)(1-α)⌉``, computed exactly on the decimal value of
  ``alpha`` as Python prints it (0.7 is 7/10), so no round-off moves ``k``
  (float arithmetic gives ``10 * (1 - 0.7) = 3.0000000000000004`` and
  ``k = 4``; the exact binary value of 0.3 gives ``⌈10 * 0.7000…01⌉ = 8``
  for ``n = 9`` instead of 7). In NumPy terms it is
  ``np.quantile(scores, k / n, method="inverted_cdf")`` (equivalently
  ``method="lower"``): the level ``k / n`` read off the empirical CDF with
  no interpolation; the conservatism is all in rounding ``(n+1)(1-α)`` *up*
  to ``k`` (the higher of the two order statistics around it). It is
  **not** ``method="higher"`` at that
  level: NumPy's "higher" rounds the index ``(n-1)·k/n`` up once more and
  picks the ``(k+1)``-th score whenever ``k < n`` (the recipe in the gentle
  introduction and in MAPIE; see MAPIE PR #973), one order statistic more
  conservative than the theorem needs. With continuous scores the coverage
  is then ``Beta(n+1-l, l)`` over calibration draws, ``l = ⌊(n+1)α⌋``: mean
  ``1 - l/(n+1)`` in ``[1-α, 1-α + 1/(n+1))``.
* **Too few calibration images** (``k > n``, i.e. ``n < 1/α - 1``) would make
  ``q_hat`` infinite and every set the full label set: refused with a
  :class:`~clip_adapter.core.errors.ConfigError` naming the size needed
  (:func:`min_calibration_size`). In the class-conditional (Mondrian) variant
  a class short of that size gets the trivial threshold ``+inf`` instead (it
  is in every set, so its coverage is 1) and a warning lists those classes.
* **Sets** (:func:`prediction_sets`) are ``{y : s(x, y) <= q_hat_y}`` as a
  ``[N, C]`` bool mask. For marginal APS/RAPS this is exactly the greedy
  construction "add classes in descending probability while the score stays
  ``<= q_hat``" (the score never decreases along that order); the
  non-randomised APS/RAPS set always holds at least the top class; the
  randomised one uses one ``U`` per image for every class, which is the RAPS
  paper's rule (keep the boundary class with probability ``V``) and may give
  an empty set — that is what makes its coverage exact rather than ``>=``.
  LAC sets may be empty (no class is confident enough).
* **Randomness** comes only from ``seed`` and each image's noise key
  (:func:`row_noise`), for calibration and prediction alike: an image gets the
  same set in any batch and in a call of its own (by batch position, every
  single-image call shared one ``U`` and coverage fell below 1 − α). The key
  is the image's probability row unless ``logits`` are given; the
  toolkit's commands pass the head's logits, because saturated probability
  rows are *identical* for many images (one-hot), and equal keys give equal
  ``U`` — no tie broken. The predictor records which (``noise``).

Example:
    >>> import torch
    >>> probs = torch.softmax(torch.randn(200, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    >>> labels = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(1)).squeeze(1)
    >>> predictor = calibrate(probs[:100], labels[:100], alpha=0.1, score="aps")
    >>> sets = predictor.predict_sets(probs[100:])
    >>> sets.shape, sets.dtype
    (torch.Size([100, 5]), torch.bool)
    >>> report = conformal_report(sets, labels[100:], alpha=0.1)
    >>> sorted(report)[:3]
    ['alpha', 'class_coverage', 'class_coverage_gap_max']
"""

from __future__ import annotations

import hashlib
import math
import numbers
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence, Union

import numpy as np
import torch

from ..core.config import SEED_MAX, check_seed
from ..core.errors import ArtifactError, ConfigError

__all__ = [
    "SCORES",
    "ConformalPredictor",
    "calibrate",
    "class_scores",
    "label_scores",
    "lac_scores",
    "aps_scores",
    "raps_scores",
    "conformal_quantile",
    "tied_quantile",
    "quantile_rank",
    "min_calibration_size",
    "class_conditional_quantiles",
    "prediction_sets",
    "row_noise",
    "conformal_report",
]

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[Any]]

SCORES = ("lac", "aps", "raps")
FORMAT = "clip_adapter.conformal"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # v1: no tie-break (q_tie) and U from the probabilities
NOISE_KEYS = ("probabilities", "logits")  # what a randomised predictor hashes for U
# Conf-OT's RAPS defaults (conformal/conformal_methods.py: lambda_raps=0.001, k_raps=1).
RAPS_LAMBDA, RAPS_K_REG = 0.001, 1
# Softmax rows sum to 1 up to float16/32 round-off; a row off by more than this
# is not a probability vector (most likely logits were passed).
SUM_TOLERANCE = 1e-2
MAX_LISTED = 20  # classes named in one warning or error line


# --------------------------------------------------------------------------- input checks


def _tensor(values: ArrayLike, what: str) -> torch.Tensor:
    """``values`` as a CPU tensor, or a one-line ConfigError when it is not numeric."""
    try:
        tensor = values.detach().cpu() if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{what}: not a numeric array ({type(values).__name__}: {exc})".splitlines()[0]) from None
    return tensor


def check_probs(probs: ArrayLike, what: str = "probabilities") -> torch.Tensor:
    """Validate softmax probabilities ``[N, C]``; return them as float64.

    Refused: not 2-D, fewer than 2 classes, not floating point, non-finite
    values, values outside ``[0, 1]``, rows not summing to 1 (logits).

    Example:
        >>> check_probs([[0.25, 0.75]]).dtype
        torch.float64
        >>> check_probs([[2.0, -1.0]])  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: probabilities: values outside [0, 1] (min -1, max 2):
        pass softmax probabilities, not logits
    """
    tensor = _tensor(probs, what)
    if tensor.ndim != 2:
        raise ConfigError(f"{what}: expected a 2-D [images, classes] array, got shape {tuple(tensor.shape)}")
    if tensor.shape[1] < 2:
        raise ConfigError(f"{what}: need at least 2 classes, got {tensor.shape[1]}")
    if not tensor.is_floating_point():
        raise ConfigError(f"{what}: expected floating-point probabilities, got dtype {tensor.dtype}")
    tensor = tensor.to(torch.float64)
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        row = int((~finite).any(dim=1).nonzero()[0])
        raise ConfigError(
            f"{what}: {int((~finite).sum())} non-finite value(s) (first in row {row}); "
            "conformal scores need finite probabilities"
        )
    if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1 + SUM_TOLERANCE):
        raise ConfigError(
            f"{what}: values outside [0, 1] (min {tensor.min().item():.4g}, max {tensor.max().item():.4g}): "
            "pass softmax probabilities, not logits"
        )
    off = (tensor.sum(dim=1) - 1).abs() > SUM_TOLERANCE
    if bool(off.any()):
        row = int(off.nonzero()[0])
        raise ConfigError(
            f"{what}: row {row} sums to {tensor[row].sum().item():.4g}, not 1: pass softmax probabilities, not logits"
        )
    return tensor


def check_labels(labels: ArrayLike, n: int, n_classes: int, what: str = "labels") -> torch.Tensor:
    """Validate integer class indices ``[N]`` in ``0..n_classes-1``; return them as int64.

    Example:
        >>> check_labels([0, 2], n=2, n_classes=3).tolist()
        [0, 2]
        >>> check_labels([0, 3], n=2, n_classes=3)
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: labels: 1 label(s) outside 0..2 (first: 3 at index 1)
    """
    tensor = _tensor(labels, what)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise ConfigError(f"{what}: expected integer class indices, got dtype {tensor.dtype}")
    if tensor.ndim != 1:
        raise ConfigError(f"{what}: expected a 1-D array of class indices, got shape {tuple(tensor.shape)}")
    if len(tensor) != n:
        raise ConfigError(f"{what}: {len(tensor)} label(s) for {n} probability row(s)")
    tensor = tensor.to(torch.int64)
    bad = (tensor < 0) | (tensor >= n_classes)
    if bool(bad.any()):
        index = int(bad.nonzero()[0])
        raise ConfigError(
            f"{what}: {int(bad.sum())} label(s) outside 0..{n_classes - 1} "
            f"(first: {int(tensor[index])} at index {index})"
        )
    return tensor


def check_noise_keys(keys: ArrayLike, n: int, what: str = "logits") -> torch.Tensor:
    """Validate the rows a randomised predictor hashes for ``U``: ``[n, D]``, finite, floating point.

    Example:
        >>> check_noise_keys([[1.0, 2.0]], n=1).dtype
        torch.float64
    """
    tensor = _tensor(keys, what)
    if tensor.ndim != 2 or len(tensor) != n or not tensor.is_floating_point():
        raise ConfigError(f"{what}: expected a floating-point [{n}, classes] array, got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ConfigError(f"{what}: non-finite value(s)")
    return tensor.to(torch.float64)


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in the open interval (0, 1).

    Example:
        >>> check_alpha(0.1)
        0.1
        >>> check_alpha(1.0)  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: alpha must be in (0, 1) (the miscoverage rate: 0.1 asks for 90% coverage),
        got 1.0
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ConfigError(f"alpha must be a number in (0, 1), got {alpha!r}")
    value = float(alpha)
    if not 0 < value < 1:  # NaN fails this too
        raise ConfigError(f"alpha must be in (0, 1) (the miscoverage rate: 0.1 asks for 90% coverage), got {alpha!r}")
    return value


def check_score_options(
    score: str, randomized: bool, lam: float | None, k_reg: int | None
) -> tuple[float | None, int | None]:
    """Validate the score name and RAPS parameters; return ``(lam, k_reg)`` (``None`` unless RAPS).

    RAPS defaults to Conf-OT's ``lam=0.001, k_reg=1`` when they are not given.

    Example:
        >>> check_score_options("raps", False, None, None)
        (0.001, 1)
        >>> check_score_options("aps", False, None, None)
        (None, None)
    """
    if score not in SCORES:
        raise ConfigError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    if not isinstance(randomized, bool):
        raise ConfigError(f"randomized must be True or False, got {randomized!r}")
    if score != "raps":
        if lam is not None or k_reg is not None:
            raise ConfigError(f"lam and k_reg apply to score 'raps' only, not {score!r}")
        return None, None
    lam = RAPS_LAMBDA if lam is None else lam
    k_reg = RAPS_K_REG if k_reg is None else k_reg
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not math.isfinite(lam) or lam < 0:
        raise ConfigError(f"RAPS lam must be a finite number >= 0, got {lam!r}")
    if isinstance(k_reg, bool) or not isinstance(k_reg, numbers.Integral) or k_reg < 0:
        raise ConfigError(f"RAPS k_reg must be an integer >= 0, got {k_reg!r}")
    return float(lam), int(k_reg)


# --------------------------------------------------------------------------- scores


def row_noise(probs: torch.Tensor, seed: int) -> torch.Tensor:
    """One ``U`` in [0, 1) per row, a hash of ``seed`` and the row's float64 bytes.

    A randomised set needs a ``U`` that no batch position decides: drawn by
    position, every single-image call (the API, each ``serve`` request) got the
    same ``U``, and coverage fell (0.83 at α = 0.1). Hashing the row gives each
    image its own ``U`` wherever it comes, and the same set every time. The
    score is then one fixed function of (image, label) for calibration and test
    alike, which is all split conformal's guarantee needs; the hash only breaks
    ties, so coverage stays exact rather than conservative.

    Example:
        >>> p = torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=torch.float64)
        >>> row_noise(p, 0)[1].item() == row_noise(p[1:], 0)[0].item()
        True
    """
    rows = probs.detach().to(torch.float64).cpu().contiguous().numpy()
    prefix = int(seed).to_bytes(8, "little")
    draws = [int.from_bytes(hashlib.sha256(prefix + row.tobytes()).digest()[:8], "little") / 2.0**64 for row in rows]
    return torch.tensor(draws, dtype=torch.float64)


def class_scores(
    probs: torch.Tensor,
    score: str,
    *,
    u: torch.Tensor | None = None,
    lam: float | None = None,
    k_reg: int | None = None,
) -> torch.Tensor:
    """Nonconformity score of every candidate class, ``[N, C]`` (higher = fits worse).

    ``probs`` must already be validated float64 (see :func:`check_probs`).
    ``u`` (``[N]``, one draw per image) makes APS/RAPS randomised: the score
    of ``y`` is then ``cumsum_y - u * p_y``. Calibration and prediction both
    go through here so that the two see bit-identical arithmetic.

    Example:
        >>> p = torch.tensor([[0.5, 0.2, 0.3]], dtype=torch.float64)
        >>> class_scores(p, "lac").tolist()
        [[0.5, 0.8, 0.7]]
        >>> class_scores(p, "aps").tolist()
        [[0.5, 1.0, 0.8]]
        >>> class_scores(p, "raps", lam=0.1, k_reg=1).tolist()
        [[0.5, 1.2, 0.9]]
    """
    if score == "lac":
        return 1 - probs
    ordered, order = torch.sort(probs, dim=1, descending=True, stable=True)
    sorted_scores = ordered.cumsum(dim=1)
    if u is not None:
        sorted_scores = sorted_scores - u.to(probs.dtype).unsqueeze(1) * ordered
    if score == "raps":
        rank = torch.arange(1, probs.shape[1] + 1, dtype=probs.dtype)
        sorted_scores = sorted_scores + lam * (rank - k_reg).clamp(min=0)
    # Back from rank order to class order.
    return torch.empty_like(sorted_scores).scatter_(1, order, sorted_scores)


def label_scores(
    probs: torch.Tensor,
    labels: torch.Tensor,
    score: str,
    *,
    u: torch.Tensor | None = None,
    lam: float | None = None,
    k_reg: int | None = None,
) -> torch.Tensor:
    """The score of each image's own label, ``[N]``: what calibration ranks.

    Example:
        >>> p = torch.tensor([[0.5, 0.2, 0.3]], dtype=torch.float64)
        >>> label_scores(p, torch.tensor([2]), "aps").tolist()
        [0.8]
    """
    return class_scores(probs, score, u=u, lam=lam, k_reg=k_reg).gather(1, labels.unsqueeze(1)).squeeze(1)


def lac_scores(probs: ArrayLike, labels: ArrayLike) -> torch.Tensor:
    """LAC score ``1 - p_y`` of the true labels.

    Example:
        >>> lac_scores([[0.9, 0.1]], [1]).tolist()
        [0.9]
    """
    p = check_probs(probs)
    return label_scores(p, check_labels(labels, len(p), p.shape[1]), "lac")


def aps_scores(probs: ArrayLike, labels: ArrayLike, *, u: torch.Tensor | None = None) -> torch.Tensor:
    """APS score of the true labels: sorted mass down to and including ``y`` (minus ``u * p_y`` if ``u``).

    Example:
        >>> aps_scores([[0.5, 0.25, 0.25]], [1]).tolist()
        [0.75]
        >>> aps_scores([[0.5, 0.25, 0.25]], [1], u=torch.tensor([0.5])).tolist()
        [0.625]
    """
    p = check_probs(probs)
    return label_scores(p, check_labels(labels, len(p), p.shape[1]), "aps", u=u)


def raps_scores(
    probs: ArrayLike, labels: ArrayLike, *, lam: float, k_reg: int, u: torch.Tensor | None = None
) -> torch.Tensor:
    """RAPS score of the true labels: APS ``+ lam * max(0, rank_y - k_reg)`` (rank 1-based).

    Example:
        >>> raps_scores([[0.6, 0.3, 0.1]], [2], lam=0.5, k_reg=1).tolist()
        [2.0]
    """
    lam, k_reg = check_score_options("raps", u is not None, lam, k_reg)
    p = check_probs(probs)
    return label_scores(p, check_labels(labels, len(p), p.shape[1]), "raps", u=u, lam=lam, k_reg=k_reg)


# --------------------------------------------------------------------------- calibration


def _exact(alpha: float) -> Fraction:
    """``alpha`` as the decimal fraction the user wrote (``repr`` round-trips: 0.1 -> 1/10).

    Neither float arithmetic nor the float's exact binary value (0.1 is
    0.1000000000000000055…) would do: both can move ``⌈(n+1)(1-α)⌉`` by one
    when ``(n+1)α`` is an integer.
    """
    return Fraction(repr(float(alpha)))


def quantile_rank(n: int, alpha: float) -> int:
    """``k = ⌈(n+1)(1-α)⌉``, exact on the decimal value of ``alpha``.

    Example:
        >>> quantile_rank(199, 0.1), quantile_rank(200, 0.1)
        (180, 181)
        >>> quantile_rank(9, 0.7), math.ceil(10 * (1 - 0.7))  # float round-off would give 4
        (3, 4)
    """
    return math.ceil((n + 1) * (1 - _exact(alpha)))


def min_calibration_size(alpha: float) -> int:
    """The fewest calibration images for which ``q_hat`` is finite at ``alpha``.

    ``k <= n`` iff ``(n+1)·α >= 1`` iff ``n >= 1/α - 1``.

    Example:
        >>> min_calibration_size(0.1), min_calibration_size(0.05), min_calibration_size(0.01)
        (9, 19, 99)
    """
    return max(1, math.ceil(1 / _exact(check_alpha(alpha))) - 1)


def _too_few(n: int, alpha: float, where: str) -> str:
    need = min_calibration_size(alpha)
    return (
        f"{where}: {n} calibration image(s) cannot support alpha={alpha:g}: the set would hold every class; "
        f"need at least {need} (n >= 1/alpha - 1)"
    )


def conformal_quantile(scores: ArrayLike, alpha: float) -> float:
    """``q_hat``: the ``⌈(n+1)(1-α)⌉``-th smallest calibration score.

    The same value as ``np.quantile(scores, k / n, method="inverted_cdf")``
    (see the module notes for why not ``method="higher"``).

    Example:
        >>> conformal_quantile([0.1 * i for i in range(1, 11)], alpha=0.2)  # k = ceil(11 * 0.8) = 9
        0.9
        >>> conformal_quantile([0.5] * 5, alpha=0.1)  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: calibration: 5 calibration image(s) cannot support alpha=0.1:
        the set would hold every class; need at least 9 (n >= 1/alpha - 1)
    """
    alpha = check_alpha(alpha)
    values = _tensor(scores, "calibration scores").to(torch.float64).reshape(-1)
    n = len(values)
    if n == 0:
        raise ConfigError("calibration set is empty: conformal prediction needs labelled calibration images")
    if not bool(torch.isfinite(values).all()):
        raise ConfigError("calibration scores: non-finite value(s)")
    k = quantile_rank(n, alpha)
    if k > n:
        raise ConfigError(_too_few(n, alpha, "calibration"))
    return torch.kthvalue(values, k).values.item()


def tied_quantile(scores: torch.Tensor, u: torch.Tensor, alpha: float) -> tuple[float, float]:
    """``(q_hat, q_tie)``: the ``⌈(n+1)(1-α)⌉``-th calibration pair ``(score, U)`` in lexicographic order.

    The randomised predictors' quantile: ``U`` ranks images whose scores tie
    exactly, so the pairs are distinct and the coverage is exact (see the
    module notes). Without ties ``q_hat`` is :func:`conformal_quantile`'s.

    Example:
        >>> s = torch.zeros(10, dtype=torch.float64)  # ten tied scores
        >>> u = torch.arange(10, dtype=torch.float64) / 10
        >>> tied_quantile(s, u, alpha=0.2)  # k = ceil(11 * 0.8) = 9: the 9th smallest U
        (0.0, 0.8)
    """
    q_hat = conformal_quantile(scores, alpha)  # checks the scores and k <= n
    k = quantile_rank(len(scores), alpha)
    below = int((scores < q_hat).sum())  # pairs ranked before every pair at q_hat
    tied_u = torch.sort(u[scores == q_hat]).values
    return q_hat, tied_u[k - below - 1].item()


def class_conditional_quantiles(
    scores: torch.Tensor, labels: torch.Tensor, n_classes: int, alpha: float, u: torch.Tensor | None = None
) -> tuple[list[float], list[int], list[float] | None]:
    """Mondrian ``q_hat`` per class from that class's calibration scores; and the counts.

    A class with fewer than :func:`min_calibration_size` images gets
    ``+inf`` (always in the set: trivially covered) and a warning names it;
    refusing instead would make one rare class block the whole predictor.
    With ``u`` (randomised), the third result holds each class's tie-break
    ``q_tie`` (:func:`tied_quantile`); else it is None.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     q, counts, _ = class_conditional_quantiles(torch.rand(30), torch.tensor([0] * 25 + [1] * 5), 2, 0.1)
        >>> q[1], counts
        (inf, [25, 5])
    """
    counts = torch.bincount(labels, minlength=n_classes).tolist()
    need = min_calibration_size(alpha)
    short = [c for c, count in enumerate(counts) if count < need]
    q_hat, ties = [], []
    for c in range(n_classes):
        members = labels == c
        if c in short:
            q, tie = math.inf, math.inf
        elif u is None:
            q, tie = conformal_quantile(scores[members], alpha), math.inf
        else:
            q, tie = tied_quantile(scores[members], u[members], alpha)
        q_hat.append(q)
        ties.append(tie)
    q_tie = None if u is None else ties
    if short:
        listed = ", ".join(map(str, short[:MAX_LISTED]))
        if len(short) > MAX_LISTED:
            listed += f" and {len(short) - MAX_LISTED} more"
        warnings.warn(
            f"class-conditional conformal: class(es) {listed} have fewer than {need} calibration images for "
            f"alpha={alpha:g}; they get the trivial threshold (always in the set)",
            stacklevel=3,
        )
    return q_hat, counts, q_tie


# --------------------------------------------------------------------------- prediction sets


def prediction_sets(
    probs: torch.Tensor,
    q_hat: float | Sequence[float],
    score: str,
    *,
    u: torch.Tensor | None = None,
    q_tie: float | Sequence[float] | None = None,
    lam: float | None = None,
    k_reg: int | None = None,
) -> torch.Tensor:
    """``[N, C]`` bool mask of ``{y : s(x, y) <= q_hat_y}`` (``q_hat`` scalar or one per class).

    ``probs`` validated float64; ``u`` given = randomised (may be empty): APS/RAPS
    subtract ``u * p_y``, and with ``q_tie`` a score equal to ``q_hat`` is in
    the set only when ``u <= q_tie`` (:func:`tied_quantile`). Otherwise
    APS/RAPS sets always include the top class (the first one among equal
    maxima). LAC sets may be empty.

    Example:
        >>> p = torch.tensor([[0.6, 0.3, 0.1], [0.4, 0.35, 0.25]], dtype=torch.float64)
        >>> prediction_sets(p, 0.9, "aps").tolist()
        [[True, True, False], [True, True, False]]
        >>> prediction_sets(p, 0.5, "lac").tolist()
        [[True, False, False], [False, False, False]]
        >>> prediction_sets(p, 0.4, "lac", u=torch.tensor([0.2, 0.7], dtype=torch.float64), q_tie=0.5).tolist()
        [[True, False, False], [False, False, False]]
    """
    thresholds = torch.as_tensor(q_hat, dtype=torch.float64)
    scores = class_scores(probs, score, u=u, lam=lam, k_reg=k_reg)
    if q_tie is None:
        sets = scores <= thresholds
    else:
        ties = torch.as_tensor(q_tie, dtype=torch.float64)
        sets = (scores < thresholds) | ((scores == thresholds) & (u.unsqueeze(1) <= ties))
    if score != "lac" and u is None and len(probs):
        sets[torch.arange(len(probs)), probs.argmax(dim=1)] = True
    return sets


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class ConformalPredictor:
    """A calibrated split-conformal predictor: everything needed to predict sets, nothing else.

    ``q_hat`` is a float, or for ``class_conditional`` a tuple with one
    threshold per class (``math.inf`` = too few calibration images, class
    always in the set). A randomised predictor also holds ``q_tie`` (same
    shape; the tie-break, :func:`tied_quantile`; None in records of format
    v1, which had none) and ``noise``, what its ``U`` hashes: ``"logits"``
    (pass them to :meth:`predict_sets`) or ``"probabilities"``. Build one with
    :func:`calibrate`; store it with :meth:`to_dict` (JSON-able) and load it
    with :meth:`from_dict`.

    Example:
        >>> p = torch.softmax(torch.randn(50, 3, generator=torch.Generator().manual_seed(0)), dim=1)
        >>> y = p.argmax(dim=1)
        >>> predictor = calibrate(p, y, alpha=0.1, score="lac")
        >>> ConformalPredictor.from_dict(predictor.to_dict()) == predictor
        True
    """

    score: str
    alpha: float
    randomized: bool
    class_conditional: bool
    q_hat: float | tuple[float, ...]
    n_classes: int
    n_calibration: int
    n_calibration_per_class: tuple[int, ...]
    seed: int = 0
    lam: float | None = None
    k_reg: int | None = None
    q_tie: float | tuple[float, ...] | None = None
    noise: str = "probabilities"

    def predict_sets(
        self, probs: ArrayLike, *, seed: int | None = None, logits: ArrayLike | None = None
    ) -> torch.Tensor:
        """``[N, C]`` bool prediction sets for new softmax probabilities.

        Randomised predictors take each row's ``U`` from :func:`row_noise` (the
        calibration seed by default) of the image's noise key — its ``logits``
        when the predictor was calibrated with logits (then they are required)
        — so an image gets the same set in any batch.
        """
        p = check_probs(probs)
        if p.shape[1] != self.n_classes:
            raise ConfigError(
                f"probabilities: {p.shape[1]} classes, but the conformal predictor was calibrated on {self.n_classes}"
            )
        u = None
        if self.randomized:
            keys = p
            if self.noise == "logits":
                if logits is None:
                    raise ConfigError(
                        "this randomised conformal predictor draws U from the images' logits: pass logits="
                    )
                keys = check_noise_keys(logits, len(p))
            u = row_noise(keys, check_seed("seed", self.seed if seed is None else seed))
        return prediction_sets(p, self.q_hat, self.score, u=u, q_tie=self.q_tie, lam=self.lam, k_reg=self.k_reg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``+inf`` thresholds become ``None``: JSON has no infinity)."""
        q_hat = [None if math.isinf(q) else q for q in self.q_hat] if self.class_conditional else self.q_hat
        q_tie = self.q_tie
        if self.class_conditional and q_tie is not None:
            q_tie = [None if math.isinf(q) else q for q in q_tie]
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "score": self.score,
            "alpha": self.alpha,
            "randomized": self.randomized,
            "class_conditional": self.class_conditional,
            "raps": None if self.score != "raps" else {"lambda": self.lam, "k_reg": self.k_reg},
            "q_hat": q_hat,
            "n_classes": self.n_classes,
            "n_calibration": self.n_calibration,
            "n_calibration_per_class": list(self.n_calibration_per_class),
            "seed": self.seed,
            "q_tie": q_tie,
            "noise": self.noise,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "conformal predictor") -> ConformalPredictor:
        """Rebuild from :meth:`to_dict`'s output; every field is checked (one-line ArtifactError)."""
        return _record_from_dict(data, where)


def calibrate(
    probs: ArrayLike,
    labels: ArrayLike,
    alpha: float,
    *,
    score: str = "lac",
    randomized: bool = False,
    class_conditional: bool = False,
    lam: float | None = None,
    k_reg: int | None = None,
    seed: int = 0,
    logits: ArrayLike | None = None,
) -> ConformalPredictor:
    """Calibrate a split-conformal predictor on held-out labelled probabilities.

    ``score``: ``"lac"``, ``"aps"`` or ``"raps"`` (``lam``/``k_reg`` default
    to Conf-OT's 0.001 and 1). ``randomized``: exact coverage, ties included:
    a ``U`` per image (from ``seed``) breaks exact score ties, and APS/RAPS
    also subtract ``U * p_y`` (see the module notes). ``logits`` (randomised
    only; the head's logits of the same images): ``U`` hashes them rather
    than the probabilities, which saturated heads make identical across
    images; :meth:`ConformalPredictor.predict_sets` then needs them too.
    ``class_conditional``: one threshold per class (Mondrian), for
    ``1 - alpha`` coverage within every class rather than on average.

    Example:
        >>> p = torch.softmax(torch.randn(100, 4, generator=torch.Generator().manual_seed(0)), dim=1)
        >>> predictor = calibrate(p, p.argmax(dim=1), alpha=0.1, score="raps", lam=0.01, k_reg=2)
        >>> predictor.n_calibration, predictor.lam, predictor.k_reg
        (100, 0.01, 2)
    """
    alpha = check_alpha(alpha)
    lam, k_reg = check_score_options(score, randomized, lam, k_reg)
    if not isinstance(class_conditional, bool):
        raise ConfigError(f"class_conditional must be True or False, got {class_conditional!r}")
    seed = check_seed("seed", seed)
    p = check_probs(probs, "calibration probabilities")
    if len(p) == 0:
        raise ConfigError("calibration set is empty: conformal prediction needs labelled calibration images")
    y = check_labels(labels, len(p), p.shape[1], "calibration labels")
    if logits is not None and not randomized:
        raise ConfigError("calibration logits are the randomised predictors' noise keys: pass randomized=True")
    u = None
    if randomized:
        u = row_noise(p if logits is None else check_noise_keys(logits, len(p), "calibration logits"), seed)
    scores = label_scores(p, y, score, u=u, lam=lam, k_reg=k_reg)
    q_tie: float | tuple[float, ...] | None = None
    if class_conditional:
        q_list, counts, tie_list = class_conditional_quantiles(scores, y, p.shape[1], alpha, u)
        q_hat: float | tuple[float, ...] = tuple(q_list)
        q_tie = None if tie_list is None else tuple(tie_list)
    else:
        if len(p) < min_calibration_size(alpha):  # checked here to name the images, not "scores"
            raise ConfigError(_too_few(len(p), alpha, "calibration"))
        q_hat, q_tie = tied_quantile(scores, u, alpha) if randomized else (conformal_quantile(scores, alpha), None)
        counts = torch.bincount(y, minlength=p.shape[1]).tolist()
    return ConformalPredictor(
        score=score,
        alpha=alpha,
        randomized=randomized,
        class_conditional=class_conditional,
        q_hat=q_hat,
        n_classes=p.shape[1],
        n_calibration=len(p),
        n_calibration_per_class=tuple(counts),
        seed=seed,
        lam=lam,
        k_reg=k_reg,
        q_tie=q_tie,
        noise="logits" if logits is not None else "probabilities",
    )


# --------------------------------------------------------------------------- loading a record

_KEYS_V1 = (
    "format", "version", "score", "alpha", "randomized", "class_conditional", "raps", "q_hat",
    "n_classes", "n_calibration", "n_calibration_per_class", "seed",
)  # fmt: skip
_KEYS = {1: _KEYS_V1, 2: (*_KEYS_V1, "q_tie", "noise")}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _score_bound(score: str, lam: float | None, k_reg: int | None, n_classes: int) -> float:
    """Largest score a valid probability row can give (plus the row-sum tolerance)."""
    penalty = lam * max(0, n_classes - k_reg) if score == "raps" else 0.0
    return 1 + SUM_TOLERANCE + penalty


def _check_threshold(q: Any, bound: float, where: str, name: str) -> float:
    if not _is_number(q) or not -SUM_TOLERANCE <= q <= bound:
        raise ArtifactError(f"{where}: {name} must be a finite number in [{-SUM_TOLERANCE:g}, {bound:.6g}], got {q!r}")
    return float(q)


def _record_from_dict(data: Any, where: str) -> ConformalPredictor:
    """Parse and check every field of a stored predictor (see :meth:`ConformalPredictor.to_dict`)."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: expected a JSON object, got {type(data).__name__}")
    version = data.get("version")
    if data.get("format") != FORMAT or isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{where}: not a {FORMAT} record of a version this reader knows ({', '.join(map(str, READABLE_VERSIONS))}; "
            f"got format {data.get('format')!r}, version {version!r}): written by a newer clip-adapter?"
        )
    keys = _KEYS[version]
    missing = [k for k in keys if k not in data]
    unknown = sorted(str(k) for k in data if k not in keys)
    if missing or unknown:
        raise ArtifactError(f"{where}: missing key(s) {missing}, unknown key(s) {unknown}")
    score, randomized, mondrian = data["score"], data["randomized"], data["class_conditional"]
    if score not in SCORES:
        raise ArtifactError(f"{where}: score must be one of {', '.join(SCORES)}, got {score!r}")
    if not isinstance(randomized, bool) or not isinstance(mondrian, bool):
        raise ArtifactError(f"{where}: randomized and class_conditional must be true or false")
    alpha = data["alpha"]
    if not _is_number(alpha) or not 0 < alpha < 1:
        raise ArtifactError(f"{where}: alpha must be a number in (0, 1), got {alpha!r}")
    lam, k_reg = _raps_from_dict(data["raps"], score, randomized, where)
    n_classes, n_cal, counts = data["n_classes"], data["n_calibration"], data["n_calibration_per_class"]
    if not _is_int(n_classes) or n_classes < 2:
        raise ArtifactError(f"{where}: n_classes must be an integer >= 2, got {n_classes!r}")
    if not isinstance(counts, list) or len(counts) != n_classes or not all(_is_int(c) and c >= 0 for c in counts):
        raise ArtifactError(f"{where}: n_calibration_per_class must be {n_classes} integers >= 0")
    if not _is_int(n_cal) or n_cal != sum(counts) or n_cal < 1:
        raise ArtifactError(
            f"{where}: n_calibration {n_cal!r} is not the sum of n_calibration_per_class ({sum(counts)})"
        )
    seed = data["seed"]
    if not _is_int(seed) or not 0 <= seed <= SEED_MAX:
        raise ArtifactError(f"{where}: seed must be an integer in 0..{SEED_MAX}, got {seed!r}")
    bound = _score_bound(score, lam, k_reg, n_classes)
    q_hat = (_mondrian_q_from_dict if mondrian else _marginal_q_from_dict)(data["q_hat"], counts, alpha, bound, where)
    if version == 1 and score == "lac" and randomized:
        raise ArtifactError(f"{where}: a v1 record has no randomised LAC")
    q_tie, noise = (
        _tie_from_dict(data, randomized, mondrian, counts, alpha, where) if version >= 2 else (None, NOISE_KEYS[0])
    )
    return ConformalPredictor(
        score=score, alpha=float(alpha), randomized=randomized, class_conditional=mondrian, q_hat=q_hat,
        n_classes=n_classes, n_calibration=n_cal, n_calibration_per_class=tuple(counts), seed=seed,
        lam=lam, k_reg=k_reg, q_tie=q_tie, noise=noise,
    )  # fmt: skip


def _tie_from_dict(
    data: dict, randomized: bool, mondrian: bool, counts: list[int], alpha: float, where: str
) -> tuple[float | tuple[float, ...] | None, str]:
    """The v2 fields: ``q_tie`` (a U in [0, 1] per threshold; null unless randomised) and ``noise``."""
    q_tie, noise = data["q_tie"], data["noise"]
    if noise not in NOISE_KEYS:
        raise ArtifactError(f"{where}: noise must be one of {', '.join(NOISE_KEYS)}, got {noise!r}")
    if not randomized:
        if q_tie is not None:
            raise ArtifactError(f"{where}: q_tie must be null for a predictor that is not randomised")
        return None, noise
    if not mondrian:
        return _check_threshold(q_tie, 1.0, where, "q_tie"), noise
    if not isinstance(q_tie, list) or len(q_tie) != len(counts):
        raise ArtifactError(f"{where}: class-conditional q_tie must be a list of {len(counts)} values")
    need = min_calibration_size(alpha)
    ties = []
    for c, (value, count) in enumerate(zip(q_tie, counts)):
        if (value is None) != (count < need):
            raise ArtifactError(f"{where}: q_tie[{c}] is {value!r} for {count} calibration image(s)")
        ties.append(math.inf if value is None else _check_threshold(value, 1.0, where, f"q_tie[{c}]"))
    return tuple(ties), noise


def _raps_from_dict(raps: Any, score: str, randomized: bool, where: str) -> tuple[float | None, int | None]:
    if score != "raps":
        if raps is not None:
            raise ArtifactError(f"{where}: raps must be null for score {score!r}")
        return None, None
    if not isinstance(raps, dict) or set(raps) != {"lambda", "k_reg"}:
        raise ArtifactError(f"{where}: raps must be an object with keys lambda and k_reg, got {raps!r}")
    lam, k_reg = raps["lambda"], raps["k_reg"]
    if not _is_number(lam) or lam < 0 or not _is_int(k_reg) or k_reg < 0:
        raise ArtifactError(
            f"{where}: raps lambda must be a finite number >= 0 and k_reg an integer >= 0, got {raps!r}"
        )
    return float(lam), k_reg


def _marginal_q_from_dict(q: Any, counts: list[int], alpha: float, bound: float, where: str) -> float:
    if sum(counts) < min_calibration_size(alpha):
        raise ArtifactError(_too_few(sum(counts), alpha, where))
    return _check_threshold(q, bound, where, "q_hat")


def _mondrian_q_from_dict(q: Any, counts: list[int], alpha: float, bound: float, where: str) -> tuple[float, ...]:
    if not isinstance(q, list) or len(q) != len(counts):
        raise ArtifactError(f"{where}: class-conditional q_hat must be a list of {len(counts)} thresholds")
    need = min_calibration_size(alpha)
    thresholds = []
    for c, (value, count) in enumerate(zip(q, counts)):
        if (value is None) != (count < need):  # null = trivial, exactly for the classes too small for alpha
            raise ArtifactError(
                f"{where}: q_hat[{c}] is {value!r} for {count} calibration image(s); "
                f"null is for classes with fewer than {need}"
            )
        thresholds.append(math.inf if value is None else _check_threshold(value, bound, where, f"q_hat[{c}]"))
    return tuple(thresholds)


# --------------------------------------------------------------------------- metrics


def check_sets(sets: ArrayLike, what: str = "prediction sets") -> torch.Tensor:
    """Validate a ``[N, C]`` bool mask."""
    tensor = _tensor(sets, what)
    if tensor.dtype != torch.bool or tensor.ndim != 2:
        raise ConfigError(
            f"{what}: expected a 2-D bool [images, classes] mask, got {tensor.dtype} of shape {tuple(tensor.shape)}"
        )
    return tensor


def conformal_report(sets: ArrayLike, labels: ArrayLike, alpha: float) -> dict[str, Any]:
    """Coverage and set-size metrics of prediction sets, as plain floats and lists.

    Keys: ``alpha``, ``target_coverage`` (``1 - alpha``), ``n``,
    ``coverage`` (share of images whose set holds the true class),
    ``mean_set_size``, ``empty_set_fraction``, ``set_size_histogram``
    (counts of sizes ``0..C``), ``class_coverage`` (per class; ``None`` for a
    class with no test image), ``class_coverage_gap_mean`` and
    ``class_coverage_gap_max`` (mean and max over the classes present of
    ``|coverage_c - (1 - alpha)|``; Conf-OT's "CovGap" is the mean ×100).

    Example:
        >>> sets = torch.tensor([[True, False], [True, True], [False, True]])
        >>> r = conformal_report(sets, [0, 0, 0], alpha=0.5)
        >>> r["coverage"], r["mean_set_size"], r["set_size_histogram"], r["class_coverage"]
        (0.6666666666666666, 1.3333333333333333, [0, 2, 1], [0.6666666666666666, None])
    """
    alpha = check_alpha(alpha)
    mask = check_sets(sets)
    n, n_classes = mask.shape
    if n == 0:
        raise ConfigError("prediction sets: no test images to report on")
    y = check_labels(labels, n, n_classes)
    covered = mask[torch.arange(n), y].to(torch.float64)
    sizes = mask.sum(dim=1)
    support = torch.bincount(y, minlength=n_classes)
    hits = torch.bincount(y, weights=covered, minlength=n_classes)
    class_coverage = [(hits[c] / support[c]).item() if support[c] else None for c in range(n_classes)]
    gaps = [abs(cov - (1 - alpha)) for cov in class_coverage if cov is not None]
    return {
        "alpha": alpha,
        "target_coverage": 1 - alpha,
        "n": n,
        "coverage": covered.mean().item(),
        "mean_set_size": sizes.to(torch.float64).mean().item(),
        "empty_set_fraction": (sizes == 0).to(torch.float64).mean().item(),
        "set_size_histogram": torch.bincount(sizes, minlength=n_classes + 1).tolist(),
        "class_coverage": class_coverage,
        "class_coverage_gap_mean": sum(gaps) / len(gaps),
        "class_coverage_gap_max": max(gaps),
    }
