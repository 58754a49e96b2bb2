"""Tests of OOD detection (clip_adapter.trust.ood) and the toy world's out-of-class draws (toy ood)."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
import torch

from clip_adapter.cli import main
from clip_adapter.core.errors import ArtifactError, ConfigError
from clip_adapter.core.outputs import MARKER
from clip_adapter.toyworld.tasks import (
    OOD_FILE,
    TASKS,
    holdout_task,
    novel_classes,
    resolve_ood_source,
    task_ood_images,
)
from clip_adapter.trust import ood
from clip_adapter.trust.ood import (
    OODDetector,
    auroc,
    energy_score,
    fpr_at_tpr,
    mcm_score,
    msp_score,
    ood_scores,
    threshold_for_tpr,
    tpr_standard_error,
)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


# --- scores on hand-made logits --------------------------------------------------------------------


def test_mcm_is_the_max_softmax_of_cosines_over_tau():
    logits = torch.tensor([[30.0, 20.0, 10.0], [25.0, 25.0, 25.0]])
    expected = math.exp(0.3) / (math.exp(0.3) + math.exp(0.2) + math.exp(0.1))  # softmax(cos / 1), cos = logits / 100
    got = mcm_score(logits, logit_scale=100.0)
    assert got.dtype == torch.float64 and got.tolist() == pytest.approx([expected, 1 / 3], abs=1e-12)
    # τ over cosines, not over logits: τ = 0.5 is softmax(2 · cos).
    sharper = math.exp(0.6) / (math.exp(0.6) + math.exp(0.4) + math.exp(0.2))
    assert mcm_score(logits, 100.0, tau=0.5)[0].item() == pytest.approx(sharper, abs=1e-12)
    # τ = 1 / logit_scale undoes the scale: MCM becomes MSP of the logits.
    assert torch.allclose(mcm_score(logits, 100.0, tau=0.01), msp_score(logits))
    # SigLIP's constant logit bias does not move it.
    assert torch.allclose(mcm_score(logits + 7.0, 100.0), mcm_score(logits, 100.0))


def test_msp_and_energy_definitions():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    assert msp_score(logits).tolist() == pytest.approx([1 / (1 + math.exp(-2)), 0.5])
    assert msp_score(logits, temperature=2.0)[0].item() == pytest.approx(1 / (1 + math.exp(-1)))
    assert energy_score(logits).tolist() == pytest.approx([math.log(math.exp(2) + 1), math.log(2)])
    assert energy_score(logits, temperature=2.0)[0].item() == pytest.approx(2 * math.log(math.exp(1) + 1))
    # logsumexp: no overflow at CLIP-sized logits.
    assert energy_score(torch.tensor([[1000.0, 1000.0]])).item() == pytest.approx(1000 + math.log(2))


@pytest.mark.parametrize("score", ["mcm", "msp", "energy"])
def test_higher_score_means_more_in_distribution(score):
    confident, flat = [40.0, 10.0, 10.0, 10.0], [20.0, 20.0, 19.0, 19.0]
    scale = 100.0 if score == "mcm" else None
    values = ood_scores(torch.tensor([confident, flat]), score, logit_scale=scale)
    assert values[0] > values[1]


def test_score_options_are_checked():
    logits = torch.zeros(3, 4)
    for call, needle in [
        (lambda: ood_scores(logits, "mcm"), "logit_scale"),
        (lambda: ood_scores(logits, "msp", logit_scale=100.0), "mcm score only"),
        (lambda: ood_scores(logits, "odin"), "score must be one of"),
        (lambda: msp_score(logits, temperature=0.0), "temperature"),
        (lambda: mcm_score(logits, float("nan")), "logit_scale"),
        (lambda: energy_score(torch.zeros(4)), "shape"),
        (lambda: energy_score(torch.zeros(4, 1)), "at least 2 classes"),
    ]:
        with pytest.raises(ConfigError) as exc:
            call()
        assert needle in one_line(exc)


# --- the threshold ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [20, 21, 37, 100, 1001])
@pytest.mark.parametrize("tpr", [0.95, 0.9, 0.5])
def test_threshold_accepts_at_least_tpr_of_validation_and_is_the_highest_that_does(n, tpr):
    gen = torch.Generator().manual_seed(n)
    for scores in (torch.randn(n, generator=gen), torch.randint(0, 5, (n,), generator=gen).double()):  # ties too
        threshold = threshold_for_tpr(scores, tpr)
        assert (scores >= threshold).double().mean() >= tpr
        higher = scores[scores > threshold]
        if higher.numel():
            assert (scores >= higher.min()).double().mean() < tpr


def test_threshold_is_the_order_statistic_stated():
    scores = torch.arange(100.0)
    assert threshold_for_tpr(scores, 0.95) == 5.0  # the 95th largest: accepts 95 of 100
    assert threshold_for_tpr(scores[:20], 0.95) == 1.0  # ⌈0.95 · 20⌉ = 19 accepted, no float round-up to 20


def test_threshold_gives_about_tpr_on_fresh_in_distribution_draws():
    """Tolerance: 3 standard errors of the two samples' binomial shares (validation and fresh draws)."""
    n_val, n_fresh, tpr = 2000, 20000, 0.95
    tolerance = 3 * math.sqrt(tpr_standard_error(tpr, n_val) ** 2 + tpr_standard_error(tpr, n_fresh) ** 2)
    assert 0.014 < tolerance < 0.016
    achieved = []
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        logits = torch.randn(n_val + n_fresh, 5, generator=gen) * 2 + torch.tensor([4.0, 0, 0, 0, 0])
        detector = OODDetector.fit(logits[:n_val], "energy", tpr)
        achieved.append(1 - detector.is_ood(logits[n_val:]).double().mean().item())
        assert abs(achieved[-1] - tpr) < tolerance, achieved
    assert abs(np.mean(achieved) - tpr) < tolerance / math.sqrt(5) + 1e-3


