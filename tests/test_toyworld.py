"""Tests of the toy world: determinism, tokenizer, task files, the shipped checkpoint, pretraining."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from clip_adapter.core.errors import ArtifactError
from clip_adapter.core.files import sha256_file
from clip_adapter.toyworld import (
    DOMAINS,
    TASKS,
    PretrainConfig,
    ToyClipBackbone,
    ToyTokenizer,
    caption,
    pretrain,
    render_array,
    sample_scene,
    shipped_checkpoint,
    write_task_dataset,
)


@pytest.fixture(scope="module")
def shipped() -> ToyClipBackbone:
    return ToyClipBackbone("shipped", precision="fp32")


def test_scenes_captions_and_images_are_determined_by_the_seed():
    def draw(seed: int):
        rng = np.random.default_rng(seed)
        scenes = [sample_scene(rng) for _ in range(20)]
        return scenes, [caption(s, rng) for s in scenes], [render_array(s, d, rng) for s in scenes[:3] for d in DOMAINS]

    first, again, other = draw(5), draw(5), draw(6)
    assert first[0] == again[0] and first[1] == again[1]
    assert all(np.array_equal(a, b) for a, b in zip(first[2], again[2]))
    assert first[1] != other[1]
    assert {len(s.objects) for s in first[0]} <= {1, 2, 3}


def test_domains_differ_on_the_same_scene():
    scene = sample_scene(np.random.default_rng(0), n_objects=1)
    images = [render_array(scene, d, rng=1).astype(float) for d in DOMAINS]
    assert all(np.abs(images[0] - other).mean() > 10 for other in images[1:])


def test_captions_vary_and_join_objects_with_and():
    rng = np.random.default_rng(0)
    captions = {caption(sample_scene(rng, n_objects=2), rng) for _ in range(200)}
    assert len(captions) > 150 and all(" and " in c for c in captions)


def test_tokenizer_maps_unknown_words_to_unk_and_knows_the_placeholder():
    tok = ToyTokenizer()
    ids = tok(["a photo of a golden retriever.", "X X red circle"])
    assert ids.shape == (2, tok.context_length) and ids.dtype == torch.long
    assert tok.decode(ids[0]).split()[-3:] == ["<unk>", "<unk>", "<eot>"]
    assert tok.decode(ids[1]) == "<sot> x x red circle <eot>"


def test_tokenizer_truncates_but_keeps_the_end_of_text_token():
    tok = ToyTokenizer()
    row = tok(["circle " * 100])[0]
    assert int(row[-1]) == tok.eot_id and int((row == tok.eot_id).sum()) == 1


def test_write_task_dataset_writes_an_image_folder_and_coop_split(tmp_path):
    out = write_task_dataset("shape-color", "night", tmp_path / "task", 1, 1, 2, seed=3)
    split = json.loads((out / "split.json").read_text())
    classes = TASKS["shape-color"].classes
    assert [len(split[s]) for s in ("train", "val", "test")] == [64, 64, 128]
    for rel, label, name in split["test"]:
        assert classes[label] == name and rel.startswith(name.replace(" ", "_") + "/")
        assert (out / "images" / rel).is_file()
    assert split["meta"]["templates"] == [TASKS["shape-color"].template]
    from clip_adapter.data import load_dataset
    from clip_adapter.pipeline import templates_for

    assert templates_for(load_dataset(out)) == (TASKS["shape-color"].template,)
    again = write_task_dataset("shape-color", "night", tmp_path / "again", 1, 1, 2, seed=3)
    assert sha256_file(out / "images" / split["test"][5][0]) == sha256_file(again / "images" / split["test"][5][0])


def test_a_task_dataset_may_have_an_empty_split(tmp_path):
    out = write_task_dataset("shape", "photo", tmp_path / "task", 1, 0, 1, seed=3)
    split = json.loads((out / "split.json").read_text())
    assert split["val"] == [] and len(split["train"]) == len(split["test"]) == len(TASKS["shape"].classes)


def _run(shipped, task, domain, tmp_path, shots, method="zero-shot"):
    """A toy task through the user's path: files on disk, dataset reader, feature cache, method."""
    from clip_adapter.data import load_dataset
    from clip_adapter.pipeline import FeatureConfig, RunConfig, run_few_shot

    data = write_task_dataset(task, domain, tmp_path / f"{task}-{domain}", 16, 4, 12, seed=7)
    features = FeatureConfig(views=4, cache_dir=str(tmp_path / "cache"))
    _, result, _ = run_few_shot(
        shipped, load_dataset(data), RunConfig(method=method, shots=shots, seed=1), None, features
    )
    return result


