"""Split conformal prediction (clip_adapter.trust.conformal): coverage, a reference library, inputs, records.

* Coverage is checked statistically against its exact law: with continuous
  scores, the coverage of a split-conformal set over calibration draws is
  ``Beta(n+1-l, l)``, ``l = ⌊(n+1)α⌋`` (Angelopoulos & Bates, gentle
  introduction, §C). The empirical coverage on ``m`` test images adds binomial
  noise, so its variance is ``Var_B + (μ(1-μ) - Var_B) / m``; the mean over
  ``S`` independent seeds must lie within 4 standard errors
  (``sqrt(var / S)``) of the Beta mean, and inside ``[1-α, 1-α + 1/(n+1)]``
  widened by the same 4 standard errors.
* The reference is crepes (``ConformalClassifier``, non-smoothed p-values):
  crepes puts ``y`` in the set when ``(#{cal >= s_y} + 1)/(n+1) >= α``, which
  is our ``s_y <= k-th smallest`` rule exactly when ``(n+1)α`` is not an
  integer (when it is, crepes keeps one more order statistic: checked too).
"""

from __future__ import annotations

import doctest
import json
import math
import warnings

import numpy as np
import pytest
import torch

import clip_adapter.trust.conformal as conformal
from clip_adapter.core.errors import ArtifactError, ConfigError
from clip_adapter.trust.conformal import (
    ConformalPredictor,
    aps_scores,
    calibrate,
    class_scores,
    conformal_quantile,
    conformal_report,
    lac_scores,
    min_calibration_size,
    prediction_sets,
    quantile_rank,
    raps_scores,
)

ALPHA = 0.1
N_CAL, N_TEST, SEEDS = 200, 1000, 200
RAPS = {"lam": 0.05, "k_reg": 2}


