"""`auto`: a method chosen by cross-validation over every labelled shot, saved as that method's artifact."""

from __future__ import annotations

import pytest
import torch

from clip_adapter.artifacts import Classifier
from clip_adapter.errors import ConfigError
from clip_adapter.methods import get_method
from clip_adapter.methods.auto import _Pool
from conftest import synthetic_data

FAST = ("zero-shot", "gda", "linear-probe")


def test_folds_are_stratified_and_cover_every_image_once():
    data, *_ = synthetic_data()
    pool = _Pool.from_data(data)
    folds = pool.folds(4, seed=1)
    everything = torch.cat(folds).sort().values
    assert torch.equal(everything, torch.arange(len(pool.labels)))
    for held_out in folds:  # every class is both trained on and held out in every fold
        assert set(pool.labels[held_out].tolist()) == set(range(data.num_classes))


def test_tiny_pools_repeat_the_deal_until_every_class_is_held_out_enough():
    data, *_ = synthetic_data(shots=1, val_shots=1)  # 2 images per class
    pool = _Pool.from_data(data)
    folds = pool.folds(4, seed=1, min_held_out=8)
    assert len(folds) == 8  # 2 folds, dealt 4 times
    held = torch.bincount(torch.cat(folds), minlength=len(pool.labels))
    assert torch.equal(held, torch.full_like(held, 4))  # every image held out once per deal
    deals = {tuple(torch.cat(folds[i:i + 2]).tolist()) for i in range(0, 8, 2)}
    assert len(deals) > 1  # fresh deals, not one deal copied
    assert all(torch.equal(a, b) for a, b in zip(pool.folds(4, seed=1, min_held_out=8), folds))  # seeded
    many, *_ = synthetic_data(shots=8, val_shots=4)
    assert len(_Pool.from_data(many).folds(4, seed=1, min_held_out=8)) == 4  # 12 per class: one deal is enough


def test_candidates_far_behind_after_a_deal_are_dropped_from_the_race():
    data, *_ = synthetic_data(shots=1, val_shots=1)  # 2 folds dealt 4 times
    auto = get_method("auto")
    strict = auto(auto.make_config(candidates=FAST, race_margin=0.0, min_held_out=8)).fit(data).selected
    cv, chosen = strict["cross_validation"], strict["chosen"]["method"]
    assert len(cv[chosen]["folds"]) == 8  # the leader runs every deal
    dropped = {name: r["folds"] for name, r in cv.items() if len(r["folds"]) < 8}
    assert dropped and "dropped" in strict["why"]
    for scores in dropped.values():  # stopped at a deal's end, when it trailed the leader
        n = len(scores)
        assert n % 2 == 0 and sum(scores) / n < sum(cv[chosen]["folds"][:n]) / n
    relaxed = auto(auto.make_config(candidates=FAST, race_margin=1.0, min_held_out=8)).fit(data).selected
    assert all(len(r["folds"]) == 8 for r in relaxed["cross_validation"].values()) and "dropped" not in relaxed["why"]


def test_auto_picks_the_cross_validated_best_and_records_why(tmp_path):
    data, test_x, test_y = synthetic_data()
    auto = get_method("auto")
    result = auto(auto.make_config(candidates=FAST)).fit(data)
    cv = result.selected["cross_validation"]
    best = max(cv.values(), key=lambda r: r["mean"])["mean"]
    assert result.method in FAST and cv[result.method]["mean"] >= best - 0.005
    assert result.selected["chosen"]["method"] == result.method and "fold cross-validation" in result.selected["chosen_on"]
    assert all(len(r["folds"]) == len(next(iter(cv.values()))["folds"]) for r in cv.values())
    # saved as an ordinary artifact of the chosen method
    clf = Classifier(result.method, result.head, data.classnames, data.templates, {"id": "s", "name": "s"}, result.selected)
    clf.save_pretrained(tmp_path / "a")
    assert torch.equal(Classifier.from_pretrained(tmp_path / "a").logits(test_x), clf.logits(test_x))


def test_one_shot_pools_train_and_val_into_two_folds_and_beats_zero_shot():
    # 1 shot + 1 validation image per class: each image takes its turn as the held-out one.
    data, test_x, test_y = synthetic_data(shots=1, val_shots=1)
    assert len(_Pool.from_data(data).folds(4, seed=1)) == 2
    auto = get_method("auto")
    result = auto(auto.make_config(candidates=FAST)).fit(data)
    zero_shot = get_method("zero-shot")().fit(data).head
    accuracy = lambda head: (head.predict_logits(test_x).argmax(1) == test_y).float().mean().item()  # noqa: E731
    assert accuracy(result.head) >= accuracy(zero_shot) - 0.01


def test_a_class_with_one_labelled_image_falls_back_to_the_validation_split():
    data, *_ = synthetic_data(shots=1, val_shots=0)
    assert _Pool.from_data(data).folds(4, seed=1) == []  # no image can be held out: the first candidate wins
    auto = get_method("auto")
    assert auto(auto.make_config(candidates=FAST)).fit(data).method == "zero-shot"


def test_bad_candidates_are_refused():
    auto = get_method("auto")
    with pytest.raises(ConfigError):
        auto.make_config(candidates=("auto",))
    with pytest.raises(ConfigError):
        auto.make_config(candidates=("magic",))
