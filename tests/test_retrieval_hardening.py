"""Index and feature-cache hardening: nothing outside a checksum is trusted, nothing malformed crashes.

Each test reproduces a reported defect: a swapped FAISS file searched as if it were the
index's (scores above 1 reported as cosines), swapped manifest keys giving two images each
other's features, a manifest with a non-string key making every command exit 5, a cache of
the wrong width producing an index no command could search, a path query searched as words,
an adapted index searched without its artifact, a ``--skip-bad`` hint from a command without
it, and ``(default: None)`` in ``--help``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clip_adapter
from clip_adapter.apps.retrieval import (
    adaptation_for,
    build_index,
    encode_text_query,
    load_index,
    seal_record,
    search,
)
from clip_adapter.backbones import create_backbone
from clip_adapter.cli import main as cli_main
from clip_adapter.core.errors import ArtifactError, ClipAdapterError, ConfigError
from clip_adapter.core.files import save_tensors, to_json
from clip_adapter.features import FeatureStore, extract_images, image_store
from clip_adapter.features.store import MANIFEST_VERSION, shard_digest
from clip_adapter.toyworld import write_task_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = tmp_path_factory.mktemp("hardening")
    photos = write_task_dataset("color", "photo", work / "photos", 1, 1, 2, seed=0)
    backbone = create_backbone("toy", precision="fp32")
    cache = work / "cache"
    model = clip_adapter.fit(
        photos,
        backbone=backbone,
        shots=1,
        cache_dir=cache,
        epochs=2,
        variant="both",
        alpha=0.6,
        beta=0.6,
        alpha_grid=(),
    )
    artifact = model.save_pretrained(work / "artifact")
    other = clip_adapter.fit(photos, backbone=backbone, shots=1, method="zero-shot", cache_dir=cache).save_pretrained(
        work / "zs"
    )
    adaptation = adaptation_for(model.classifier, artifact)
    try:
        import faiss  # noqa: F401

        approximate = "hnsw"
    except ImportError:
        approximate = None
    return {
        "work": work,
        "images": photos / "images",
        "backbone": backbone,
        "cache": cache,
        "artifact": artifact,
        "other_artifact": other,
        "adaptation": adaptation,
        "plain": build_index(backbone, photos / "images", cache, work / "plain"),
        "adapted": build_index(backbone, photos / "images", cache, work / "adapted", adaptation, approximate),
    }


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def copy_index(world, name: str, to: Path) -> Path:
    shutil.copytree(world[name], to)
    return to


def reseal(index_dir: Path, record: dict | None = None) -> None:
    """Re-record every file's sha256 and the digest: a forgery consistent with the checksums."""
    record = record if record is not None else json.loads((index_dir / "index.json").read_text())
    unsealed = {k: v for k, v in record.items() if k not in ("files", "digest")}
    (index_dir / "index.json").write_text(to_json(seal_record(unsealed, index_dir)))


def one_line_refusal(code: int, err: str, *needles: str) -> bool:
    return code == 2 and err.count("\n") == 1 and all(n in err for n in needles)


# -- 1. every file and field of an index is bound to index.json's checksums ---------------------------------


def test_swapped_faiss_files_are_refused_naming_the_file(world, tmp_path, capsys):
    pytest.importorskip("faiss")
    index = copy_index(world, "adapted", tmp_path / "ix")
    raw, adapted = index / "faiss-raw.index", index / "faiss-adapted.index"
    raw_bytes = raw.read_bytes()
    raw.write_bytes(adapted.read_bytes())
    adapted.write_bytes(raw_bytes)
    code, _, err = run_cli(capsys, "search", index, "a red object", "--artifact", world["artifact"], "--faiss")
    assert one_line_refusal(
        code, err, "faiss-adapted.index does not match the sha256 recorded in index.json", "re-run"
    ), err


