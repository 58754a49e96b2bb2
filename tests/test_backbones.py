"""Backbones: open_clip architectures, local checkpoints, ids, precision."""

from __future__ import annotations

import pytest
import torch

from clip_adapter.backbones import create_backbone, resolve_precision
from clip_adapter.core.errors import ArtifactError, ConfigError
from clip_adapter.core.files import save_tensors, sha256_file

TINY = "test-tiny-vit"


def test_random_init_is_seeded_and_named(tiny_backbone):
    again = create_backbone(TINY, "none", precision="fp32")
    other = create_backbone(TINY, "none", precision="fp32", seed=3)
    x = torch.randn(2, 3, 32, 32)
    assert tiny_backbone.id == f"open_clip/{TINY}/random-init:0" and other.id.endswith("random-init:3")
    assert torch.equal(tiny_backbone.encode_images(x), again.encode_images(x))
    assert not torch.equal(tiny_backbone.encode_images(x), other.encode_images(x))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".bin"])
def test_local_checkpoint_loads_and_is_named_by_its_hash(tiny_backbone, tmp_path, suffix):
    other = create_backbone(TINY, "none", precision="fp32", seed=11)
    state = {k: v.float() for k, v in other.model.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_tensors(path, state)
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = create_backbone(TINY, str(path), precision="fp32")
    assert loaded.id == f"open_clip/{TINY}/sha256:{sha256_file(path)}"
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.encode_images(x), other.encode_images(x))
    assert torch.equal(loaded.encode_texts(["a cat"]), other.encode_texts(["a cat"]))


def test_pickled_code_in_a_checkpoint_is_never_run(tmp_path):
    import pickle  # only to build the hostile file; the library itself never imports pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("open('/tmp/clip_adapter_pwned', 'w').write('x')",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(ArtifactError, match="cannot be loaded safely"):
        create_backbone(TINY, str(path))
    import os

    assert not os.path.exists("/tmp/clip_adapter_pwned")


def test_checkpoint_for_another_architecture_is_refused(tmp_path):
    save_tensors(tmp_path / "w.safetensors", {"visual.proj": torch.zeros(3, 3)})
    with pytest.raises(ArtifactError, match="does not fit this architecture"):
        create_backbone(TINY, str(tmp_path / "w.safetensors"))


def test_unknown_names_and_tags_are_config_errors():
    with pytest.raises(ConfigError, match="unknown open_clip architecture"):
        create_backbone("ViT-Q-1")
    with pytest.raises(ConfigError, match="neither a file nor an open_clip tag"):
        create_backbone("ViT-B-32", "no-such-tag")


def test_precision_auto_resolves_to_a_concrete_choice():
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(ConfigError):
        resolve_precision("fp8", torch.device("cpu"))


def test_token_path_reproduces_encode_text(tiny_backbone):
    tokens = tiny_backbone.tokenize(["a photo of a dog."])
    via_tokens = tiny_backbone.encode_token_embeddings(tiny_backbone.embed_tokens(tokens), tokens)
    assert torch.allclose(via_tokens, tiny_backbone.model.encode_text(tokens).float(), atol=1e-5)


def test_vit_b_32_random_init_end_to_end(image_folder, tmp_path):
    """The acceptance run: ViT-B-32, random weights, real JPEG files, train → eval → predict, offline."""
    from clip_adapter.cli import main

    base = ["--backbone", "ViT-B-32", "--pretrained", "none"]
    out = tmp_path / "vitb32"
    assert (
        main(
            [
                "train",
                "--data",
                str(image_folder),
                *base,
                "--shots",
                "2",
                "--views",
                "1",
                "--epochs",
                "5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["eval", str(out), "--data", str(image_folder)]) == 0
    assert (
        main(["predict", str(out), str(image_folder / "blue_square" / "001.jpg"), "--out", str(tmp_path / "p.csv")])
        == 0
    )
    assert (tmp_path / "p.csv").read_text().startswith("path,rank,class,probability")


def test_auto_precision_keeps_small_models_fp32_even_where_bf16_is_fast(monkeypatch):
    # The README's toy tables must reproduce on a CPU with bf16 units: auto leaves the toy CLIP in fp32.
    from clip_adapter.backbones import precision
    from clip_adapter.toyworld.backbone import ToyClipBackbone

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    cpu = torch.device("cpu")
    assert precision.resolve_precision("auto", cpu, parameters=150_000_000) == "bf16"
    assert precision.resolve_precision("auto", cpu, parameters=3_000_000) == "fp32"
    assert ToyClipBackbone(precision="auto").precision == "fp32"
    assert ToyClipBackbone(precision="bf16").precision == "bf16"
