"""Calibration metrics (checked against torchmetrics and brute force) and the post-hoc calibrators."""

from __future__ import annotations

import doctest
import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from clip_adapter.core.errors import ArtifactError, ConfigError
from clip_adapter.core.threads import torch_threads
from clip_adapter.trust import calibration as cal
from clip_adapter.trust.calibration import (
    Calibration,
    TemperatureScaling,
    ZSNorm,
    aurc,
    bin_edges,
    brier_score,
    calibration_report,
    expected_calibration_error,
    logit_range_penalty,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
    zs_norm,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # [6000, 10] tensors: on a CPU shared with other jobs, two OpenMP threads made each NLL evaluation
    # ~100x slower (0.1 s vs 1 ms measured at load 4 on 2 cores)
    with torch_threads(1):
        yield


def calibrated(n: int = 6000, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from the logits' own softmax: calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g, dtype=torch.float64) * 2
    labels = torch.multinomial(logits.softmax(dim=1), 1, generator=g).squeeze(1)
    return logits, labels


def informative(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logits that favour the true class, with confidences spread over many bins."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g) * 1.5 + 2.0 * F.one_hot(labels, classes)
    return logits, labels


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------------------------------------- ECE


@pytest.mark.parametrize("n_bins", [15, 10, 3, 1])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_matches_torchmetrics(n_bins, seed):
    tm = pytest.importorskip("torchmetrics", reason="torchmetrics is the ECE reference (test extra)")
    logits, labels = informative(400, 7, seed)
    confidence = logits.softmax(dim=1).max(dim=1).values.double()
    # the two libraries differ only for a confidence exactly on an edge (see the next test): none here
    assert (confidence[:, None] - bin_edges(n_bins)[None]).abs().min() > 1e-6
    reference = tm.classification.MulticlassCalibrationError(num_classes=7, n_bins=n_bins, norm="l1")
    expected = reference(logits, labels).item()
    assert expected_calibration_error(logits, labels, n_bins) == pytest.approx(expected, abs=1e-6)
    probs = logits.softmax(dim=1)
    assert expected_calibration_error(probs, labels, n_bins, inputs="probs") == pytest.approx(
        reference(probs, labels).item(), abs=1e-6
    )


def test_ece_bins_are_closed_on_the_right_and_one_goes_in_the_last_bin():
    # 2 bins (0, .5], (.5, 1]: a confidence of exactly 0.5 belongs to the first, exactly 1.0 to the last
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0])
    diagram = reliability_diagram(probs, labels, 2, inputs="probs")
    assert diagram["count"] == [1, 2]
    assert diagram["accuracy"] == [1.0, 0.5]
    assert diagram["mean_confidence"] == [0.5, 0.875]
    # |1 − 0.5|·1/3 + |0.5 − 0.875|·2/3
    assert expected_calibration_error(probs, labels, 2, inputs="probs") == pytest.approx(0.5 / 3 + 0.75 / 3)
    # the first bin also holds exactly 0 (a max probability never is, but the binning is total on [0, 1])
    assert cal._bin_index(torch.tensor([0.0, 0.25, 0.2500001, 1.0], dtype=torch.float64), 4).tolist() == [0, 0, 1, 3]


def test_ece_hand_example_and_perfect_calibration():
    # torchmetrics' documented example: 3 bins, ECE 0.2
    probs = torch.tensor([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
    labels = torch.tensor([0, 1, 2, 0])
    assert expected_calibration_error(probs, labels, 3, inputs="probs") == pytest.approx(0.2, abs=1e-7)
    assert maximum_calibration_error(probs, labels, 3, inputs="probs") == pytest.approx(0.7 / 3, abs=1e-7)
    # every bin's accuracy equals its confidence: ECE 0
    half = torch.tensor([[0.5, 0.5]] * 4)
    assert expected_calibration_error(half, torch.tensor([0, 1, 0, 1]), inputs="probs") == 0.0


def test_logits_and_probabilities_agree():
    logits, labels = informative(300, 5, 3)
    probs = logits.double().softmax(dim=1)
    for metric in (expected_calibration_error, negative_log_likelihood, brier_score, aurc):
        assert metric(logits, labels) == pytest.approx(metric(probs, labels, inputs="probs"), abs=1e-9)


# ---------------------------------------------------------------------------------------------- NLL, Brier


def test_nll_is_mean_cross_entropy():
    logits, labels = informative(200, 6, 4)
    assert negative_log_likelihood(logits, labels) == pytest.approx(F.cross_entropy(logits.double(), labels).item())
    # a zero probability on the true class is clamped, so the NLL stays finite (and JSON-able)
    assert negative_log_likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), inputs="probs") == pytest.approx(
        -torch.log(torch.tensor(1e-12, dtype=torch.float64)).item()
    )


def test_brier_is_the_multiclass_sum_of_squares():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    by_hand = ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.9**2 + 0.8**2)) / 2
    assert brier_score(probs, labels, inputs="probs") == pytest.approx(by_hand)
    # the extremes: certain and right 0, certain and wrong 2
    assert brier_score(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), inputs="probs") == 0.0
    assert brier_score(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), inputs="probs") == 2.0


