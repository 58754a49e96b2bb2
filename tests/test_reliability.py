"""Bad data, interrupted work and untrusted files: never a crash, never a lost result.

The bad-input corpus lives in tests/corpus.py (48 dataset kinds); artifacts,
checkpoints and cache entries have their own hostile cases in
test_artifacts.py, test_backbones.py and test_features.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clip_adapter.cli import main
from clip_adapter.core.errors import ArtifactError, ClipAdapterError, DataError
from clip_adapter.data.dataset import parse_coop_split
from corpus import BAD_DATASETS, EXPECTED, TRAINABLE, good_folder

SRC = Path(__file__).resolve().parents[1] / "src" / "clip_adapter"
TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--precision", "fp32"]


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("kind", sorted(BAD_DATASETS))
def test_validate_reports_every_kind(kind, tmp_path, capsys):
    data = BAD_DATASETS[kind](tmp_path / "ds")
    code = main(
        ["validate", "--data", str(data), "--shots", "4", "--json", *TINY]
    )  # an open vocabulary: "cat"/"dog" read
    out, err = capsys.readouterr()
    if EXPECTED[kind] == "fatal":
        assert code == 2
        one_line_error(err)
        return
    report = json.loads(out)
    assert EXPECTED[kind] in report["counts"], report["counts"]
    severities = {i["severity"] for i in report["issues"] if i["kind"] == EXPECTED[kind]}
    has_errors = any(i["severity"] == "error" for i in report["issues"])
    assert code == (1 if has_errors else 0), (severities, report["counts"])
    strict = main(["validate", "--data", str(data), "--shots", "4", "--strict", *TINY])
    capsys.readouterr()
    assert strict == (1 if has_errors or not report["clean"] else 0)


def test_warnings_alone_let_validate_and_train_chain(tmp_path, capsys):
    # A healthy small folder: fewer images than the default 16 shots is a warning, not an error.
    # validate checks class names against train's backbone: "cat"/"dog" are words the toy CLIP cannot read.
    data = good_folder(tmp_path / "small", per_class=5)
    assert main(["validate", "--data", str(data), *TINY]) == 0
    assert "few-images" in capsys.readouterr().out
    assert main(["validate", "--data", str(data), "--strict", *TINY]) == 1


def test_clean_dataset_validates_with_exit_zero(tmp_path, capsys):
    assert main(["validate", "--data", str(good_folder(tmp_path / "ok")), "--shots", "4", *TINY]) == 0
    assert "clean: no problems found" in capsys.readouterr().out


def test_validate_finds_all_problems_in_one_pass(tmp_path, capsys):
    root = good_folder(tmp_path / "ds")
    (root / "cat" / "0.png").write_bytes(b"")
    (root / "dog" / "1.png").write_text("not an image")
    (root / "lion").mkdir()
    assert main(["validate", "--data", str(root), "--shots", "4"]) == 1
    out = capsys.readouterr().out
    for kind in ("zero-byte: 1", "not-an-image: 1", "empty-class: 1"):
        assert kind in out


@pytest.mark.parametrize("kind", sorted(BAD_DATASETS))
def test_training_on_bad_data_stops_cleanly_or_copes(kind, tmp_path, capsys):
    data = BAD_DATASETS[kind](tmp_path / "ds")
    out = tmp_path / "artifact"
    argv = ["train", "--data", str(data), *TINY, "--shots", "2", "--views", "1", "--epochs", "2", "--out", str(out)]
    code = main(argv)
    err = capsys.readouterr().err
    if kind in TRAINABLE:
        assert code == 0, err
        assert (out / "model.safetensors").is_file()
    else:
        assert code == 2, err
        message = one_line_error(err)
        assert re.search(r"/|class|label|split", message), message  # names the file, class or entry at fault
        assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("kind", ["zero-byte", "truncated-jpeg", "text-as-jpeg", "decompression-bomb"])
def test_skip_bad_leaves_bad_images_out_and_lists_them(kind, tmp_path, capsys):
    data = BAD_DATASETS[kind](tmp_path / "ds")
    out = tmp_path / "artifact"
    code = main(
        [
            "train",
            "--data",
            str(data),
            *TINY,
            "--shots",
            "16",
            "--views",
            "1",
            "--epochs",
            "2",
            "--skip-bad",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    skipped = json.loads((out / "result.json").read_text())["extraction"]["skipped"]
    assert len(skipped) == 1 and "cat/0." in skipped[0]["path"]


# ---------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(["train", "val", "test", "x"]) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)
entries = st.lists(
    st.tuples(
        st.sampled_from(["a.png", "../b.png", "/abs.png", "c/d.png", ""]),
        st.integers(-1, 4),
        st.sampled_from(["cat", "dog", "", "c_a_t"]),
    ).map(list),
    max_size=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=json_values | st.fixed_dictionaries({"train": entries, "val": entries, "test": entries}))
def test_split_reader_never_crashes(data, tmp_path):
    try:
        ds = parse_coop_split(data, tmp_path, "fuzz.json", "fuzz")
    except DataError:
        return
    for samples in ds.splits.values():
        for s in samples:
            assert s.path.resolve().is_relative_to(tmp_path.resolve()) and 0 <= s.label < ds.num_classes


@pytest.fixture(scope="module")
def saved_artifact(tmp_path_factory):
    from clip_adapter.artifacts import Classifier
    from clip_adapter.methods import get_method
    from conftest import synthetic_data

    data, *_ = synthetic_data()
    head = get_method("clip-adapter")(get_method("clip-adapter").make_config(epochs=1, alpha_grid=())).fit(data).head
    path = tmp_path_factory.mktemp("art") / "a"
    Classifier("clip-adapter", head, data.classnames, data.templates, {"id": "x", "name": "x"}).save_pretrained(path)
    return path


def _load_copy(src: Path, dst: Path, config: bytes | None = None, weights: bytes | None = None):
    from clip_adapter.artifacts import Classifier

    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_bytes(config if config is not None else (src / "config.json").read_bytes())
    (dst / "model.safetensors").write_bytes(
        weights if weights is not None else (src / "model.safetensors").read_bytes()
    )
    try:
        return Classifier.from_pretrained(dst)
    except ArtifactError as exc:
        assert "\n" not in str(exc)
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_artifact_loader_never_crashes_on_mutated_config(saved_artifact, tmp_path, data):
    config = json.loads((saved_artifact / "config.json").read_text())
    key = data.draw(st.sampled_from(sorted(config)))
    config[key] = data.draw(json_values)
    if data.draw(st.booleans()) and isinstance(config.get("method_config"), dict):
        sub = data.draw(st.sampled_from(sorted(config["method_config"]) or ["x"]))
        config["method_config"][sub] = data.draw(json_values)
    _load_copy(saved_artifact, tmp_path / "fuzz", config=json.dumps(config).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_artifact_loader_never_crashes_on_mutated_weights(saved_artifact, tmp_path, data):
    blob = bytearray((saved_artifact / "model.safetensors").read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    clf = _load_copy(saved_artifact, tmp_path / "fuzz", weights=bytes(blob[:cut] if data.draw(st.booleans()) else blob))
    if clf is not None:
        assert all(torch.isfinite(p).all() for p in clf.head.state_dict().values() if p.is_floating_point())


# ---------------------------------------------------------------- kill and resume

RUNNER = """
import sys, open_clip
open_clip.add_model_config(sys.argv[1])
import clip_adapter.features.extract as extract
extract.IMAGES_PER_CHUNK = 4
from clip_adapter.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _extract_cmd(tmp_path: Path, data: Path, cache: Path) -> list[str]:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    config = Path(__file__).parent / "assets" / "test-tiny-vit.json"
    return [
        sys.executable,
        str(script),
        str(config),
        "extract",
        "--data",
        str(data),
        *TINY,
        "--shots",
        "16",
        "--seeds",
        "1",
        "--views",
        "4",
        "--batch-size",
        "2",
        "--cache-dir",
        str(cache),
    ]


