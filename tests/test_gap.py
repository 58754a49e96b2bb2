"""The modality gap (`clip-adapter gap`) and modality inversion (OTI, OVI) on constructed embeddings and the toy
world.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

import clip_adapter
from clip_adapter.backbones import create_backbone
from clip_adapter.cli import main as cli_main
from clip_adapter.core.errors import ConfigError, DataError
from clip_adapter.core.threads import torch_threads
from clip_adapter.gap import (
    InversionConfig,
    compare,
    gap_statistics,
    joint_pca,
    mean_average_precision,
    pairwise_cosines,
    textual_inversion,
    visual_inversion,
)
from clip_adapter.gap.analyse import query_gallery
from clip_adapter.gap.inversion import encode_pseudo_tokens, pseudo_prompt
from clip_adapter.gap.retrieval import average_precisions, retrieval_comparison, text_retrieval_comparison
from clip_adapter.toyworld import task_images, write_task_dataset


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The encoders here are tiny: on a CPU shared with other jobs, OpenMP threads waiting for a busy
    # core cost more than they save (20x slower optimisation steps measured with 2 threads at load 8).
    with torch_threads(1):
        yield


def two_cones(n: int, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit rows at angle ``theta`` around e0 (images) and e1 (texts), spread symmetrically so each centroid is
    cos θ·e.
    """
    g = torch.Generator().manual_seed(0)
    spread = F.normalize(torch.randn(n, dim - 2, generator=g), dim=1)
    spread = torch.cat([spread, -spread])  # ± pairs: the spread averages to exactly zero
    zeros = torch.zeros(2 * n, 2)
    image = torch.cat([zeros, spread], 1) * math.sin(theta)
    text = torch.cat([zeros, spread.flip(0)], 1) * math.sin(theta)
    image[:, 0] += math.cos(theta)
    text[:, 1] += math.cos(theta)
    return image, text


def test_gap_of_two_known_cones():
    image, text = two_cones(50, 16, theta=0.6)
    stats = gap_statistics(image, text)
    assert stats["gap"]["centroid_distance"] == pytest.approx(math.cos(0.6) * math.sqrt(2), abs=1e-5)
    assert stats["gap"]["centroid_cosine"] == pytest.approx(0.0, abs=1e-5)
    # intra-image cosine = cos²θ + sin²θ·(spread·spread'); the spread averages to zero over all pairs but the diagonal.
    n = len(image)
    expected = (math.cos(0.6) ** 2 * n * (n - 1) + math.sin(0.6) ** 2 * (-n)) / (n * (n - 1))
    assert stats["intra_image"]["mean"] == pytest.approx(expected, abs=1e-4)
    assert stats["cross_modal"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert stats["intra_image"]["count"] == n * (n - 1) // 2 == sum(stats["intra_image"]["histogram"]["counts"])
    assert stats["cross_modal"]["count"] == n * n


def test_closing_the_gap_is_reported_as_a_change():
    image, text = two_cones(40, 12, theta=0.5)
    before = gap_statistics(image, text)
    shift = image.mean(0) - text.mean(0)
    after = gap_statistics(image, text + shift)  # move the texts onto the images' centroid (before renormalising)
    change = compare(before, after)
    assert after["gap"]["centroid_distance"] < 0.2 * before["gap"]["centroid_distance"]
    assert change["centroid_distance"] < -0.8 and change["cross_modal_mean"] > 0.3


def test_matched_pairs_and_label_checks():
    image, text = torch.eye(4), torch.eye(4)
    stats = gap_statistics(image, text, [0, 1, 2, 3], [0, 1, 2, 3])
    assert stats["matched"]["mean"] == 1.0 and stats["cross_modal"]["mean"] == pytest.approx(0.25)
    with pytest.raises(DataError, match="labels do not match"):
        gap_statistics(image, text, [0, 1], [0, 1, 2, 3])
    with pytest.raises(DataError, match="4-d but text embeddings 3-d"):
        gap_statistics(image, torch.eye(3))
    with pytest.raises(DataError, match="NaN"):
        gap_statistics(torch.full((2, 4), float("nan")), text)


def test_joint_pca_separates_the_modalities_on_its_first_axis():
    image, text = two_cones(30, 10, theta=0.4)
    xi, xt, ratio = joint_pca(image, text)
    assert (xi[:, 0] * xt[:, 0].mean() < 0).all() and ratio[0] > ratio[
        1
    ]  # every image on the other side of PC1 from the texts


def test_pairwise_cosines_shapes():
    a = torch.randn(5, 3)
    assert pairwise_cosines(a).shape == (10,) and pairwise_cosines(a, torch.randn(2, 3)).shape == (10,)


def test_average_precision_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])
    relevant = torch.tensor([[True, False, True, False], [True, False, False, False], [False, False, False, False]])
    ap = average_precisions(scores, relevant)
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2) and ap[1] == pytest.approx(1 / 4) and math.isnan(ap[2])
    assert mean_average_precision(scores, relevant) == pytest.approx(((1 + 2 / 3) / 2 + 1 / 4) / 2, abs=1e-6)
    with pytest.raises(DataError, match="no query has a relevant item"):
        mean_average_precision(scores[2:], relevant[2:])