def draw(seed: int, n: int, n_classes: int, scale: float = 1.5, bias: torch.Tensor | None = None):
    """Exchangeable synthetic softmax outputs with labels drawn from them (a calibrated model)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, n_classes, generator=g, dtype=torch.float64) * scale
    if bias is not None:
        logits = logits + bias
    probs = torch.softmax(logits, dim=1)
    return probs, torch.multinomial(probs, 1, generator=g).squeeze(1)


def beta_law(n: int, m: int, alpha: float) -> tuple[float, float]:
    """Mean and variance of the empirical coverage on ``m`` test images, ``n`` calibration images."""
    k = quantile_rank(n, alpha) if n >= min_calibration_size(alpha) else n + 1  # too few: trivial, coverage 1
    mu = k / (n + 1)
    var_beta = mu * (1 - mu) / (n + 2)  # Beta(k, n+1-k)
    return mu, var_beta + (mu * (1 - mu) - var_beta) / m


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def test_doctests():
    result = doctest.testmod(conformal, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 15 and result.failed == 0


# --------------------------------------------------------------------------- quantile


QUANTILE_CASES = [
    (n, a) for n in (9, 10, 19, 57, 199, 200, 1000) for a in (0.1, 0.05, 0.2, 0.5, 0.37) if n >= 1 / a - 1
]


@pytest.mark.parametrize("n,alpha", QUANTILE_CASES)
def test_quantile_is_the_kth_order_statistic(n, alpha):
    scores = np.random.default_rng(n).random(n)
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    q = conformal_quantile(scores, alpha)
    assert q == np.sort(scores)[k - 1]
    assert q == np.quantile(scores, k / n, method="inverted_cdf")
    # NumPy's "higher" at the level k/n rounds up once more: the (k+1)-th score whenever k < n.
    assert np.quantile(scores, k / n, method="higher") == np.sort(scores)[min(k, n - 1)]


def test_quantile_rank_is_exact_at_integer_boundaries():
    assert math.ceil(10 * (1 - 0.7)) == 4  # float round-off ...
    assert quantile_rank(9, 0.7) == 3  # ... not here
    assert quantile_rank(9, 0.3) == 7 and quantile_rank(199, 0.37) == 126  # nor the binary value of alpha
    assert [quantile_rank(n, 0.5) for n in (1, 2, 3)] == [1, 2, 2]
    for alpha in (0.1, 0.2, 0.3, 0.05, 0.37, 0.7, 0.01):
        for n in range(1, 400):
            k = quantile_rank(n, alpha)
            assert k - 1 < (n + 1) * (1 - alpha) + 1e-9 and k >= (n + 1) * (1 - alpha) - 1e-9


@pytest.mark.parametrize("alpha", [0.5, 0.3, 0.2, 0.1, 0.07, 0.05, 0.01])
def test_min_calibration_size_is_the_boundary(alpha):
    need = min_calibration_size(alpha)
    assert need >= 1 / alpha - 1 - 1e-9 and quantile_rank(need, alpha) <= need
    conformal_quantile(np.linspace(0, 1, need), alpha)
    if need > 1:
        assert quantile_rank(need - 1, alpha) > need - 1
        with pytest.raises(ConfigError, match=f"need at least {need} ") as exc:
            conformal_quantile(np.linspace(0, 1, need - 1), alpha)
        one_line(exc)


# --------------------------------------------------------------------------- scores and sets


def test_scores_by_hand():
    p = [[0.5, 0.25, 0.125, 0.125]]
    assert lac_scores(p, [2]).tolist() == [0.875]
    assert aps_scores(p, [0]).tolist() == [0.5]
    assert aps_scores(p, [3]).tolist() == [1.0]  # tie with class 2: the lower index ranks first
    assert aps_scores(p, [2]).tolist() == [0.875]
    assert aps_scores(p, [1], u=torch.tensor([0.5])).tolist() == [0.625]
    assert raps_scores(p, [3], lam=0.25, k_reg=1).tolist() == [1.75]  # rank 4: 1.0 + 0.25 * 3
    assert raps_scores(p, [0], lam=0.25, k_reg=1).tolist() == [0.5]
    assert raps_scores(p, [1], lam=0.25, k_reg=0, u=torch.tensor([1.0])).tolist() == [1.0]  # 0.75 - 0.25 + 0.5


def reference_prefix_sets(probs: np.ndarray, q: float, lam: float, k_reg: int, u_prime: np.ndarray | None):
    """The RAPS paper's set rule (its ``gcq``), written independently, with ``allow_zero_sets`` for randomised.

    Non-randomised: the classes, in descending probability, while the
    cumulative mass plus penalty stays ``<= q`` (at least one). Randomised:
    ``L`` = first class above ``q``; drop it when ``u' >= V``,
    ``V = (q - mass before L - penalty_L) / p_L``.
    """
    n, n_classes = probs.shape
    sets = np.zeros((n, n_classes), dtype=bool)
    penalty = lam * np.maximum(0, np.arange(1, n_classes + 1) - k_reg)
    for i in range(n):
        order = np.argsort(-probs[i], kind="stable")
        ordered = probs[i, order]
        total = np.cumsum(ordered) + penalty
        size = min(int((total <= q).sum()) + 1, n_classes)
        if u_prime is None:
            size = max(1, int((total <= q).sum()))
        else:
            v = (q - (total[size - 1] - ordered[size - 1])) / ordered[size - 1]
            size -= int(u_prime[i] >= v)
        sets[i, order[:size]] = True
    return sets


@pytest.mark.parametrize("score,lam,k_reg", [("aps", 0.0, 0), ("raps", 0.05, 2), ("raps", 0.2, 0)])
@pytest.mark.parametrize("randomized", [False, True])
def test_sets_follow_the_raps_paper_rule(score, lam, k_reg, randomized):
    probs, _ = draw(3, 400, 8, scale=2.0)
    u = torch.from_numpy(np.random.default_rng(5).random(len(probs))) if randomized else None
    kwargs = {"lam": lam, "k_reg": k_reg} if score == "raps" else {}
    for q in (0.3, 0.6, 0.85, 0.95, 1.2):
        ours = prediction_sets(probs, q, score, u=u, **kwargs).numpy()
        u_prime = None if u is None else 1 - u.numpy()  # the paper keeps U·p_L of the boundary class; we subtract U·p_L
        assert (ours == reference_prefix_sets(probs.numpy(), q, lam, k_reg, u_prime)).all()
        if not randomized:
            assert ours[np.arange(len(probs)), probs.argmax(dim=1).numpy()].all()
    if randomized:  # randomised sets can be empty, which is what makes coverage exact
        assert not prediction_sets(probs, 0.3, score, u=u, **kwargs).any(dim=1).all()


def test_lac_sets_can_be_empty_and_match_the_definition():
    probs, _ = draw(4, 300, 6)
    sets = prediction_sets(probs, 0.6, "lac")
    assert sets.equal(1 - probs <= 0.6)
    assert (~sets.any(dim=1)).any()


def test_randomised_sets_are_reproducible_and_depend_on_the_seed():
    probs, labels = draw(6, 600, 5)
    predictor = calibrate(probs[:200], labels[:200], ALPHA, score="aps", randomized=True, seed=11)
    assert predictor.predict_sets(probs[200:]).equal(predictor.predict_sets(probs[200:]))
    assert predictor.predict_sets(probs[200:250]).equal(predictor.predict_sets(probs[200:])[:50])  # batch-independent
    assert not predictor.predict_sets(probs[200:], seed=12).equal(predictor.predict_sets(probs[200:]))
    assert calibrate(probs[:200], labels[:200], ALPHA, score="aps", randomized=True, seed=12).q_hat != predictor.q_hat


# --------------------------------------------------------------------------- coverage, statistically


@pytest.fixture(scope="module")
def marginal_draws():
    return [draw(seed, N_CAL + N_TEST, 10) for seed in range(SEEDS)]


MARGINAL = {
    "lac": {"score": "lac"},
    "aps": {"score": "aps"},
    "raps": {"score": "raps", **RAPS},
    "aps-randomised": {"score": "aps", "randomized": True},
    "lac-randomised": {"score": "lac", "randomized": True},
    "raps-randomised": {"score": "raps", "randomized": True, **RAPS},
}


@pytest.mark.parametrize("variant", list(MARGINAL))
def test_marginal_coverage_follows_the_beta_law(marginal_draws, variant):
    coverages = []
    for seed, (probs, labels) in enumerate(marginal_draws):
        predictor = calibrate(probs[:N_CAL], labels[:N_CAL], ALPHA, seed=seed, **MARGINAL[variant])
        sets = predictor.predict_sets(probs[N_CAL:])
        coverages.append(sets[torch.arange(N_TEST), labels[N_CAL:]].double().mean().item())
    mean = float(np.mean(coverages))
    mu, var = beta_law(N_CAL, N_TEST, ALPHA)
    tolerance = 4 * math.sqrt(var / SEEDS)  # 4 standard errors of the mean over seeds, ≈ 0.0065 here
    assert 1 - ALPHA <= mu <= 1 - ALPHA + 1 / (N_CAL + 1)
    assert 1 - ALPHA - tolerance <= mean <= 1 - ALPHA + 1 / (N_CAL + 1) + tolerance, (variant, mean)
    # The exact law holds for the score rule; the non-randomised APS/RAPS sets add the top class, which only adds.
    assert mean >= mu - tolerance
    if variant in ("lac", "lac-randomised", "aps-randomised", "raps-randomised"):
        assert abs(mean - mu) <= tolerance, (variant, mean, mu)


@pytest.mark.parametrize("variant", ["lac", "aps-randomised", "lac-randomised"])
def test_class_conditional_coverage_follows_the_beta_law_per_class(variant):
    n_classes, bias = 4, torch.tensor([0.6, 0.2, -0.2, -0.6], dtype=torch.float64)
    observed = np.zeros((SEEDS, n_classes))
    expected = np.zeros((SEEDS, n_classes))
    variance = np.zeros((SEEDS, n_classes))
    n_cal = np.zeros((SEEDS, n_classes))
    for seed in range(SEEDS):
        probs, labels = draw(10_000 + seed, N_CAL + N_TEST, n_classes, bias=bias)
        predictor = calibrate(
            probs[:N_CAL], labels[:N_CAL], ALPHA, class_conditional=True, seed=seed, **MARGINAL[variant]
        )
        covered = predictor.predict_sets(probs[N_CAL:])[torch.arange(N_TEST), labels[N_CAL:]]
        for c in range(n_classes):
            in_class = labels[N_CAL:] == c
            n_c, m_c = predictor.n_calibration_per_class[c], int(in_class.sum())
            assert n_c >= min_calibration_size(ALPHA) and m_c > 0  # the draw keeps every class well populated
            observed[seed, c], n_cal[seed, c] = covered[in_class].double().mean().item(), n_c
            expected[seed, c], variance[seed, c] = beta_law(n_c, m_c, ALPHA)
    for c in range(n_classes):
        tolerance = 4 * math.sqrt(variance[:, c].sum()) / SEEDS
        mean = observed[:, c].mean()
        assert abs(mean - expected[:, c].mean()) <= tolerance, (c, mean, expected[:, c].mean())
        assert 1 - ALPHA - tolerance <= mean <= 1 - ALPHA + (1 / (n_cal[:, c] + 1)).mean() + tolerance


# --------------------------------------------------------------------------- ties: a saturated head


def saturated_draw(seed: int, n: int, n_classes: int = 10, sure: float = 0.95):
    """A head that is certain (probability rows exactly one-hot in float64) and right for ``sure`` of the images.

    Logits gain 1,000 on the true class of those images: ``exp(-1000)`` underflows, so their probability
    rows are identical one-hot vectors and every LAC score ties at 0, while their logits all differ.
    """
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, n_classes, generator=g, dtype=torch.float64) * 1.5
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=g).squeeze(1)
    certain = torch.rand(n, generator=g) < sure
    logits[certain, labels[certain]] += 1000.0
    return torch.softmax(logits, dim=1), labels, logits


TIES = {  # variant → (calibrate options, U from the logits?)
    "lac": ({"score": "lac"}, False),
    "lac-randomised": ({"score": "lac", "randomized": True}, True),
    "aps-randomised": ({"score": "aps", "randomized": True}, True),
    "lac-randomised, U from the probabilities": ({"score": "lac", "randomized": True}, False),
}


def tied_coverage(variant: str, seeds: int = 100) -> float:
    options, by_logits = TIES[variant]
    coverages = []
    for seed in range(seeds):
        probs, labels, logits = saturated_draw(500 + seed, N_CAL + N_TEST)
        keys = (logits[:N_CAL], logits[N_CAL:]) if by_logits else (None, None)
        predictor = calibrate(probs[:N_CAL], labels[:N_CAL], ALPHA, seed=seed, logits=keys[0], **options)
        sets = predictor.predict_sets(probs[N_CAL:], logits=keys[1])
        coverages.append(sets[torch.arange(N_TEST), labels[N_CAL:]].double().mean().item())
    return float(np.mean(coverages))


def test_tied_scores_over_cover_unless_randomised_with_distinct_keys():
    """Saturated rows: plain LAC over-covers (every certain image is covered); the U tie-break, drawn from
    the logits, brings coverage back to the Beta law's mean; drawn from the (identical) probability rows, it
    cannot break the ties among the certain images (they all share one U) and coverage is off the law."""
    assert (saturated_draw(1, 100)[0].max(dim=1).values == 1).double().mean() > 0.9  # the rows really saturate
    mu, var = beta_law(N_CAL, N_TEST, ALPHA)
    tolerance = 4 * math.sqrt(var / 100)
    assert tied_coverage("lac") > 0.93
    for variant in ("lac-randomised", "aps-randomised"):
        assert abs(tied_coverage(variant) - mu) <= tolerance, variant
    assert abs(tied_coverage("lac-randomised, U from the probabilities") - mu) > tolerance


def test_a_predictor_calibrated_on_logits_needs_them_and_gives_batch_independent_sets():
    probs, labels, logits = saturated_draw(3, 600)
    predictor = calibrate(probs[:200], labels[:200], ALPHA, randomized=True, logits=logits[:200], seed=2)
    assert predictor.noise == "logits" and 0 <= predictor.q_tie <= 1
    with pytest.raises(ConfigError, match=r"draws U from the images' logits: pass logits=") as exc:
        predictor.predict_sets(probs[200:])
    one_line(exc)
    sets = predictor.predict_sets(probs[200:], logits=logits[200:])
    assert sets[:50].equal(predictor.predict_sets(probs[200:250], logits=logits[200:250]))
    assert ConformalPredictor.from_dict(predictor.to_dict()).predict_sets(probs[200:], logits=logits[200:]).equal(sets)


def test_a_v1_record_still_loads_and_predicts_as_before():
    """Records written before the tie-break (format v1) load with no q_tie and U from the probabilities."""
    probs, labels = draw(8, 500, 5)
    predictor = calibrate(probs[:300], labels[:300], ALPHA, score="aps", randomized=True, seed=5)
    data = predictor.to_dict()
    del data["q_tie"], data["noise"]
    data["version"] = 1
    old = ConformalPredictor.from_dict(data)
    assert old.q_tie is None and old.noise == "probabilities"
    u = conformal.row_noise(probs[300:], 5)
    expected = class_scores(probs[300:], "aps", u=u) <= predictor.q_hat  # the v1 rule: s <= q_hat
    assert old.predict_sets(probs[300:]).equal(expected)
    data["score"], data["raps"] = "lac", None
    with pytest.raises(ArtifactError, match=r"a v1 record has no randomised LAC"):
        ConformalPredictor.from_dict(data)


# --------------------------------------------------------------------------- agreement with crepes


def naive_aps(probs: np.ndarray, lam: float = 0.0, k_reg: int = 0) -> np.ndarray:
    """APS/RAPS score of every class, by a plain loop (independent of the module's vectorised code)."""
    scores = np.zeros_like(probs)
    for i, row in enumerate(probs):
        mass = 0.0
        for rank, c in enumerate(np.argsort(-row, kind="stable"), start=1):
            mass += row[c]
            scores[i, c] = mass + lam * max(0, rank - k_reg)
    return scores


def crepes_sets(cal_scores, test_scores, alpha, bins=None):
    crepes = pytest.importorskip("crepes", reason="crepes is the reference (pip install crepes scikit-learn)")
    cc = crepes.ConformalClassifier().fit(cal_scores, bins=bins)
    if bins is None:
        return cc.predict_set(test_scores, confidence=1 - alpha, smoothing=False).astype(bool)
    # crepes' own class-conditional recipe (WrapClassifier with class_cond=True): column c against class c's scores.
    n, n_classes = test_scores.shape
    columns = [
        cc.predict_set(test_scores, bins=np.full(n, c), confidence=1 - alpha, smoothing=False)[:, c]
        for c in range(n_classes)
    ]
    return np.stack(columns, axis=1).astype(bool)


AGREEMENT = [(200, 0.1), (150, 0.05), (97, 0.2), (60, 0.3)]  # (n+1)·α not an integer


@pytest.mark.parametrize("n,alpha", AGREEMENT)
def test_lac_sets_equal_crepes(n, alpha):
    hinge = pytest.importorskip("crepes.extras").hinge
    probs, labels = draw(n, n + 300, 10)
    p_cal, p_test = probs[:n].numpy(), probs[n:].numpy()
    reference = crepes_sets(hinge(p_cal, np.arange(10), labels[:n].numpy()), hinge(p_test), alpha)
    ours = calibrate(probs[:n], labels[:n], alpha, score="lac").predict_sets(probs[n:]).numpy()
    assert (ours == reference).all() and 0 < ours.sum() < ours.size


@pytest.mark.parametrize("n,alpha", AGREEMENT)
@pytest.mark.parametrize("score", ["aps", "raps"])
def test_aps_and_raps_sets_equal_crepes(n, alpha, score):
    probs, labels = draw(n + 1, n + 300, 10)
    extra = RAPS if score == "raps" else {}
    scores = naive_aps(probs.numpy(), **extra)
    assert np.allclose(scores, class_scores(probs, score, **extra).numpy(), rtol=0, atol=1e-12)
    reference = crepes_sets(scores[:n][np.arange(n), labels[:n].numpy()], scores[n:], alpha)
    reference[np.arange(300), probs[n:].argmax(dim=1).numpy()] = True  # non-randomised APS/RAPS keep the top class
    ours = calibrate(probs[:n], labels[:n], alpha, score=score, **extra).predict_sets(probs[n:]).numpy()
    assert (ours == reference).all() and ours.sum(axis=1).min() < 10


def test_crepes_keeps_one_more_order_statistic_when_n_plus_1_alpha_is_an_integer():
    probs, labels = draw(8, 499, 10)  # n = 199, α = 0.1: (n+1)α = 20
    hinge = pytest.importorskip("crepes.extras").hinge
    reference = crepes_sets(
        hinge(probs[:199].numpy(), np.arange(10), labels[:199].numpy()), hinge(probs[199:].numpy()), 0.1
    )
    ours = calibrate(probs[:199], labels[:199], 0.1, score="lac").predict_sets(probs[199:]).numpy()
    assert (ours <= reference).all() and (ours < reference).any()


@pytest.mark.parametrize("score", ["lac", "aps"])
def test_class_conditional_sets_equal_crepes_mondrian(score):
    n_classes, n = 6, 200
    probs, labels = draw(
        21, n + 300, n_classes, bias=torch.tensor([1.5, 1.0, 0.5, 0.0, -0.5, -3.0], dtype=torch.float64)
    )
    with pytest.warns(UserWarning, match=r"class\(es\) 5 have fewer than 9 calibration images"):
        predictor = calibrate(probs[:n], labels[:n], 0.1, score=score, class_conditional=True)
    assert predictor.q_hat[5] == math.inf and 0 < predictor.n_calibration_per_class[5] < 9
    scores = (1 - probs).numpy() if score == "lac" else naive_aps(probs.numpy())
    reference = crepes_sets(scores[:n][np.arange(n), labels[:n].numpy()], scores[n:], 0.1, bins=labels[:n].numpy())
    if score == "aps":
        reference[np.arange(300), probs[n:].argmax(dim=1).numpy()] = True
    ours = predictor.predict_sets(probs[n:]).numpy()
    assert (ours == reference).all() and ours[:, 5].all()


# --------------------------------------------------------------------------- bad inputs


def good():
    return draw(30, 100, 4)


BAD_CALIBRATION = [
    ("alpha 0", lambda p, y: calibrate(p, y, 0.0), r"alpha must be in \(0, 1\)"),
    ("alpha 1", lambda p, y: calibrate(p, y, 1), r"alpha must be in \(0, 1\)"),
    ("alpha nan", lambda p, y: calibrate(p, y, float("nan")), r"alpha must be in \(0, 1\)"),
    ("alpha str", lambda p, y: calibrate(p, y, "0.1"), r"alpha must be a number"),
    (
        "too few",
        lambda p, y: calibrate(p[:50], y[:50], 0.01),
        r"50 calibration image\(s\) cannot support alpha=0.01.*need at least 99 \(n >= 1/alpha - 1\)",
    ),
    ("empty", lambda p, y: calibrate(p[:0], y[:0], 0.1), r"calibration set is empty"),
    ("length", lambda p, y: calibrate(p, y[:-1], 0.1), r"99 label\(s\) for 100 probability row\(s\)"),
    ("label range", lambda p, y: calibrate(p, torch.where(y == 0, 4, y), 0.1), r"outside 0\.\.3"),
    ("negative label", lambda p, y: calibrate(p, y - 1, 0.1), r"outside 0\.\.3"),
    ("float labels", lambda p, y: calibrate(p, y.double(), 0.1), r"integer class indices"),
    ("2-D labels", lambda p, y: calibrate(p, y[:, None], 0.1), r"1-D array"),
    ("nan", lambda p, y: calibrate(torch.where(torch.arange(4) == 1, math.nan, p), y, 0.1), r"non-finite value"),
    ("inf", lambda p, y: calibrate(torch.where(torch.arange(4) == 1, math.inf, p), y, 0.1), r"non-finite value"),
    ("logits", lambda p, y: calibrate(torch.log(p), y, 0.1), r"not logits"),
    ("unnormalised", lambda p, y: calibrate(p * 0.5, y, 0.1), r"sums to 0\.5, not 1"),
    ("1-D probs", lambda p, y: calibrate(p[:, 0], y, 0.1), r"2-D \[images, classes\]"),
    ("one class", lambda p, y: calibrate(p[:, :1], y * 0, 0.1), r"at least 2 classes"),
    ("int probs", lambda p, y: calibrate(p.long(), y, 0.1), r"floating-point"),
    ("ragged", lambda p, y: calibrate([[0.5, 0.5], [1.0]], [0, 1], 0.1), r"not a numeric array"),
    ("score", lambda p, y: calibrate(p, y, 0.1, score="thr"), r"score must be one of lac, aps, raps"),
    ("logits not randomised", lambda p, y: calibrate(p, y, 0.1, logits=torch.log(p)), r"pass randomized=True"),
    (
        "logits shape",
        lambda p, y: calibrate(p, y, 0.1, randomized=True, logits=torch.log(p)[:-1]),
        r"calibration logits: expected a floating-point",
    ),
    ("lam for aps", lambda p, y: calibrate(p, y, 0.1, score="aps", lam=0.1), r"apply to score 'raps' only"),
    ("negative lam", lambda p, y: calibrate(p, y, 0.1, score="raps", lam=-0.1), r"lam must be a finite number >= 0"),
    ("k_reg float", lambda p, y: calibrate(p, y, 0.1, score="raps", k_reg=1.5), r"k_reg must be an integer >= 0"),
    ("seed", lambda p, y: calibrate(p, y, 0.1, seed=-1), r"out of range"),
]


@pytest.mark.parametrize("name,call,message", BAD_CALIBRATION, ids=[case[0] for case in BAD_CALIBRATION])
def test_bad_calibration_inputs_raise_one_line_config_errors(name, call, message):
    probs, labels = good()
    with pytest.raises(ConfigError, match=message) as exc:
        call(probs, labels)
    one_line(exc)


def test_bad_prediction_and_report_inputs():
    probs, labels = good()
    predictor = calibrate(probs, labels, 0.1)
    cases = [
        (lambda: predictor.predict_sets(torch.softmax(torch.randn(5, 3), 1)), r"3 classes, but .* calibrated on 4"),
        (lambda: predictor.predict_sets(probs * 2), r"not logits"),
        (lambda: conformal_report(predictor.predict_sets(probs).int(), labels, 0.1), r"bool \[images, classes\] mask"),
        (lambda: conformal_report(predictor.predict_sets(probs), labels[:3], 0.1), r"3 label\(s\) for 100"),
        (lambda: conformal_report(predictor.predict_sets(probs), labels, 1.5), r"alpha must be in"),
        (lambda: conformal_report(torch.zeros(0, 4, dtype=torch.bool), labels[:0], 0.1), r"no test images"),
    ]
    for call, message in cases:
        with pytest.raises(ConfigError, match=message) as exc:
            call()
        one_line(exc)
    assert predictor.predict_sets(probs[:0]).shape == (0, 4)


def test_too_few_images_for_a_class_warns_and_lists_it_without_refusing():
    probs, labels = good()
    labels = torch.where(labels == 3, 2, labels)
    labels[:3] = 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = calibrate(probs, labels, 0.1, class_conditional=True)
    assert len(caught) == 1 and "class(es) 3 have fewer than 9" in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the caller's line
    assert predictor.q_hat[3] == math.inf and predictor.predict_sets(probs)[:, 3].all()


# --------------------------------------------------------------------------- the record


RECORDS = {
    "lac": {"score": "lac"},
    "aps": {"score": "aps"},
    "raps-randomised": {"score": "raps", "randomized": True, "lam": 0.02, "k_reg": 3},
    "mondrian-aps-randomised": {"score": "aps", "randomized": True, "class_conditional": True, "seed": 9},
    "mondrian-lac": {"score": "lac", "class_conditional": True},
    "lac-randomised": {"score": "lac", "randomized": True, "seed": 4},
    "mondrian-lac-randomised": {"score": "lac", "randomized": True, "class_conditional": True},
}


def record_case(name):
    probs, labels = draw(40, 500, 5, bias=torch.tensor([1.0, 0.5, 0.0, -0.5, -4.0], dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # class 4 is rare: the Mondrian cases keep a null threshold
        return calibrate(probs[:300], labels[:300], 0.1, **RECORDS[name]), probs[300:]


@pytest.mark.parametrize("name", list(RECORDS))
def test_round_trip_through_json_gives_identical_sets(name):
    predictor, probs = record_case(name)
    data = json.loads(json.dumps(predictor.to_dict(), allow_nan=False))  # strict JSON: no Infinity/NaN
    loaded = ConformalPredictor.from_dict(data)
    assert loaded == predictor
    assert loaded.predict_sets(probs).equal(predictor.predict_sets(probs))
    if predictor.class_conditional:
        assert data["q_hat"][4] is None and predictor.q_hat[4] == math.inf


def tamper(key, value):
    def change(data):
        data[key] = value(data) if callable(value) else value

    return change


TAMPERED = [
    ("not a dict", lambda d: None, r"expected a JSON object"),
    ("missing key", lambda d: d.pop("q_hat"), r"missing key\(s\) \['q_hat'\]"),
    ("unknown key", tamper("extra", 1), r"unknown key\(s\) \['extra'\]"),
    ("format", tamper("format", "pickle"), r"not a clip_adapter.conformal record of a version this reader knows"),
    ("version", tamper("version", 3), r"version 3\): written by a newer clip-adapter"),
    ("version bool", tamper("version", True), r"version True"),
    ("score", tamper("score", "thr"), r"score must be one of"),
    ("alpha 0", tamper("alpha", 0.0), r"alpha must be a number in \(0, 1\)"),
    ("alpha str", tamper("alpha", "0.1"), r"alpha must be a number in \(0, 1\)"),
    ("alpha too small for n", tamper("alpha", 0.001), r"cannot support alpha=0.001"),
    ("randomized int", tamper("randomized", 1), r"must be true or false"),
    ("randomised without q_tie", tamper("randomized", True), r"q_tie must be a finite number"),
    ("q_tie when not randomised", tamper("q_tie", 0.5), r"q_tie must be null"),
    ("noise", tamper("noise", "pixels"), r"noise must be one of probabilities, logits"),
    ("v1 with v2 keys", tamper("version", 1), r"unknown key\(s\) \['noise', 'q_tie'\]"),
    ("raps for lac", tamper("raps", {"lambda": 0.1, "k_reg": 1}), r"raps must be null"),
    ("q_hat nan", tamper("q_hat", math.nan), r"q_hat must be a finite number"),
    ("q_hat out of range", tamper("q_hat", 5.0), r"q_hat must be a finite number in \[-0.01, 1.01\]"),
    ("q_hat null", tamper("q_hat", None), r"q_hat must be a finite number"),
    ("q_hat bool", tamper("q_hat", True), r"q_hat must be a finite number"),
    ("q_hat list", tamper("q_hat", [0.5] * 5), r"q_hat must be a finite number"),
    ("n_classes", tamper("n_classes", 1), r"n_classes must be an integer >= 2"),
    (
        "counts length",
        tamper("n_calibration_per_class", lambda d: d["n_calibration_per_class"][:-1]),
        r"must be 5 integers",
    ),
    (
        "negative count",
        tamper("n_calibration_per_class", lambda d: [-1] + d["n_calibration_per_class"][1:]),
        r"must be 5 integers",
    ),
    ("total", tamper("n_calibration", 301), r"n_calibration 301 is not the sum"),
    ("no images", lambda d: d.update(n_calibration=0, n_calibration_per_class=[0] * 5), r"n_calibration 0"),
    ("seed", tamper("seed", -3), r"seed must be an integer"),
    ("seed float", tamper("seed", 0.0), r"seed must be an integer"),
]


@pytest.mark.parametrize("name,change,message", TAMPERED, ids=[case[0] for case in TAMPERED])
def test_tampered_records_are_refused(name, change, message):
    data = record_case("lac")[0].to_dict()
    if name == "not a dict":
        data = ["a list"]
    else:
        change(data)
    with pytest.raises(ArtifactError, match=message) as exc:
        ConformalPredictor.from_dict(data)
    one_line(exc)


TAMPERED_SPECIAL = [
    ("raps", "raps missing", tamper("raps", None), r"raps must be an object with keys lambda and k_reg"),
    ("raps", "raps lambda", tamper("raps", {"lambda": -1, "k_reg": 1}), r"raps lambda must be a finite number"),
    ("raps", "raps k_reg", tamper("raps", {"lambda": 0.1, "k_reg": "1"}), r"k_reg an integer"),
    ("raps", "raps q above the penalty bound", tamper("q_hat", 2.0), r"in \[-0.01, 1.05\]"),
    ("mondrian", "mondrian scalar", tamper("q_hat", 0.5), r"must be a list of 5 thresholds"),
    ("mondrian", "mondrian short list", tamper("q_hat", lambda d: d["q_hat"][:-1]), r"must be a list of 5 thresholds"),
    ("mondrian", "null for a large class", tamper("q_hat", lambda d: [None] + d["q_hat"][1:]), r"q_hat\[0\] is None"),
    ("mondrian", "number for a small class", tamper("q_hat", lambda d: d["q_hat"][:4] + [0.5]), r"q_hat\[4\] is 0.5"),
    (
        "mondrian",
        "mondrian nan",
        tamper("q_hat", lambda d: [math.nan] + d["q_hat"][1:]),
        r"q_hat\[0\] must be a finite",
    ),
]


@pytest.mark.parametrize("kind,name,change,message", TAMPERED_SPECIAL, ids=[case[1] for case in TAMPERED_SPECIAL])
def test_tampered_raps_and_mondrian_records_are_refused(kind, name, change, message):
    data = record_case("raps-randomised" if kind == "raps" else "mondrian-lac")[0].to_dict()
    change(data)
    with pytest.raises(ArtifactError, match=message) as exc:
        ConformalPredictor.from_dict(data)
    one_line(exc)


# --------------------------------------------------------------------------- metrics


def test_conformal_report_by_hand():
    sets = torch.tensor([[True, False, False], [True, True, False], [False, False, False], [True, True, True]])
    report = conformal_report(sets, torch.tensor([0, 1, 1, 2]), alpha=0.25)
    assert report["coverage"] == 0.75
    assert report["mean_set_size"] == 1.5
    assert report["set_size_histogram"] == [1, 1, 1, 1]
    assert report["empty_set_fraction"] == 0.25
    assert report["class_coverage"] == [1.0, 0.5, 1.0]
    assert report["class_coverage_gap_mean"] == pytest.approx((0.25 + 0.25 + 0.25) / 3)
    assert report["class_coverage_gap_max"] == 0.25
    assert report["n"] == 4 and report["target_coverage"] == 0.75
    json.dumps(report, allow_nan=False)  # plain floats and lists


def test_conformal_report_on_a_predictor():
    probs, labels = draw(50, 1200, 7)
    predictor = calibrate(probs[:200], labels[:200], ALPHA, score="aps")
    report = conformal_report(predictor.predict_sets(probs[200:]), labels[200:], ALPHA)
    assert sum(report["set_size_histogram"]) == 1000 and len(report["set_size_histogram"]) == 8
    assert report["set_size_histogram"][0] == 0  # non-randomised APS never gives an empty set
    sizes = np.arange(8)
    assert report["mean_set_size"] == pytest.approx((sizes * np.array(report["set_size_histogram"])).sum() / 1000)
    assert 0.8 < report["coverage"] < 0.99  # one calibration draw: Beta-distributed around 0.9
    assert report["class_coverage_gap_max"] >= report["class_coverage_gap_mean"] >= 0