# ---------------------------------------------------------------------------------------------- AURC


def brute_force_aurc(confidence: list[float], correct: list[bool]) -> float:
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])  # stable: ties keep sample order
    risks = [sum(not correct[i] for i in order[:k]) / k for k in range(1, len(order) + 1)]
    return sum(risks) / len(risks)


def test_aurc_matches_brute_force():
    logits, labels = informative(120, 4, 5)
    probs = logits.double().softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    assert len(set(confidence.tolist())) == len(confidence)  # no ties: the order is unambiguous
    expected = brute_force_aurc(confidence.tolist(), (predicted == labels).tolist())
    assert aurc(logits, labels) == pytest.approx(expected, abs=1e-12)


def test_aurc_ties_count_at_their_expected_risk_whatever_the_sample_order():
    # confidences with ties; the brute force averages over every order of the samples (hence of each tie group)
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.7, 0.3], [0.7, 0.3], [0.6, 0.4], [0.6, 0.4]], dtype=torch.float64)
    labels = torch.tensor([1, 0, 1, 1, 0, 1])
    confidence, correct = probs.max(dim=1).values.tolist(), (probs.argmax(dim=1) == labels).tolist()
    orders = list(itertools.permutations(range(6)))
    expected = sum(brute_force_aurc([confidence[i] for i in o], [correct[i] for i in o]) for o in orders) / len(orders)
    assert aurc(probs, labels, inputs="probs") == pytest.approx(expected, abs=1e-12)
    shuffled = torch.tensor([3, 5, 0, 2, 4, 1])
    assert aurc(probs[shuffled], labels[shuffled], inputs="probs") == aurc(probs, labels, inputs="probs")


def test_aurc_extremes():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    assert aurc(probs, torch.tensor([0, 0, 0, 0]), inputs="probs") == 0.0  # never wrong
    assert aurc(probs, torch.tensor([1, 1, 1, 1]), inputs="probs") == 1.0  # always wrong
    # wrong only on the least confident sample: risks 0, 0, 0, 1/4
    assert aurc(probs, torch.tensor([0, 0, 0, 1]), inputs="probs") == pytest.approx(1 / 16)


# ---------------------------------------------------------------------------------------------- report


def test_report_is_json_and_consistent():
    logits, labels = informative(500, 8, 6)
    report = calibration_report(logits, labels)
    json.dumps(report, allow_nan=False)  # plain floats, ints, lists and None
    assert report["num_samples"] == 500 and report["num_classes"] == 8 and report["n_bins"] == 15
    assert report["ece"] == pytest.approx(expected_calibration_error(logits, labels))
    assert report["mce"] == pytest.approx(maximum_calibration_error(logits, labels))
    assert report["nll"] == pytest.approx(negative_log_likelihood(logits, labels))
    assert report["brier"] == pytest.approx(brier_score(logits, labels))
    assert report["aurc"] == pytest.approx(aurc(logits, labels))
    assert report["accuracy"] == pytest.approx((logits.argmax(dim=1) == labels).float().mean().item())
    diagram = report["reliability"]
    assert len(diagram["bin_edges"]) == 16 and len(diagram["count"]) == 15
    assert sum(diagram["count"]) == 500 and sum(diagram["fraction"]) == pytest.approx(1.0)
    # the count-weighted per-bin confidences and accuracies give back the overall ones
    weighted = lambda key: sum(c * v for c, v in zip(diagram["count"], diagram[key]) if c) / 500  # noqa: E731
    assert weighted("mean_confidence") == pytest.approx(report["mean_confidence"])
    assert weighted("accuracy") == pytest.approx(report["accuracy"])
    for count, conf, lo, hi in zip(
        diagram["count"], diagram["mean_confidence"], diagram["bin_edges"], diagram["bin_edges"][1:]
    ):
        assert (conf is None) == (count == 0)
        assert conf is None or lo < conf <= hi


