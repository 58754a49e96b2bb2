"""CLAP's large-N recipe (full-batch L-BFGS) against the official SGD loop, and the switch between them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clip_adapter.core.errors import ConfigError
from clip_adapter.methods import get_method
from clip_adapter.methods.base import cosine_logits
from clip_adapter.methods.clap import initial_multipliers
from conftest import synthetic_data


def views_objective(head, data) -> float:
    """CLAP's objective over every cached view: CE + mean_k λ_k·||w_k − t_k||² (λ from the support set)."""
    n, v, d = data.train.shape
    anchors = data.text_raw if data.text_raw is not None else data.text
    w = head.prototypes.detach()
    ce = F.cross_entropy(
        cosine_logits(data.train.reshape(n * v, d), w, data.logit_scale), data.train_labels.repeat_interleave(v)
    )
    return float(ce + (initial_multipliers(data) * (w - anchors).pow(2).sum(1)).mean())


def accuracy(head, x, y) -> float:
    return float((head.predict_logits(x).argmax(1) == y).float().mean())


def test_lbfgs_recipe_reaches_the_official_loops_objective_and_accuracy():
    # 1,024 images × 10 views: the official loop takes 4 steps per epoch, 1,200 in all
    data, test_x, test_y = synthetic_data(num_classes=16, dim=48, shots=64, views=10, text_noise=1.5, seed=3)
    clap = get_method("clap")
    official = clap(clap.make_config("official")).fit(data)
    large = clap(clap.make_config(solver="lbfgs")).fit(data)
    assert official.selected["solver"] == "sgd" and large.selected["solver"] == "lbfgs"
    zero_shot = clap(clap.make_config(solver="lbfgs", mean_iters=0, view_iters=0)).fit(data)
    start, ref, new = (views_objective(r.head, data) for r in (zero_shot, official, large))
    assert new < start / 3  # it trained, to the official loop's objective region: 3 rows per image estimate
    assert new <= ref * 1.25  # the views' spread (+14 % here, where it is most of the loss; +4 % on dev-250x16)
    assert abs(accuracy(large.head, test_x, test_y) - accuracy(official.head, test_x, test_y)) <= 0.01
    # with a row per view the spread is exact, and L-BFGS lands on the official loop's objective
    exact = clap(clap.make_config(solver="lbfgs", view_rows=10, view_iters=30)).fit(data)
    assert views_objective(exact.head, data) == pytest.approx(ref, rel=0.02)
    assert [s["stage"] for s in large.history[0]["stages"]] == ["view means", "3 rows per image"]


def test_the_switch_threshold_picks_the_recipe():
    data, *_ = synthetic_data(num_classes=4, dim=16, shots=5, views=3)  # 20 training images
    clap = get_method("clap")
    assert clap.make_config().solver == "auto"
    picked = {
        above: clap(clap.make_config(lbfgs_above=above, epochs=2)).fit(data).selected["solver"] for above in (19, 20)
    }
    assert picked == {19: "lbfgs", 20: "sgd"}
    cfg = clap.make_config()
    assert cfg.uses_lbfgs(cfg.lbfgs_above + 1) and not cfg.uses_lbfgs(cfg.lbfgs_above)
    assert not clap.make_config("official").uses_lbfgs(10**6)  # the official loop at every size
    assert not cfg.replace(constraint="adaptive").uses_lbfgs(10**6)  # λ updates need epochs
    with pytest.raises(ConfigError, match="adaptive"):
        clap.make_config(solver="lbfgs", constraint="adaptive")


def test_view_rows_keep_each_images_mean_and_single_views_fall_back_to_it():
    from clip_adapter.methods.clap import view_rows

    x = F.normalize(torch.randn(5, 1, 8), dim=-1)
    means, rows = view_rows(x, 3, seed=0)
    assert rows.shape == (5, 1, 8) and torch.equal(rows[:, 0], means)
