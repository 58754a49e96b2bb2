"""CLIP-Adapter's ``range_penalty`` (Murugesan et al., ECCV 2024): a training-time calibration remedy.

The option adds ``λ · logit_range_penalty(adapted logits, zero-shot logits)`` to the cross-entropy. Off (0,
the default) it must change nothing, bit for bit; on, it must pull the adapted logit range towards the
zero-shot one, keep α = 0 exactly zero-shot, train without the stacked loop (which knows only the
cross-entropy), and survive the artifact round trip.
"""

from __future__ import annotations

import math

import pytest
import torch

from clip_adapter.artifacts import Classifier
from clip_adapter.bench import MethodSpec
from clip_adapter.core.errors import ConfigError
from clip_adapter.core.threads import torch_threads
from clip_adapter.methods import clip_adapter as ca
from clip_adapter.methods import get_method
from clip_adapter.methods.train import train_head
from clip_adapter.trust.calibration import logit_range_penalty
from conftest import synthetic_data

ClipAdapter = get_method("clip-adapter")
FAST = {"epochs": 12, "lr": 1e-2}


def fit(**overrides):
    data, test_x, _ = synthetic_data(seed=2)
    result = ClipAdapter(ClipAdapter.make_config(**{**FAST, **overrides})).fit(data)
    return result, data, test_x


def state_bytes(head) -> dict[str, bytes]:
    return {k: v.detach().contiguous().numpy().tobytes() for k, v in head.state_dict().items()}


def logit_range(logits: torch.Tensor) -> torch.Tensor:
    return logits.amax(dim=1) - logits.amin(dim=1)


# --- the option ------------------------------------------------------------------------------------


def test_default_is_off_and_listed_with_a_help_text():
    assert ClipAdapter.make_config().range_penalty == 0.0
    assert "range" in ClipAdapter.Config.help_texts()["range_penalty"]


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, -math.inf, 1e7])
def test_negative_or_non_finite_weights_are_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match="range_penalty"):
        ClipAdapter.make_config(range_penalty=bad)


@pytest.mark.parametrize("bad", [True, "0.5", None])
def test_a_weight_of_the_wrong_type_is_refused(bad):
    with pytest.raises(ConfigError, match="range_penalty"):
        ClipAdapter.make_config(range_penalty=bad)


def test_bench_method_specs_can_set_it():
    spec = MethodSpec.parse("ca-pen=clip-adapter:range_penalty=0.5")
    assert spec.config().range_penalty == 0.5


# --- off: nothing changes --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["visual", "both"])
def test_zero_penalty_is_bit_identical_to_the_default(variant):
    default, _, test_x = fit(variant=variant)
    zero, _, _ = fit(variant=variant, range_penalty=0.0)
    assert state_bytes(zero.head) == state_bytes(default.head)
    assert torch.equal(zero.head.predict_logits(test_x), default.head.predict_logits(test_x))
    assert zero.selected == default.selected


def test_zero_penalty_trains_exactly_as_the_loop_without_the_hook():
    # The candidate-by-candidate path (text/both variants): with the option off no extra loss is passed, so the
    # head is the one the plain cross-entropy loop gives for the same seed and α.
    data, _, _ = synthetic_data(seed=2)
    cfg = ClipAdapter.make_config(**FAST, variant="both", alpha=0.4, beta=0.4, alpha_grid=(), batch_size=32)
    fitted = ClipAdapter(cfg).fit(data).head
    torch.manual_seed(data.seed)
    manual = ca.ClipAdapterHead(
        cfg, {"embed_dim": data.embed_dim, "num_classes": data.num_classes, "logit_scale": data.logit_scale}
    )
    manual.text.copy_(data.text)
    with torch_threads(1):  # as fit does: another thread count may add in another order
        train_head(manual, data, cfg, data.seed)
    assert state_bytes(fitted) == state_bytes(manual)