@pytest.mark.parametrize("tpr", [0.0, 1.0, 1.5, -0.1, float("nan"), True, "0.95"])
def test_threshold_refuses_a_tpr_outside_zero_one(tpr):
    with pytest.raises(ConfigError) as exc:
        threshold_for_tpr(torch.randn(50), tpr)
    assert "tpr" in one_line(exc)


def test_threshold_refuses_too_few_or_non_finite_scores():
    with pytest.raises(ConfigError) as exc:
        threshold_for_tpr(torch.randn(19))
    assert "at least 20" in one_line(exc)
    for bad in (float("nan"), float("inf"), -float("inf")):
        scores = torch.randn(30)
        scores[7] = bad
        with pytest.raises(ConfigError) as exc:
            threshold_for_tpr(scores)
        assert "non-finite" in one_line(exc) and "index 7" in one_line(exc)
    with pytest.raises(ConfigError):
        threshold_for_tpr(torch.randn(5, 5))


def test_tpr_standard_error():
    assert tpr_standard_error(0.95, 100) == pytest.approx(math.sqrt(0.95 * 0.05 / 100))
    with pytest.raises(ConfigError):
        tpr_standard_error(0.95, 0)


# --- metrics against references ----------------------------------------------------------------------


def brute_auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean().item()


def brute_fpr_at_tpr(pos: torch.Tensor, neg: torch.Tensor, tpr: float) -> float:
    """The least FPR over every threshold (accept score ≥ t) whose TPR reaches ``tpr``."""
    best = 1.0
    for t in torch.cat([pos, neg]).unique():
        if (pos >= t).double().mean() >= tpr - 1e-12:
            best = min(best, (neg >= t).double().mean().item())
    return best


def score_pairs():
    gen = torch.Generator().manual_seed(3)
    for n_pos, n_neg, shift, decimals in [(40, 60, 1.0, 6), (100, 37, 0.5, 1), (25, 25, 0.0, 0), (200, 150, 2.0, 2)]:
        pos = torch.round(torch.sigmoid(torch.randn(n_pos, generator=gen) + shift), decimals=decimals).double()
        neg = torch.round(torch.sigmoid(torch.randn(n_neg, generator=gen)), decimals=decimals).double()
        yield pos, neg
    yield torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2, 0.3])  # separated: AUROC 1, FPR 0
    yield torch.tensor([0.1, 0.2]), torch.tensor([0.8, 0.9])  # reversed: AUROC 0, FPR 1
    yield torch.full((30,), 0.5, dtype=torch.float64), torch.full((20,), 0.5, dtype=torch.float64)  # all tied: AUROC ½


