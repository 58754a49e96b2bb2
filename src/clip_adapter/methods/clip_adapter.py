"""CLIP-Adapter (Gao et al., IJCV 2024): residual bottleneck adapters on frozen CLIP features.

Visual: ``f' = α·A_v(f) + (1−α)·f``; text: ``W' = β·A_t(W) + (1−β)·W``;
``both`` uses the two. ``A = Linear(D, D/r, bias=False) → ReLU →
Linear(D/r, D, bias=False) [→ ReLU]``. Logits are ``logit_scale · cos(f', W')``
and the loss is cross-entropy; only the adapters (and a learned ratio) train.

Code vs paper: the official code ends ``A`` with a ReLU and the paper's
formula does not; ``final_relu=True`` (default) follows the code. The
official code feeds the adapter raw, unnormalised features, as we do.
Because ``A`` has no bias it is positively homogeneous, so the blend and the
cosine are invariant to each feature's scale: normalising first would not
change the function, only the optimiser's effective step size.

Default recipe ("fast"): AdamW, lr 1e-3 at batch 32, 60 epochs, cosine decay
after one warm-up epoch, the epoch and α chosen on validation from
``{0, 0.1, 0.2, 0.4, 0.6, 0.8}``. α = 0 is zero-shot exactly, so validation can
fall back to it when adapting hurts (strong per-class shifts). When validation
picks the smallest or largest trained α, one more value beyond it is trained
(half the smallest, halfway to 1 from the largest; ``alpha_refine`` times at
most): an edge choice says the grid may not hold the best value.

Sizes are set by the data, so the same recipe serves 8 and 1,000 classes:
``batch_size=0`` (auto) is 32, doubled up to 256 while an epoch would take
more than 64 steps, with the lr scaled by √(batch/32); ``max_passes`` caps
epochs × training images at 192,000, i.e. 12 epochs for ImageNet's 16,000
images, where 60 epochs would cost ~20 minutes per α on a 2-core CPU. Above
2,048 images the α candidates also *race*: after a third of the epochs only
the two best on validation so far train on (``race_keep``, ``race_at``); the
others keep their best checkpoint. On the toy world's tasks (≤ 1,024 images)
none of the size rules changes anything. The visual adapters of a
fixed-ratio search train side by side as one stacked model (same result as
one after another, see :mod:`clip_adapter.methods.stacked`), which is why
the default steps its lr per batch (the stacked loop's schedule) and draws
views at random.

What these defaults were chosen on: the α grid, the batch rule and the √ lr
scaling on the toy world's validation splits and ``benchmarks/synthetic_world.py``;
0.1 back in the grid, the edge refinement, the 12-epoch budget and the race on
the *development* worlds of ``benchmarks/worlds.py`` (a 6-epoch budget lost
2.5 points on the noisy 1,000-class world; twelve epochs of the two best
candidates recovered them). The *held-out* worlds there (seeds ≥ 5,000, other
constructions) were run once with these choices frozen;
``python benchmarks/heldout.py`` prints both, and ``docs/measured.md`` quotes
the held-out figures.

Why α behaves like a learning rate: ``A`` is bias-free with ReLUs, so
``A`` with its second layer scaled by ``c > 0`` is ``c·A``; the blend
``α·A(f) + (1−α)·f`` is, up to the scale the cosine ignores, ``f + ρ·A(f)``
with ``ρ = α/(1−α)``. Every α spans the same functions: α only sets how fast
the correction moves under AdamW's fixed-size steps (and how strongly weight
decay holds it). A short schedule therefore favours larger α, a long one
smaller α, which is what the validation search sees.

``preset="official"`` is the released code's recipe, as Dassl runs it (SGD lr
2e-3, momentum 0.9, weight decay 5e-4, batch 32 with the last partial batch
dropped, 200 epochs, no cap, one constant warm-up epoch at 1e-5, then a cosine
stepped once per epoch (``schedule_unit="epoch"``: the last epoch keeps
2.5e-4 × the peak lr, where a per-batch cosine ends at 0), α fixed at 0.2, the
last epoch's model), and ``clip-adapter train --preset official`` caches its
views with Dassl's crop scale (0.08, 1) instead of Tip-Adapter's (0.5, 1).
One departure remains: Dassl re-crops every image at every epoch, where the
preset samples one of ``V`` cached views per image per epoch (default 10: an
image shows each view ~20 times over 200 epochs). ``view_order="distinct"``
with ``V ≥ epochs`` views reproduces the fresh crops exactly, at the cost of
encoding ``epochs`` views per image; ``benchmarks/views_curve.py`` measures how
many cached views the preset needs to match it.
The per-epoch schedule and the distinct view order train the candidates one
after another rather than stacked (:func:`stackable`): the official preset has
one candidate, so nothing is lost there.

Ratios: ``fixed`` (α/β constants, searched on validation by default),
``learned`` (one scalar each, ``sigmoid`` of a trained logit) or ``network``
(the paper's ``α, β = Q(f, W)``: a small MLP on the normalised image feature
and the mean normalised class embedding, giving a per-image α and β in
(0, 1)). The paper gives no architecture for Q; this is our reading.
With ``both`` and fixed ratios, α = β during the validation search.

Calibration (``range_penalty``, default 0 = off): Murugesan et al. (ECCV 2024,
"Robust calibration of large vision-language adapters") find that adapters
miscalibrate, in-domain and more so under shift, because adaptation inflates
the per-sample logit range (max − min over classes) beyond zero-shot CLIP's. A
positive ``range_penalty`` λ adds λ · :func:`~clip_adapter.trust.calibration.
logit_range_penalty` (the squared excess of the adapted range over the
zero-shot range, per image, averaged) to the cross-entropy of every batch; the
zero-shot logits are the frozen text classifier (the prompts before any text
adapter) on the same features. With a penalty the candidates train one after
another rather than stacked (:func:`stackable`): same results, slower on
large grids. α = 0 is still zero-shot exactly (its penalty is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import Default, check_choice, check_range, defaults, option
from ..core.errors import ConfigError
from ..core.threads import torch_threads
from ..trust.calibration import logit_range_penalty
from .base import FewShotData, FitResult, Head, Method, cosine_logits, register
from .stacked import StackedAdapters, train_stacked
from .train import TrainConfig, axis, grid_points, select_best, train_head
from .zero_shot import base_meta

VARIANTS = ("visual", "text", "both")
RATIO_MODES = ("fixed", "learned", "network")
ALPHA_GRID = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8)
ALPHA_REFINE = 1  # values tried beyond an edge choice of the grid (each costs one more full-length candidate)
MIN_REFINED_ALPHA, MAX_REFINED_ALPHA = 0.01, 0.99
RACE_KEEP, RACE_AT = 2, 1 / 3
MAX_PASSES = 192_000  # 12 epochs of ImageNet 16-shot (with the α race); toy tasks (≤ 1,024 images) stay at 60 epochs
AUTO_BATCH, MAX_AUTO_BATCH, STEPS_PER_EPOCH = 32, 256, 64
MAX_RANGE_PENALTY = 1e6  # any finite weight is allowed up to here; beyond, the cross-entropy no longer matters


def sized_recipe(cfg: "ClipAdapterConfig", n: int) -> "ClipAdapterConfig":
    """``cfg`` with batch size, learning rates and epochs made concrete for ``n`` training images.

    Example:
        >>> cfg = sized_recipe(ClipAdapterConfig(), 16_000)
        >>> cfg.batch_size, round(cfg.lr, 5), cfg.epochs
        (256, 0.00283, 12)
        >>> sized_recipe(ClipAdapterConfig(), 128).batch_size
        32
    """
    changes: dict[str, Any] = {}
    if cfg.batch_size == 0:
        batch = AUTO_BATCH
        while batch < MAX_AUTO_BATCH and n > STEPS_PER_EPOCH * batch:
            batch *= 2
        factor = math.sqrt(batch / AUTO_BATCH)  # Adam-family square-root lr scaling
        changes.update(batch_size=batch, lr=cfg.lr * factor, lr_grid=tuple(lr * factor for lr in cfg.lr_grid))
    if cfg.max_passes:
        changes["epochs"] = max(1, min(cfg.epochs, cfg.max_passes // max(1, n)))
    return cfg.replace(**changes)


@dataclass
@defaults(
    lr=Default(1e-3, "peak learning rate (at batch 32; scaled by √(batch/32) when batch_size is auto)"),
    epochs=Default(60, "passes over the training images (at most; see max_passes)"),
    batch_size=Default(0, "images per step; 0 = auto: 32, doubled up to 256 while an epoch has over 64 steps"),
    weight_decay=Default(1e-4, "weight decay"),
)
class ClipAdapterConfig(TrainConfig):
    """CLIP-Adapter options; training fields come from TrainConfig."""

    variant: str = option("visual", "visual, text or both")
    reduction: int = option(4, "bottleneck reduction r: hidden width D/r")
    final_relu: bool = option(True, "ReLU after the second layer (official code); off = paper formula")
    ratio: str = option("fixed", "residual ratio: fixed, learned (scalar) or network (Q(f, W))")
    alpha: float = option(0.2, "visual residual ratio α (initial value when learned)")
    beta: float = option(0.2, "text residual ratio β (initial value when learned)")
    alpha_grid: tuple[float, ...] = option(
        ALPHA_GRID, "α (and β) values searched on validation when fixed (0 = zero-shot)"
    )
    alpha_refine: int = option(
        ALPHA_REFINE,
        "when validation picks the grid's smallest or largest trained α, train up to this "
        "many values beyond it (half the smallest; halfway to 1 from the largest); 0 = off",
    )
    # Fast recipe: AdamW on cached features, chosen on the toy world's validation splits.
    max_passes: int = option(MAX_PASSES, "cap on epochs × training images per candidate (0 = no cap)")
    race_keep: int = option(
        RACE_KEEP,
        "above 2,048 training images, only this many α candidates train past race_at "
        "of the epochs (the best on validation so far); 0 = all train to the end",
    )
    race_at: float = option(RACE_AT, "fraction of the epochs after which the α race keeps race_keep candidates")
    range_penalty: float = option(
        0.0,
        "weight of the logit-range penalty (Murugesan et al., ECCV 2024): keeps each image's "
        "logit range within zero-shot's, for calibration; 0 = off",
    )
    min_batch_size: ClassVar[int] = 0  # 0 is "auto"

    def validate(self) -> None:
        super().validate()
        check_choice("variant", self.variant, VARIANTS)
        check_choice("ratio", self.ratio, RATIO_MODES)
        check_range("reduction", self.reduction, 1, 4096)
        check_range("max_passes", self.max_passes, 0, 10**12)
        check_range("alpha_refine", self.alpha_refine, 0, 10)
        check_range("race_keep", self.race_keep, 0, 100)
        check_range("race_at", self.race_at, 0.0, 1.0)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("beta", self.beta, 0.0, 1.0)
        check_range("range_penalty", self.range_penalty, 0.0, MAX_RANGE_PENALTY)  # also refuses nan and inf
        for value in self.alpha_grid:
            check_range("alpha_grid", value, 0.0, 1.0)


def stackable(cfg: ClipAdapterConfig) -> bool:
    """Whether the candidates can train side by side (:mod:`.stacked` steps its lr per batch and draws views at random).

    The stacked loop knows only the cross-entropy: with a ``range_penalty`` the
    candidates train one after another through :func:`.train.train_head`.

    Example:
        >>> stackable(ClipAdapterConfig()), stackable(ClipAdapter.make_config("official"))
        (True, False)
        >>> stackable(ClipAdapterConfig(range_penalty=0.1))
        False
    """
    return (
        cfg.variant == "visual"
        and cfg.ratio == "fixed"
        and cfg.schedule_unit == "step"
        and cfg.view_order == "random"
        and cfg.range_penalty == 0
    )


def race_plan(cfg: ClipAdapterConfig, n: int, candidates: int) -> tuple[int, int] | None:
    """``(epoch, keep)`` of the α race for ``candidates`` trained together on ``n`` images, or None
    (all run to the end).

    Only large sets race (more than 2,048 images, where :func:`sized_recipe` changes the
    recipe): the toy world's tasks and 100-class 16-shot sets train every α to the end.

    Example:
        >>> cfg = sized_recipe(ClipAdapterConfig(), 16_000)
        >>> race_plan(cfg, 16_000, 5), race_plan(cfg, 1_000, 5)
        ((4, 2), None)
    """
    if not cfg.race_keep or candidates <= cfg.race_keep or n <= STEPS_PER_EPOCH * AUTO_BATCH:
        return None
    epoch = max(1, round(cfg.race_at * cfg.epochs))
    return (epoch, cfg.race_keep) if epoch < cfg.epochs else None


def beyond_edge(chosen: float, alphas: tuple[float, ...]) -> float | None:
    """The α to try next when validation chose an edge of the trained grid, else None.

    An edge choice says the grid may not contain the best value: beyond the smallest
    trained α lies half of it, beyond the largest the point halfway to 1. α = 0
    (zero-shot, untrained) is not an edge of the trained values.

    Example:
        >>> (
        ...     beyond_edge(0.1, (0.0, 0.1, 0.2, 0.4)),
        ...     beyond_edge(0.4, (0.0, 0.1, 0.2, 0.4)),
        ...     beyond_edge(0.2, (0.1, 0.2, 0.4)),
        ... )
        (0.05, 0.7, None)
    """
    trained = sorted(a for a in alphas if a > 0)
    if chosen <= 0 or len(trained) < 2:
        return None
    if chosen == trained[0] and chosen / 2 >= MIN_REFINED_ALPHA:
        return round(chosen / 2, 6)
    if chosen == trained[-1] and (1 + chosen) / 2 <= MAX_REFINED_ALPHA:
        return round((1 + chosen) / 2, 6)
    return None


def bottleneck(dim: int, reduction: int, final_relu: bool) -> nn.Sequential:
    """The adapter MLP ``A``: D → D/r → D, bias-free, ReLU between (and optionally after)."""
    hidden = max(1, dim // reduction)
    layers: list[nn.Module] = [nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False)]
    return nn.Sequential(*layers, nn.ReLU()) if final_relu else nn.Sequential(*layers)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


class RatioNet(nn.Module):
    """``α, β = Q(f, W)``: per-image ratios from the image and the task's class embeddings."""

    def __init__(self, dim: int, reduction: int, alpha: float, beta: float) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        with torch.no_grad():  # start at the configured ratios, as a fixed-ratio adapter would
            self.net[2].weight.mul_(0.01)
            self.net[2].bias.copy_(torch.tensor([_logit(alpha), _logit(beta)]))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        task = F.normalize(text, dim=-1).mean(dim=0, keepdim=True).expand(image.shape[0], -1)
        ratios = torch.sigmoid(self.net(torch.cat([F.normalize(image, dim=-1), task], dim=-1)))
        return ratios[:, :1], ratios[:, 1:]


