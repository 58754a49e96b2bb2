"""The shared method matrix: every registered method through the same checks.

A new method is not done until it has a case here; ``test_every_method_has_a_case``
fails otherwise.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clip_adapter.artifacts import Classifier
from clip_adapter.methods import get_method, list_methods
from conftest import assert_improves_on_zero_shot, synthetic_data

FAST = {"epochs": 40, "lr": 1e-2}
# (method, config overrides). Methods that need a real text encoder are covered in test_prompt_methods.py.
CASES = [
    ("clip-adapter", {**FAST, "variant": "visual"}),
    ("clip-adapter", {**FAST, "variant": "text"}),
    ("clip-adapter", {**FAST, "variant": "both"}),
    ("clip-adapter", {**FAST, "variant": "visual", "final_relu": False}),
    ("clip-adapter", {**FAST, "variant": "visual", "ratio": "learned"}),
    ("clip-adapter", {**FAST, "variant": "both", "ratio": "learned"}),
    ("clip-adapter", {**FAST, "variant": "visual", "ratio": "network"}),
    ("clip-adapter", {**FAST, "variant": "both", "ratio": "network"}),
    ("linear-probe", {"bisection_steps": 2}),
    ("tip-adapter", {}),
    ("tip-adapter-f", {"epochs": 20, "lr": 1e-2}),
    ("clap", {"epochs": 60}),
    ("clap", {"epochs": 60, "constraint": "adaptive"}),
    ("clap", {"epochs": 60, "constraint": "none"}),
    ("gda", {}),
]
PROMPT_METHODS = {"coop", "cocoop"}
IDS = [f"{m}-" + "-".join(f"{k}={v}" for k, v in o.items() if k != "epochs") for m, o in CASES]


def fit(method: str, overrides: dict, **data_kwargs):
    data, test_x, test_y = synthetic_data(**data_kwargs)
    cls = get_method(method)
    result = cls(cls.make_config(**overrides)).fit(data)
    return result, data, test_x, test_y


def zero_shot(data):
    return get_method("zero-shot")().fit(data).head


def test_every_method_has_a_case():
    covered = {m for m, _ in CASES} | PROMPT_METHODS | {"zero-shot", "auto"}  # auto: tests/test_auto.py
    assert set(list_methods()) <= covered, f"methods without a test case: {set(list_methods()) - covered}"


@pytest.mark.parametrize("method,overrides", CASES, ids=IDS)
def test_training_improves_on_zero_shot(method, overrides):
    result, data, test_x, test_y = fit(method, overrides)
    assert_improves_on_zero_shot(result.head, data, test_x, test_y)


@pytest.mark.parametrize("method,overrides", CASES, ids=IDS)
def test_logits_finite_and_save_load_identical(method, overrides, tmp_path):
    short = {"epochs": 3} if "epochs" in get_method(method).Config.help_texts() else {}
    result, data, test_x, _ = fit(method, {**overrides, **short})
    logits = result.head.predict_logits(test_x)
    assert logits.shape == (len(test_x), data.num_classes) and torch.isfinite(logits).all()
    backbone = {"id": "synthetic", "name": "synthetic"}
    Classifier(method, result.head, data.classnames, data.templates, backbone, result.selected).save_pretrained(
        tmp_path / "a"
    )
    loaded = Classifier.from_pretrained(tmp_path / "a")
    assert torch.equal(loaded.logits(test_x), logits)
    assert loaded.head.config == result.head.config


@pytest.mark.parametrize("variant,ratio_key", [("visual", "alpha"), ("text", "beta"), ("both", "alpha")])
def test_zero_ratio_reproduces_zero_shot_exactly(variant, ratio_key):
    # Trained for real (so the adapter weights are not trivial), then compared bit for bit.
    overrides = {"variant": variant, "alpha": 0.0, "beta": 0.0, "alpha_grid": (0.0,), "epochs": 5}
    result, data, test_x, _ = fit("clip-adapter", overrides)
    assert any(p.abs().sum() > 0 for p in result.head.parameters())
    assert torch.equal(result.head.predict_logits(test_x), zero_shot(data).predict_logits(test_x))


def test_ratio_is_chosen_on_validation_and_recorded():
    result, *_ = fit("clip-adapter", {"epochs": 10, "alpha_grid": (0.1, 0.5, 0.9)})
    selection = result.selected
    assert selection["protocol"] == "val" and selection["chosen_on"] == "few-shot validation split"
    assert selection["chosen"]["alpha"] in (0.1, 0.2, 0.5, 0.9)
    assert len(result.history) == 4  # default 0.2 plus the three grid values
    assert result.head.config.alpha == selection["chosen"]["alpha"]


def test_protocol_none_uses_defaults_without_looking_at_data():
    result, *_ = fit("clip-adapter", {"epochs": 5, "alpha": 0.3}, protocol="none")
    assert result.selected["chosen"]["alpha"] == 0.3 and len(result.history) == 1
    assert result.val_accuracy is None or result.selected["chosen_on"].startswith("fixed")


def test_learned_ratio_moves_and_stays_in_unit_interval():
    result, *_ = fit("clip-adapter", {"epochs": 20, "ratio": "learned", "alpha": 0.5})
    alpha = float(torch.sigmoid(result.head.alpha_logit.detach()))
    assert 0 < alpha < 1 and alpha != pytest.approx(0.5, abs=1e-4)


def test_ratio_network_gives_per_image_ratios():
    result, data, test_x, _ = fit("clip-adapter", {"epochs": 5, "ratio": "network", "variant": "both"})
    alpha, beta = result.head.ratios(test_x)
    assert alpha.shape == (len(test_x), 1) and beta.shape == (len(test_x), 1)
    assert ((alpha > 0) & (alpha < 1)).all()


def test_per_image_text_logits_match_explicit_computation():
    from clip_adapter.methods.clip_adapter import _per_image_text_logits

    gen = torch.Generator().manual_seed(0)
    image, text, delta = (
        torch.randn(4, 8, generator=gen),
        torch.randn(3, 8, generator=gen),
        torch.randn(3, 8, generator=gen),
    )
    beta = torch.rand(4, 1, generator=gen)
    explicit = torch.stack(
        [30 * F.normalize(image[i], dim=0) @ F.normalize(text + beta[i] * delta, dim=1).t() for i in range(4)]
    )
    assert torch.allclose(_per_image_text_logits(image, text, delta, beta, 30.0), explicit, atol=1e-5)


def test_official_preset_is_the_papers_recipe():
    cfg = get_method("clip-adapter").make_config("official")
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (
        "sgd",
        2e-3,
        0.9,
        5e-4,
        32,
        200,
    )


def test_adapter_dimensions_follow_the_backbone():
    for dim in (16, 96):
        data, *_ = synthetic_data(dim=dim)
        head = get_method("clip-adapter").build_head(
            get_method("clip-adapter").Config(reduction=4), {"num_classes": 5, "embed_dim": dim, "logit_scale": 30.0}
        )
        assert head.visual[0].weight.shape == (dim // 4, dim)


def test_non_finite_loss_stops_training_naming_the_step():
    from clip_adapter.core.errors import TrainingError

    data, *_ = synthetic_data()
    data.train[0, :, 0] = float("nan")
    cls = get_method("clip-adapter")
    with pytest.raises(TrainingError, match=r"non-finite .* at step \d+"):
        cls(cls.make_config(epochs=2, alpha_grid=())).fit(data)