def test_auroc_and_fpr95_match_brute_force():
    for pos, neg in score_pairs():
        assert auroc(pos, neg) == pytest.approx(brute_auroc(pos, neg), abs=1e-12)
        for tpr in (0.95, 0.8):
            assert fpr_at_tpr(pos, neg, tpr) == pytest.approx(brute_fpr_at_tpr(pos, neg, tpr), abs=1e-12)


def test_auroc_and_fpr95_match_torchmetrics():
    metrics = pytest.importorskip("torchmetrics.functional.classification")
    for pos, neg in score_pairs():
        preds = torch.cat([pos, neg])  # in [0, 1], so torchmetrics uses them as they are (no sigmoid)
        target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
        assert auroc(pos, neg) == pytest.approx(metrics.binary_auroc(preds, target).item(), abs=1e-6)
        fpr, tpr, _ = metrics.binary_roc(preds, target)
        assert fpr_at_tpr(pos, neg) == pytest.approx(fpr[tpr >= 0.95].min().item(), abs=1e-6)


def test_metrics_refuse_empty_or_non_finite_scores():
    with pytest.raises(ConfigError):
        auroc([], [0.1])
    with pytest.raises(ConfigError):
        fpr_at_tpr([0.5, float("nan")], [0.1])


# --- the detector record ---------------------------------------------------------------------------


