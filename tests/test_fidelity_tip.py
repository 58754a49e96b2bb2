"""Tip-Adapter against its official code (github.com/gaopengcuhk/Tip-Adapter @ d0e2d6f): the per-dataset
settings, the α/β search re-stated as the official double loop on identical inputs, the α, β Tip-Adapter-F
trains with, and the protocol that chooses on the dataset's full validation split (as the official code does).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from clip_adapter.cli import main
from clip_adapter.core.errors import ConfigError, DataError
from clip_adapter.core.threads import torch_threads
from clip_adapter.data import load_dataset
from clip_adapter.methods import FewShotData, get_method
from clip_adapter.methods.base import PROTOCOLS
from clip_adapter.methods.tip_adapter import (
    TipAdapterHead,
    build_cache,
    official_settings,
    resolve_settings,
    search_alpha_beta,
)
from clip_adapter.methods.zero_shot import base_meta
from clip_adapter.pipeline import RunConfig, few_shot_data, fit_and_evaluate, prepare
from conftest import write_image_folder

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--precision", "fp32"]


def official_search_hp(search_scale, search_step, affinity, cache_values, features, labels, clip_weights):
    """utils.py ``search_hp``, re-stated: β outer, α inner, dense cache product, strict ``acc > best_acc`` from 0."""
    beta_list = [i * (search_scale[0] - 0.1) / search_step[0] + 0.1 for i in range(search_step[0])]
    alpha_list = [i * (search_scale[1] - 0.1) / search_step[1] + 0.1 for i in range(search_step[1])]
    best_acc, best_beta, best_alpha = 0, 0, 0
    clip_logits = 100.0 * features @ clip_weights
    for beta in beta_list:
        cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
        for alpha in alpha_list:
            tip_logits = clip_logits + cache_logits * alpha
            acc = 100 * (tip_logits.topk(1, 1)[1].squeeze(1) == labels).float().sum().item() / labels.shape[0]
            if acc > best_acc:
                best_acc, best_beta, best_alpha = acc, beta, alpha
    return best_beta, best_alpha, best_acc


def cache_problem(seed: int, classes: int = 6, shots: int = 4, val_per_class: int = 4) -> FewShotData:
    """Random features whose text classifier is poor, so the cache term matters and many grid points tie."""
    gen = torch.Generator().manual_seed(seed)
    dim = 16
    means = F.normalize(torch.randn(classes, dim, generator=gen), dim=1)
    train_y = torch.arange(classes).repeat_interleave(shots)
    val_y = torch.arange(classes).repeat_interleave(val_per_class)
    train = means[train_y][:, None] + 0.2 * torch.randn(len(train_y), 3, dim, generator=gen)
    val = means[val_y] + 0.2 * torch.randn(len(val_y), dim, generator=gen)
    text = F.normalize(means + 1.2 * torch.randn(classes, dim, generator=gen), dim=1)  # zero-shot: about 40 %
    return FewShotData(train, train_y, val, val_y, text, 100.0, [f"c{i}" for i in range(classes)], seed=seed)


def searched(data: FewShotData, dataset: str, tie_break: str):
    config = resolve_settings(get_method("tip-adapter").make_config(tie_break=tie_break), dataset)
    head = TipAdapterHead(config, {**base_meta(data), "num_keys": data.train.shape[0]})
    build_cache(head, data)
    with torch_threads(1):  # as fit runs it (tiny matrices: threads only contend)
        chosen, score, _ = search_alpha_beta(head, data)
    return head, chosen, score


def official_on(head: TipAdapterHead, data: FewShotData, dataset: str):
    """The official search on identical inputs: normalised val features, cache keys and values, text classifier."""
    entry = official_settings()[dataset]
    features = F.normalize(data.val, dim=-1)
    affinity = features @ head.keys.detach().t()
    with torch_threads(1):
        return official_search_hp(
            entry["search_scale"], entry["search_step"], affinity, head.values, features, data.val_labels, head.text.t()
        )


@pytest.mark.parametrize("dataset,seed", [("oxford_pets", 0), ("oxford_flowers", 1), ("dtd", 2)])
def test_search_chooses_what_the_official_double_loop_chooses(dataset, seed):
    data = cache_problem(seed)
    head, chosen, score = searched(data, dataset, "first")
    beta, alpha, acc = official_on(head, data, dataset)
    assert (chosen["beta"], chosen["alpha"]) == (beta, alpha)  # the same floats: the same grid, the same point
    assert (beta, alpha) != (0.1, 0.1)  # not merely the first point of the grid
    assert 100 * score[0] == pytest.approx(acc)
    # The default breaks the (many) accuracy ties by loss: the same best accuracy, on the same grid.
    _, by_loss, loss_score = searched(data, dataset, "loss")
    assert 100 * loss_score[0] == pytest.approx(acc)
    betas = official_search_grid(dataset)
    assert by_loss["beta"] in betas[0] and by_loss["alpha"] in betas[1]


def official_search_grid(dataset: str) -> tuple[list[float], list[float]]:
    (beta_max, alpha_max), (beta_steps, alpha_steps) = (
        official_settings()[dataset]["search_scale"],
        official_settings()[dataset]["search_step"],
    )
    return (
        [i * (beta_max - 0.1) / beta_steps + 0.1 for i in range(beta_steps)],
        [i * (alpha_max - 0.1) / alpha_steps + 0.1 for i in range(alpha_steps)],
    )


def test_the_tie_rule_matters_on_a_few_shot_validation_split():
    """Not vacuous: on 4 validation images per class the official first-best and the lowest-loss best differ."""
    data = cache_problem(0)
    _, first, first_score = searched(data, "oxford_pets", "first")
    _, by_loss, loss_score = searched(data, "oxford_pets", "loss")
    assert first_score[0] == loss_score[0] and first != by_loss and loss_score[1] < first_score[1]


@pytest.mark.parametrize(
    "name,key",
    [
        ("oxford_pets", "oxford_pets"),
        ("split_zhou_OxfordPets", "oxford_pets"),
        ("caltech-101", "caltech101"),
        ("split_zhou_Caltech101", "caltech101"),
        ("food-101", "food101"),
        ("split_zhou_DescribableTextures", "dtd"),
        ("fgvc_aircraft", "fgvc_aircraft"),
        ("split_zhou_EuroSAT", "eurosat"),
        ("imagenet", "imagenet"),
        ("split_zhou_StanfordCars", "stanford_cars"),
        ("split_zhou_OxfordFlowers", "oxford_flowers"),
        ("split_zhou_SUN397", "sun397"),
        ("split_zhou_UCF101", "ucf101"),
    ],
)
def test_official_settings_are_chosen_by_dataset_name(name, key):
    entry = official_settings()[key]
    for method in ("tip-adapter", "tip-adapter-f"):
        cfg = get_method(method).for_dataset(get_method(method).make_config(), name)
        assert cfg.settings == key
        assert (cfg.beta_max, cfg.alpha_max) == tuple(entry["search_scale"])
        assert (cfg.beta_steps, cfg.alpha_steps) == tuple(entry["search_step"])
        assert (cfg.alpha, cfg.beta) == (entry["init_alpha"], entry["init_beta"])
    assert (
        get_method("tip-adapter-f").for_dataset(get_method("tip-adapter-f").make_config(), name).epochs
        == entry["train_epoch"]
    )


def test_the_shipped_settings_are_the_official_configs():
    settings = official_settings()
    assert len(settings) == 11
    assert settings["oxford_flowers"]["search_scale"] == [50, 50] and settings["oxford_flowers"]["init_alpha"] == 10
    assert settings["imagenet"]["search_scale"] == [7, 3] and settings["imagenet"]["search_split"] == "test"
    assert settings["fgvc_aircraft"]["config"] == "configs/fgvc.yaml" and settings["eurosat"]["train_epoch"] == 100
    assert {k for k, v in settings.items() if v["search_split"] == "test"} == {"imagenet"}


def test_unknown_datasets_get_the_generic_settings_and_explicit_options_win():
    generic = get_method("tip-adapter").for_dataset(get_method("tip-adapter").make_config(), "my-photos")
    assert (generic.settings, generic.alpha, generic.beta, generic.alpha_max, generic.beta_max) == (
        "generic",
        1.0,
        1.0,
        10.0,
        10.0,
    )
    mine = get_method("tip-adapter-f").make_config(alpha_max=20.0, alpha=0.5, epochs=3)
    cfg = get_method("tip-adapter-f").for_dataset(mine, "eurosat")
    assert (cfg.alpha_max, cfg.alpha, cfg.epochs, cfg.beta_max) == (20.0, 0.5, 3, 12.0)
    chosen = get_method("tip-adapter").for_dataset(get_method("tip-adapter").make_config(settings="dtd"), "my-photos")
    assert (chosen.settings, chosen.alpha_max) == ("dtd", 13.0)
    with pytest.raises(ConfigError, match="settings must be one of") as err:
        get_method("tip-adapter").make_config(settings="pets")
    assert "\n" not in str(err.value)
    assert get_method("tip-adapter").make_config("official").tie_break == "first"


def test_tip_adapter_f_trains_with_the_settings_init_alpha_and_beta(monkeypatch):
    import clip_adapter.methods.tip_adapter as tip

    data = cache_problem(3)
    seen = {}
    real = tip.train_head

    def spy(head, data, cfg, seed):
        # the logits the training loss sees: clip + init_alpha · exp(−init_beta (1 − A)) · L (official main.py)
        x = data.train_means()
        affinity = F.normalize(x, dim=-1) @ head.keys.detach().t()
        official = (
            100.0 * F.normalize(x, dim=-1) @ head.text.t() + 10.0 * torch.exp(-1.0 * (1 - affinity)) @ head.values
        )
        seen.update(
            alpha=cfg.alpha, beta=cfg.beta, epochs=cfg.epochs, close=torch.allclose(head(x), official, atol=1e-4)
        )
        return real(head, data, cfg, seed)

    monkeypatch.setattr(tip, "train_head", spy)
    config = get_method("tip-adapter-f").make_config(settings="oxford_flowers", epochs=2)
    result = get_method("tip-adapter-f")(config).fit(data)
    assert seen == {"alpha": 10.0, "beta": 1.0, "epochs": 2, "close": True}
    assert result.selected["grid"] == {"alpha": [0.1, 50.0, 20], "beta": [0.1, 50.0, 200]}


def test_protocol_none_keeps_the_settings_starting_values():
    data = cache_problem(4)
    data.protocol = "none"
    result = get_method("tip-adapter")(get_method("tip-adapter").make_config(settings="food101")).fit(data)
    assert result.selected["chosen"] == {"alpha": 1.17, "beta": 1.0}


def test_the_pipeline_uses_the_dataset_named_settings_and_records_them(tmp_path, tiny_backbone):
    dataset = load_dataset(write_image_folder(tmp_path / "eurosat", per_class=10))
    run = RunConfig(method="tip-adapter", shots=2, seed=1)
    _, result = fit_and_evaluate(tiny_backbone, prepare(tiny_backbone, dataset, run), run)
    assert result["method_config"]["settings"] == "eurosat"
    assert result["selection"]["grid"] == {"alpha": [0.1, 10.0, 20], "beta": [0.1, 12.0, 200]}


def test_full_val_chooses_on_the_whole_validation_split(tmp_path, tiny_backbone):
    dataset = load_dataset(write_image_folder(tmp_path / "photos", per_class=20))  # 50/20/30: 4 val images per class
    run = RunConfig(method="tip-adapter", shots=1, seed=1, protocol="full-val")
    prepared = prepare(tiny_backbone, dataset, run)
    data = few_shot_data(prepared.features, tiny_backbone, dataset.classnames, prepared.templates, run)
    x, y = data.selection
    assert (
        len(y) == dataset.count("val") == 12 and len(data.val_labels) == 3
    )  # whole split, not min(K, 4) = 1 per class
    assert y.tolist() == [s.label for s in dataset.split("val")]
    assert all(
        any(torch.equal(row, other) for other in x) for row in data.val
    )  # the few-shot val images are among them
    _, result = fit_and_evaluate(tiny_backbone, prepared, run)
    assert result["protocol"] == "full-val" and result["run"]["protocol"] == "full-val"
    assert result["selection"]["chosen_on"] == "full validation split of the dataset"
    assert result["data"]["counts"]["selection"] == 12 and result["data"]["counts"]["val"] == 3


def test_train_cli_full_val_is_recorded_and_labelled(tmp_path, capsys):
    data = write_image_folder(tmp_path / "photos", per_class=20)
    out = tmp_path / "run"
    argv = [
        "train",
        "--data",
        str(data),
        *TINY,
        "--method",
        "tip-adapter",
        "--shots",
        "1",
        "--views",
        "1",
        "--protocol",
        "full-val",
    ]
    assert main([*argv, "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["protocol"] == "full-val" and result["data"]["counts"]["selection"] == 12
    assert "protocol full-val — chosen on the full validation split" in capsys.readouterr().err


def test_full_val_without_a_validation_split_is_a_one_line_error(tmp_path, tiny_backbone):
    root = write_image_folder(tmp_path / "photos" / "train", per_class=4)
    write_image_folder(tmp_path / "photos" / "test", per_class=2)
    dataset = load_dataset(root.parent)
    assert dataset.count("val") == 0
    with pytest.raises(DataError, match="full-val: dataset photos has no validation split") as err:
        prepare(tiny_backbone, dataset, RunConfig(method="tip-adapter", shots=1, protocol="full-val"))
    assert "\n" not in str(err.value) and "oracle" in str(err.value)
    with pytest.raises(ConfigError, match="full-val needs the full validation split"):
        FewShotData(
            torch.zeros(1, 1, 2),
            torch.zeros(1, dtype=torch.long),
            torch.zeros(1, 2),
            torch.zeros(1, dtype=torch.long),
            torch.ones(1, 2),
            100.0,
            ["a"],
            protocol="full-val",
        )


def test_a_bad_protocol_name_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="protocol must be one of val, full-val, none, oracle; got 'fullval'") as err:
        RunConfig(protocol="fullval")
    assert "\n" not in str(err.value)
    data = write_image_folder(tmp_path / "photos", per_class=4)
    assert main(["train", "--data", str(data), *TINY, "--protocol", "fullval", "--out", str(tmp_path / "never")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "'fullval'" in lines[0] and "full-val" in lines[0] and "Traceback" not in lines[0]
    assert not (tmp_path / "never").exists()


def test_train_and_bench_offer_every_protocol():
    import argparse

    from clip_adapter.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("train", "bench"):
        protocol = next(a for a in subparsers.choices[command]._actions if a.dest == "protocol")
        assert tuple(protocol.choices) == PROTOCOLS, command


def test_the_tip_adapter_docstring_examples_run():
    import doctest

    import clip_adapter.methods.tip_adapter as tip
    import clip_adapter.methods.tip_settings as settings

    results = [doctest.testmod(tip), doctest.testmod(settings)]
    assert sum(r.attempted for r in results) >= 8 and sum(r.failed for r in results) == 0


def test_bench_full_val_is_recorded_and_labelled(tmp_path):
    from clip_adapter.bench import BenchPlan, MethodSpec

    data, out = write_image_folder(tmp_path / "photos", per_class=20), tmp_path / "bench"
    BenchPlan({"photos": load_dataset(data)}, [MethodSpec.parse("tip-adapter")], (1,), (1,), "full-val")  # accepted
    argv = [
        "bench",
        "--dataset",
        f"photos={data}",
        "--methods",
        "tip-adapter",
        "--shots",
        "1",
        "--seeds",
        "1",
        "--views",
        "1",
        *TINY,
        "--protocol",
        "full-val",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    record = json.loads(next((out / "runs" / "full-val").rglob("*.json")).read_text())
    assert record["protocol"] == "full-val" and record["data"]["counts"]["selection"] == 12
    assert "full validation split" in (out / "table_full-val.md").read_text()
