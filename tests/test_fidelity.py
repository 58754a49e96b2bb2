"""Where the toolkit says it follows the official code, the official rule re-stated on identical inputs.

Each test names the official behaviour it pins down; each would have caught a drift found by comparing
our heads with the official repositories (CLAP, Tip-Adapter, Dassl/CoOp, lpclip).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clip_adapter.methods import FewShotData, get_method
from clip_adapter.methods.clap import ClapHead, initial_multipliers


def official_phr_update(h: torch.Tensor, lambd: torch.Tensor, rho: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLAP's outer_step: the PHR gradient is the new multiplier; the penalty parameter becomes h."""
    x = lambd + rho * h
    return torch.where(x >= 0, x, torch.zeros_like(h)), h.clone()


def test_clap_adaptive_multipliers_follow_the_official_per_class_update():
    config = get_method("clap").make_config(constraint="adaptive")
    head = ClapHead(config, {"num_classes": 3, "embed_dim": 4, "logit_scale": 100.0})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head.anchors.copy_(torch.randn(3, 4, generator=gen))
        head.multipliers.copy_(torch.tensor([0.63, 0.2, 0.9]))
    lambd, rho = head.multipliers.clone(), torch.zeros(3)  # official: penalty_parameter starts at zeros
    for step in range(3):
        with torch.no_grad():
            head.prototypes.copy_(head.anchors + 0.5 * (step + 1) * torch.randn(3, 4, generator=gen))
        lambd, rho = official_phr_update(head.deviation(), lambd, rho)
        head.outer_step(step)
        assert torch.allclose(head.multipliers, lambd) and torch.allclose(head.rho, rho)
    # the first step leaves λ as it was (ρ = 0): the drift gave λ = 16.4 for a class starting at 0.63


def test_clap_initial_multipliers_use_the_mean_of_raw_prompt_embeddings():
    gen = torch.Generator().manual_seed(1)
    c, t, d = 3, 8, 6
    raw = torch.randn(c, t, d, generator=gen) * torch.linspace(0.5, 4.0, t).view(1, t, 1)  # templates of varying norms
    ensemble = F.normalize(F.normalize(raw, dim=-1).mean(1), dim=-1)
    mean_raw = raw.mean(1)
    train = torch.randn(4 * c, 2, d, generator=gen)
    labels = torch.arange(c).repeat_interleave(4)
    data = FewShotData(train, labels, train[:, 0], labels, ensemble, 50.0, ["a", "b", "c"], text_raw=mean_raw)
    flat, flat_labels = train.reshape(-1, d), labels.repeat_interleave(2)
    probs = torch.softmax(50.0 * F.normalize(flat, dim=-1) @ F.normalize(mean_raw, dim=-1).t(), dim=1)
    expected = torch.stack([probs[flat_labels == k, k].mean() for k in range(c)])
    assert torch.allclose(initial_multipliers(data), expected, atol=1e-6)


def test_tip_adapter_f_uses_adamw_eps_1e4_as_the_official_code():
    from clip_adapter.methods.train import make_optimizer

    cfg = get_method("tip-adapter-f").make_config()
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["eps"] == 1e-4


def test_clap_epoch_is_the_official_loaders_batches_over_images_with_a_constant_warmup():
    from clip_adapter.methods.train import steps_per_epoch

    cfg = get_method("clap").make_config()
    assert (cfg.warmup_type, cfg.warmup_lr, cfg.batch_size) == ("constant", 1e-5, 256)
    # 160 images (10 classes × 16 shots) × 10 views: one batch per epoch, not ceil(1600 / 256) = 7
    assert steps_per_epoch(160, 256, cfg.drop_last) == 1
    assert steps_per_epoch(1000, 256, cfg.drop_last) == 3  # Dassl drops the last partial batch
    data = FewShotData(
        torch.randn(160, 10, 8),
        torch.arange(10).repeat_interleave(16),
        torch.randn(10, 8),
        torch.arange(10),
        F.normalize(torch.randn(10, 8), dim=-1),
        50.0,
        [str(i) for i in range(10)],
    )
    result = get_method("clap")(cfg.replace(epochs=3)).fit(data)
    assert result.history[0]["steps"] == 3  # 3 epochs × 1 step


def test_official_presets_follow_the_released_recipes():
    ca = get_method("clip-adapter").make_config("official")
    assert (ca.alpha, ca.alpha_grid, ca.select_epoch, ca.warmup_type, ca.warmup_lr, ca.drop_last) == (
        0.2,
        (),
        False,
        "constant",
        1e-5,
        True,
    )
    for name in ("coop", "cocoop", "clip-adapter"):
        assert get_method(name).preset_crop_scale["official"] == (0.08, 1.0)  # Dassl's RandomResizedCrop
        assert get_method(name).make_config("official").drop_last


def test_one_shot_on_37_classes_takes_one_step_per_epoch_with_dassls_loader():
    from clip_adapter.methods.train import steps_per_epoch

    assert steps_per_epoch(37, 32, drop_last=True) == 1  # the partial batch of 5 images is dropped
    assert steps_per_epoch(37, 32, drop_last=False) == 2


def test_zero_shot_and_adapters_classify_unseen_classes_for_base_to_new():
    data, *_ = _toy()
    new_text = F.normalize(torch.randn(2, data.embed_dim, generator=torch.Generator().manual_seed(3)), dim=-1)
    for name, overrides in (("zero-shot", {}), ("clip-adapter", {"epochs": 2, "variant": "both"})):
        head = get_method(name)(get_method(name).make_config(**overrides)).fit(data).head
        moved = head.for_classes(new_text, None, ["x", "y"], None)
        assert moved.predict_logits(data.val).shape == (len(data.val), 2)
    for name in ("linear-probe", "gda", "tip-adapter"):
        head = get_method(name)().fit(data).head
        assert head.for_classes(new_text, None, ["x", "y"], None) is None


def _toy():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(4)
    train = torch.randn(12, 2, 8, generator=gen)
    return FewShotData(
        train, labels, train[:, 0], labels, F.normalize(torch.randn(3, 8, generator=gen), dim=-1), 50.0, ["a", "b", "c"]
    ), None