class ClipAdapterHead(Head):
    """Adapters on the visual and/or text side of a frozen CLIP classifier."""

    def __init__(self, config: ClipAdapterConfig, meta: dict[str, Any]) -> None:
        super().__init__(config, meta)
        dim = meta["embed_dim"]
        self.logit_scale = float(meta["logit_scale"])
        self.register_buffer("text", torch.zeros(meta["num_classes"], dim))
        self.visual = bottleneck(dim, config.reduction, config.final_relu) if config.variant != "text" else None
        self.textual = bottleneck(dim, config.reduction, config.final_relu) if config.variant != "visual" else None
        if config.ratio == "learned":
            self.alpha_logit = nn.Parameter(torch.tensor(_logit(config.alpha)))
            self.beta_logit = nn.Parameter(torch.tensor(_logit(config.beta)))
        self.ratio_net = (
            RatioNet(dim, config.reduction, config.alpha, config.beta) if config.ratio == "network" else None
        )

    def ratios(self, features: torch.Tensor) -> tuple[Any, Any]:
        cfg = self.config
        if cfg.ratio == "learned":
            return torch.sigmoid(self.alpha_logit), torch.sigmoid(self.beta_logit)
        if cfg.ratio == "network":
            return self.ratio_net(features, self.text)
        return cfg.alpha, cfg.beta

    def adapted_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """``α·A_v(f) + (1−α)·f`` (``f`` itself without a visual adapter): what the logits compare.

        The one place the visual blend is written; retrieval and the report's adapter page call it.
        """
        if self.visual is None:
            return features
        alpha, _ = self.ratios(features)
        return alpha * self.visual(features) + (1 - alpha) * features

    def adapted_text_features(self, text: torch.Tensor, probe: torch.Tensor | None = None) -> torch.Tensor:
        """``β·A_t(W) + (1−β)·W`` for the rows of ``text`` (``W`` itself without a textual adapter).

        β comes from ``text`` itself (retrieval's queries: a network ratio per query), or from
        ``probe`` (e.g. image features), whose per-row β (network ratios) is averaged into one.

        Example:
            >>> head = ClipAdapterHead(ClipAdapterConfig(variant="text", beta=0.0), {"num_classes": 2, "embed_dim": 4,
            ...                                                                      "logit_scale": 100.0})
            >>> w = torch.randn(2, 4)
            >>> torch.equal(head.adapted_text_features(w), w)  # β = 0: CLIP's own class embeddings
            True
        """
        if self.textual is None:
            return text
        _, beta = self.ratios(text if probe is None else probe)
        if probe is not None and torch.is_tensor(beta):
            beta = beta.mean()
        return beta * self.textual(text) + (1 - beta) * text

    def zero_shot_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The frozen zero-shot classifier on ``features``: the class prompts before any adaptation,
        no visual adapter."""
        return cosine_logits(features, self.text, self.logit_scale)

    def range_penalty(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``range_penalty`` × the logit-range penalty of ``logits`` (this head's, on ``features``)
        against zero-shot's."""
        return self.config.range_penalty * logit_range_penalty(logits, self.zero_shot_logits(features))

    def for_classes(
        self, text: torch.Tensor, text_raw: torch.Tensor | None, classnames: list[str], backbone: Any
    ) -> "ClipAdapterHead":
        """The trained adapters applied to other classes' prompt embeddings (nothing here is per class but ``text``)."""
        head = ClipAdapterHead(self.config, {**self.meta, "num_classes": len(classnames)})
        state = {k: v for k, v in self.state_dict().items() if k != "text"}
        head.load_state_dict({**state, "text": text.to(self.text)})
        return head.eval()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        image = self.adapted_image_features(features)
        if self.textual is None:
            return cosine_logits(image, self.text, self.logit_scale)
        _, beta = self.ratios(features)
        if not torch.is_tensor(beta) or beta.dim() < 2:  # one β for the whole task
            return cosine_logits(image, self.adapted_text_features(self.text, features), self.logit_scale)
        return _per_image_text_logits(image, self.text, self.textual(self.text) - self.text, beta, self.logit_scale)

    def describe_ratios(self) -> dict[str, float]:
        if self.config.ratio == "learned":
            return {
                "alpha": float(torch.sigmoid(self.alpha_logit.detach())),
                "beta": float(torch.sigmoid(self.beta_logit.detach())),
            }
        return {}