def test_faiss_file_of_unnormalised_vectors_is_never_read_as_cosines(world, tmp_path, capsys):
    """The report: a FAISS file of other vectors (same count and width) returned scores of 1.54 as cosines."""
    faiss = pytest.importorskip("faiss")
    index_dir = build_index(world["backbone"], world["images"], world["cache"], tmp_path / "ix", approximate="hnsw")
    features = load_index(index_dir).features
    forged = faiss.IndexFlatIP(features.shape[1])
    forged.add((1.6 * features).numpy())
    faiss.write_index(forged, str(index_dir / "faiss-raw.index"))
    code, _, err = run_cli(capsys, "search", index_dir, "a red object", "--faiss")
    assert one_line_refusal(code, err, "faiss-raw.index does not match the sha256"), err
    reseal(index_dir)  # even a forgery consistent with the checksums is caught by its scores
    code, out, err = run_cli(capsys, "search", index_dir, "a red object", "--faiss")
    assert one_line_refusal(code, err, "faiss-raw.index does not hold the index's features"), (out, err)


def _changed(value):
    """A different value of the same JSON type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return list(reversed(value)) if len({json.dumps(v) for v in value}) > 1 else [*value, "x"]
    if isinstance(value, dict):
        return {**value, "extra": 1}
    return "x"


def test_every_index_record_field_is_bound_to_its_digest(world, tmp_path, capsys):
    record = json.loads((world["adapted"] / "index.json").read_text())
    assert {"files", "digest", "paths", "backbone", "embed_dim", "artifact"} <= set(record)
    for field in sorted(set(record) - {"digest", "format", "format_version"}):
        index = tmp_path / field
        shutil.copytree(world["adapted"], index)
        (index / "index.json").write_text(json.dumps({**record, field: _changed(record[field])}))
        with pytest.raises(ArtifactError, match="index.json does not match its digest"):
            load_index(index)
    code, _, err = run_cli(capsys, "search", tmp_path / "paths", "red", "--artifact", world["artifact"])
    assert one_line_refusal(code, err, "does not match its digest", "re-run clip-adapter index"), err


def test_reordered_paths_are_refused_not_searched(world, tmp_path):
    """Reversed paths would give every image another's features: the digest covers their order."""
    index = copy_index(world, "plain", tmp_path / "ix")
    record = json.loads((index / "index.json").read_text())
    record["paths"] = record["paths"][::-1]
    (index / "index.json").write_text(to_json(record))
    with pytest.raises(ArtifactError, match="does not match its digest"):
        load_index(index)


def test_index_of_the_previous_format_asks_for_a_rebuild(world, tmp_path, capsys):
    index = copy_index(world, "plain", tmp_path / "ix")
    record = json.loads((index / "index.json").read_text())
    old = {k: v for k, v in record.items() if k not in ("files", "digest")} | {"format_version": 1}
    (index / "index.json").write_text(to_json(old))
    code, _, err = run_cli(capsys, "search", index, "red")
    assert one_line_refusal(code, err, "index format 1", "re-run clip-adapter index"), err


# -- 1 and 2. feature-cache manifests: keys bound to the checksum, malformed ones dropped, never a crash -------


def shard_files(store_dir: Path) -> list[Path]:
    return sorted(store_dir.glob("shard-*.json"))


def test_swapped_manifest_keys_are_recomputed_not_served(world, tmp_path):
    backbone = world["backbone"]
    paths = sorted(world["images"].rglob("*.png"))[:2]
    cache = tmp_path / "cache"
    before, _, _ = extract_images(backbone, paths, image_store(backbone, cache))
    assert not torch.allclose(before[0], before[1])
    [manifest_path] = shard_files(image_store(backbone, cache).dir)
    manifest = json.loads(manifest_path.read_text())
    manifest["keys"] = manifest["keys"][::-1]  # the two images now claim each other's rows
    manifest_path.write_text(json.dumps(manifest))
    store = image_store(backbone, cache)
    assert store.missing(manifest["keys"]) == manifest["keys"], "a manifest whose keys changed must not be trusted"
    after, _, _ = extract_images(backbone, paths, image_store(backbone, cache))
    assert torch.equal(before, after)