def test_report_with_no_samples():
    report = calibration_report(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert report["num_samples"] == 0 and report["ece"] is None and report["aurc"] is None
    assert report["reliability"]["count"] == [0] * 15
    json.dumps(report, allow_nan=False)
    with pytest.raises(ConfigError, match="no samples"):
        expected_calibration_error(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize(
    ("scores", "labels", "kwargs", "message"),
    [
        (torch.zeros(3, 2), torch.tensor([0, 1, 2]), {}, "label 2 is out of range for 2 classes"),
        (torch.zeros(3, 2), torch.tensor([0, -1, 1]), {}, "label -1 is out of range"),
        (torch.zeros(3, 2), torch.tensor([0, 1]), {}, "expected 3 labels"),
        (torch.zeros(3, 2), torch.tensor([0.0, 1.0, 1.0]), {}, "integer class indices"),
        (torch.zeros(3), torch.tensor([0, 1, 1]), {}, "expected a .samples, classes. tensor"),
        (torch.tensor([[0.0, float("nan")]]), torch.tensor([0]), {}, "non-finite value .* row 0"),
        (torch.tensor([[0.0, 1.0]]), torch.tensor([0]), {"n_bins": 0}, "n_bins must be a positive integer"),
        (torch.tensor([[2.0, -1.0]]), torch.tensor([0]), {"inputs": "probs"}, "must lie in .0, 1."),
        (torch.tensor([[0.5, 0.2]]), torch.tensor([0]), {"inputs": "probs"}, "sum to 0.7"),
        (torch.tensor([[0.5, 0.5]]), torch.tensor([0]), {"inputs": "softmax"}, "inputs must be 'logits' or 'probs'"),
    ],
)
def test_bad_metric_inputs_are_one_line_config_errors(scores, labels, kwargs, message):
    with pytest.raises(ConfigError, match=message) as error:
        calibration_report(scores, labels, **kwargs)
    one_line(error)


# ---------------------------------------------------------------------------------------------- temperature


def test_temperature_recovers_the_over_confidence_factor():
    logits, labels = calibrated()
    fitted = TemperatureScaling.fit(5 * logits, labels)
    assert fitted.temperature == pytest.approx(5.0, rel=0.05)
    before = expected_calibration_error(5 * logits, labels)
    after = expected_calibration_error(fitted.apply(5 * logits), labels)
    assert after < before / 5 and after < 0.03
    assert negative_log_likelihood(fitted.apply(5 * logits), labels) < negative_log_likelihood(5 * logits, labels)
    # the optimum: nudging T either way does not lower the NLL
    nll = lambda t: F.cross_entropy(5 * logits / t, labels).item()  # noqa: E731
    assert nll(fitted.temperature) <= min(nll(fitted.temperature * 1.001), nll(fitted.temperature / 1.001))
    # argmax unchanged, and the fit is deterministic
    assert torch.equal(fitted.apply(5 * logits).argmax(dim=1), logits.argmax(dim=1))
    assert TemperatureScaling.fit(5 * logits, labels) == fitted


def test_temperature_of_calibrated_logits_is_one():
    logits, labels = calibrated(seed=1)
    assert TemperatureScaling.fit(logits, labels).temperature == pytest.approx(1.0, abs=0.05)
    assert TemperatureScaling.fit(logits.float(), labels).temperature == pytest.approx(1.0, abs=0.05)


def test_temperature_is_clamped_and_flat_logits_keep_one():
    labels = torch.arange(3).repeat(4)
    separable = 10 * F.one_hot(labels, 3).double()  # always right: the NLL keeps falling as T → 0
    assert TemperatureScaling.fit(separable, labels).temperature == cal.T_MIN
    assert TemperatureScaling.fit(-separable, labels).temperature == cal.T_MAX  # always wrong: T → ∞
    assert TemperatureScaling.fit(torch.zeros(12, 3), labels).temperature == 1.0


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (torch.zeros(1, 3), torch.tensor([0]), "at least 2 held-out samples, got 1"),
        (torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]), "label 3 is out of range for 3 classes"),
        (torch.zeros(4, 3), torch.tensor([0, 1, 2]), "expected 4 labels"),
        (torch.tensor([[0.0, float("inf")], [0.0, 1.0]]), torch.tensor([0, 1]), "non-finite value"),
    ],
)
def test_bad_fit_inputs_are_one_line_config_errors(logits, labels, message):
    with pytest.raises(ConfigError, match=message) as error:
        TemperatureScaling.fit(logits, labels)
    one_line(error)