def _per_image_text_logits(image, text, delta, beta, scale) -> torch.Tensor:
    """cos(f_i, W + β_i·Δ) for a per-image β without materialising [B, C, D]."""
    f = F.normalize(image, dim=-1)
    numerator = f @ text.t() + beta * (f @ delta.t())
    norm_sq = (text * text).sum(-1) + 2 * beta * (text * delta).sum(-1) + beta**2 * (delta * delta).sum(-1)
    return scale * numerator / norm_sq.clamp_min(1e-12).sqrt()


@register("clip-adapter")
class ClipAdapter(Method):
    """CLIP-Adapter, every variant of the paper.

    Example:
        >>> cfg = ClipAdapter.make_config(variant="both", epochs=2)
        >>> cfg.variant, cfg.reduction
        ('both', 4)
    """

    Config = ClipAdapterConfig
    Head = ClipAdapterHead
    presets = {
        "fast": {},
        # The official recipe (CoOp/Dassl settings the official code runs under).
        # The released code's recipe (Dassl): SGD, one epoch of constant warm-up at 1e-5, cosine, batch 32
        # with the last partial batch dropped, 200 epochs, the last epoch's model, α fixed at 0.2.
        "official": {
            "optimizer": "sgd",
            "lr": 2e-3,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "batch_size": 32,
            "epochs": 200,
            "max_passes": 0,
            "warmup_type": "constant",
            "warmup_epochs": 1.0,
            "warmup_lr": 1e-5,
            "select_epoch": False,
            "alpha": 0.2,
            "beta": 0.2,
            "alpha_grid": (),
            "lr_grid": (),
            "drop_last": True,
            "schedule_unit": "epoch",
        },  # Dassl steps the lr at each epoch's end
    }
    preset_crop_scale = {"official": (0.08, 1.0)}  # Dassl's random resized crop

    def fit(self, data: FewShotData) -> FitResult:
        cfg: ClipAdapterConfig = sized_recipe(self.config, data.train.shape[0])
        grid: dict[str, tuple] = {"lr": axis(cfg.lr, cfg.lr_grid)}
        if cfg.ratio == "fixed":
            grid["alpha"] = axis(cfg.alpha if cfg.variant != "text" else cfg.beta, cfg.alpha_grid)
        # One thread even at ImageNet scale: measured on the shared 2-core machine, a second
        # thread made a 1,000-class step 2× slower when another job held a core.
        with torch_threads(1):
            fits = list(self._fits(data, cfg, grid))
            result = select_best(data, grid, fits)
            for _ in range(cfg.alpha_refine if "alpha" in grid and data.protocol != "none" else 0):
                chosen = result.selected["chosen"]
                beyond = beyond_edge(chosen["alpha"], grid["alpha"])
                if beyond is None:
                    break
                grid = {**grid, "alpha": grid["alpha"] + (beyond,)}
                fits += self._fits(data, cfg, {"lr": (chosen["lr"],), "alpha": (beyond,)})
                result = select_best(data, grid, fits)
            return result

    def _fits(self, data: FewShotData, cfg: ClipAdapterConfig, grid: dict[str, tuple]):
        return self._fit_stacked(data, cfg, grid) if stackable(cfg) else self._fit_each(data, cfg, grid)

    def _head(self, data: FewShotData, run_cfg: ClipAdapterConfig) -> ClipAdapterHead:
        torch.manual_seed(data.seed)  # every candidate starts from the same weights
        head = ClipAdapterHead(run_cfg, base_meta(data))
        head.text.copy_(data.text)
        return head

    def _fit_each(self, data: FewShotData, cfg: ClipAdapterConfig, grid: dict[str, tuple]):
        """One candidate after another (text/both variants, learned or network ratios)."""
        for point in grid_points(data, grid):
            ratio = point.get("alpha", cfg.alpha if cfg.variant != "text" else cfg.beta)
            run_cfg = (
                cfg.replace(lr=point["lr"], alpha=ratio, beta=ratio)
                if cfg.ratio == "fixed"
                else cfg.replace(lr=point["lr"])
            )
            head = self._head(data, run_cfg)
            extra = (
                head.range_penalty if run_cfg.range_penalty > 0 else None
            )  # None: the loss exactly as without the option
            info = train_head(head, data, run_cfg, data.seed, extra_loss=extra)
            yield point, head, {**info, **head.describe_ratios()}

    def _fit_stacked(self, data: FewShotData, cfg: ClipAdapterConfig, grid: dict[str, tuple]):
        """Visual adapters with fixed α: every α of one lr trained at once (α = 0 untrained: it is zero-shot)."""
        if not stackable(cfg):  # the stacked loop would silently drop what it does not implement (the range penalty)
            raise ConfigError(
                "CLIP-Adapter: this configuration cannot train stacked (range_penalty > 0, or a ratio, variant, "
                "schedule or view order the stacked loop does not implement); it trains one candidate at a time"
            )
        points = grid_points(data, grid)
        for lr in dict.fromkeys(p["lr"] for p in points):
            row = [p for p in points if p["lr"] == lr]
            heads = [self._head(data, cfg.replace(lr=lr, alpha=p["alpha"], beta=p["alpha"])) for p in row]
            trained = [i for i, p in enumerate(row) if p["alpha"] > 0]
            infos: dict[int, dict[str, Any]] = {
                i: {"epochs_run": 0, "best_epoch": 0, "steps": 0, "train_seconds": 0.0} for i in range(len(row))
            }
            if trained:
                first = heads[trained[0]].visual
                model = StackedAdapters(
                    first[0].weight,
                    first[2].weight,
                    [row[i]["alpha"] for i in trained],
                    data.text,
                    float(data.logit_scale),
                    cfg.final_relu,
                )
                for i, (info, (w1, w2)) in zip(
                    trained,
                    train_stacked(
                        model, data, cfg.replace(lr=lr), data.seed, race_plan(cfg, data.train.shape[0], len(trained))
                    ),
                ):
                    with torch.no_grad():
                        heads[i].visual[0].weight.copy_(w1)
                        heads[i].visual[2].weight.copy_(w2)
                    infos[i] = info
            for i, point in enumerate(row):
                yield point, heads[i].eval(), infos[i]
