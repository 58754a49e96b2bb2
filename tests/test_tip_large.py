"""Tip-Adapter-F's large-N recipe (few epochs at a scaled rate, bf16 products, coarse-to-fine β search) against
the official loop, and the switch between them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clip_adapter.core.errors import ConfigError
from clip_adapter.methods import get_method
from clip_adapter.methods.tip_adapter import (
    TipAdapterHead,
    _KeyGradient,
    _meta,
    build_cache,
    resolve_settings,
    search_alpha_beta,
)
from conftest import synthetic_data

TIP_F = get_method("tip-adapter-f")


def accuracy(head, x, y) -> float:
    return float((head.predict_logits(x).argmax(1) == y).float().mean())


def test_the_threshold_picks_the_recipe_and_below_it_the_result_is_the_official_loops():
    data, *_ = synthetic_data(num_classes=4, dim=16, shots=5, views=3)  # 20 training images
    assert TIP_F.make_config().recipe == "auto"
    fits = {above: TIP_F(TIP_F.make_config(large_above=above, epochs=3)).fit(data) for above in (19, 20)}
    assert {above: fit.selected["recipe"] for above, fit in fits.items()} == {19: "large", 20: "official"}
    official = TIP_F(TIP_F.make_config(recipe="official", epochs=3)).fit(data)
    assert torch.equal(
        fits[20].head.keys, official.head.keys
    )  # auto below the threshold: the official loop, bit for bit
    assert fits[20].selected["chosen"] == official.selected["chosen"]
    assert fits[20].history[0]["recipe"] == "official"
    cfg = TIP_F.make_config()
    assert cfg.uses_large(cfg.large_above + 1) and not cfg.uses_large(cfg.large_above)
    assert not TIP_F.make_config("official").uses_large(10**6)  # the official loop at every size
    assert TIP_F.make_config(recipe="large").uses_large(1)
    assert TIP_F.make_config("official").tie_break == "first"  # Tip-Adapter's official search, kept


def test_the_large_recipe_reaches_the_official_loops_accuracy_and_records_itself():
    # 512 training images, 4 views: the official loop is 20 epochs of 2 steps, the large recipe 3 of 2 at 10× the lr
    data, test_x, test_y = synthetic_data(num_classes=16, dim=48, shots=32, views=4, text_noise=1.5, seed=4)
    official = TIP_F(TIP_F.make_config(recipe="official")).fit(data)
    large = TIP_F(TIP_F.make_config(large_above=500)).fit(data)
    zero = TIP_F(TIP_F.make_config(recipe="large", large_epochs=1, large_lr_factor=1e-2)).fit(data)
    ref, new = accuracy(official.head, test_x, test_y), accuracy(large.head, test_x, test_y)
    assert new >= ref - 0.02, (new, ref)
    assert new > accuracy(zero.head, test_x, test_y)  # it trained
    info = large.history[0]
    assert large.selected["recipe"] == info["recipe"] == "large" and official.selected["recipe"] == "official"
    assert info["epochs_run"] == 3 and info["steps"] == 6 and 1 <= info["best_epoch"] <= 3
    assert info["lr"] == pytest.approx(1e-3 * 20 / 3 * 1.5)
    assert info["matmul"] in ("bf16", "fp32") and len(info["epochs"]) == 3
    assert "selection_accuracy" in info["epochs"][-1]
    assert large.history[1]["beta_stride"] == 8 and large.history[1]["betas_scored"] < 200
    assert large.head.keys.grad is None  # the gradient buffer is not kept with the head


@pytest.mark.parametrize("matmul", ["fp32", "bf16"])
def test_the_hand_gradient_is_autograds(matmul):
    data, *_ = synthetic_data(num_classes=6, dim=32, shots=4, views=3, seed=1)
    cfg = resolve_settings(TIP_F.make_config(alpha=2.0, beta=3.0))
    head = TipAdapterHead(cfg, _meta(data, True))
    build_cache(head, data)
    with torch.no_grad():
        head.keys.add_(0.05 * torch.randn(head.keys.shape, generator=torch.Generator().manual_seed(0)))
    x, y = data.train[:, 1], data.train_labels.flip(0)
    loss = F.cross_entropy(head(x), y)
    loss.backward()
    expected, head.keys.grad = head.keys.grad.clone(), None
    grads = _KeyGradient(head, 2.0, 3.0, bf16=matmul == "bf16")
    grads.sync()
    got = grads.step(x, y)
    tol = 1e-5 if matmul == "fp32" else 3e-2
    assert float(got) == pytest.approx(float(loss.detach()), rel=tol)
    assert float((head.keys.grad - expected).norm() / expected.norm()) < tol


def test_coarse_to_fine_search_scores_fewer_betas_and_stride_one_is_the_full_grid():
    data, *_ = synthetic_data(num_classes=8, dim=24, shots=4, views=2, seed=2)
    head = TipAdapterHead(resolve_settings(TIP_F.make_config()), _meta(data, False))
    build_cache(head, data)
    full, full_score, full_hist = search_alpha_beta(head, data)
    same, same_score, _ = search_alpha_beta(head, data, stride=1)
    assert (same, same_score) == (full, full_score) and "beta_stride" not in full_hist[0]
    coarse, coarse_score, hist = search_alpha_beta(head, data, stride=8)
    assert hist[0]["beta_stride"] == 8 and hist[0]["betas_scored"] == 25 + 14
    assert coarse_score[0] <= full_score[0]  # never better than the full grid, on the same split
    assert coarse_score[0] >= full_score[0] - 0.1


@pytest.mark.parametrize(
    "option, value",
    [
        ("recipe", "fast"),
        ("matmul", "fp16"),
        ("large_above", -1),
        ("large_epochs", 0),
        ("large_lr_factor", 0.0),
        ("search_stride", 0),
        ("search_stride", 2.5),
    ],
)
def test_bad_large_recipe_options_are_refused_naming_the_option(option, value):
    with pytest.raises(ConfigError, match=option):
        TIP_F.make_config(**{option: value})
