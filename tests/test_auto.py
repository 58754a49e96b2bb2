"""`auto`: a method chosen by cross-validation over every labelled shot, saved as that method's artifact."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from clip_adapter.artifacts import Classifier
from clip_adapter.core.errors import ConfigError
from clip_adapter.methods import FewShotData, get_method
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
    deals = {tuple(torch.cat(folds[i : i + 2]).tolist()) for i in range(0, 8, 2)}
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
    result = auto(auto.make_config(candidates=FAST, race_margin=1.0, min_deals=1)).fit(
        data
    )  # no candidate dropped from the race
    cv = result.selected["cross_validation"]
    best = max(cv.values(), key=lambda r: r["mean"])["mean"]
    assert result.method in FAST and cv[result.method]["mean"] >= best - 0.005
    assert (
        result.selected["chosen"]["method"] == result.method and "fold cross-validation" in result.selected["chosen_on"]
    )
    assert all(len(r["folds"]) == len(next(iter(cv.values()))["folds"]) for r in cv.values())
    # saved as an ordinary artifact of the chosen method
    clf = Classifier(
        result.method, result.head, data.classnames, data.templates, {"id": "s", "name": "s"}, result.selected
    )
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


# --- held-out views, inner selection, determinism -------------------------------------------------------------------


def test_held_out_training_images_are_scored_on_their_centre_views_when_given_else_on_the_view_mean():
    data, *_ = synthetic_data()
    centre = data.train[:, 0] + 1.0  # anything but the views' mean
    with_centre = _Pool.from_data(replace(data, train_centre=centre))
    n = len(data.train_labels)
    assert torch.equal(with_centre.point[:n], centre) and torch.equal(with_centre.point[n:], data.val)
    assert with_centre.point_source == "centre views"
    without = _Pool.from_data(data)  # a constructor that gave none: the fallback, said as such
    assert torch.equal(without.point[:n], data.train.mean(dim=1)) and "no centre views" in without.point_source
    asked = _Pool.from_data(replace(data, train_centre=centre), "mean")
    assert torch.equal(asked.point[:n], data.train.mean(dim=1)) and "held_out_view=mean" in asked.point_source
    auto = get_method("auto")
    fast = auto.make_config(candidates=("zero-shot", "gda"))
    assert auto(fast).fit(replace(data, train_centre=centre)).selected["held_out_views"] == "centre views"
    assert "no centre views" in auto(fast).fit(data).selected["held_out_views"]


def test_a_centre_view_that_does_not_match_the_training_images_is_refused_or_ignored():
    data, *_ = synthetic_data()
    with pytest.raises(ConfigError, match="train_centre"):
        replace(data, train_centre=torch.zeros(len(data.train_labels), data.train.shape[-1] + 1))
    stale = replace(
        data, train_centre=torch.zeros(3, data.train.shape[-1])
    )  # rows of other images (a method reshaped train)
    assert stale.centre_views() is None and "no centre views" in _Pool.from_data(stale).point_source


def augmented_views_mislead(seed: int = 0) -> tuple:
    """Data whose augmented views look like the *next* class, while centre views (and test images) sit on their own.

    Zero-shot (text = the class directions) is right on centre views and wrong on the views' mean; a method trained
    on the views learns the shifted look and is wrong on test images. Returns ``(data, test_x, test_y)``.
    """
    gen = torch.Generator().manual_seed(seed)
    classes, dim, shots, views = 4, 12, 8, 4
    means = 3 * torch.eye(classes, dim)
    centre_of = lambda y: means[y] + 0.3 * torch.randn(len(y), dim, generator=gen)  # noqa: E731
    train_y = torch.arange(classes).repeat_interleave(shots)
    train_centre = centre_of(train_y)
    shifted = means[(train_y + 1) % classes] + 0.3 * means[train_y]
    train = shifted[:, None] + 0.3 * torch.randn(len(train_y), views, dim, generator=gen)
    val_y = torch.arange(classes).repeat_interleave(4)
    test_y = torch.arange(classes).repeat_interleave(25)
    text = torch.nn.functional.normalize(means, dim=1)
    data = FewShotData(
        train,
        train_y,
        centre_of(val_y),
        val_y,
        text,
        30.0,
        [f"c{i}" for i in range(classes)],
        seed=1,
        train_centre=train_centre,
    )
    return data, centre_of(test_y), test_y


def test_centre_views_stop_the_augmented_view_bias_from_choosing_a_method_that_fails_on_test_images():
    data, test_x, test_y = augmented_views_mislead()
    auto = get_method("auto")
    config = auto.make_config(candidates=("zero-shot", "gda", "clap"))  # CLAP learns from the views with no validation
    accuracy = lambda head: (head.predict_logits(test_x).argmax(1) == test_y).float().mean().item()  # noqa: E731
    zero_shot = accuracy(get_method("zero-shot")().fit(data).head)
    assert zero_shot > 0.95
    old = auto(config).fit(replace(data, train_centre=None))  # the view mean: zero-shot looks wrong in cross-validation
    assert old.method != "zero-shot" and accuracy(old.head) < zero_shot - 0.3
    assert old.selected["cross_validation"]["zero-shot"]["mean"] < 0.4  # right on the validation images (a third) only
    new = auto(config).fit(data)  # centre views: zero-shot is scored as test images will score it
    assert new.selected["cross_validation"]["zero-shot"]["mean"] > 0.95
    assert accuracy(new.head) >= zero_shot - 0.01


def test_candidates_choose_their_hyper_parameters_on_another_fold_than_the_one_they_are_scored_on(monkeypatch):
    data, *_ = synthetic_data(shots=8, val_shots=4)  # 12 images per class: 4 folds
    seen = []
    original = _Pool.fold_data

    def spy(self, held_out, data, inner_val=None):
        inner = original(self, held_out, data, inner_val)
        seen.append(
            (set(held_out.tolist()), None if inner_val is None else set(inner_val.tolist()), len(inner.train_labels))
        )
        return inner

    monkeypatch.setattr(_Pool, "fold_data", spy)
    auto = get_method("auto")
    record = auto(auto.make_config(candidates=("zero-shot", "gda"), min_deals=1)).fit(data).selected
    assert "never on the fold scored" in record["inner_selection"]
    pool_size = len(data.train_labels) + len(data.val_labels)
    for held_out, inner_val, n_train in seen:
        assert inner_val and not held_out & inner_val  # validated elsewhere than scored
        assert n_train == pool_size - len(held_out) - len(inner_val)  # and trained on neither
    seen.clear()
    old = (
        auto(auto.make_config(candidates=("zero-shot", "gda"), min_deals=1, inner_selection="held-out"))
        .fit(data)
        .selected
    )
    assert all(inner_val is None for _, inner_val, _ in seen) and "held-out" in old["inner_selection"]


def test_two_folds_choose_on_the_fold_scored_and_say_so():
    data, *_ = synthetic_data(shots=1, val_shots=1)
    auto = get_method("auto")
    record = auto(auto.make_config(candidates=("zero-shot", "gda"))).fit(data).selected
    assert record["inner_selection"] == "on the fold scored (only 2 folds)"


def test_pools_are_dealt_at_least_min_deals_times():
    data, *_ = synthetic_data(shots=8, val_shots=4)  # 12 per class: one deal would hold each class out 12 times
    pool = _Pool.from_data(data)
    assert len(pool.folds(4, seed=1, min_held_out=8, min_deals=2)) == 8
    auto = get_method("auto")
    record = auto(auto.make_config(candidates=("zero-shot", "gda"))).fit(data).selected
    assert "repeated 2 times" in record["chosen_on"] and len(record["cross_validation"]["gda"]["folds"]) == 8


def test_a_large_pool_is_scored_on_one_fold_with_the_search_on_another(monkeypatch):
    data, *_ = synthetic_data(shots=8, val_shots=4)  # 12 per class: 4 folds, 2 deals below the threshold
    pool_size = len(data.train_labels) + len(data.val_labels)
    seen = []
    original = _Pool.fold_data

    def spy(self, held_out, data, inner_val=None):
        seen.append((set(held_out.tolist()), set(inner_val.tolist())))
        return original(self, held_out, data, inner_val)

    monkeypatch.setattr(_Pool, "fold_data", spy)
    auto = get_method("auto")
    config = auto.make_config(candidates=("zero-shot", "gda", "linear-probe"), single_fold_above=pool_size - 1)
    record = auto(config).fit(data).selected
    assert all(len(r["folds"]) == 1 for r in record["cross_validation"].values())
    assert len(seen) == 3 and len({frozenset(h) for h, _ in seen}) == 1  # every candidate: the same one fold
    held_out, inner_val = seen[0]
    assert not held_out & inner_val and "never on the fold scored" in record["inner_selection"]
    assert record["chosen_on"].startswith(f"one fold of a 4-fold split ({len(held_out)} held-out images")
    seen.clear()
    full = auto(config.replace(single_fold_above=pool_size)).fit(data).selected  # at the threshold: cross-validated
    assert len(full["cross_validation"]["gda"]["folds"]) == 8 and "repeated 2 times" in full["chosen_on"]


def test_auto_is_deterministic():
    data, test_x, _ = synthetic_data(seed=3)
    auto = get_method("auto")
    config = auto.make_config(
        candidates=("zero-shot", "gda", "clap"), max_folds=2, min_deals=1
    )  # CLAP trains on shuffled batches
    first, second = auto(config).fit(data), auto(config).fit(data)
    assert first.selected == second.selected
    assert torch.equal(first.head.predict_logits(test_x), second.head.predict_logits(test_x))


def test_zero_shot_is_kept_unless_a_learned_candidate_beats_it_by_the_margin():
    data, *_ = synthetic_data()  # zero-shot is poor here by construction
    auto = get_method("auto")
    learned = auto(auto.make_config(candidates=("zero-shot", "gda"))).fit(data)
    assert learned.method != "zero-shot"
    cv = learned.selected["cross_validation"]
    assert len(cv["zero-shot"]["folds"]) == len(
        cv[learned.method]["folds"]
    )  # far behind, but free: never dropped from the race
    lead = cv[learned.method]["mean"] - cv["zero-shot"]["mean"]
    kept = auto(auto.make_config(candidates=("zero-shot", "gda"), zero_shot_margin=min(1.0, lead + 0.01))).fit(data)
    assert kept.method == "zero-shot" and kept.selected["why"].startswith("zero-shot kept")


@pytest.mark.parametrize(
    "bad",
    [
        {"held_out_view": "side"},
        {"inner_selection": "test"},
        {"min_deals": 0},
        {"zero_shot_margin": -0.1},
        {"zero_shot_margin": 2.0},
        {"candidates": ("gda", "gda")},
        {"max_folds": 1},
        {"tie_margin": 1.5},
        {"race_margin": -1.0},
        {"min_held_out": 0},
        {"candidates": ()},
        {"single_fold_above": -1},
    ],
)
def test_every_option_is_validated(bad):
    with pytest.raises(ConfigError):
        get_method("auto").make_config(**bad)


def test_the_pipeline_encodes_a_centre_view_of_every_training_image(tiny_backbone, image_folder, tmp_path):
    from clip_adapter.data import load_dataset, sample_few_shot
    from clip_adapter.features import extract_images, image_store
    from clip_adapter.pipeline import FeatureConfig, RunConfig, encode_split, few_shot_data, templates_for

    dataset = load_dataset(image_folder)
    split = sample_few_shot(dataset, 2, 1)
    features = FeatureConfig(views=2, cache_dir=str(tmp_path / "cache"))
    feats = encode_split(tiny_backbone, split, templates_for(dataset), features)
    centre, _, _ = extract_images(
        tiny_backbone, [s.path for s in split.train], image_store(tiny_backbone, tmp_path / "cache")
    )
    assert feats.train_centre is not None and torch.equal(feats.train_centre, centre)
    assert feats.train_centre.shape == (feats.train.shape[0], feats.train.shape[-1])
    data = few_shot_data(
        feats, tiny_backbone, dataset.classnames, templates_for(dataset), RunConfig(method="auto", shots=2)
    )
    assert torch.equal(data.centre_views(), centre)
