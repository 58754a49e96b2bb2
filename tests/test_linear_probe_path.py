"""The linear probe's default C search (ridge screen + warm-started path) against the full search it replaced."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clip_adapter.methods import FewShotData, get_method
from clip_adapter.methods.linear_probe import PathProblem


def noisy_problem(seed: int, classes: int = 10, dim: int = 32, shots: int = 8, noise: float = 2.5) -> FewShotData:
    """Overlapping clusters around a shared offset (CLIP-like: far from isotropic), 4 validation images a class."""
    gen = torch.Generator().manual_seed(seed)
    offset = 4.0 * F.normalize(torch.randn(dim, generator=gen), dim=0)
    means = F.normalize(torch.randn(classes, dim, generator=gen), dim=1) + offset

    def draw(per_class: int, views: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(classes).repeat_interleave(per_class)
        jitter = noise / dim**0.5 * torch.randn(len(labels), *views, dim, generator=gen)
        return means[labels].view(len(labels), *([1] * len(views)), dim) + jitter, labels

    (train, train_y), (val, val_y) = draw(shots, (2,)), draw(4)
    text = F.normalize(torch.randn(classes, dim, generator=gen), dim=1)
    return FewShotData(train, train_y, val, val_y, text, 30.0, [f"c{i}" for i in range(classes)], seed=seed)


@pytest.mark.parametrize("c", [1e-3, 0.3, 10.0, 1e4])
def test_ridge_screen_closed_form_matches_a_direct_solve(c):
    gen = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(60, 8, generator=gen) + 2.0, dim=-1)
    y = torch.arange(60) % 4
    problem = PathProblem(x, y, 4, x[:8], y[:8])
    weight = problem.newton_weights(c).T @ problem.vectors.T  # [K, D] in raw coordinates
    centred = (x - x.mean(0)).double()
    gram = centred.T @ centred / 60 + problem.ridge_lambda(c) * torch.eye(8, dtype=torch.float64)
    direct = 4 * torch.linalg.solve(gram, centred.T @ (F.one_hot(y, 4).double() - 0.25) / 60).T
    assert torch.allclose(weight.double(), direct, rtol=2e-3, atol=1e-5 * direct.abs().max().item())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_path_search_is_within_one_validation_image_of_the_full_search(seed):
    data = noisy_problem(seed)
    probe = get_method("linear-probe")
    full = probe(probe.make_config(search="full")).fit(data)
    path = probe(probe.make_config(search="path")).fit(data)
    assert path.val_accuracy >= full.val_accuracy - 1 / len(data.val_labels) - 1e-6
    assert 0.3 < full.val_accuracy < 1.0  # a problem where C matters, not one every C solves
    stages = {row["stage"] for row in path.history}
    assert stages == {"path"} and all(row["iterations"] <= 300 for row in path.history)
    assert len(path.history) < len(full.history) and path.selected["grid"]["search"] == "path"
