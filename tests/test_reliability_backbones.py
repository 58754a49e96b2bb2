"""Reliability II, backbone and artifact side: offline tags, seeds, devices, hostile artifacts, unknown words.

No test here makes a network request: HF_HUB_OFFLINE is set by conftest, and
the tests that clear it replace the connectivity probe and the hub download.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import warnings

import open_clip
import pytest
import torch

from clip_adapter.artifacts import Classifier
from clip_adapter.backbones import create_backbone, hub
from clip_adapter.backbones.precision import resolve_device
from clip_adapter.core.errors import ArtifactError, ConfigError
from clip_adapter.core.files import save_tensors, sha256_file
from clip_adapter.methods import get_method
from conftest import TINY, synthetic_data


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty Hugging Face cache, and any sleep, socket or hub download fails the test."""
    import huggingface_hub

    def forbidden(*args, **kwargs):
        raise AssertionError("a network request, retry or sleep was attempted")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(time, "sleep", forbidden)
    for name in hub.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and "\r" not in message
    return message


# --- offline --pretrained <tag> ---------------------------------------------------------


@pytest.mark.parametrize("arch,tag,quickgelu", [("ViT-B-32", "openai", True), ("ViT-B-32", "laion2b_s34b_b79k", False)])
def test_offline_tag_fails_at_once_naming_tag_architecture_and_the_local_file_way(no_network, arch, tag, quickgelu):
    with pytest.raises(ArtifactError) as info:
        create_backbone(arch, tag, precision="fp32")
    message = one_line(info)
    assert f"{tag!r}" in message and arch in message and "HF_HUB_OFFLINE" in message
    assert "--pretrained /path/to/weights.safetensors" in message
    assert (f"--backbone {arch}-quickgelu" in message) == quickgelu
    assert message.rstrip().endswith(("(or .pt/.bin)", "QuickGELU)"))  # the complete hint, not cut


def test_transformers_offline_is_honoured_too(no_network):
    no_network.delenv("HF_HUB_OFFLINE")
    no_network.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(ArtifactError, match="TRANSFORMERS_OFFLINE is set, so no download was tried"):
        create_backbone("RN50", "openai")


def test_unreachable_hub_fails_fast_without_retries(no_network):
    no_network.delenv("HF_HUB_OFFLINE")
    no_network.delenv("TRANSFORMERS_OFFLINE", raising=False)
    no_network.setattr(hub, "hub_unreachable", lambda endpoint: "[Errno -2] Name or service not known")
    with pytest.raises(ArtifactError) as info:
        create_backbone("ViT-B-32", "openai")
    message = one_line(info)
    assert "cannot be reached ([Errno -2] Name or service not known)" in message and "'openai' for ViT-B-32" in message
    assert message.endswith("(these weights were trained with QuickGELU)")  # the complete hint, not cut


def register_tag(monkeypatch, tag: str, hf_hub: str) -> None:
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY, {tag: {"hf_hub": hf_hub}})


def tiny_weights(path, seed: int = 5):
    other = create_backbone(TINY, "none", precision="fp32", seed=seed)
    save_tensors(path, {k: v.float() for k, v in other.model.state_dict().items()})
    return other


def test_weights_in_the_local_hub_cache_are_used_offline(no_network, tmp_path):
    import huggingface_hub

    register_tag(no_network, "cached", "org/tiny/")
    revision = "a" * 40
    repo = tmp_path / "hf-cache" / "models--org--tiny"
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    weights = repo / "snapshots" / revision / "open_clip_model.safetensors"
    other = tiny_weights(weights)
    assert huggingface_hub.constants.HF_HUB_CACHE == str(tmp_path / "hf-cache")
    loaded = create_backbone(TINY, "cached", precision="fp32")
    assert loaded.weights_id == f"sha256:{sha256_file(weights)}"
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.encode_images(x), other.encode_images(x))


def test_download_failure_is_one_complete_line_and_not_retried_per_file(no_network, tmp_path):
    import huggingface_hub

    no_network.delenv("HF_HUB_OFFLINE")
    no_network.delenv("TRANSFORMERS_OFFLINE", raising=False)
    no_network.setattr(hub, "hub_unreachable", lambda endpoint: None)
    register_tag(no_network, "remote", "org/tiny/")
    calls = []
    long_reason = "The server said no.\n" + "x" * 300 + "\nThe last sentence matters."

    def failing(**kwargs):
        calls.append(kwargs["filename"])
        raise OSError(long_reason)

    no_network.setattr(huggingface_hub, "hf_hub_download", failing)
    with pytest.raises(ArtifactError) as info:
        create_backbone(TINY, "remote")
    message = one_line(info)
    assert "The last sentence matters." in message and "x" * 300 in message and "from org/tiny" in message
    assert calls == ["open_clip_model.safetensors"]  # a network failure is not repeated for the .bin twin