@pytest.mark.parametrize("value", [0.0, -1.0, 0.009, 100.5, float("nan"), float("inf"), True, "2"])
def test_out_of_range_temperatures_are_refused(value):
    with pytest.raises(ConfigError):
        TemperatureScaling(value)
    with pytest.raises(ArtifactError) as error:
        TemperatureScaling.from_dict({"kind": "temperature", "temperature": value})
    one_line(error)


# ---------------------------------------------------------------------------------------------- ZS-Norm


def test_zs_norm_formula_by_hand():
    z = torch.tensor([[2.0, 6.0, 4.0], [-1.0, 1.0, 0.0]])
    z0 = torch.tensor([[20.0, 30.0, 22.0], [0.5, 0.0, 1.5]])
    # row 1: (z − 2)/4 · 10 + 20; row 2: (z + 1)/2 · 1.5 + 0
    assert torch.allclose(zs_norm(z, z0), torch.tensor([[20.0, 30.0, 25.0], [0.0, 1.5, 0.75]]))
    assert torch.equal(zs_norm(z, z), z)  # its own range: unchanged
    # a row with no range at all becomes the zero-shot row's mean (uniform after softmax)
    flat = zs_norm(torch.tensor([[3.0, 3.0, 3.0]]), torch.tensor([[1.0, 2.0, 6.0]]))
    assert flat.tolist() == [[3.0, 3.0, 3.0]]


def test_zs_norm_keeps_argmax_and_is_idempotent():
    g = torch.Generator().manual_seed(7)
    z, z0 = torch.randn(200, 10, generator=g) * 30, torch.randn(200, 10, generator=g) * 3
    once = ZSNorm().apply(z, z0)
    assert torch.equal(once.argmax(dim=1), z.argmax(dim=1))
    assert torch.allclose(once.amax(dim=1), z0.amax(dim=1)) and torch.allclose(once.amin(dim=1), z0.amin(dim=1))
    assert torch.allclose(ZSNorm().apply(once, z0), once, atol=1e-6)
    # already in z0's range with z0's min and max: left as it is
    same_range = z0[:, torch.randperm(10, generator=g)]
    assert torch.allclose(zs_norm(same_range, z0), same_range, atol=1e-6)


def test_zs_norm_is_differentiable_even_on_flat_rows():
    z = torch.tensor([[1.0, 4.0, 2.0], [5.0, 5.0, 5.0]], requires_grad=True)
    z0 = torch.tensor([[0.0, 1.0, 3.0], [1.0, 2.0, 3.0]])
    zs_norm(z, z0).softmax(dim=1)[:, 0].sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad[0].abs().sum() > 0


def test_zs_norm_needs_matching_zero_shot_logits():
    with pytest.raises(ConfigError, match="same .samples, classes. shape") as error:
        zs_norm(torch.zeros(2, 3), torch.zeros(2, 4))
    one_line(error)
    with pytest.raises(ConfigError, match="needs the zero-shot logits"):
        ZSNorm().apply(torch.zeros(2, 3))


# ---------------------------------------------------------------------------------------------- composition


def test_zs_norm_then_temperature():
    logits, labels = calibrated(seed=2)
    g = torch.Generator().manual_seed(2)
    zero_shot = logits + 0.3 * torch.randn(logits.shape, generator=g, dtype=torch.float64)
    adapted = 8 * logits  # an over-confident adapter
    fitted = Calibration.fit(adapted, labels, zero_shot_logits=zero_shot)
    assert [step.kind for step in fitted.steps] == ["zs-norm", "temperature"] and fitted.needs_zero_shot
    # the temperature was fitted on the ZS-normalised logits, and apply runs the steps in order
    normalised = zs_norm(adapted, zero_shot)
    assert fitted.steps[1] == TemperatureScaling.fit(normalised, labels)
    assert torch.allclose(fitted.apply(adapted, zero_shot), normalised / fitted.steps[1].temperature)
    assert (
        expected_calibration_error(fitted.apply(adapted, zero_shot), labels)
        < expected_calibration_error(adapted, labels) / 4
    )
    assert torch.equal(fitted.apply(adapted, zero_shot).argmax(dim=1), adapted.argmax(dim=1))
    with pytest.raises(ConfigError, match="needs the zero-shot logits"):
        fitted.apply(adapted)
    # temperature alone needs no zero-shot logits
    alone = Calibration.fit(adapted, labels, steps=["temperature"])
    assert not alone.needs_zero_shot and alone.steps == (TemperatureScaling.fit(adapted, labels),)
    assert torch.equal(Calibration().apply(adapted), adapted)  # no steps: identity