def test_query_gallery_split_is_disjoint_and_per_class():
    q, g = query_gallery(torch.tensor([0, 1, 0, 1, 0, 1]), 2)
    assert q.tolist() == [0, 1, 2, 3] and g.tolist() == [4, 5]
    with pytest.raises(DataError, match="too few images"):
        query_gallery(torch.tensor([0, 1]), 1)


# ---------------------------------------------------------------------------------------------- inversion


@pytest.fixture(scope="module")
def toy():
    return create_backbone("toy", precision="fp32")


def _toy_features(backbone, task: str, per_class: int, domain: str = "photo") -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = task_images(task, domain, per_class)
    pixels = torch.tensor(images).permute(0, 3, 1, 2).float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (backbone.preprocess.mean, backbone.preprocess.std))
    return backbone.encode_images((pixels - mean) / std), torch.tensor(labels)


def test_pseudo_prompt_finds_the_placeholder_on_both_tokenizers(toy, tiny_backbone):
    for backbone in (toy, tiny_backbone):
        prompt = pseudo_prompt(backbone, "a photo of {} on a table")
        assert prompt.slot == 4
        assert backbone.tokenize(["a photo of X on a table"])[0, prompt.slot] == prompt.tokens[0, prompt.slot]
    with pytest.raises(ConfigError, match="exactly one"):
        pseudo_prompt(toy, "a photo of a thing")


def test_pseudo_token_at_the_placeholder_word_reproduces_the_plain_prompt(toy):
    prompt = pseudo_prompt(toy, "a photo of a {}.")
    word = toy.embed_tokens(toy.tokenize(["circle"]))[0, 1:2].float()
    got = encode_pseudo_tokens(toy, prompt, word)
    assert torch.allclose(got, toy.encode_texts(["a photo of a circle."]), atol=1e-5)


def test_oti_matches_its_image_far_better_than_a_random_token_and_improves_retrieval(toy):
    feats, labels = _toy_features(toy, "shape", 4)
    queries = torch.arange(0, len(feats), 4)  # one query per class, the rest is the gallery
    gallery = torch.tensor([i for i in range(len(feats)) if i % 4])
    config = InversionConfig(steps=60, seed=3)
    with torch_threads(1):
        inverted = textual_inversion(toy, feats[queries], config)
        out = retrieval_comparison(toy, feats[queries], labels[queries], feats[gallery], labels[gallery], config)
    prompt = pseudo_prompt(toy, config.template)
    random_tokens = torch.randn(len(queries), prompt.base.shape[-1], generator=torch.Generator().manual_seed(3)) * 0.02
    with torch.no_grad():
        random_cos = F.cosine_similarity(encode_pseudo_tokens(toy, prompt, random_tokens), feats[queries]).mean()
    assert min(inverted.cosine) > 0.9 and float(random_cos) < 0.5
    assert inverted.loss_history[-1] < 0.2 * inverted.loss_history[0]
    rows = {row["mode"]: row["mAP"] for row in out["rows"]}
    assert rows["OTI text→image"] > rows["random pseudo-token→image"] + 0.3
    assert out["inversion"]["mean_cosine"] > 0.9


def test_oti_runs_on_a_random_init_open_clip_backbone(tiny_backbone):
    image_feats = F.normalize(
        torch.randn(3, tiny_backbone.embed_dim, generator=torch.Generator().manual_seed(0)), dim=1
    )
    result = textual_inversion(tiny_backbone, image_feats, InversionConfig(steps=15, lr=0.1))
    assert result.features.shape == (3, tiny_backbone.embed_dim)
    assert result.loss_history[-1] < result.loss_history[0]