VALID_FIELDS = ("version", "keys", "sha256", "shape", "dtype", "sources")


def fresh_store(root: Path, dim: int | None = 3) -> tuple[FeatureStore, Path]:
    store = FeatureStore(root, {"backbone": "x"}, "image", dim=dim)
    store.put(["a", "b"], torch.arange(6, dtype=torch.float32).view(2, 3), {"a": "a.png", "b": "b.png"})
    [manifest] = shard_files(store.dir)
    return store, manifest


def test_every_manifest_field_is_bound_to_the_checksum(tmp_path):
    for field in VALID_FIELDS:
        _, manifest_path = fresh_store(tmp_path / field)
        manifest = json.loads(manifest_path.read_text())
        assert set(manifest) == set(VALID_FIELDS) and manifest["version"] == MANIFEST_VERSION
        changed = {**manifest, field: _changed(manifest[field])}
        if field == "version":
            changed["version"] = MANIFEST_VERSION - 1  # an older format: never trusted
        manifest_path.write_text(json.dumps(changed))
        store = FeatureStore(tmp_path / field, {"backbone": "x"}, "image", dim=3)
        assert store.missing(["a", "b"]) == ["a", "b"], field
        assert not shard_files(store.dir) and not list(store.dir.glob("shard-*.safetensors")), field


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from((*VALID_FIELDS, "keys[0]", "sources[1]", "shape[-1]", "<whole manifest>")), value=json_values
)
def test_fuzzed_manifest_fields_are_dropped_and_recomputed_never_a_crash(field, value):
    with tempfile.TemporaryDirectory() as root:
        _, manifest_path = fresh_store(Path(root))
        manifest = json.loads(manifest_path.read_text())
        if field == "<whole manifest>":
            mutated = value
        elif "[" in field:
            name, position = field.rstrip("]").split("[")
            mutated = {**manifest, name: list(manifest[name])}
            mutated[name][int(position)] = value
        else:
            mutated = {**manifest, field: value}
        if mutated == manifest:
            return
        manifest_path.write_text(json.dumps(mutated))
        store = FeatureStore(root, {"backbone": "x"}, "image", dim=3)  # never raises
        assert store.missing(["a", "b"]) == ["a", "b"]
        store.put(["a", "b"], torch.ones(2, 3))  # recomputed rows are served
        assert FeatureStore(root, {"backbone": "x"}, "image", dim=3).get(["b"]).tolist() == [[1.0, 1.0, 1.0]]


@pytest.mark.parametrize("text", ["[" * 100_000, '{"version": 2, "keys": [[1]]}', '"just a string"', "\xff\xfe"])
def test_hostile_manifest_text_is_dropped(tmp_path, text):
    _, manifest_path = fresh_store(tmp_path)
    manifest_path.write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff\xfe" else b"\xff\xfe")
    store = FeatureStore(tmp_path, {"backbone": "x"}, "image", dim=3)
    assert store.missing(["a", "b"]) == ["a", "b"] and not shard_files(store.dir)


@pytest.mark.parametrize("bad_key", [7, [7], None])
def test_a_manifest_with_a_non_string_key_does_not_stop_any_command(world, tmp_path, capsys, bad_key):
    """The report: one such manifest made every command on the cache exit 5 until deleted by hand."""
    cache = tmp_path / "cache"
    argv = ["index", world["images"], "--cache-dir", cache, "--precision", "fp32"]
    assert run_cli(capsys, *argv, "--out", tmp_path / "a")[0] == 0
    manifest_path = shard_files(image_store(world["backbone"], cache).dir)[0]
    manifest = json.loads(manifest_path.read_text())
    manifest["keys"][0] = bad_key
    manifest_path.write_text(json.dumps(manifest))
    code, out, err = run_cli(capsys, *argv, "--out", tmp_path / "b")
    assert code == 0 and "indexed" in out, err
    assert all(isinstance(k, str) for k in json.loads(manifest_path.read_text())["keys"])  # rewritten, same name
    assert torch.equal(load_index(tmp_path / "a").features, load_index(tmp_path / "b").features)


