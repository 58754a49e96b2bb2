"""Artifacts: round trip, wrong backbone, and malformed or hostile files."""

from __future__ import annotations

import json

import pytest
import torch

from clip_adapter.artifacts import Classifier, check_backbone
from clip_adapter.core.errors import ArtifactError, ClipAdapterError
from clip_adapter.methods import get_method
from conftest import synthetic_data


@pytest.fixture
def artifact(tmp_path):
    data, test_x, _ = synthetic_data()
    cls = get_method("clip-adapter")
    head = cls(cls.make_config(epochs=2, alpha_grid=())).fit(data).head
    clf = Classifier(
        "clip-adapter", head, data.classnames, data.templates, {"id": "open_clip/x/random-init:0", "name": "x"}
    )
    return clf.save_pretrained(tmp_path / "art"), test_x


def load(path):
    return Classifier.from_pretrained(path)


def test_config_records_what_the_issue_asks_for(artifact):
    path, _ = artifact
    config = json.loads((path / "config.json").read_text())
    for key in ("method", "method_config", "backbone", "classnames", "templates", "library_version", "head_meta"):
        assert key in config
    assert config["method_config"]["variant"] == "visual" and config["method_config"]["reduction"] == 4


def test_wrong_backbone_message_names_both(artifact):
    class Other:
        id = "open_clip/y/sha256:abc"

    with pytest.raises(ArtifactError, match=r"open_clip/x/random-init:0.*open_clip/y/sha256:abc"):
        Classifier.from_pretrained(artifact[0], backbone=Other())
    check_backbone({"id": "same"}, type("B", (), {"id": "same"})(), "here")  # same id passes


def edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "mutate,pattern",
    [
        (lambda p: (p / "config.json").write_text("{oops"), "not valid JSON"),
        (lambda p: (p / "config.json").write_text("[]"), "not a clip-adapter artifact"),
        (lambda p: edit_config(p, method="rm -rf"), "unknown method"),
        (lambda p: edit_config(p, format_version=99), "format version"),
        (
            lambda p: edit_config(p, head_meta={"num_classes": 10**12, "embed_dim": 24, "logit_scale": 30.0}),
            "out of range",
        ),
        (lambda p: edit_config(p, head_meta={"num_classes": 5, "embed_dim": 25, "logit_scale": 30.0}), "shape"),
        (lambda p: edit_config(p, classnames=["a"]), "class names"),
        (lambda p: edit_config(p, method_config={"variant": "sideways"}), "variant"),
        (lambda p: (p / "model.safetensors").write_bytes(b"\x80\x04\x95pickle"), "not a valid safetensors"),
        (lambda p: (p / "model.safetensors").unlink(), "not found"),
    ],
)
def test_malformed_artifacts_give_one_line_errors(artifact, mutate, pattern):
    path, _ = artifact
    mutate(path)
    with pytest.raises(ArtifactError, match=pattern) as info:
        load(path)
    assert "\n" not in str(info.value)


def test_nan_and_misshaped_weights_are_refused(artifact):
    from safetensors.torch import load_file, save_file

    path, _ = artifact
    weights = load_file(path / "model.safetensors")
    name = next(k for k in weights if k.startswith("visual"))
    save_file({**weights, name: torch.full_like(weights[name], float("nan"))}, path / "model.safetensors")
    with pytest.raises(ArtifactError, match="NaN"):
        load(path)
    save_file({**weights, name: weights[name][:1]}, path / "model.safetensors")
    with pytest.raises(ArtifactError, match="shape"):
        load(path)
    save_file({**weights, "extra": torch.zeros(1)}, path / "model.safetensors")
    with pytest.raises(ArtifactError, match="unexpected"):
        load(path)
    save_file({**weights, name: weights[name].double()}, path / "model.safetensors")
    with pytest.raises(ArtifactError, match="float64"):
        load(path)


def test_huge_declared_header_is_refused(artifact):
    path, _ = artifact
    (path / "model.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(ArtifactError, match="not a valid safetensors"):
        load(path)


def test_saving_over_an_artifact_is_atomic(artifact, monkeypatch):
    path, test_x = artifact
    before = (path / "model.safetensors").read_bytes()
    clf = load(path)
    import clip_adapter.artifacts as mod

    def explode(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mod, "save_tensors", explode)
    with pytest.raises((OSError, ClipAdapterError)):  # io reports a failed write as a one-line OutputError
        clf.save_pretrained(path, overwrite=True)
    assert (path / "model.safetensors").read_bytes() == before
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]
