"""Shared fixtures: tiny open_clip models, generated images, synthetic features.

Everything is offline and seeded: ``HF_HUB_OFFLINE`` makes a hidden hub call
fail at once, and the open_clip model used here is a 2-layer ViT registered
from ``tests/assets`` (random weights), so no download can be needed.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["CLIP_ADAPTER_NO_PROGRESS"] = "1"

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402
from PIL import Image  # noqa: E402

from clip_adapter.methods import FewShotData  # noqa: E402

# Fuzz tests draw the same examples every run (deterministic suite) and keep no example database.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")

ASSETS = Path(__file__).parent / "assets"
TINY = "test-tiny-vit"
open_clip.add_model_config(str(ASSETS / f"{TINY}.json"))
COLOURS = {"red_square": (200, 40, 40), "green_square": (40, 190, 60), "blue_square": (40, 60, 200)}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_ADAPTER_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_backbone():
    from clip_adapter.backbones import create_backbone

    return create_backbone(TINY, "none", precision="fp32")


def write_image_folder(root: Path, per_class: int = 10, size: int = 40, seed: int = 0, fmt: str = "JPEG") -> Path:
    """An ImageFolder of noisy coloured images, one class per colour."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(0, 35, (size, size, 3)) + np.array(colour), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.{'jpg' if fmt == 'JPEG' else 'png'}", fmt)
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "photos")


def synthetic_data(
    num_classes: int = 5,
    dim: int = 24,
    shots: int = 8,
    views: int = 3,
    val_shots: int = 4,
    text_noise: float = 3.0,
    seed: int = 0,
    protocol: str = "val",
) -> tuple[FewShotData, torch.Tensor, torch.Tensor]:
    """Separable class clusters whose text embeddings are only loosely aligned.

    Zero-shot is poor by construction (noisy prototypes), so any method that
    learns from the shots must beat it. Returns ``(data, test_x, test_y)``.
    """
    gen = torch.Generator().manual_seed(seed)
    means = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=gen), dim=1) * 3

    def draw(n_per_class: int, extra: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(num_classes).repeat_interleave(n_per_class)
        noise = 0.6 * torch.randn(len(labels), *extra, dim, generator=gen)
        centre = means[labels].view(len(labels), *([1] * len(extra)), dim)
        return centre + noise, labels

    train, train_y = draw(shots, (views,))
    val, val_y = draw(val_shots)
    test, test_y = draw(20)
    text = torch.nn.functional.normalize(means + text_noise * torch.randn(num_classes, dim, generator=gen), dim=1)
    names = [f"class {i}" for i in range(num_classes)]
    data = FewShotData(train, train_y, val, val_y, text, 30.0, names, seed=seed, protocol=protocol)
    return data, test, test_y


def assert_improves_on_zero_shot(head, data: FewShotData, test_x: torch.Tensor, test_y: torch.Tensor) -> None:
    """Training loss down, training accuracy up, and test accuracy clearly above zero-shot and chance."""
    from clip_adapter.methods import evaluate_head, get_method

    zs = get_method("zero-shot")().fit(data).head
    train_x, train_y = data.train_means(), data.train_labels
    zs_train, fit_train = evaluate_head(zs, train_x, train_y), evaluate_head(head, train_x, train_y)
    assert fit_train[1] < zs_train[1], "training loss did not go down"
    assert fit_train[0] > zs_train[0], "training accuracy did not go up"
    zs_acc, acc = evaluate_head(zs, test_x, test_y)[0], evaluate_head(head, test_x, test_y)[0]
    assert acc > max(zs_acc + 0.1, 1.5 / data.num_classes), f"test accuracy {acc:.2f} vs zero-shot {zs_acc:.2f}"