def test_hub_warnings_are_shown_once_and_retry_logs_hidden(no_network, tmp_path, caplog):
    import huggingface_hub

    no_network.delenv("HF_HUB_OFFLINE")
    no_network.delenv("TRANSFORMERS_OFFLINE", raising=False)
    no_network.setattr(hub, "hub_unreachable", lambda endpoint: None)
    register_tag(no_network, "remote", "org/tiny/")
    weights = tmp_path / "downloaded.safetensors"
    tiny_weights(weights)
    text = f"hub warning {tmp_path.name}"  # unique: "once" is remembered for the whole process

    def downloading(**kwargs):
        logging.getLogger("huggingface_hub").warning("Retrying in 1s [Retry 1/5].")
        warnings.warn(text, UserWarning)
        warnings.warn(text, UserWarning)  # a second call site, the same message
        return str(weights)

    no_network.setattr(huggingface_hub, "hf_hub_download", downloading)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        backbone = create_backbone(TINY, "remote", precision="fp32")
    assert backbone.weights_id == f"sha256:{sha256_file(weights)}"
    assert [str(w.message) for w in caught].count(text) == 1
    assert "Retrying" not in caplog.text


def test_hub_file_candidates_prefer_safetensors():
    assert hub.hub_files("org/m/") == ("org/m", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
    assert hub.hub_files("org/m/pytorch_model.bin") == ("org/m", ["pytorch_model.safetensors", "pytorch_model.bin"])
    assert hub.hub_files("org/m/w.safetensors") == ("org/m", ["w.safetensors"])


# --- seeds and devices ------------------------------------------------------------------


@pytest.mark.parametrize("seed", [10**20, 2**32, -1, True, "3"])
def test_out_of_range_seed_is_a_config_error_naming_the_option(seed):
    with pytest.raises(ConfigError, match=r"--init-seed .*0\.\.4294967295") as info:
        create_backbone("toy", "none", precision="fp32", seed=seed)
    one_line(info)


def test_largest_seed_is_accepted():
    assert create_backbone("toy", "none", precision="fp32", seed=2**32 - 1).weights_id == f"random-init:{2**32 - 1}"


@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_cuda_without_a_gpu_is_one_line(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device is available on this machine; use --device cpu") as info:
        create_backbone("toy", "none", device=device)
    assert repr(device) in one_line(info)


def test_cuda_index_past_the_gpus_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"'cuda:7': this machine has 2 CUDA device\(s\), numbered 0\.\.1"):
        resolve_device("cuda:7")


@pytest.mark.parametrize("device", ["gpu", "", "cuda:-1", "meta", "cuda\nx"])
def test_unknown_device_strings_are_config_errors(device):
    with pytest.raises(ConfigError, match="--device") as info:
        resolve_device(device)
    one_line(info)


def test_cpu_spellings_resolve_to_the_cpu():
    assert resolve_device("cpu:0") == torch.device("cpu") == resolve_device("cpu")


# --- hostile artifact fields --------------------------------------------------------------


@pytest.fixture
def artifact(tmp_path):
    data, _, _ = synthetic_data()
    cls = get_method("clip-adapter")
    head = cls(cls.make_config(epochs=1, alpha_grid=())).fit(data).head
    info = {"id": "open_clip/x/random-init:0", "name": "x", "embed_dim": data.embed_dim}
    return Classifier("clip-adapter", head, data.classnames, data.templates, info).save_pretrained(tmp_path / "art")


def edit(path, key, value):
    config = json.loads((path / "config.json").read_text())
    config[key] = value
    (path / "config.json").write_text(json.dumps(config))


def edit_meta(path, **changes):
    config = json.loads((path / "config.json").read_text())
    edit(path, "head_meta", {**config["head_meta"], **changes})


class FakeBackbone:
    id = "open_clip/x/random-init:0"
    embed_dim = 512


def test_huge_embed_dim_fails_before_any_real_allocation(artifact, monkeypatch):
    cls = get_method("clip-adapter")
    real_build = cls.build_head.__func__
    devices = []

    def watching(klass, config, meta, backbone=None):
        devices.append(torch.empty(0).device.type)  # "meta" inside the shape-only build
        return real_build(klass, config, meta, backbone)

    monkeypatch.setattr(cls, "build_head", classmethod(watching))
    edit_meta(artifact, embed_dim=10**7)
    edit(artifact, "backbone", {"id": "open_clip/x/random-init:0", "name": "x"})  # no recorded dim to compare
    with pytest.raises(ArtifactError, match=r"config\.json: head_meta\.embed_dim = 10000000") as info:
        Classifier.from_pretrained(artifact)
    one_line(info)
    assert "cpu" not in devices


@pytest.mark.parametrize(
    "change,pattern",
    [
        (lambda p: edit_meta(p, embed_dim=10**7), "head_meta.embed_dim = 10000000 but the backbone recorded"),
        (lambda p: edit_meta(p, embed_dim=10**8), r"head_meta\.embed_dim = 100000000 is out of range"),
        (lambda p: edit_meta(p, logit_scale=-1.0), r"head_meta\.logit_scale = -1\.0 is out of range"),
        (lambda p: edit_meta(p, logit_scale=0.0), r"head_meta\.logit_scale = 0\.0 is out of range"),
        (lambda p: edit_meta(p, logit_scale=1e9), r"head_meta\.logit_scale = 1000000000\.0 is out of range"),
        (lambda p: edit_meta(p, num_classes="5"), r"head_meta\.num_classes must be an integer"),
        (lambda p: edit_meta(p, extra=[1, 2]), r"head_meta\.extra = \[1, 2\] is not a number"),
        (
            lambda p: edit(p, "classnames", "class 0class 1class 2class 3class 4"),
            "classnames must be a list of strings",
        ),
        (lambda p: edit(p, "classnames", ["a", "b", "a", "c", "d"]), r"classnames\[2\] = 'a' appears twice"),
        (
            lambda p: edit(p, "classnames", ["a", " ", "b", "c", "d"]),
            r"classnames\[1\] = ' ' is not a non-empty string",
        ),
        (lambda p: edit(p, "classnames", ["a", 7, "b", "c", "d"]), r"classnames\[1\] = 7 is not a non-empty string"),
        (lambda p: edit(p, "templates", "a photo of a {}."), "templates must be a list of strings"),
        (lambda p: edit(p, "templates", ["a photo"]), r"templates\[0\]"),
        (lambda p: edit(p, "templates", ["a {x} of a {}"]), r"templates\[0\]"),
        (lambda p: edit(p, "templates", ["a {} {"]), r"templates\[0\]"),
        (lambda p: edit(p, "templates", [3]), r"templates\[0\]"),
        (lambda p: edit(p, "backbone", "x"), "backbone must be a JSON object"),
        (lambda p: edit(p, "method_config", []), "method_config must be a JSON object"),
        (lambda p: edit(p, "selection", 3), "selection must be a JSON object"),
        (lambda p: edit(p, "method", 3), "method must be a JSON string"),
    ],
)
def test_hostile_config_fields_are_one_line_errors_naming_file_and_field(artifact, change, pattern):
    change(artifact)
    with pytest.raises(ArtifactError, match=pattern) as info:
        Classifier.from_pretrained(artifact)
    assert "config.json" in one_line(info)


def test_embed_dim_must_match_the_backbone_given(artifact):
    with pytest.raises(
        ArtifactError, match=r"head_meta\.embed_dim = 24 but backbone open_clip/x/random-init:0 has embed_dim 512"
    ):
        Classifier.from_pretrained(artifact, backbone=FakeBackbone())


def test_absurdly_large_weights_are_refused(artifact):
    from safetensors.torch import load_file, save_file

    weights = load_file(artifact / "model.safetensors")
    name = next(k for k in weights if k.startswith("visual"))
    save_file({**weights, name: weights[name] * 0 + 1e9}, artifact / "model.safetensors")
    with pytest.raises(ArtifactError, match=rf"model\.safetensors: tensor '{name}' holds values up to 1e\+09") as info:
        Classifier.from_pretrained(artifact)
    one_line(info)


def test_file_tensor_shapes_are_checked_from_the_header(artifact):
    from safetensors.torch import load_file, save_file

    weights = load_file(artifact / "model.safetensors")
    save_file({**weights, "text": torch.zeros(5, 48)}, artifact / "model.safetensors")
    edit_meta(artifact, embed_dim=48)  # now a dimension of a real tensor, but not of the others
    edit(artifact, "backbone", {"id": "open_clip/x/random-init:0", "name": "x"})
    with pytest.raises(ArtifactError, match=r"tensor '.*' has shape \[.*\], expected \[.*48.*\]"):
        Classifier.from_pretrained(artifact)


def test_a_sound_artifact_still_loads_and_predicts(artifact):
    clf = Classifier.from_pretrained(artifact)
    assert clf.logits(torch.randn(3, 24)).shape == (3, 5) and clf.templates and len(clf.classnames) == 5


# --- class names the backbone cannot read ----------------------------------------------


def test_toy_backbone_reports_words_outside_its_vocabulary():
    toy = create_backbone("toy", precision="fp32")
    names = ["Siamese", "pug", "red", "circle", "border collie", "red fox", "café"]
    assert toy.unknown_words(names) == {
        "Siamese": ["Siamese"],
        "pug": ["pug"],
        "border collie": ["border", "collie"],
        "red fox": ["fox"],
        "café": ["café"],
    }
    # Why it matters: both become <unk>, so their prompts are the same tokens.
    assert torch.equal(toy.tokenize(["a photo of a Siamese."]), toy.tokenize(["a photo of a pug."]))


def test_bpe_backbones_read_any_text(tiny_backbone):
    assert tiny_backbone.unknown_words(["Siamese", "pug", "東京", ""]) == {}