# -- 3. feature width (and dtype) against the backbone ------------------------------------------------------


def write_consistent_shard(store_dir: Path, keys: list[str], tensor: torch.Tensor) -> None:
    """A shard whose manifest and checksum agree with its bytes, whatever their width or dtype."""
    from safetensors.torch import save

    data = save({"features": tensor.contiguous()})
    fields = {"version": MANIFEST_VERSION, "keys": keys, "shape": list(tensor.shape), "dtype": "float32"}
    digest = shard_digest(fields, data)
    (store_dir / f"shard-forged-{digest[:8]}.safetensors").write_bytes(data)
    (store_dir / f"shard-forged-{digest[:8]}.json").write_text(to_json({**fields, "sha256": digest}))


def test_consistent_shard_of_another_width_or_dtype_is_dropped(tmp_path):
    store = FeatureStore(tmp_path, {"backbone": "x"}, "image", dim=4)
    write_consistent_shard(store.dir, ["a"], torch.ones(1, 3))
    write_consistent_shard(store.dir, ["b"], torch.ones(1, 4, dtype=torch.float16))
    store = FeatureStore(tmp_path, {"backbone": "x"}, "image", dim=4)
    assert store.missing(["a", "b"]) == ["a", "b"] and not shard_files(store.dir)
    with pytest.raises(ValueError, match="3-wide features for a store of width 4"):
        store.put(["a"], torch.ones(1, 3))


def test_index_over_a_cache_of_the_wrong_width_is_recomputed_at_the_backbones(world, tmp_path, capsys):
    """The report: a checksum-consistent 64-wide cache for the 128-wide backbone gave a 64-d index nothing could
    search.
    """
    cache, backbone = tmp_path / "cache", world["backbone"]
    argv = ["index", world["images"], "--cache-dir", cache, "--precision", "fp32"]
    assert run_cli(capsys, *argv, "--out", tmp_path / "a")[0] == 0
    store_dir = image_store(backbone, cache).dir
    for manifest_path in shard_files(store_dir):
        keys = json.loads(manifest_path.read_text())["keys"]
        manifest_path.unlink()
        manifest_path.with_suffix(".safetensors").unlink()
        write_consistent_shard(store_dir, keys, F.normalize(torch.randn(len(keys), 64), dim=1))
    assert run_cli(capsys, *argv, "--out", tmp_path / "b")[0] == 0
    index = load_index(tmp_path / "b")
    assert index.dim == backbone.embed_dim == 128
    assert torch.equal(index.features, load_index(tmp_path / "a").features)
    code, out, err = run_cli(capsys, "search", tmp_path / "b", "a red object", "--top-k", "1")
    assert code == 0 and "/red/" in out, err


def forge_narrow_index(world, to: Path, backbone_width: int) -> Path:
    """A sealed index of 64-wide features whose backbone record claims ``backbone_width``."""
    index = copy_index(world, "plain", to)
    record = json.loads((index / "index.json").read_text())
    narrow = F.normalize(torch.randn(len(record["paths"]), 64), dim=1)
    save_tensors(index / "features.safetensors", {"features": narrow})
    record["embed_dim"] = 64
    record["backbone"] = {**record["backbone"], "embed_dim": backbone_width}
    reseal(index, record)
    return index


def test_search_of_an_index_narrower_than_its_backbone_is_one_line(world, tmp_path, capsys):
    index = forge_narrow_index(world, tmp_path / "ix", 64)
    code, _, err = run_cli(capsys, "search", index, "a red object")
    assert one_line_refusal(code, err, "holds 64-wide features but backbone", "embeds in 128"), err
    index = forge_narrow_index(world, tmp_path / "ix2", 128)
    code, _, err = run_cli(capsys, "search", index, "a red object")
    assert one_line_refusal(code, err, "embed_dim 64 is not the width of its backbone"), err