def test_shipped_checkpoint_zero_shot_is_high_in_domain(shipped, tmp_path):
    result = _run(shipped, "shape", "photo", tmp_path, 0)
    assert result["test"]["accuracy"] >= 0.9, result["test"]["accuracy"]
    assert shipped.id.startswith("toy/toy-cnn/sha256:") and 1 < shipped.logit_scale <= 100


def test_clip_adapter_recovers_from_a_domain_shift(shipped, tmp_path):
    """The behaviour the toy world exists for: few shots really raise accuracy under a shift."""
    result = _run(shipped, "color", "night", tmp_path, 8, "clip-adapter")
    assert result["test"]["accuracy"] >= result["zero_shot_test_accuracy"] + 0.15, result["test"]["accuracy"]


def test_encode_texts_is_the_token_embedding_path(shipped):
    texts = ["a photo of a red circle.", "X X X X star", "a golden retriever"]
    tokens = shipped.tokenize(texts)
    direct = shipped.encode_token_embeddings(shipped.embed_tokens(tokens), tokens)
    assert torch.allclose(shipped.encode_texts(texts), direct, atol=1e-5)


def test_gradients_reach_learned_token_embeddings_but_not_weights(shipped):
    tokens = shipped.tokenize(["X X red circle"])
    embeddings = shipped.embed_tokens(tokens).detach().requires_grad_(True)
    shipped.encode_token_embeddings(embeddings, tokens).sum().backward()
    assert embeddings.grad is not None and embeddings.grad[0, 1:3].abs().sum() > 0
    assert not any(p.requires_grad for p in shipped.model.parameters())


def test_random_init_backbone_is_seeded():
    a, b = ToyClipBackbone("none", precision="fp32", seed=1), ToyClipBackbone("none", precision="fp32", seed=1)
    assert a.weights_id == "random-init:1"
    assert torch.equal(a.encode_texts(["a red circle"]), b.encode_texts(["a red circle"]))


def test_bad_checkpoints_give_one_line_artifact_errors(tmp_path, shipped):
    with pytest.raises(ArtifactError, match="not found"):
        ToyClipBackbone(str(tmp_path / "missing.safetensors"))
    weights, config = tmp_path / "toy_clip.safetensors", tmp_path / "toy_clip.json"
    weights.write_bytes(b"not a safetensors file")
    config.write_text('{"format": "clip-adapter-toy-clip"}')
    with pytest.raises(ArtifactError, match="toy_clip.json"):
        ToyClipBackbone(str(tmp_path))
    config.write_bytes(shipped_checkpoint().with_suffix(".json").read_bytes())
    with pytest.raises(ArtifactError, match="toy_clip.safetensors") as err:
        ToyClipBackbone(str(weights))
    assert "\n" not in str(err.value)


def test_tiny_pretrain_is_reproducible_and_writes_weights_config_and_log(tmp_path):
    settings = dict(steps=3, batch_size=8, warmup_steps=1)
    first = pretrain(PretrainConfig(out_dir=str(tmp_path / "a"), workers=1, **settings))
    second = pretrain(PretrainConfig(out_dir=str(tmp_path / "b"), workers=0, **settings))
    assert sha256_file(first) == sha256_file(second)  # same seed, same weights (with or without the worker)
    meta = json.loads(first.with_suffix(".json").read_text())
    assert meta["seed"] == 0 and meta["steps"] == 3 and meta["command"].startswith("clip-adapter toy pretrain")
    rows = list(csv.DictReader((tmp_path / "a" / "pretrain_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 1, 2] and float(rows[0]["loss"]) > 0
    backbone = ToyClipBackbone(str(first), precision="fp32")
    assert backbone.weights_id == f"sha256:{sha256_file(first)}"


def test_demo_writes_table_plot_and_a_usable_artifact(tmp_path, capsys):
    from clip_adapter.apps.demo import DemoConfig, run_demo
    from clip_adapter.cli import main

    config = DemoConfig(shots=(2,), seeds=(1,), train_per_class=4, test_per_class=6, out=str(tmp_path / "demo"))
    files = run_demo(config, log=lambda _: None)
    table = files["table"].read_text()
    assert "zero-shot" in table and "clip-adapter (both)" in table and "Average over datasets" not in table
    assert files["plot"].stat().st_size > 1000 and (files["artifact"] / "model.safetensors").is_file()
    assert main(["predict", str(files["artifact"]), str(files["data"] / "images"), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.count("\n") == 1 + 8 * (4 + 8 + 6)