def test_oti_batches_are_independent(toy):
    feats, _ = _toy_features(toy, "color", 1)
    whole = textual_inversion(toy, feats[:4], InversionConfig(steps=10, batch_size=4))
    split = textual_inversion(toy, feats[:4], InversionConfig(steps=10, batch_size=2))
    assert torch.allclose(whole.features, split.features, atol=1e-4)


def test_ovi_moves_a_pixel_image_towards_its_text(toy):
    texts = toy.encode_texts(["a photo of a red circle.", "a photo of a blue star."])
    with torch_threads(1):
        result = visual_inversion(toy, texts, InversionConfig(steps=40, lr=0.05))
    assert result.params.shape == (2, 3, 64, 64)
    assert min(result.cosine) > 0.5 and result.loss_history[-1] < 0.5 * result.loss_history[0]


def test_ovi_text_retrieval_comparison_reports_both_rows(toy):
    texts = toy.encode_texts([f"a photo of a {c} shape." for c in ("red", "blue")] * 2)
    labels = torch.tensor([0, 1, 0, 1])
    with torch_threads(1):
        out = text_retrieval_comparison(
            toy, texts[:2], labels[:2], texts[2:], labels[2:], InversionConfig(steps=30, lr=0.05)
        )
    assert [row["mode"] for row in out["rows"]] == ["text→text", "OVI image→text"]
    inversion = out["inversion"]
    assert (
        inversion["last_loss"] < inversion["first_loss"] and inversion["mean_cosine"] > 0.8
    )  # the images now match their texts
    plain, inverted = (row["mAP"] for row in out["rows"])
    assert inverted >= plain - 0.25  # an inverted image stands in for its text in retrieval


def test_ovi_needs_a_differentiable_image_encoder(toy):
    class Opaque:
        provider, device, preprocess = "remote", torch.device("cpu"), toy.preprocess

    with pytest.raises(ConfigError, match="visual inversion needs"):
        visual_inversion(Opaque(), torch.randn(1, 8))


def test_inversion_config_is_checked():
    for bad in ({"steps": -1}, {"lr": 0.0}, {"template": "no slot"}, {"lr": float("nan")}):
        with pytest.raises(ConfigError):
            InversionConfig(**bad).validate()


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = tmp_path_factory.mktemp("gap")
    data = write_task_dataset("shape", "photo", work / "shapes", 1, 2, 3, seed=0)
    shutil.copytree(data, work / "noval")  # the same images with an empty val split
    split = json.loads((data / "split.json").read_text())
    (work / "noval" / "split.json").write_text(json.dumps({**split, "val": []}))
    backbone = create_backbone("toy", precision="fp32")
    model = clip_adapter.fit(
        data,
        backbone=backbone,
        shots=1,
        cache_dir=work / "cache",
        epochs=3,
        variant="both",
        alpha=0.6,
        beta=0.6,
        alpha_grid=(),
    )
    return {"work": work, "data": data, "artifact": model.save_pretrained(work / "artifact"), "cache": work / "cache"}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_statistics_figures_and_the_adapter_change(world, tmp_path, capsys):
    out = tmp_path / "gap"
    code, printed, err = run_cli(
        capsys,
        "gap",
        "--data",
        world["data"],
        "--out",
        out,
        "--artifact",
        world["artifact"],
        "--cache-dir",
        world["cache"],
        "--inversion",
        "--inversion-steps",
        "10",
        "--inversion-threads",
        "1",
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        ".clip-adapter-files.jsonl",
        ".clip-adapter-output.json",
        "gap.json",
        "projection.png",
        "similarities.png",
    ]
    result = json.loads((out / "gap.json").read_text())
    assert result["raw"]["n_images"] == 24 and result["raw"]["n_texts"] == 8
    assert result["adapted"]["gap"]["centroid_distance"] != result["raw"]["gap"]["centroid_distance"]
    assert result["change"]["centroid_distance"] == pytest.approx(
        result["adapted"]["gap"]["centroid_distance"] - result["raw"]["gap"]["centroid_distance"], abs=1e-5
    )
    assert [row["mode"] for row in result["retrieval"]["rows"]][:2] == ["image→image", "OTI text→image"]
    assert result["retrieval"]["n_queries"] == 16 and result["retrieval"]["n_gallery"] == 8
    assert "modality gap" in printed and "with the adapter: gap" in printed and "| OTI text→image |" in printed
    assert (out / "projection.png").read_bytes()[:4] == b"\x89PNG"
    # our own output: refused without --overwrite, replaced with it
    code, _, err = run_cli(capsys, "gap", "--data", world["data"], "--out", out, "--cache-dir", world["cache"])
    assert code == 2 and err.count("\n") == 1
    code, _, err = run_cli(
        capsys, "gap", "--data", world["data"], "--out", out, "--cache-dir", world["cache"], "--overwrite"
    )
    assert code == 0 and "adapted" not in json.loads((out / "gap.json").read_text())


