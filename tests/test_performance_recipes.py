"""The fast paths change how the work is done, not what is computed (and refuse no-op training)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clip_adapter.core.errors import ConfigError
from clip_adapter.methods import get_method
from clip_adapter.methods.clip_adapter import ClipAdapter, ClipAdapterConfig, sized_recipe
from clip_adapter.methods.tip_adapter import TipAdapterHead, build_cache, search_alpha_beta
from clip_adapter.methods.zero_shot import base_meta
from conftest import synthetic_data


def _fits(method: ClipAdapter, data, stacked: bool):
    cfg = sized_recipe(method.config, data.train.shape[0])
    grid = {"lr": (cfg.lr,), "alpha": cfg.alpha_grid}
    fits = method._fit_stacked(data, cfg, grid) if stacked else method._fit_each(data, cfg, grid)
    return list(fits)


def test_stacked_candidates_train_as_one_after_another_would():
    data, *_ = synthetic_data()
    method = ClipAdapter(ClipAdapter.make_config(epochs=4, lr=1e-2, alpha_grid=(0.2, 0.6)))
    stacked, each = _fits(method, data, True), _fits(method, data, False)
    for (p1, h1, i1), (p2, h2, i2) in zip(stacked, each):
        assert p1 == p2 and i1["best_epoch"] == i2["best_epoch"] and i1["steps"] == i2["steps"]
        for a, b in zip(h1.state_dict().values(), h2.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-5)
    untrained = method._head(data, method.config)
    assert not torch.allclose(stacked[0][1].visual[0].weight, untrained.visual[0].weight)


def test_default_grid_can_fall_back_to_zero_shot():
    assert 0.0 in ClipAdapterConfig().alpha_grid
    data, test_x, _ = synthetic_data(text_noise=0.0)  # zero-shot is near perfect
    data.train_labels = data.train_labels[
        torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(0))
    ]
    result = get_method("clip-adapter")(ClipAdapter.make_config(epochs=20, lr=1e-2)).fit(
        data
    )  # shuffled labels: adapting hurts
    assert result.selected["chosen"]["alpha"] == 0.0
    zero_shot = get_method("zero-shot")().fit(data).head
    assert torch.equal(result.head.predict_logits(test_x), zero_shot.predict_logits(test_x))


def test_sized_recipe_leaves_small_sets_alone_and_caps_large_ones():
    small = sized_recipe(ClipAdapterConfig(), 1024)
    assert (small.batch_size, small.lr, small.epochs) == (32, 1e-3, 60)
    large = sized_recipe(ClipAdapterConfig(lr_grid=(1e-2,)), 16_000)
    assert large.batch_size == 256 and large.epochs == 12
    assert large.lr == pytest.approx(1e-3 * 8**0.5) and large.lr_grid[0] == pytest.approx(1e-2 * 8**0.5)
    official = sized_recipe(ClipAdapter.make_config("official"), 16_000)
    assert (official.batch_size, official.lr, official.epochs) == (32, 2e-3, 200)


@pytest.mark.parametrize("method", ["clip-adapter", "tip-adapter-f", "clap"])
@pytest.mark.parametrize("option,value", [("epochs", 0), ("lr", 0.0), ("lr_grid", (0.0,))])
def test_training_that_would_do_nothing_is_refused(method, option, value):
    with pytest.raises(ConfigError, match=option.split("_")[0]):
        get_method(method).make_config(**{option: value})


def test_tip_adapter_class_sums_match_the_dense_cache_product():
    data, test_x, _ = synthetic_data(num_classes=7, shots=5)
    head = TipAdapterHead(get_method("tip-adapter").Config(), {**base_meta(data), "num_keys": data.train.shape[0]})
    build_cache(head, data)
    affinity = head.affinity(test_x)
    dense = torch.exp(-3.0 * (1 - affinity)) @ head.values
    assert head.key_labels() is not None
    assert torch.allclose(head.cache_logits(affinity, 3.0), dense, atol=1e-5)
    with torch.no_grad():
        head.values.mul_(0.5)  # no longer one-hot: the dense product is used
    assert head.key_labels() is None
    assert torch.allclose(head.cache_logits(affinity, 3.0), dense * 0.5, atol=1e-6)


def test_tip_adapter_search_picks_what_the_full_grid_picks():
    data, *_ = synthetic_data(num_classes=6, text_noise=1.5)
    head = TipAdapterHead(
        get_method("tip-adapter").Config(beta_steps=30, alpha_steps=10),
        {**base_meta(data), "num_keys": data.train.shape[0]},
    )
    build_cache(head, data)
    chosen, score, _ = search_alpha_beta(head, data)
    x, y = data.selection
    clip = head.logit_scale * F.normalize(x, dim=-1) @ F.normalize(data.text, dim=-1).t()
    affinity, best = F.normalize(x, dim=-1) @ head.keys.detach().t(), None
    for beta in [0.1 + i * 9.9 / 30 for i in range(30)]:
        for alpha in [0.1 + j * 9.9 / 10 for j in range(10)]:  # the original dense formula, every point scored
            logits = clip + alpha * (head.logit_scale / 100) * torch.exp(-beta * (1 - affinity)) @ head.values
            s = ((logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item())
            if best is None or s[0] > best[0][0] or (s[0] == best[0][0] and s[1] < best[0][1]):
                best = (s, alpha, beta)
    assert score[0] == best[0][0] and score[1] == pytest.approx(best[0][1], abs=1e-5)
    assert (chosen["alpha"], chosen["beta"]) == pytest.approx((best[1], best[2]))


def test_the_alpha_race_leaves_the_survivors_trajectories_unchanged():
    from clip_adapter.methods.stacked import StackedAdapters, train_stacked

    data, *_ = synthetic_data()
    cfg = sized_recipe(ClipAdapter.make_config(epochs=6, lr=1e-2), data.train.shape[0])
    alphas = [0.1, 0.3, 0.6, 0.9]
    first = ClipAdapter(cfg)._head(data, cfg).visual

    def trained(race):
        model = StackedAdapters(first[0].weight, first[2].weight, alphas, data.text, float(data.logit_scale), True)
        return train_stacked(model, data, cfg, data.seed, race)

    full, raced = trained(None), trained((2, 2))
    kept = [i for i, (info, _) in enumerate(raced) if info["epochs_run"] == 6]
    assert len(kept) == 2 and all(raced[i][0]["epochs_run"] == 2 for i in range(4) if i not in kept)
    for i in kept:  # the survivors follow the same trajectory as without the race
        assert raced[i][0]["best_epoch"] == full[i][0]["best_epoch"]
        for a, b in zip(raced[i][1], full[i][1]):
            assert torch.allclose(a, b, atol=1e-5)
    # the survivors are the two best on validation at the race epoch
    at_race = [next(e for e in full[i][0]["epochs"] if e["epoch"] == 2)["selection_accuracy"] for i in range(4)]
    assert min(at_race[i] for i in kept) >= max(at_race[i] for i in range(4) if i not in kept)


def test_an_edge_choice_of_alpha_is_refined_beyond_the_edge():
    from clip_adapter.methods.clip_adapter import beyond_edge

    assert beyond_edge(0.2, (0.0, 0.2, 0.4, 0.8)) == 0.1 and beyond_edge(0.8, (0.0, 0.2, 0.4, 0.8)) == 0.9
    assert beyond_edge(0.0, (0.0, 0.2, 0.4)) is None and beyond_edge(0.4, (0.0, 0.2, 0.4, 0.8)) is None
    data, *_ = synthetic_data()
    method = ClipAdapter(ClipAdapter.make_config(epochs=4, lr=1e-2, alpha_grid=(0.05, 0.1), alpha_refine=2))
    result = method.fit(data)
    tried = [h["alpha"] for h in result.history]
    assert tried[:3] == [0.2, 0.05, 0.1]  # the configured α first, then the grid
    grid = (0.2, 0.05, 0.1)
    for round_ in range(2):  # each refinement goes beyond the edge chosen so far, until an inner value wins
        seen = result.history[: 3 + round_]
        chosen = max(seen, key=lambda h: (h["selection_accuracy"], -h["selection_loss"]))["alpha"]  # ties: the first
        step = beyond_edge(chosen, grid)
        if step is None:
            assert len(tried) == 3 + round_
            break
        assert tried[3 + round_] == step
        grid += (step,)
    none = ClipAdapter(ClipAdapter.make_config(epochs=2, alpha_refine=0)).fit(data)
    assert len(none.history) == len(ClipAdapterConfig().alpha_grid)
