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
