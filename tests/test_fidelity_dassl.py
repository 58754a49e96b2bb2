"""The official presets against Dassl's and lpclip's own rules, re-stated here on identical inputs.

Dassl (CoOp, CoCoOp, CLIP-Adapter's official code) steps its lr scheduler once per epoch, at the epoch's
end (``if (self.batch_idx + 1) == self.num_batches: self.update_lr()``), with a ConstantWarmupScheduler
wrapping ``CosineAnnealingLR(T_max=MAX_EPOCH)``; lpclip keeps the C of its last bisection step. Each test
would have caught the drift it names (a per-batch cosine ending at 0; the best-of-all-fits C).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clip_adapter.core.errors import ConfigError
from clip_adapter.methods import FewShotData, get_method
from clip_adapter.methods.base import Head
from clip_adapter.methods.linear_probe import COARSE_C, best_search, lpclip_search
from clip_adapter.methods.train import DistinctViews, TrainConfig, epoch_batches, epoch_samples, train_head

# --- Dassl's schedule, re-stated ------------------------------------------------------------------------


def dassl_epoch_lrs(base_lr: float, max_epoch: int, warmup_epoch: int, warmup: str, warm_lr: float) -> list[float]:
    """The lr each epoch trains at under Dassl's build_lr_scheduler('cosine') stepped at every epoch's end.

    The successor is torch's own CosineAnnealingLR (its recursive form reads the optimiser's current lr);
    the warm-up wrapper's rule is re-stated: its counter starts at 0, each epoch end either advances it
    (setting the constant/linear warm-up lr, or the successor's last lr once the counter reaches the
    warm-up length) or, once past the warm-up, steps the successor.
    """
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(opt, float(max_epoch))

    def warm(count: int) -> float:
        if warmup == "constant":
            return warm_lr
        return warm_lr if count == 0 else base_lr * count / warmup_epoch

    count, lrs = 0, []
    if warmup_epoch > 0:
        opt.param_groups[0]["lr"] = warm(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler.step() without optimizer.step(): intended here
        for _ in range(max_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            if count >= warmup_epoch:
                successor.step()
            else:
                count += 1
                opt.param_groups[0]["lr"] = successor.get_last_lr()[0] if count >= warmup_epoch else warm(count)
    return lrs


class Probe(Head):
    """A linear head on raw features (just something for the shared loop to train)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__(TrainConfig(), {"num_classes": classes, "embed_dim": dim})
        self.linear = torch.nn.Linear(dim, classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def _data(n: int = 6, views: int = 2, dim: int = 4, classes: int = 2, seed: int = 0) -> FewShotData:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    train = torch.randn(n, views, dim, generator=gen)
    text = F.normalize(torch.randn(classes, dim, generator=gen), dim=-1)
    return FewShotData(train, labels, train[:, 0], labels, text, 10.0, [str(c) for c in range(classes)])


def _step_lrs(monkeypatch, cfg: TrainConfig, data: FewShotData) -> tuple[list[float], dict]:
    """Every optimiser step's lr while ``train_head`` trains a probe under ``cfg``, and its summary."""
    seen: list[float] = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    info = train_head(Probe(data.embed_dim, data.num_classes), data, cfg, seed=1)
    return seen, info


def test_cocoop_official_lr_per_epoch_is_dassls_including_the_last_epoch(monkeypatch):
    cfg = get_method("cocoop").make_config("official")
    assert (cfg.schedule_unit, cfg.epochs, cfg.batch_size, cfg.warmup_epochs) == ("epoch", 10, 1, 1.0)
    data = _data(n=6)
    steps, info = _step_lrs(monkeypatch, cfg, data)
    expected = dassl_epoch_lrs(cfg.lr, cfg.epochs, 1, "constant", cfg.warmup_lr)
    per_epoch = [steps[6 * e : 6 * (e + 1)] for e in range(cfg.epochs)]
    assert len(steps) == 60 and all(len(set(lrs)) == 1 for lrs in per_epoch)  # constant within an epoch
    assert [lrs[0] for lrs in per_epoch] == pytest.approx(expected, rel=1e-9)
    assert [row["lr"] for row in info["epochs"]] == pytest.approx(expected, rel=1e-9)  # the log says the same
    assert expected[0] == pytest.approx(1e-5) and expected[1] == pytest.approx(2e-3)
    assert expected[-1] == pytest.approx(1.9098e-4, rel=1e-4)  # not the per-batch cosine's 0


def test_per_step_schedule_would_not_match_dassl(monkeypatch):
    """The drift the test above catches: the per-batch cosine ends near 0, not at 1.9e-4."""
    cfg = get_method("cocoop").make_config("official", schedule_unit="step")
    steps, _ = _step_lrs(monkeypatch, cfg, _data(n=6))
    assert steps[-1] < 1e-5 and len(set(steps[6:12])) > 1


@pytest.mark.parametrize("name", ["coop", "clip-adapter"])
def test_coop_and_clip_adapter_official_presets_step_per_epoch_as_dassl(name):
    cfg = get_method(name).make_config("official", epochs=12)
    assert cfg.schedule_unit == "epoch" and cfg.drop_last
    if name == "clip-adapter":  # end to end through the method's own fit (not the stacked path)
        data = _data(n=40, views=3, dim=16, classes=4)
        history = get_method(name)(cfg).fit(data).history
        lrs = [row["lr"] for row in history[0]["epochs"]]
    else:
        data = _data(n=40, views=3, dim=16, classes=4)
        lrs = [row["lr"] for row in train_head(Probe(16, 4), data, cfg, seed=1)["epochs"]]
    assert lrs == pytest.approx(dassl_epoch_lrs(cfg.lr, 12, 1, "constant", cfg.warmup_lr), rel=1e-9)


def test_per_epoch_linear_warmup_is_dassls(monkeypatch):
    cfg = TrainConfig(
        optimizer="sgd",
        lr=0.01,
        epochs=8,
        batch_size=3,
        warmup_epochs=3,
        warmup_type="linear",
        warmup_lr=1e-4,
        schedule_unit="epoch",
        select_epoch=False,
    )
    steps, info = _step_lrs(monkeypatch, cfg, _data(n=6))
    assert [row["lr"] for row in info["epochs"]] == pytest.approx(dassl_epoch_lrs(0.01, 8, 3, "linear", 1e-4), rel=1e-9)
    assert len(steps) == 16


def test_per_epoch_schedule_needs_whole_warmup_epochs():
    with pytest.raises(ConfigError, match="warmup_epochs"):
        TrainConfig(schedule_unit="epoch", warmup_epochs=0.5).validate()
    with pytest.raises(ConfigError, match="schedule_unit"):
        TrainConfig(schedule_unit="batch").validate()
    with pytest.raises(ConfigError, match="view_order"):
        TrainConfig(view_order="cycle").validate()


# --- cached views against fresh crops -----------------------------------------------------------------


class Recorder(Head):
    """Records which (image, view) each training sample was: features carry their ids."""

    def __init__(self) -> None:
        super().__init__(TrainConfig(), {"num_classes": 2, "embed_dim": 3})
        self.linear = torch.nn.Linear(3, 2)
        self.seen: list[tuple[int, int]] = []

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen += [(int(i), int(v)) for i, v in features[:, 1:].round().tolist()]
        return self.linear(features)


def _views_seen(order: str, n: int, views: int, epochs: int) -> list[list[int]]:
    ids = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, views, 1)
    view_ids = torch.arange(views, dtype=torch.float32).view(1, views, 1).expand(n, views, 1)
    train = torch.cat([torch.zeros(n, views, 1), ids, view_ids], dim=-1)
    labels = torch.arange(n) % 2
    data = FewShotData(train, labels, train[:, 0], labels, torch.eye(2, 3), 10.0, ["a", "b"])
    head = Recorder()
    cfg = TrainConfig(epochs=epochs, batch_size=n, view_order=order, select_epoch=False)
    train_head(head, data, cfg, seed=3)
    return [[v for i, v in head.seen if i == image] for image in range(n)]