def test_zero_penalty_keeps_the_stacked_alpha_search():
    assert ca.stackable(ClipAdapter.make_config(range_penalty=0.0))
    assert not ca.stackable(ClipAdapter.make_config(range_penalty=0.5))


# --- on: what it does ------------------------------------------------------------------------------


def test_the_hook_adds_the_weighted_penalty_on_each_batch():
    data, _, _ = synthetic_data(seed=2)
    cfg = ClipAdapter.make_config(**FAST, range_penalty=2.5)
    head = ClipAdapter(cfg)._head(data, cfg)
    x = data.train[:7, 0]
    logits = head(x)
    expected = 2.5 * logit_range_penalty(logits, ca.cosine_logits(x, data.text, data.logit_scale))
    assert torch.equal(head.range_penalty(x, logits), expected)


def test_a_large_penalty_keeps_the_logit_range_near_zero_shot():
    # A fixed α (no search, so no candidate can fall back to α = 0) and long enough training to inflate the range.
    common = {"alpha": 0.6, "alpha_grid": (), "epochs": 40, "lr": 1e-2}
    data, _, _ = synthetic_data(seed=2)
    free = ClipAdapter(ClipAdapter.make_config(**common)).fit(data).head
    held = ClipAdapter(ClipAdapter.make_config(**common, range_penalty=10.0)).fit(data).head
    x = data.train.flatten(0, 1)  # every cached training view
    zs_range = logit_range(free.zero_shot_logits(x))
    free_gap = (logit_range(free.predict_logits(x)) - zs_range).abs().mean()
    held_gap = (logit_range(held.predict_logits(x)) - zs_range).abs().mean()
    assert free_gap > 1.0, f"without the penalty the adapter should inflate the range (gap {free_gap:.2f})"
    assert held_gap < 0.5 * free_gap, f"range gap to zero-shot: {held_gap:.3f} with the penalty, {free_gap:.3f} without"


@pytest.mark.parametrize("variant", ["visual", "text", "both"])
def test_alpha_zero_is_still_zero_shot_exactly_with_a_penalty(variant):
    result, data, test_x = fit(variant=variant, alpha=0.0, beta=0.0, alpha_grid=(0.0,), range_penalty=5.0)
    zero_shot = get_method("zero-shot")().fit(data).head
    assert torch.equal(result.head.predict_logits(test_x), zero_shot.predict_logits(test_x))


def test_the_stacked_loop_is_not_used_and_refuses_the_penalty(monkeypatch):
    def stacked(*_args, **_kwargs):
        raise AssertionError("the stacked loop would ignore the penalty")

    monkeypatch.setattr(ca, "train_stacked", stacked)
    result, _, _ = fit(
        range_penalty=1.0, alpha_refine=0
    )  # visual, fixed ratio: the case that stacks when the penalty is off
    assert len(result.history) == len(ca.ALPHA_GRID)
    cfg = ClipAdapter.make_config(**FAST, range_penalty=1.0)
    data, _, _ = synthetic_data(seed=2)
    with pytest.raises(ConfigError, match="stacked"):
        list(ClipAdapter(cfg)._fit_stacked(data, cfg, {"lr": (cfg.lr,), "alpha": (0.2,)}))


@pytest.mark.parametrize("variant", ["visual", "both"])
def test_the_option_round_trips_through_the_artifact(variant, tmp_path):
    result, data, test_x = fit(variant=variant, range_penalty=0.75, epochs=3)
    backbone = {"id": "synthetic", "name": "synthetic"}
    Classifier("clip-adapter", result.head, data.classnames, data.templates, backbone, result.selected).save_pretrained(
        tmp_path / "a"
    )
    loaded = Classifier.from_pretrained(tmp_path / "a")
    assert loaded.head.config.range_penalty == 0.75
    assert loaded.head.config == result.head.config
    assert torch.equal(loaded.logits(test_x), result.head.predict_logits(test_x))
