"""Image–text retrieval: `index` / `search` on the toy world, exact and FAISS, with and without an adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import clip_adapter
from clip_adapter.apps.retrieval import (
    adaptation_for,
    backbone_for_index,
    build_index,
    encode_image_query,
    encode_text_query,
    load_index,
    seal_record,
    search,
)
from clip_adapter.backbones import create_backbone
from clip_adapter.cli import main as cli_main
from clip_adapter.core.errors import ArtifactError, ConfigError
from clip_adapter.core.files import save_tensors, to_json
from clip_adapter.toyworld import write_task_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = tmp_path_factory.mktemp("retrieval")
    photos = write_task_dataset("color", "photo", work / "photos", 1, 1, 3, seed=0)
    backbone = create_backbone("toy", precision="fp32")
    model = clip_adapter.fit(
        photos,
        backbone=backbone,
        shots=1,
        cache_dir=work / "cache",
        epochs=3,
        variant="both",
        alpha=0.6,
        beta=0.6,
        alpha_grid=(),
    )
    artifact = model.save_pretrained(work / "artifact")
    index_dir = build_index(backbone, photos / "images", work / "cache", work / "index")
    return {
        "work": work,
        "images": photos / "images",
        "backbone": backbone,
        "model": model,
        "artifact": artifact,
        "index_dir": index_dir,
        "cache": work / "cache",
    }


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_index_holds_normalised_features_and_relative_paths(world):
    index = load_index(world["index_dir"])
    images = sorted(p.relative_to(world["images"]).as_posix() for p in world["images"].rglob("*.png"))
    assert sorted(index.paths) == images
    assert torch.allclose(index.features.norm(dim=1), torch.ones(len(images)), atol=1e-5)
    assert index.backbone["id"] == world["backbone"].id and index.adapted is None


@pytest.mark.parametrize("colour", ["red", "green", "blue"])
def test_text_query_finds_its_colour(world, colour):
    index = load_index(world["index_dir"])
    hits = search(index, encode_text_query(world["backbone"], f"a {colour} object"), top_k=3)
    assert [Path(p).parent.name for p, _ in hits] == [colour] * 3
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_templates_change_the_query_but_not_its_answer(world):
    bb, index = world["backbone"], load_index(world["index_dir"])
    raw = encode_text_query(bb, "red")
    templated = encode_text_query(bb, "red", ["a photo of a {} shape.", "a {} object."])
    assert not torch.allclose(raw, templated)
    assert Path(search(index, templated, top_k=1)[0][0]).parent.name == "red"


def test_image_query_finds_itself_first(world):
    index = load_index(world["index_dir"])
    target = world["images"] / "cyan" / "test_0001.png"
    hits = search(index, encode_image_query(world["backbone"], target, world["cache"]), top_k=3, query_kind="image")
    assert hits[0] == (str(target.resolve()), 1.0)
    assert Path(hits[1][0]).parent.name == "cyan"


def test_adapted_features_reproduce_the_artifacts_classifier(world):
    """The adapted image and text features are the ones the head classifies with: cos(f', W') · scale = logits."""
    clf = world["model"].classifier
    adaptation = adaptation_for(clf, world["artifact"])
    feats = load_index(world["index_dir"]).features
    logits = clf.head.logit_scale * adaptation.image(feats) @ adaptation.text(clf.head.text).T
    assert torch.allclose(logits, clf.logits(feats), atol=1e-4)
    assert not torch.allclose(adaptation.image(feats), feats, atol=1e-3)  # the adapter really moves the features


def test_stored_and_on_the_fly_adaptation_agree(world, tmp_path):
    clf = world["model"].classifier
    adaptation = adaptation_for(clf, world["artifact"])
    stored = load_index(build_index(world["backbone"], world["images"], world["cache"], tmp_path / "ix", adaptation))
    plain = load_index(world["index_dir"])
    assert stored.adapted is not None and stored.artifact["sha256"] == adaptation.fingerprint["sha256"]
    for query, kind in ((encode_text_query(world["backbone"], "a pink object"), "text"), (plain.features[5], "image")):
        a = search(stored, query, 5, adaptation, kind)
        b = search(plain, query, 5, adaptation, kind)
        assert [p for p, _ in a] == [p for p, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-5)
        assert [s for _, s in a] != [s for _, s in search(plain, query, 5, None, kind)]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_index_agrees_with_exact_search_on_a_small_collection(world, tmp_path, kind):
    pytest.importorskip("faiss")
    adaptation = adaptation_for(world["model"].classifier, world["artifact"])
    index = load_index(
        build_index(world["backbone"], world["images"], world["cache"], tmp_path / "ix", adaptation, approximate=kind)
    )
    query = encode_text_query(world["backbone"], "a yellow object")
    for adapt in (None, adaptation):
        exact = search(index, query, 5, adapt, unadapted=adapt is None)
        approx = search(index, query, 5, adapt, approximate=True, unadapted=adapt is None)
        assert [p for p, _ in approx] == [p for p, _ in exact]
        assert [s for _, s in approx] == pytest.approx([s for _, s in exact], abs=1e-4)


def test_faiss_missing_is_one_line_naming_the_install(world, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'clip-adapter\[faiss\]'"):
        build_index(world["backbone"], world["images"], world["cache"], tmp_path / "ix", approximate="hnsw")
    assert not (tmp_path / "ix").exists()  # refused before any work


def test_search_with_an_artifact_from_another_backbone_is_refused(world, tmp_path, capsys):
    other = create_backbone("toy", pretrained="none", precision="fp32")
    photos = write_task_dataset("color", "photo", tmp_path / "p", 1, 1, 1, seed=1)
    wrong = clip_adapter.fit(
        photos, backbone=other, shots=1, method="zero-shot", cache_dir=world["cache"]
    ).save_pretrained(tmp_path / "a")
    index = load_index(world["index_dir"])
    with pytest.raises(ArtifactError, match="trained on backbone .*random-init"):
        clip_adapter.artifacts.Classifier.from_pretrained(wrong, backbone=backbone_for_index(index))
    with pytest.raises(ArtifactError, match="built with backbone"):
        backbone_for_index(index, "toy", "none")
    code, _, err = run_cli(capsys, "search", world["index_dir"], "red", "--artifact", wrong)
    assert code == 2 and "trained on backbone" in err and err.count("\n") == 1


def test_other_methods_have_no_adapted_features(world, tmp_path):
    photos = write_task_dataset("color", "photo", tmp_path / "p", 1, 1, 1, seed=1)
    tip = clip_adapter.fit(photos, backbone=world["backbone"], shots=1, method="tip-adapter", cache_dir=world["cache"])
    zero = clip_adapter.fit(photos, backbone=world["backbone"], shots=1, method="zero-shot", cache_dir=world["cache"])
    with pytest.raises(ConfigError, match="tip-adapter model, which has no adapted features"):
        adaptation_for(tip.classifier, tip.save_pretrained(tmp_path / "tip"))
    identity = adaptation_for(zero.classifier, zero.save_pretrained(tmp_path / "zs"))
    feats = load_index(world["index_dir"]).features
    assert torch.allclose(identity.image(feats), feats, atol=1e-6)


def test_cli_index_and_search_by_text_and_image(world, tmp_path, capsys):
    out = tmp_path / "ix"
    code, stdout, _ = run_cli(
        capsys, "index", world["images"], "--out", out, "--cache-dir", world["cache"], "--precision", "fp32"
    )
    assert code == 0 and "indexed 40 images" in stdout
    code, stdout, _ = run_cli(capsys, "search", out, "a purple object", "--top-k", "2", "--artifact", world["artifact"])
    lines = stdout.splitlines()
    assert code == 0 and lines[0] == "rank,path,score" and len(lines) == 3 and "/purple/" in lines[1]
    image = world["images"] / "orange" / "val_0000.png"
    code, stdout, _ = run_cli(
        capsys, "search", out, "--image", image, "--format", "json", "--cache-dir", world["cache"]
    )
    assert code == 0 and json.loads(stdout)[0]["path"] == str(image.resolve())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "{index}"], "either a text query or --image"),
        (["search", "{index}", "red", "--image", "x.png"], "either a text query or --image"),
        (["search", "{index}", "zebra"], "no word of the query"),
        (["search", "{index}", "red", "--faiss"], "has no approximate index"),
        (["search", "{index}", "red", "--backbone", "toy", "--pretrained", "none"], "built with backbone"),
        (["search", "{index}", "red", "--template", "no field"], "template"),
        (["index", "{images}", "--out", "{index}"], "already holds a clip-adapter index"),
        (["index", "{images}", "--out", "{images}/inside"], "inside the input"),
    ],
)
def test_cli_refusals_are_one_line(world, capsys, argv, message):
    argv = [a.format(index=world["index_dir"], images=world["images"]) for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_cli_index_overwrite_replaces_only_our_index(world, tmp_path, capsys):
    out = tmp_path / "ix"
    assert (
        run_cli(capsys, "index", world["images"], "--out", out, "--precision", "fp32", "--cache-dir", world["cache"])[0]
        == 0
    )
    assert (
        run_cli(
            capsys,
            "index",
            world["images"],
            "--out",
            out,
            "--precision",
            "fp32",
            "--cache-dir",
            world["cache"],
            "--overwrite",
        )[0]
        == 0
    )
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "index", world["images"], "--out", out, "--overwrite")
    assert code == 2 and "notes.txt" in err and (out / "notes.txt").read_text() == "mine"


def reseal(index_dir: Path, record: dict | None = None) -> None:
    """Re-record every file's sha256 and the record's digest: a forgery consistent with its checksums."""
    record = record if record is not None else json.loads((index_dir / "index.json").read_text())
    unsealed = {k: v for k, v in record.items() if k not in ("files", "digest")}
    (index_dir / "index.json").write_text(to_json(seal_record(unsealed, index_dir)))


def _corrupt(index_dir: Path, how: str, sealed: bool) -> None:
    record = json.loads((index_dir / "index.json").read_text())
    if how == "no record":
        (index_dir / "index.json").unlink()
    elif how == "bad json":
        (index_dir / "index.json").write_text("{not json")
    elif how == "foreign json":
        (index_dir / "index.json").write_text(json.dumps({"format": "something-else"}))
    elif how == "paths mismatch":
        record["paths"] = record["paths"][:-1]
        (index_dir / "index.json").write_text(json.dumps(record))
    elif how == "newer version":
        record["format_version"] = 99
        (index_dir / "index.json").write_text(json.dumps(record))
    elif how == "no features":
        (index_dir / "features.safetensors").unlink()
    elif how == "garbage features":
        (index_dir / "features.safetensors").write_bytes(b"\x00garbage" * 10)
    elif how == "unnormalised features":
        save_tensors(
            index_dir / "features.safetensors", {"features": torch.ones(len(record["paths"]), record["embed_dim"])}
        )
    elif how == "nan features":
        bad = F.normalize(torch.ones(len(record["paths"]), record["embed_dim"]), dim=1)
        bad[0, 0] = float("nan")
        save_tensors(index_dir / "features.safetensors", {"features": bad})
    if sealed:
        reseal(index_dir, record if how == "paths mismatch" else None)


@pytest.mark.parametrize(
    "how, sealed, message",
    [
        ("no record", False, "index record not found"),
        ("bad json", False, "not valid JSON"),
        ("foreign json", False, "not a clip-adapter index"),
        ("newer version", False, "format version 99"),
        ("no features", False, "index features not found"),
        # edited without re-sealing: refused by the checksums, naming the file
        ("paths mismatch", False, "index.json does not match its digest"),
        ("garbage features", False, "features.safetensors does not match the sha256"),
        ("unnormalised features", False, "features.safetensors does not match the sha256"),
        # forged consistently with the checksums: refused by the checks behind them
        ("paths mismatch", True, "has shape"),
        ("garbage features", True, "not a valid safetensors"),
        ("unnormalised features", True, "not L2-normalised"),
        ("nan features", True, "NaN"),
    ],
)
def test_bad_index_files_are_one_line_errors(world, tmp_path, capsys, how, sealed, message):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(world["index_dir"], broken)
    _corrupt(broken, how, sealed)
    code, _, err = run_cli(capsys, "search", broken, "red")
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_bad_faiss_file_is_one_line(world, tmp_path, capsys):
    pytest.importorskip("faiss")
    out = tmp_path / "ix"
    build_index(world["backbone"], world["images"], world["cache"], out, approximate="hnsw")
    (out / "faiss-raw.index").write_bytes(b"not a faiss index")
    code, _, err = run_cli(capsys, "search", out, "red", "--faiss")
    assert code == 2 and "faiss-raw.index does not match the sha256" in err and err.count("\n") == 1
    reseal(out)
    code, _, err = run_cli(capsys, "search", out, "red", "--faiss")
    assert code == 2 and "not a readable FAISS index" in err and err.count("\n") == 1


def test_module_example_runs():
    import doctest

    from clip_adapter.apps import retrieval

    result = doctest.testmod(retrieval, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_index_of_a_missing_folder_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "index", tmp_path / "nowhere", "--out", tmp_path / "ix")
    assert code == 2 and "folder not found" in err and not (tmp_path / "ix").exists()
