"""Synthetic cached-feature worlds, split into DEVELOPMENT and HELD-OUT.

The rule (see ``benchmarks/README.md``): a default, a recipe or a grid may be
chosen by looking at the development worlds only. The held-out worlds are
printed beside them and quoted in README/RESULTS.md, and never used to choose:
when a held-out figure disappoints, the fix is justified on development data
(or a new development world that shows the same failure), and the held-out
worlds are then re-run, not tuned on.

Every world is built by :func:`build` from a :class:`WorldSpec`. The worlds
differ in *what makes the task hard*, not only in their seed:

* a domain shift shared by all classes — an offset plus a linear distortion of
  rank ``rank`` (what an adapter can learn once and apply to every class);
* a per-class shift (what no shared map can undo: it must be learned per
  class from that class's shots, or left alone);
* per-image noise and per-view (augmentation) noise, plus an optional
  systematic view bias (augmented views whose mean is not the centre view);
* prompt noise (text embeddings that sit off the class prototypes);
* class counts 100–1,000, shots 1–16, D 512 and 1,024, zero-shot from ~30 %
  to ~80 %.

The development worlds reuse :func:`synthetic_world.make_world`'s construction
(the world the earlier recipes were tuned on) at two sizes plus one harder
variant; the held-out worlds use seeds ≥ 5,000 and constructions no default
was tuned on.

Example:
    >>> spec = WorldSpec("tiny", "dev", classes=10, shots=2, dim=32, test_per_class=3)
    >>> data, test_x, test_y = build(spec)
    >>> tuple(data.train.shape), tuple(test_x.shape)
    ((20, 10, 32), (30, 32))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clip_adapter.methods import FewShotData

ROLES = ("dev", "heldout")


@dataclass(frozen=True)
class WorldSpec:
    """One synthetic world: its role, its size and what makes it hard."""

    name: str
    role: str  # "dev" (defaults may be chosen here) or "heldout" (reported only)
    classes: int
    shots: int
    dim: int = 1024
    views: int = 10
    seed: int = 0
    shift: float = 2.0  # strength of the shared low-rank distortion
    offset: float = 6.0  # length of the shared offset
    rank_div: int = 32  # shared distortion rank = dim // rank_div
    per_class_shift: float = 0.3
    noise: float = 0.2  # per-image, per direction
    view_noise: float = 0.5  # per-view, as a fraction of ``noise``
    view_bias: float = 0.0  # a shared direction every augmented view moves along (not the centre view)
    text_noise: float = 0.3
    test_per_class: int = 10

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"world {self.name}: role must be one of {ROLES}, got {self.role!r}")

    @property
    def size(self) -> str:
        return f"{self.classes} classes × {self.shots} shots × {self.views} views, D={self.dim}"


def build(spec: WorldSpec) -> tuple[FewShotData, torch.Tensor, torch.Tensor]:
    """``(FewShotData, test_x, test_y)`` for ``spec`` (val: min(shots, 4) per class, the CoOp rule)."""
    gen = torch.Generator().manual_seed(spec.seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    c, d = spec.classes, spec.dim
    protos = F.normalize(randn(c, d), dim=-1)
    text = F.normalize(protos + spec.text_noise * randn(c, d) / d**0.5, dim=-1)
    rank = max(1, d // spec.rank_div)
    distort = randn(d, rank) @ randn(rank, d) / (rank * d) ** 0.5
    offset = spec.offset * F.normalize(randn(d), dim=0)
    centres = (
        protos + spec.shift * protos @ distort.t() + offset + spec.per_class_shift * F.normalize(randn(c, d), dim=-1)
    )
    # Its own generator: the bias moves the views and changes nothing else (and a world without it
    # draws exactly synthetic_world.make_world's numbers).
    direction = torch.randn(d, generator=torch.Generator().manual_seed(spec.seed + 1))
    bias = spec.view_bias * spec.noise * d**0.5 * F.normalize(direction, dim=0)

    def images(per_class: int, n_views: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(c).repeat_interleave(per_class)
        base = centres[labels] + spec.noise * randn(len(labels), d)
        if n_views == 1:
            return 5.0 * base, labels
        jitter = spec.view_noise * spec.noise * randn(len(labels), n_views, d)
        return 5.0 * (base[:, None, :] + jitter + bias), labels

    train_x, train_y = images(spec.shots, spec.views)
    val_x, val_y = images(min(spec.shots, 4), 1)
    test_x, test_y = images(spec.test_per_class, 1)
    names = [f"class{i}" for i in range(c)]
    return FewShotData(train_x, train_y, val_x, val_y, text, 100.0, names, seed=1), test_x, test_y


# Development: where defaults may be chosen.
DEV = (
    # synthetic_world.make_world's construction, the world the 45.6× recipe was measured on (zero-shot 51.9 %).
    WorldSpec("dev-imagenet", "dev", 1000, 16, 1024, seed=0),
    # The same construction with noisier images: ImageNet's size away from the ceiling.
    WorldSpec("dev-1000x16-noisy", "dev", 1000, 16, 1024, seed=3, noise=0.28, per_class_shift=0.5),
    WorldSpec("dev-250x16", "dev", 250, 16, 1024, seed=1, noise=0.28, per_class_shift=0.5),  # zero-shot 48.0 %
    WorldSpec("dev-200x4-hard", "dev", 200, 4, 512, seed=2, noise=0.35, per_class_shift=0.8, rank_div=16),  # 27.6 %
)
# Held out: reported, never used to choose. Zero-shot accuracy in the comments.
HELDOUT = (
    # ImageNet's size, a shared shift of twice the rank, a larger per-class shift, noisier images (30.0 %).
    # (A first version with noise 0.2 was at the ceiling for every adapted method — CLIP-Adapter 99.9 %,
    # GDA 100.0 % — so it could show no gap; it was replaced, and no default was changed after seeing it.)
    WorldSpec(
        "ho-imagenet", "heldout", 1000, 16, 1024, seed=5001, shift=1.5, rank_div=16, per_class_shift=0.4, noise=0.3
    ),
    # A per-class shift stronger than the shared one, 512-d, 4 shots: zero-shot high, little to gain (82.5 %).
    WorldSpec(
        "ho-300x4-perclass",
        "heldout",
        300,
        4,
        512,
        seed=5002,
        shift=0.5,
        offset=1.5,
        per_class_shift=1.2,
        noise=0.22,
        text_noise=0.4,
    ),
    # 1 shot, heavy noise, augmented views biased away from the centre view (30.4 %).
    WorldSpec(
        "ho-100x1-hard",
        "heldout",
        100,
        1,
        512,
        seed=5003,
        shift=3.0,
        rank_div=8,
        noise=0.4,
        view_noise=1.0,
        view_bias=0.5,
        per_class_shift=0.6,
        test_per_class=30,
    ),
    # 8 shots, 1,024-d, a nearly full-rank shared shift and noisy prompts (44.2 %).
    WorldSpec(
        "ho-500x8",
        "heldout",
        500,
        8,
        1024,
        seed=5004,
        shift=2.5,
        rank_div=4,
        noise=0.25,
        text_noise=0.4,
        per_class_shift=0.5,
    ),
)
WORLDS = {spec.name: spec for spec in (*DEV, *HELDOUT)}