def _features(data: Path, cache: Path) -> torch.Tensor:
    from clip_adapter.backbones import create_backbone
    from clip_adapter.data import load_dataset
    from clip_adapter.features import AugmentConfig, extract_images, image_store

    backbone = create_backbone("test-tiny-vit", "none", precision="fp32")
    paths = [s.path for s in load_dataset(data).split("train")]
    store = image_store(backbone, cache)
    before = store.writes
    feats, _, _ = extract_images(backbone, paths, store, AugmentConfig(views=4), 0, 2)
    assert store.writes == before, "everything must already be cached"
    return feats


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_gives_identical_features(tmp_path):
    data = good_folder(tmp_path / "ds", per_class=24, size=48)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CLIP_ADAPTER_NO_PROGRESS": "1"}
    assert (
        subprocess.run(
            _extract_cmd(tmp_path, data, tmp_path / "ref"), env=env, capture_output=True, timeout=300
        ).returncode
        == 0
    )
    cache = tmp_path / "killed"
    kills = 0
    for delay in (2.2, 2.9, 3.6):  # after start-up (~2 s): mid-encoding, mid-write, whatever comes
        proc = subprocess.Popen(
            _extract_cmd(tmp_path, data, cache), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 1
    assert (
        subprocess.run(_extract_cmd(tmp_path, data, cache), env=env, capture_output=True, timeout=300).returncode == 0
    )
    assert torch.equal(_features(data, cache), _features(data, tmp_path / "ref"))


# ---------------------------------------------------------------- code hygiene


def test_no_pickle_and_no_unsafe_torch_load_in_the_library():
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if re.search(r"^\s*(import pickle|from pickle|import cloudpickle|import dill)", text, re.M):
            offenders.append(f"{path}: imports pickle")
        for call in re.findall(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):  # one level of nested calls
            if "weights_only=True" not in call:
                offenders.append(f"{path}: {call}")
        if "yaml.load(" in text:
            offenders.append(f"{path}: yaml.load")
    assert not offenders, offenders


def test_every_user_error_is_a_clip_adapter_error():
    assert issubclass(DataError, ClipAdapterError) and issubclass(ArtifactError, ClipAdapterError)