def test_cli_zero_shot_artifact_changes_nothing(world, tmp_path, capsys):
    zero = clip_adapter.fit(
        world["data"],
        backbone=create_backbone("toy", precision="fp32"),
        shots=1,
        method="zero-shot",
        cache_dir=world["cache"],
    ).save_pretrained(tmp_path / "zs")
    code, _, err = run_cli(
        capsys,
        "gap",
        "--data",
        world["data"],
        "--out",
        tmp_path / "o",
        "--artifact",
        zero,
        "--cache-dir",
        world["cache"],
    )
    assert code == 0, err
    change = json.loads((tmp_path / "o" / "gap.json").read_text())["change"]
    assert all(abs(v) < 1e-5 for v in change.values())


def test_cli_on_a_random_init_open_clip_vit(world, tmp_path, capsys):
    code, printed, err = run_cli(
        capsys,
        "gap",
        "--data",
        world["data"],
        "--out",
        tmp_path / "o",
        "--backbone",
        "ViT-B-32",
        "--pretrained",
        "none",
        "--precision",
        "fp32",
        "--cache-dir",
        world["cache"],
        "--split",
        "val",
        "--inversion",
        "--queries-per-class",
        "1",
        "--inversion-steps",
        "2",
    )
    assert code == 0, err
    result = json.loads((tmp_path / "o" / "gap.json").read_text())
    assert (
        result["backbone"]["name"] == "ViT-B-32"
        and result["raw"]["dim"] == 512
        and len(result["retrieval"]["rows"]) == 3
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "{work}/missing"], "dataset not found"),
        (["--inversion-template", "a photo"], "--inversion-template must hold exactly one"),
        (["--inversion-lr", "0"], "--inversion-lr must be in"),
        (["--data", "{work}/noval", "--split", "val"], "no images in its val split"),
        (["--inversion", "--queries-per-class", "3"], "too few images"),
        (["--artifact", "{work}/artifact", "--backbone", "toy", "--pretrained", "none"], "trained on backbone"),
        (["--artifact", "{work}/nothing-here"], "not found"),
        (["--bins", "0"], "positive integer"),
        (["--template", "a photo"], "{}"),
        (["--inversion-steps", "100001"], "--inversion-steps must be in"),
        (["--out", "{data}/images"], "inside the input"),
    ],
)
def test_cli_bad_inputs_are_one_line(world, tmp_path, capsys, extra, message):
    fill = {"work": world["work"], "data": world["data"]}
    argv = ["gap", "--data", world["data"], "--out", tmp_path / "o", "--cache-dir", world["cache"]]
    argv += [a.format(**fill) for a in extra]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_folder_holding_other_files(world, tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    code, _, err = run_cli(
        capsys, "gap", "--data", world["data"], "--out", tmp_path / "o", "--cache-dir", world["cache"]
    )
    assert code == 2 and err.count("\n") == 1 and (tmp_path / "o" / "notes.txt").read_text() == "mine"


def test_cli_refuses_an_artifact_without_adapted_features(world, tmp_path, capsys):
    tip = clip_adapter.fit(
        world["data"],
        backbone=create_backbone("toy", precision="fp32"),
        shots=1,
        method="tip-adapter",
        cache_dir=world["cache"],
    ).save_pretrained(tmp_path / "tip")
    code, _, err = run_cli(
        capsys,
        "gap",
        "--data",
        world["data"],
        "--out",
        tmp_path / "o",
        "--artifact",
        tip,
        "--cache-dir",
        world["cache"],
    )
    assert code == 2 and "no adapted features" in err and err.count("\n") == 1


@pytest.mark.parametrize("module", ["stats", "plots", "retrieval", "inversion", "analyse"])
def test_module_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"clip_adapter.gap.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