def test_distinct_views_give_every_epoch_a_crop_the_image_never_showed():
    for views in _views_seen("distinct", n=5, views=7, epochs=7):  # V = epochs: Dassl's fresh crop per epoch
        assert sorted(views) == list(range(7))
    for views in _views_seen("distinct", n=5, views=3, epochs=9):  # V < epochs: each view equally often
        assert len(views) == 9 and all(sorted(views[3 * k : 3 * k + 3]) == [0, 1, 2] for k in range(3))
    # the default random order repeats views over as many epochs (what the views curve measures)
    assert any(len(set(views)) < 7 for views in _views_seen("random", n=5, views=7, epochs=7))


def test_random_view_order_keeps_its_sampling_stream():
    """The default order is the loop's historical one: a permutation, then a uniform view per image."""
    data = _data(n=7, views=4)
    xs, ys = epoch_samples(data, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    order, view = torch.randperm(7, generator=gen), torch.randint(4, (7,), generator=gen)
    assert torch.equal(xs, data.train[order, view[order]]) and torch.equal(ys, data.train_labels[order])


@pytest.mark.parametrize("distinct", [False, True], ids=["random-views", "distinct-views"])
def test_batches_gathered_one_at_a_time_are_the_epoch_gathered_at_once(distinct):
    """The loops' per-batch gather draws the same stream and yields the same rows, the last partial batch dropped."""
    data = _data(n=11, views=3)
    view = DistinctViews(11, 3, seed=2).epoch(0) if distinct else None
    xs, ys = epoch_samples(data, torch.Generator().manual_seed(5), view)
    gen = torch.Generator().manual_seed(5)
    batches = list(epoch_batches(data, gen, 4, 8, view))
    assert [len(y) for _, y in batches] == [4, 4]
    assert torch.equal(torch.cat([x for x, _ in batches]), xs[:8]) and torch.equal(
        torch.cat([y for _, y in batches]), ys[:8]
    )
    fresh = torch.Generator().manual_seed(5)
    epoch_samples(data, fresh, view)
    assert torch.equal(gen.get_state(), fresh.get_state())  # the next epoch's draw is where it was


def test_clip_adapter_trains_stacked_only_where_stacking_follows_the_schedule():
    from clip_adapter.methods.clip_adapter import ClipAdapter, stackable

    assert stackable(ClipAdapter.make_config()) and not stackable(ClipAdapter.make_config("official"))
    assert not stackable(ClipAdapter.make_config(view_order="distinct"))


# --- lpclip's C, re-stated ------------------------------------------------------------------------------


def lpclip_reference(accuracy_of, steps: int) -> float:
    """lpclip/linear_probe.py's search on an accuracy function: the C of its last bisection step."""
    search_list = [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6]
    acc_list = [accuracy_of(c) for c in search_list]
    c_peak = search_list[int(np.argmax(acc_list))]
    c_left, c_right = 1e-1 * c_peak, 1e1 * c_peak
    c_final = c_peak
    for _ in range(steps):
        acc_left, acc_right = accuracy_of(c_left), accuracy_of(c_right)
        if acc_left < acc_right:
            c_final = c_right
            c_left, c_right = 0.5 * (np.log10(c_right) + np.log10(c_left)), np.log10(c_right)
        else:
            c_final = c_left
            c_right, c_left = 0.5 * (np.log10(c_right) + np.log10(c_left)), np.log10(c_left)
        c_left, c_right = np.power(10, c_left), np.power(10, c_right)
    return float(c_final)


def simulated_curves(count: int, seed: int = 0):
    """Validation curves over log10 C: a bump plus ripples, accuracy in 32ths (8 classes × 4 shots)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        x0, width, top = rng.uniform(-4, 4), rng.uniform(0.5, 4), rng.uniform(0.4, 1.0)
        ripple, freq, phase = rng.uniform(0, 0.08), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)

        def score(c: float, x0=x0, width=width, top=top, ripple=ripple, freq=freq, phase=phase) -> tuple[float, float]:
            x = math.log10(c)
            raw = top * math.exp(-(((x - x0) / width) ** 2)) + ripple * math.sin(freq * x + phase)
            return math.floor(32 * min(1.0, max(0.0, raw))) / 32, 1.0 - raw + 0.01 * (x - x0) ** 2

        yield score


def test_lpclip_rule_chooses_lpclips_c_on_2000_simulated_validation_curves():
    differ = 0
    for score in simulated_curves(2000):
        fake_fit = lambda c: (c, score(c))  # noqa: E731  (the "head" is its C)
        expected = lpclip_reference(lambda c: score(c)[0], 8)
        head, _, c = lpclip_search(fake_fit, 8)
        assert c == pytest.approx(expected, rel=1e-12) and head == c
        differ += not math.isclose(best_search(fake_fit, 8)[2], expected, rel_tol=1e-9)
    assert differ > 1000  # the default's best-of-all-fits rule differs (1,761 of 2,000 when measured)


def test_linear_probe_official_preset_is_lpclips_rule_and_iterations():
    cfg = get_method("linear-probe").make_config("official")
    assert (cfg.c_rule, cfg.max_iter, cfg.bisection_steps) == ("lpclip", 1000, 8)
    data = _data(n=24, views=2, dim=8, classes=3, seed=4)
    result = get_method("linear-probe")(cfg).fit(data)
    by_c = {row["c"]: row["selection_accuracy"] for row in result.history}
    assert len(result.history) == len(COARSE_C) + 16
    assert result.selected["chosen"]["c"] == pytest.approx(
        lpclip_reference(lambda c: by_c[min(by_c, key=lambda k: abs(math.log(k / c)))], 8), rel=1e-12
    )
