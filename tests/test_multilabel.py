"""Multi-label recognition: dense features, the reader and sampler, ASL/MFI, Unmix-CLIP, artifacts, the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clip_adapter.backbones import create_backbone
from clip_adapter.backbones.base import Backbone
from clip_adapter.cli import main as cli_main
from clip_adapter.core.errors import ArtifactError, ConfigError, DataError
from clip_adapter.features.dense import dense_store, extract_dense
from clip_adapter.multilabel.artifact import load_model, save_model
from clip_adapter.multilabel.config import MultiLabelConfig
from clip_adapter.multilabel.data import read_multilabel
from clip_adapter.multilabel.heads import build_head
from clip_adapter.multilabel.losses import asl_loss, mfi_loss
from clip_adapter.multilabel.metrics import average_precision, choose_threshold, f1_scores, mean_offdiagonal_similarity
from clip_adapter.multilabel.pipeline import evaluate, fit
from clip_adapter.multilabel.sampler import sample_few_shot
from clip_adapter.multilabel.toy import TOY_PROMPTS, write_toy_multilabel
from clip_adapter.multilabel.train import train_head
from clip_adapter.toyworld import ToyTokenizer
from conftest import TINY


@pytest.fixture(scope="module")
def toy_bb():
    return create_backbone("toy", precision="fp32")


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    return write_toy_multilabel(tmp_path_factory.mktemp("ml") / "data", "photo", 64, 32, 64, seed=0)


# ---------------------------------------------------------------- dense features


def _uniform_attention_check(pooled, dense, mean_row):
    # With q = k = 0 every token gets the same weight; the projections are affine, so the
    # pooled embedding is the mean of the per-location rows and the mean token's row.
    n = dense.shape[1]
    assert torch.allclose(pooled, (dense.sum(1) + mean_row) / (n + 1), atol=1e-4)


def test_toy_dense_is_the_attention_pool_read_per_location():
    bb = create_backbone("toy", pretrained="none", precision="fp32")
    pool = bb.model.visual.pool
    width = pool.qkv.weight.shape[1]
    with torch.no_grad():
        pool.qkv.weight[: 2 * width] = 0
        pool.qkv.bias[: 2 * width] = 0
    x = torch.randn(2, 3, 64, 64)
    dense = bb.encode_dense(x)
    assert bb.supports_dense and dense.shape == (2, 16, bb.embed_dim) and dense.dtype == torch.float32
    with torch.no_grad():
        grid = bb.model.visual.trunk(x).flatten(2).mean(2)
        mean_row = pool.out(F.linear(grid + pool.position[0], pool.qkv.weight[2 * width :], pool.qkv.bias[2 * width :]))
    _uniform_attention_check(bb.encode_images(x), dense, mean_row)


def test_openclip_vit_dense_matches_the_patch_tokens(tiny_backbone):
    x = torch.randn(2, 3, 32, 32)
    dense = tiny_backbone.encode_dense(x)
    visual = copy.deepcopy(tiny_backbone.model.visual)
    visual.output_tokens = True
    with torch.no_grad():
        _, tokens = visual(x)
    assert tiny_backbone.supports_dense and dense.shape == (2, 16, tiny_backbone.embed_dim)
    assert torch.allclose(dense, tokens @ visual.proj, atol=1e-5)


def test_openclip_resnet_dense_is_the_attention_pool_read_per_location(tmp_path):
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "test-tiny-rn.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(tmp_path / "test-tiny-rn.json"))
    bb = create_backbone("test-tiny-rn", "none", precision="fp32")
    pool = bb.model.visual.attnpool
    with torch.no_grad():
        for proj in (pool.q_proj, pool.k_proj):
            proj.weight.zero_()
            proj.bias.zero_()
    x = torch.randn(2, 3, 64, 64)
    dense = bb.encode_dense(x)
    with torch.no_grad():
        v = bb.model.visual
        fmap = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(x)))))
        mean_row = pool.c_proj(pool.v_proj(fmap.flatten(2).mean(2) + pool.positional_embedding[0]))
    assert dense.shape == (2, 4, 32)
    _uniform_attention_check(bb.encode_images(x), dense, mean_row)


class _NoDense(Backbone):
    provider, name, pretrained, weights_id, embed_dim = "test", "plain", "none", "random-init:0", 4

    def encode_images(self, pixels):
        return torch.zeros(len(pixels), 4)

    def tokenize(self, texts):
        return torch.zeros(len(texts), 2, dtype=torch.long)

    def embed_tokens(self, tokens):
        return torch.zeros(*tokens.shape, 4)

    def encode_token_embeddings(self, embeddings, tokens):
        return embeddings[:, 0]


def test_dense_is_optional_and_refused_in_one_line(tmp_path):
    bb = _NoDense()
    assert not bb.supports_dense
    with pytest.raises(ConfigError, match="test/plain/random-init:0 has no dense"):
        bb.encode_dense(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="no dense"):
        extract_dense(bb, [], None)


def test_dense_features_are_cached_and_bad_images_named(toy_bb, toy_data, tmp_path):
    paths = sorted((toy_data / "images").glob("test_000*.png"))[:5]
    store = dense_store(toy_bb, tmp_path / "cache")
    first = extract_dense(toy_bb, paths + paths[:1], store)
    again_store = dense_store(toy_bb, tmp_path / "cache")
    again = extract_dense(toy_bb, paths, again_store)
    assert (
        first.shape == (6, 16, toy_bb.embed_dim) and torch.equal(first[:5], again) and torch.equal(first[5], first[0])
    )
    assert store.writes == 1 and again_store.writes == 0  # one shard, then served from the cache
    assert torch.allclose(
        first[:2], toy_bb.encode_dense(torch.stack([_pixels(toy_bb, p) for p in paths[:2]])), atol=1e-5
    )
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        extract_dense(toy_bb, [tmp_path / "bad.png"], store)


def test_a_new_dense_version_never_serves_old_rows(toy_bb, toy_data, tmp_path, monkeypatch):
    from clip_adapter.features import dense

    paths = sorted((toy_data / "images").glob("test_000*.png"))[:2]
    extract_dense(toy_bb, paths, dense_store(toy_bb, tmp_path / "cache"))
    monkeypatch.setattr(dense, "DENSE_VERSION", dense.DENSE_VERSION + 1)  # as if encode_dense's mapping had changed
    store = dense_store(toy_bb, tmp_path / "cache")
    extract_dense(toy_bb, paths, store)
    assert store.writes == 1  # encoded again, not read from the rows of the earlier version


def _pixels(bb, path):
    from clip_adapter.features.transforms import eval_view

    return eval_view(Image.open(path).convert("RGB"), bb.preprocess)


# ---------------------------------------------------------------- data


def _images(root: Path, names) -> None:
    for name in names:
        Image.new("RGB", (8, 8)).save(root / name)


def test_reader_accepts_json_and_csv_forms(tmp_path):
    _images(tmp_path, ["a.png", "b.png", "c.png"])
    (tmp_path / "d.json").write_text(
        json.dumps(
            {
                "classes": ["cat", "dog"],
                "train": {"a.png": ["dog", "cat"], "b.png": []},
                "test": [{"image": "c.png", "labels": [1]}],
            }
        )
    )
    ds = read_multilabel(tmp_path / "d.json")
    assert (
        ds.classes == ("cat", "dog")
        and ds.targets("train").tolist() == [[1, 1], [0, 0]]
        and ds.targets("test").tolist() == [[0, 1]]
    )
    (tmp_path / "l.csv").write_text("image,labels,split\na.png,dog;cat,train\nb.png,,train\nc.png,dog|cat,test\n")
    assert read_multilabel(tmp_path / "l.csv").targets("test").tolist() == [[1, 1]]
    (tmp_path / "o.csv").write_text("filename,person,car,split\na.png,1,0,train\nb.png,0,-1,val\nc.png,1,1,test\n")
    ds = read_multilabel(tmp_path / "o.csv")
    assert ds.classes == ("person", "car") and ds.targets("val").tolist() == [[0, 0]]
    # with a classes list, names and indices may be mixed
    (tmp_path / "m.json").write_text(json.dumps({"classes": ["cat", "dog", "cow"], "train": {"a.png": [2, "cat"]}}))
    assert read_multilabel(tmp_path / "m.json").targets("train").tolist() == [[1, 0, 1]]


@pytest.mark.parametrize(
    "content, message",
    [
        ({"train": {"a.png": ["cow"]}, "classes": ["cat"]}, "unknown label 'cow'"),
        ({"train": {"missing.png": ["cat"]}}, "image not found"),
        ({"train": [{"image": "a.png"}]}, r"train\[0\] must be an object with 'image' and 'labels'"),
        ({"trian": {}, "classes": ["cat"]}, "unknown key"),
        # numbers index a classes list; without one they would silently become classes named 0, 1, ...
        (
            {"train": {"a.png": [0, "dog"]}},
            "train image 'a.png': label 0 is a number, but the file has no 'classes' list",
        ),
        ({"a.png": [1]}, "all image 'a.png': label 1 is a number, but the file has no 'classes' list"),
        ({"train": [{"image": "a.png", "labels": [0]}]}, "label 0 is a number"),
        ({"train": {"a.png": [["x"]]}}, r"label \['x'\] is not a label; labels are names"),
        ({"train": {"a.png": [""]}}, "label '' is not a label"),
        (
            {"train": {"a.png": [{"name": "x"}]}, "classes": ["x"]},
            "is not a label; labels are names or indices into 'classes'",
        ),
        ({"train": {"a.png": [1.0]}, "classes": ["cat", "dog"]}, "label 1.0 is not a label"),
        ({"train": {"a.png": [True]}, "classes": ["cat", "dog"]}, "label True is not a label"),
        ({"train": {"a.png": [2]}, "classes": ["cat", "dog"]}, "unknown label 2"),
        ({"train": {"a.png": [-1]}, "classes": ["cat", "dog"]}, "unknown label -1"),
    ],
)
def test_reader_names_what_is_wrong(tmp_path, content, message):
    _images(tmp_path, ["a.png"])
    (tmp_path / "d.json").write_text(json.dumps(content))
    with pytest.raises(DataError, match=message) as info:
        read_multilabel(tmp_path / "d.json")
    assert "d.json" in str(info.value) and "\n" not in str(info.value)


def test_reader_refuses_bad_csv_values(tmp_path):
    _images(tmp_path, ["a.png"])
    (tmp_path / "o.csv").write_text("image,person\na.png,yes\n")
    with pytest.raises(DataError, match="line 2: column 'person' must be 0 or 1"):
        read_multilabel(tmp_path / "o.csv")


def test_sampler_gives_every_label_k_images_deterministically():
    gen = torch.Generator().manual_seed(0)
    y = (torch.rand(200, 6, generator=gen) < torch.tensor([0.05, 0.1, 0.3, 0.5, 0.5, 0.7])).float()
    picked = sample_few_shot(y, 4, seed=3, classes="abcdef")
    assert (y[picked].sum(0) >= 4).all() and picked == sample_few_shot(y, 4, seed=3, classes="abcdef")
    assert picked != sample_few_shot(y, 4, seed=4, classes="abcdef")
    assert len(picked) < 6 * 4  # images with several labels count for each of them
    with pytest.raises(DataError, match="label 'a' has .* fewer than --shots 50"):
        sample_few_shot(y, 50, seed=3, classes="abcdef")


# ---------------------------------------------------------------- losses and metrics


def test_asl_reduces_to_bce_and_discards_easy_negatives():
    logits, y = torch.randn(5, 4), (torch.rand(5, 4) > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / 5
    assert torch.allclose(asl_loss(logits, y, 0.0, 0.0, 0.0), bce, atol=1e-5)
    easy_negative = torch.tensor([[-3.0]])  # p ≈ 0.047 < δ: shifted to 0, no loss
    assert float(asl_loss(easy_negative, torch.zeros(1, 1), 0.0, 4.0, 0.05)) == 0.0


def test_mfi_matches_its_formula():
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])
    s = t @ t.T
    expected = sum((s[i, i] - 1) ** 2 for i in range(3)) + 0.3 * sum(
        s[i, j] ** 2 for i in range(3) for j in range(3) if i != j
    )
    assert torch.isclose(mfi_loss(t, 0.3), expected)


def test_metrics_on_hand_examples():
    assert average_precision(torch.tensor([0.9, 0.8, 0.7, 0.1]), torch.tensor([0.0, 1.0, 1.0, 0.0])) == pytest.approx(
        (1 / 2 + 2 / 3) / 2
    )
    probs, y = torch.tensor([[0.9, 0.4], [0.3, 0.8]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert f1_scores(probs, y, 0.5)["overall_f1"] == pytest.approx(0.8)
    assert f1_scores(probs, y, choose_threshold(probs, y))["overall_f1"] == 1.0
    assert mean_offdiagonal_similarity(torch.tensor([[1.0, 0.0], [1.0, 1.0]])) == pytest.approx(2**-0.5)


def test_class_f1_is_the_f1_of_the_class_averaged_precision_and_recall():
    # class 0: 1 of 1 positive found with 3 predictions (P 1/3, R 1);
    # class 1: 1 of 2 positives, 1 prediction (P 1, R 1/2)
    probs = torch.tensor([[0.9, 0.9], [0.9, 0.1], [0.9, 0.1], [0.1, 0.1]])
    y = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    r = f1_scores(probs, y, 0.5)
    cp, cr = (1 / 3 + 1) / 2, (1 + 1 / 2) / 2
    assert r["class_precision"] == pytest.approx(cp) and r["class_recall"] == pytest.approx(cr)
    assert r["class_f1"] == pytest.approx(
        2 * cp * cr / (cp + cr)
    )  # 0.6857, not the mean of per-class F1 (0.5 + 2/3) / 2
    assert r["overall_precision"] == pytest.approx(2 / 4) and r["overall_recall"] == pytest.approx(2 / 3)
    assert r["overall_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert f1_scores(torch.zeros(2, 2), y[:2], 0.5)["class_f1"] == 0.0  # nothing predicted: 0, not NaN


def _brute_threshold(probs, targets):
    """The former quadratic search: every midpoint evaluated with f1_scores."""
    values = torch.unique(probs.flatten())
    candidates = ((values[1:] + values[:-1]) / 2).tolist() or [0.5]
    return float(max(candidates, key=lambda t: (f1_scores(probs, targets, t)["overall_f1"], -t)))


@pytest.mark.parametrize("seed", range(6))
def test_fast_threshold_search_matches_the_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    n, c = [(1, 1), (3, 2), (17, 5), (40, 7), (60, 3), (25, 4)][seed]
    probs = torch.rand(n, c, generator=gen)
    if seed % 2:  # coarse scores: many ties
        probs = (probs * 6).round() / 6
    targets = (torch.rand(n, c, generator=gen) < 0.3).float()
    assert choose_threshold(probs, targets) == _brute_threshold(probs, targets)
    # neighbouring floats: the midpoint rounds onto a score, which is then predicted positive
    close = torch.tensor([[0.5, float(torch.nextafter(torch.tensor(0.5), torch.tensor(1.0))), 0.25]])
    assert choose_threshold(close, torch.tensor([[0.0, 1.0, 0.0]])) == _brute_threshold(
        close, torch.tensor([[0.0, 1.0, 0.0]])
    )
    assert choose_threshold(probs, torch.zeros_like(probs)) == _brute_threshold(probs, torch.zeros_like(probs))


# ---------------------------------------------------------------- Unmix-CLIP


def test_unmix_starts_at_clip_and_mfi_unmixes_the_text_features():
    gen = torch.Generator().manual_seed(0)
    pos = F.normalize(torch.randn(5, 16, generator=gen) + 2, dim=1)  # strongly mixed: cosines near 0.8
    neg = torch.randn(5, 16, generator=gen)
    cfg = MultiLabelConfig(epochs=30, mfi_weight=1.0)
    head = build_head(cfg, pos, neg, 10.0)
    assert torch.allclose(head.class_text(), pos, atol=1e-6)  # identity projectors: CLIP's own features
    before = mean_offdiagonal_similarity(head.class_text())
    x, y = torch.randn(40, 9, 16, generator=gen), (torch.rand(40, 5, generator=gen) > 0.6).float()
    records = train_head(head, x, y, cfg)
    assert (
        records[-1]["mfi"] < records[0]["mfi"]
        and mean_offdiagonal_similarity(head.class_text().detach()) < before - 0.3
    )


def test_unmix_scores_where_the_class_is():
    pos, neg = torch.eye(3, 8), -torch.eye(3, 8)
    head = build_head(MultiLabelConfig(projector="linear"), pos, neg, 10.0)
    dense = torch.zeros(1, 4, 8)
    dense[0, 0, 0] = dense[0, 1, 1] = 1.0  # classes 0 and 1 at one location each
    dense[0, 2:, 7] = 1.0
    logits = head(dense)[0]
    assert logits[0] > 0 and logits[1] > 0 and logits[2] <= 0


def test_toy_prompts_are_readable_by_the_toy_clip():
    assert not ToyTokenizer().unknown_words(TOY_PROMPTS["positive_template"].format("circle"))
    assert not ToyTokenizer().unknown_words(TOY_PROMPTS["negative_template"].format("circle"))
    assert MultiLabelConfig().positive_template == "a photo containing a {}"  # the paper's, by default


@pytest.mark.slow
def test_toy_unmix_trains_unmixes_and_round_trips(toy_bb, toy_data, tmp_path):
    ds = read_multilabel(toy_data)
    assert ds.prompts == TOY_PROMPTS and set(ds.splits) == {"train", "val", "test"}
    results, models = {}, {}
    for method in ("zero-shot", "unmix"):
        cfg = MultiLabelConfig(method=method, epochs=15, **TOY_PROMPTS)
        models[method], shots = fit(toy_bb, ds, cfg, 4, 1, tmp_path / "cache")
        results[method] = evaluate(models[method], toy_bb, ds, "test", tmp_path / "cache")
    # The accuracy target (>= 10 mAP over zero-shot) needs 16 shots: benchmarks/unmix_toy.py measures it.
    assert 0 < results["unmix"]["mAP"] <= 100 and len(models["unmix"].records) == 15
    sim = results["unmix"]["text_similarity"]
    assert sim["after"] < sim["before"] - 0.1 and results["zero-shot"]["text_similarity"]["after"] == sim["before"]
    out = save_model(tmp_path / "run", models["unmix"], results["unmix"], shots.to_json(ds))
    loaded = load_model(out, toy_bb)
    x = torch.randn(3, 16, toy_bb.embed_dim)
    assert torch.equal(loaded.logits(x), models["unmix"].logits(x)) and loaded.threshold == models["unmix"].threshold
    with pytest.raises(ArtifactError, match="was trained on backbone"):
        load_model(out, create_backbone("toy", pretrained="none", precision="fp32"))


def test_artifact_refuses_wrong_tensors(toy_bb, tmp_path):
    from clip_adapter.core.files import save_tensors
    from clip_adapter.multilabel.pipeline import MultiLabelModel

    head = build_head(MultiLabelConfig(), torch.eye(2, toy_bb.embed_dim), torch.ones(2, toy_bb.embed_dim), 10.0)
    out = save_model(tmp_path / "run", MultiLabelModel(MultiLabelConfig(), ("a", "b"), toy_bb.describe(), head))
    save_tensors(out / "model.safetensors", {**head.state_dict(), "text_pos": torch.zeros(3, toy_bb.embed_dim)})
    with pytest.raises(ArtifactError, match="tensor 'text_pos' has shape"):
        load_model(out)
    (out / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="not a multi-label artifact"):
        load_model(out)


# ---------------------------------------------------------------- CLI


def test_cli_toy_dataset_train_evaluate(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert (
        cli_main(["multilabel", "toy-dataset", "--out", str(data), "--train", "40", "--val", "16", "--test", "24"]) == 0
    )
    assert (
        cli_main(
            [
                "multilabel",
                "train",
                "--data",
                str(data),
                "--out",
                str(run),
                "--shots",
                "2",
                "--precision",
                "fp32",
                "--set",
                "epochs=5",
            ]
        )
        == 0
    )
    assert "unmix on 24 test images" in capsys.readouterr().out
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.safetensors",
        "result.json",
        "split.json",
    ]
    assert cli_main(["multilabel", "evaluate", str(run), "--data", str(data), "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert (
        printed.startswith("unmix on 24 test images: mAP ") and "per-class AP:" in printed
    )  # a summary, as eval prints
    assert cli_main(["multilabel", "evaluate", str(run), "--data", str(data), "--precision", "fp32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 24
    assert cli_main(["multilabel", "train", "--data", str(data), "--out", str(run), "--shots", "2"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert (
        cli_main(
            ["multilabel", "train", "--data", str(data), "--out", str(tmp_path / "r2"), "--set", "aggregation=median"]
        )
        == 2
    )
    assert "aggregation must be one of" in capsys.readouterr().err


def test_cli_unmix_on_an_open_clip_backbone(tmp_path, capsys):
    data = write_toy_multilabel(tmp_path / "data", "photo", 40, 16, 24)
    run = tmp_path / "run"
    # The toy data suggests toy prompts; the paper's are given back explicitly (open_clip's BPE reads any text).
    assert (
        cli_main(
            [
                "multilabel",
                "train",
                "--data",
                str(data),
                "--out",
                str(run),
                "--shots",
                "2",
                "--backbone",
                TINY,
                "--pretrained",
                "none",
                "--precision",
                "fp32",
                "--positive-template",
                "a photo containing a {}",
                "--negative-template",
                "a photo without a {}",
                "--set",
                "epochs=3",
            ]
        )
        == 0
    )
    assert "unmix on 24 test images" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"]["name"] == TINY and config["config"]["negative_template"] == "a photo without a {}"
    assert cli_main(["multilabel", "evaluate", str(run), "--data", str(data), "--precision", "fp32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "unmix"
    # a hand-edited seed in the recorded backbone id is the artifact's fault: one line, not a ValueError
    assert config["backbone"]["id"].endswith("/random-init:0")
    config["backbone"]["id"] = config["backbone"]["id"].replace("random-init:0", "random-init:x")
    (run / "config.json").write_text(json.dumps(config))
    assert cli_main(["multilabel", "evaluate", str(run), "--data", str(data), "--precision", "fp32"]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "seed that is not an integer ('x')" in err and err.count("\n") == 1