def test_library_search_with_a_query_of_another_width_is_refused(world):
    index = load_index(world["plain"])
    with pytest.raises(ConfigError, match="the query is 64-dimensional"):
        search(index, F.normalize(torch.randn(64), dim=0))


# -- 4. an image path is an image query; an adapted index needs its artifact -----------------------------------


def test_query_naming_an_image_file_searches_by_that_image(world, capsys):
    image = sorted((world["images"] / "blue").glob("*.png"))[0]
    code, out, err = run_cli(capsys, "search", world["plain"], image, "--format", "json", "--cache-dir", world["cache"])
    hits = json.loads(out) if code == 0 else None
    assert code == 0 and hits[0]["path"] == str(image.resolve()) and hits[0]["score"] == 1.0, err


def test_text_forces_words_and_a_bad_file_query_says_how(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("red").write_bytes(b"not an image")  # a file that happens to share its name with the words
    code, _, err = run_cli(capsys, "search", world["plain"], "red", "--cache-dir", world["cache"])
    assert one_line_refusal(code, err, "red", "--text searches the words"), err
    assert "--skip-bad" not in err
    code, out, err = run_cli(capsys, "search", world["plain"], "red", "--text", "--top-k", "1")
    assert code == 0 and "/red/" in out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["more/b.png"], "image not found: more/b.png"),
        (["{images}"], "is a folder"),
        (["red", "--image", "x.png"], "either a text query or --image"),
        (["--image", "x.png", "--text"], "--text applies to a query given as words"),
    ],
)
def test_query_refusals_are_one_line(world, capsys, argv, message):
    argv = [a.format(images=world["images"]) for a in argv]
    code, _, err = run_cli(capsys, "search", world["plain"], *argv)
    assert one_line_refusal(code, err, message), err


def test_adapted_index_is_searched_only_with_its_own_artifact(world, capsys):
    code, _, err = run_cli(capsys, "search", world["adapted"], "a red object")
    assert one_line_refusal(code, err, "was built with the artifact", f"pass --artifact {world['artifact']}"), err
    code, _, err = run_cli(capsys, "search", world["adapted"], "a red object", "--artifact", world["other_artifact"])
    assert one_line_refusal(code, err, "was built with the artifact", "not with", "sha256 differ"), err
    code, out, err = run_cli(
        capsys, "search", world["adapted"], "a red object", "--artifact", world["artifact"], "--top-k", "1"
    )
    assert code == 0 and "/red/" in out, err


def test_library_search_of_an_adapted_index_needs_its_adaptation_or_an_explicit_opt_out(world):
    index = load_index(world["adapted"])
    query = encode_text_query(world["backbone"], "a red object")
    with pytest.raises(ConfigError, match="pass --artifact"):
        search(index, query)
    adapted = search(index, query, 3, world["adaptation"])
    raw = search(index, query, 3, unadapted=True)
    assert [s for _, s in adapted] != [s for _, s in raw]
    assert raw == search(load_index(world["plain"]), query, 3)


# -- 5 and 6. no hint at a missing option; no "(default: None)" ---------------------------------------------


def test_bad_query_image_does_not_suggest_skip_bad(world, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but not really")
    for argv in (["--image", bad], [bad]):
        code, _, err = run_cli(capsys, "search", world["plain"], *argv, "--cache-dir", world["cache"])
        assert one_line_refusal(code, err, "bad.png"), err
        assert "skip-bad" not in err


@pytest.mark.parametrize("command", ["index", "search"])
def test_help_shows_no_none_default(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0 and "(default: None)" not in " ".join(out.split())
    if command == "index":
        assert "(default: toy, or the artifact's backbone with --artifact)" in " ".join(out.split())


def test_errors_are_clip_adapter_errors(world, tmp_path):
    index = copy_index(world, "plain", tmp_path / "ix")
    (index / "features.safetensors").write_bytes(b"x")
    with pytest.raises(ClipAdapterError):
        load_index(index)