def val_logits(n: int = 200, classes: int = 6, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 30 * torch.randn(n, classes, generator=gen).tanh() / 3 + 20  # cosine-like logits at CLIP's scale 100


@pytest.mark.parametrize("score", ["mcm", "msp", "energy"])
def test_detector_round_trips_through_json(score):
    scale = 100.0 if score == "mcm" else None
    detector = OODDetector.fit(val_logits(), score, tpr=0.9, logit_scale=scale)
    record = json.loads(json.dumps(detector.to_dict(), allow_nan=False))
    again = OODDetector.from_dict(record)
    assert again == detector and again.n_validation == 200 and again.num_classes == 6
    fresh = val_logits(seed=1)
    assert torch.equal(again.is_ood(fresh), detector.is_ood(fresh))
    assert detector.is_ood(fresh).dtype == torch.bool
    accepted = 1 - detector.is_ood(val_logits()).double().mean().item()
    assert accepted >= 0.9


def test_detector_flags_non_finite_logits_and_refuses_another_heads_logits():
    detector = OODDetector.fit(val_logits(), "mcm", logit_scale=100.0)
    bad = val_logits(3)
    bad[1, 2] = float("nan")
    assert detector.is_ood(bad).tolist()[1] is True
    with pytest.raises(ConfigError) as exc:
        detector.is_ood(torch.zeros(2, 5))
    assert "6-class" in one_line(exc)


TAMPERING = [
    ("score", "mahalanobis"),
    ("temperature", 0.0),
    ("temperature", -1.0),
    ("temperature", float("nan")),
    ("temperature", "1"),
    ("temperature", True),
    ("threshold", float("inf")),
    ("threshold", 1.5),  # above any softmax maximum
    ("threshold", 0.01),  # below 1/6: would accept every image
    ("threshold", None),
    ("tpr", 1.0),
    ("tpr", 0.0),
    ("tpr", "0.95"),
    ("n_validation", 5),
    ("n_validation", 200.5),
    ("n_validation", True),
    ("num_classes", 1),
    ("logit_scale", None),
    ("logit_scale", -100.0),
    ("format", "something-else"),
    ("version", 2),
    ("version", True),
    ("version", 1.0),
]


@pytest.mark.parametrize("key,value", TAMPERING)
def test_detector_refuses_a_tampered_field(key, value):
    record = OODDetector.fit(val_logits(), "mcm", logit_scale=100.0).to_dict()
    record[key] = value
    with pytest.raises(ArtifactError) as exc:
        OODDetector.from_dict(record)
    assert one_line(exc).startswith("OOD detector:")


def test_detector_refuses_missing_unknown_and_misplaced_fields():
    good = OODDetector.fit(val_logits(), "energy").to_dict()
    for record in (
        {k: v for k, v in good.items() if k != "threshold"},
        {**good, "note": "hi"},
        {**good, "logit_scale": 100.0},  # energy does not use one
        [good],
        None,
    ):
        with pytest.raises(ArtifactError) as exc:
            OODDetector.from_dict(record)
        one_line(exc)


def test_module_examples_run():
    result = doctest.testmod(ood, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 10


# --- toy world out-of-class images -------------------------------------------------------------------


def matches(obj: dict, attrs: dict) -> bool:
    return all(obj[key] == value for key, value in attrs.items())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_builtin_tasks_cover_their_attributes_so_ood_is_empty_scenes(name):
    assert novel_classes(name) == [] and resolve_ood_source(name) == "empty"
    with pytest.raises(ConfigError) as exc:
        resolve_ood_source(name, "novel")
    assert "--holdout" in one_line(exc)
    images, scenes = task_ood_images(name, "photo", 3, seed=1)
    assert images.shape == (3, 64, 64, 3) and all(scene.objects == () for scene in scenes)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_novel_draws_show_only_held_out_classes(name):
    base = TASKS[name]
    held_out = [base.classes[0], base.classes[-1]]
    known = holdout_task(name, held_out)
    assert set(known.classes) == set(base.classes) - set(held_out)
    images, scenes = task_ood_images(known, "sketch", 12, seed=4)
    assert images.shape == (12, 64, 64, 3)
    for scene in scenes:
        (obj,) = [o.__dict__ for o in scene.objects]
        assert not any(matches(obj, attrs) for attrs in known.attributes.values())  # of no known class
        assert [c for c in held_out if matches(obj, base.attributes[c])]  # of a held-out class
    assert {c for s in scenes for c in held_out if matches(s.objects[0].__dict__, base.attributes[c])} == set(held_out)


def test_ood_draws_are_deterministic_for_a_seed():
    known = holdout_task("shape-color", ["red star", "blue heart", "green circle"])
    a_images, a_scenes = task_ood_images(known, "night", 6, seed=9)
    b_images, b_scenes = task_ood_images(known, "night", 6, seed=9)
    assert np.array_equal(a_images, b_images) and a_scenes == b_scenes
    c_images, _ = task_ood_images(known, "night", 6, seed=10)
    assert not np.array_equal(a_images, c_images)
    e1, _ = task_ood_images("shape", "pixel", 4, seed=2)
    e2, _ = task_ood_images("shape", "pixel", 4, seed=2)
    assert np.array_equal(e1, e2)


def test_holdout_is_checked():
    with pytest.raises(ConfigError) as exc:
        holdout_task("shape", ["blob"])
    assert "blob" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        holdout_task("size-shape", [c for c in TASKS["size-shape"].classes if c != "large star"])
    assert "fewer than 2" in one_line(exc)


def test_cli_writes_ood_images_and_refuses_a_foreign_out(tmp_path, capsys):
    out = tmp_path / "ood"
    argv = [
        "toy",
        "ood",
        "--task",
        "shape",
        "--holdout",
        "heart,star",
        "--domain",
        "sketch",
        "--n",
        "5",
        "--seed",
        "3",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    record = json.loads((out / OOD_FILE).read_text())
    assert record["meta"]["source"] == "novel" and "heart" not in record["meta"]["known_classes"]
    files = sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*.png"))
    assert files == [entry["file"] for entry in record["images"]] == [f"novel/ood_{i:04d}.png" for i in range(5)]
    assert all(entry["objects"][0]["shape"] in ("heart", "star") for entry in record["images"])
    assert (out / MARKER).is_file()
    first = (out / "images" / files[0]).read_bytes()

    capsys.readouterr()
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err  # our own folder: only with --overwrite
    assert (
        main([*argv, "--overwrite"]) == 0 and (out / "images" / files[0]).read_bytes() == first
    )  # same seed, same bytes

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"mine")
    capsys.readouterr()
    assert main([*argv[:-1], str(foreign), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "did not write" in err and "\n" not in err
    assert sorted(p.name for p in foreign.iterdir()) == ["holiday.jpg"]


def test_cli_draws_empty_scenes_for_a_builtin_task_and_refuses_novel(tmp_path, capsys):
    out = tmp_path / "empty"
    assert main(["toy", "ood", "--task", "color", "--n", "2", "--out", str(out)]) == 0
    record = json.loads((out / OOD_FILE).read_text())
    assert record["meta"]["source"] == "empty" and all(entry["objects"] == [] for entry in record["images"])
    assert "no object" in capsys.readouterr().err
    assert main(["toy", "ood", "--task", "color", "--source", "novel", "--out", str(tmp_path / "n")]) == 2
    assert "covers every color" in capsys.readouterr().err and not (tmp_path / "n").exists()