def test_calibration_fit_refuses_bad_inputs():
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ConfigError, match="unknown step 'platt'"):
        Calibration.fit(logits, labels, steps=["platt"])
    with pytest.raises(ConfigError, match="needs the zero-shot logits"):
        Calibration.fit(logits, labels)
    with pytest.raises(ConfigError, match="must have the same shape"):
        Calibration.fit(logits, labels, zero_shot_logits=torch.randn(6, 4))
    with pytest.raises(ConfigError, match="zero-shot logits: non-finite"):
        Calibration.fit(logits, labels, zero_shot_logits=torch.full((6, 3), float("nan")))


def test_calibration_round_trips_through_json():
    record = Calibration((ZSNorm(), TemperatureScaling(2.718281828459045)))
    text = json.dumps(record.to_dict(), allow_nan=False)
    assert json.loads(text) == {
        "format": "clip-adapter/calibration",
        "version": 1,
        "steps": [{"kind": "zs-norm"}, {"kind": "temperature", "temperature": 2.718281828459045}],
    }
    assert Calibration.from_dict(json.loads(text)) == record


GOOD = {
    "format": "clip-adapter/calibration",
    "version": 1,
    "steps": [{"kind": "zs-norm"}, {"kind": "temperature", "temperature": 1.5}],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["steps"].append({"kind": "platt", "a": 1.0}), "step 3 has unknown kind 'platt'"),
        (lambda d: d["steps"].append("temperature"), "step 3 has unknown kind None"),
        (
            lambda d: d["steps"][1].update(temperature=float("nan")),
            "step 2 .temperature.: temperature must be a finite",
        ),
        (lambda d: d["steps"][1].update(temperature=1e9), "finite number in .0.01, 100.0., got 1000000000.0"),
        (lambda d: d["steps"][1].update(temperature=None), "temperature must be a number, got None"),
        (lambda d: d["steps"][1].pop("temperature"), "missing 'temperature'"),
        (lambda d: d["steps"][0].update(scale=2.0), "step 1 .zs-norm.: unknown key 'scale'"),
        (lambda d: d.update(version=2), "unsupported version 2"),
        (lambda d: d.update(format="pickle"), "format must be 'clip-adapter/calibration'"),
        (lambda d: d.update(steps={"kind": "zs-norm"}), "steps must be a list"),
        (lambda d: d.update(extra=1), "unknown key 'extra'"),
    ],
)
def test_from_dict_refuses_what_to_dict_would_not_write(change, message):
    data = json.loads(json.dumps(GOOD))
    change(data)
    with pytest.raises(ArtifactError, match=message) as error:
        Calibration.from_dict(data)
    one_line(error)
    with pytest.raises(ArtifactError, match="expected a JSON object"):
        Calibration.from_dict([GOOD])


# ---------------------------------------------------------------------------------------------- training-time


def test_logit_range_penalty():
    zero_shot = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    assert logit_range_penalty(zero_shot + 5.0, zero_shot).item() == 0.0  # same ranges
    assert logit_range_penalty(zero_shot / 2, zero_shot).item() == 0.0  # narrower: not penalised
    adapted = torch.tensor([[5.0, 1.0, 2.0], [0.0, 3.0, 1.0]], requires_grad=True)
    zs = zero_shot.clone().requires_grad_(True)
    penalty = logit_range_penalty(adapted, zs)
    assert penalty.item() == pytest.approx((4.0 - 2.0) ** 2 / 2)  # row 1 exceeds by 2, row 2 not at all
    penalty.backward()
    # d/dz of (max − min − 2)² / 2 is (max − min − 2) = 2 at the max, −2 at the min; the reference gets none
    assert adapted.grad.tolist() == [[2.0, -2.0, 0.0], [0.0, 0.0, 0.0]]
    assert zs.grad is None
    empty = torch.zeros(0, 3, requires_grad=True)
    assert logit_range_penalty(empty, torch.zeros(0, 3)).item() == 0.0
    with pytest.raises(ConfigError, match="same .samples, classes. shape"):
        logit_range_penalty(torch.zeros(2, 3), torch.zeros(3, 3))


def test_docstring_examples():
    result = doctest.testmod(cal, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0
