"""Replaying a recorded run (``train --config``, ``finetune --config``), and output kinds registered by their owners.

A replay reads JSON only and gives the same model: the same weights file byte for byte, hence the same
logits after save → load. An option typed on the command line overrides the record, even when it equals
the option's default. A record that is missing, corrupt or of another kind is one ``error:`` line naming
the file, exit status 2, and nothing written.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from clip_adapter.cli import main

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--precision", "fp32"]
# A few seconds per fine-tuning run (as tests/test_finetune.py's TINY_RUN).
TINY_FINETUNE = {
    "steps": 4,
    "train_items": 16,
    "plain_items": 16,
    "plain_batch": 8,
    "batch_size": 8,
    "val_items": 8,
    "zero_shot_per_class": 2,
    "val_every": 2,
    "lr": 0.01,
}


def train(*argv: str) -> int:
    return main(["train", *argv])


def recorded_train(image_folder, out) -> None:
    """A tiny run with options away from their defaults, so a replay that dropped one would differ."""
    assert (
        train(
            "--data",
            str(image_folder),
            *TINY,
            "--shots",
            "4",
            "--views",
            "2",
            "--seed",
            "3",
            "--epochs",
            "6",
            "--set",
            "alpha_grid=0.2,0.6",
            "--crop-scale",
            "0.3,1",
            "--template",
            "a photo of {}.",
            "--out",
            str(out),
        )
        == 0
    )


def logits_of(artifact, features: torch.Tensor) -> torch.Tensor:
    from clip_adapter.artifacts import load_with_backbone

    clf, _ = load_with_backbone(artifact, device="cpu")
    return clf.logits(features)


def error_of(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# --- train --config ----------------------------------------------------------------------------------------


def test_train_replays_a_recorded_run_to_the_same_model(image_folder, tmp_path, capsys):
    recorded_train(image_folder, tmp_path / "a")
    capsys.readouterr()
    assert train("--data", str(image_folder), "--config", str(tmp_path / "a"), "--out", str(tmp_path / "b")) == 0
    assert "replaying the run recorded in" in capsys.readouterr().err
    for name in ("model.safetensors", "config.json", "split.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    a, b = (json.loads((tmp_path / run / "result.json").read_text()) for run in ("a", "b"))
    for key in ("run", "features", "method_config", "requested_method_config", "selection", "backbone"):
        assert a[key] == b[key], key
    assert a["run"]["seed"] == 3 and a["features"]["crop_scale"] == [0.3, 1.0] and a["templates"] == ["a photo of {}."]
    features = torch.randn(7, a["backbone"]["embed_dim"], generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits_of(tmp_path / "a", features), logits_of(tmp_path / "b", features))
    # The config.json itself names the run as well as its folder does.
    assert (
        train(
            "--data", str(image_folder), "--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "c")
        )
        == 0
    )
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "c" / "model.safetensors").read_bytes()


def test_options_given_override_the_record_even_at_their_default(image_folder, tmp_path):
    recorded_train(image_folder, tmp_path / "a")
    # --shots 16 is the option's default: only knowing it was typed tells it from "not given".
    assert (
        train(
            "--data",
            str(image_folder),
            "--config",
            str(tmp_path / "a"),
            "--shots",
            "16",
            "--epochs",
            "3",
            "--set",
            "reduction=2",
            "--no-flip",
            "--out",
            str(tmp_path / "b"),
        )
        == 0
    )
    a, b = (json.loads((tmp_path / run / "result.json").read_text()) for run in ("a", "b"))
    assert b["run"] == {**a["run"], "shots": 16}
    assert b["features"] == {**a["features"], "flip": False}
    assert b["requested_method_config"] == {**a["requested_method_config"], "epochs": 3, "reduction": 2}
    assert b["requested_method_config"]["alpha_grid"] == [0.2, 0.6]  # recorded, not the default grid
    assert b["backbone"] == a["backbone"]


def test_another_method_starts_from_its_own_options(image_folder, tmp_path):
    recorded_train(image_folder, tmp_path / "a")
    assert (
        train(
            "--data",
            str(image_folder),
            "--config",
            str(tmp_path / "a"),
            "--method",
            "linear-probe",
            "--out",
            str(tmp_path / "b"),
        )
        == 0
    )
    result = json.loads((tmp_path / "b" / "result.json").read_text())
    assert result["method"] == "linear-probe" and result["run"]["seed"] == 3 and result["features"]["views"] == 2


def _artifact_record(folder, run: dict | None = None, fmt: str = "clip-adapter-artifact"):
    """A hand-written artifact record: only the parts --config reads."""
    folder.mkdir(parents=True, exist_ok=True)
    backbone = {
        "name": "test-tiny-vit",
        "pretrained": "none",
        "precision": "fp32",
        "id": "open_clip/test-tiny-vit/random-init:0",
    }
    config = {"format": fmt, "method": "zero-shot", "method_config": {}, "backbone": backbone}
    (folder / "config.json").write_text(json.dumps(config))
    if run is not None:
        (folder / "result.json").write_text(json.dumps({"run": run, "features": {}}))
    return folder


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "nowhere", "--config file not found: {path}"),
        (lambda d: _write(d / "config.json", "{"), "is not valid JSON"),
        (lambda d: _write(d / "config.json", "[1, 2]"), "(a JSON list, not an object)"),
        (
            lambda d: _write(d / "config.json", json.dumps({"format": "clip-adapter-toy-clip", "recipe": "negation"})),
            "is not the config.json of an artifact written by `clip-adapter train`",
        ),
        (lambda d: (d / "empty").mkdir() or d / "empty", "is a folder with no config.json"),
        (lambda d: _artifact_record(d / "run") / "config.json", "result.json"),
        (lambda d: _artifact_record(d / "run", {"shots": -1}), "result.json: shots must be in"),
        (lambda d: _artifact_record(d / "run", {"method": "magic"}), "result.json: unknown method 'magic'"),
        (
            lambda d: _artifact_record(d / "run", {}, fmt="clip-adapter-multilabel"),
            "its format is 'clip-adapter-multilabel'",
        ),
    ],
    ids=[
        "missing",
        "corrupt",
        "not-an-object",
        "finetune-record",
        "empty-folder",
        "no-result",
        "bad-value",
        "unknown-method",
        "other-format",
    ],
)
def test_a_bad_train_record_is_one_line_naming_the_file(image_folder, tmp_path, capsys, make, message):
    path = make(tmp_path)
    argv = ["train", "--data", str(image_folder), "--config", str(path), "--out", str(tmp_path / "out")]
    line = error_of(capsys, argv)
    assert message.format(path=path) in line and str(tmp_path) in line, line
    assert not (tmp_path / "out").exists()


def _write(path, text: str):
    path.write_text(text)
    return path


# --- finetune --config ---------------------------------------------------------------------------------------


FINETUNED = {"format_note": "clip-adapter-finetuned-backbone", "recipe": "negation"}  # a record's first fields


def finetune(*argv: str) -> int:
    return main(["finetune", *argv])


def test_finetune_replays_a_recorded_run_to_the_same_weights(tmp_path, capsys):
    from clip_adapter.backbones import create_backbone

    options = [f"--set={k}={v}" for k, v in TINY_FINETUNE.items()]
    assert finetune("--recipe", "negation", *options, "--out", str(tmp_path / "a")) == 0
    assert finetune("--config", str(tmp_path / "a"), "--out", str(tmp_path / "b")) == 0
    assert "replaying the fine-tuning recorded in" in capsys.readouterr().err
    weights = [(tmp_path / run / "toy_clip.safetensors").read_bytes() for run in ("a", "b")]
    assert weights[0] == weights[1]
    a, b = (json.loads((tmp_path / run / "toy_clip.json").read_text()) for run in ("a", "b"))
    assert a["recipe_config"] == b["recipe_config"] and a["base_weights"] == b["base_weights"]
    assert b["data"] == "toy-world"
    texts = ["a red circle and no blue square", "a photo of a star."]
    loaded = [create_backbone("toy", pretrained=str(tmp_path / run), precision="fp32") for run in ("a", "b")]
    assert torch.equal(loaded[0].encode_texts(texts), loaded[1].encode_texts(texts))
    # --set on top of the record: that option changes, every other stays.
    assert (
        finetune("--config", str(tmp_path / "a" / "toy_clip.json"), "--set", "seed=1", "--out", str(tmp_path / "c"))
        == 0
    )
    c = json.loads((tmp_path / "c" / "toy_clip.json").read_text())
    assert c["recipe_config"] == {**a["recipe_config"], "seed": 1} and c["recipe"] == "negation"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "nowhere.json", "--config file not found"),
        (lambda d: _write(d / "toy_clip.json", "{not json"), "is not valid JSON"),
        (
            lambda d: _write(d / "config.json", json.dumps({"format": "clip-adapter-artifact"})),
            "is not the toy_clip.json or finetuned.json of a `clip-adapter finetune` output",
        ),
        (
            lambda d: _write(d / "toy_clip.json", json.dumps({"format": "clip-adapter-toy-clip"})),
            "its format is 'clip-adapter-toy-clip'",
        ),
        (lambda d: (d / "empty").mkdir() or d / "empty", "is a folder with no toy_clip.json or finetuned.json"),
        (lambda d: _write(d / "toy_clip.json", json.dumps(FINETUNED)), "records no complete fine-tuning"),
        (
            lambda d: _write(
                d / "toy_clip.json",
                json.dumps({**FINETUNED, "recipe_config": {"steps": 0}, "base_weights": "toy/toy-cnn/shipped"}),
            ),
            "toy_clip.json: steps",
        ),
    ],
    ids=["missing", "corrupt", "artifact-config", "toy-pretrain-record", "empty-folder", "incomplete", "bad-value"],
)
def test_a_bad_finetune_record_is_one_line_naming_the_file(tmp_path, capsys, make, message):
    path = make(tmp_path)
    line = error_of(capsys, ["finetune", "--config", str(path), "--out", str(tmp_path / "out")])
    assert message in line and str(tmp_path) in line, line
    assert not (tmp_path / "out").exists()


def test_finetune_without_recipe_or_config_says_which_is_needed(tmp_path, capsys):
    assert "--recipe is required" in error_of(capsys, ["finetune", "--out", str(tmp_path / "out")])


# --- output kinds, registered by their owners --------------------------------------------------------------


def test_every_output_kind_resolves_without_its_owner_imported_first():
    """In a fresh interpreter: outputs names each kind's owner and imports it on the kind's first lookup."""
    code = (
        "import sys\n"
        "from clip_adapter.core import outputs\n"
        "owners = ('clip_adapter.video', 'clip_adapter.gap', 'clip_adapter.compose', 'clip_adapter.multilabel',\n"
        "          'clip_adapter.distill', 'clip_adapter.finetune', 'clip_adapter.bench', 'clip_adapter.toyworld')\n"
        "assert not [m for m in sys.modules if m.startswith(owners)], 'an owner was imported with outputs'\n"
        "for kind in outputs.known_kinds():\n"
        "    print(kind, outputs.kind_pattern(kind).pattern)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    patterns = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    expected = {
        "artifact",
        "bench",
        "demo",
        "toy-dataset",
        "toy-ood",
        "trust-toy-bench",
        "toy-pretrain",
        "index",
        "gap",
        "multilabel-dataset",
        "multilabel-artifact",
        "toy-video-dataset",
        "video-eval",
        "video-cross-dataset",
        "video-base-to-novel",
        "compose-suites",
        "compose-bench",
        "toy-video-clip",
        "video-train",
        "finetune",
        "distill",
    }
    assert set(patterns) == expected
    assert "gap\\.json" in patterns["gap"] and "ood\\.json" in patterns["toy-ood"]


def test_owners_constants_are_their_registered_kinds():
    from clip_adapter import distill
    from clip_adapter.compose.kinds import BENCH_KIND, SUITES_KIND
    from clip_adapter.core import outputs
    from clip_adapter.finetune.checkpoint import OUTPUT_KIND
    from clip_adapter.gap.analyse import KIND as GAP_KIND
    from clip_adapter.multilabel.kinds import ARTIFACT_KIND, DATASET_KIND
    from clip_adapter.toyworld.tasks import OOD_KIND
    from clip_adapter.video import kinds as video

    owned = [
        distill.KIND,
        BENCH_KIND,
        SUITES_KIND,
        OUTPUT_KIND,
        GAP_KIND,
        ARTIFACT_KIND,
        DATASET_KIND,
        OOD_KIND,
        video.TOY_VIDEOS,
        video.VIDEO_EVAL,
        video.VIDEO_CROSS,
        video.VIDEO_BASE_TO_NOVEL,
        video.TOY_VIDEO_CLIP,
        video.VIDEO_TRAIN,
    ]
    assert set(owned) <= set(outputs.known_kinds())
    assert outputs.kind_pattern("distill").match("student.safetensors") and "photos" not in outputs.known_kinds()


def test_an_unknown_or_conflicting_kind_is_a_clear_error(tmp_path):
    from clip_adapter.core.outputs import claim_output_dir, kind_pattern, register_kind

    with pytest.raises(ValueError, match="unknown output kind 'photos'; known kinds: artifact, bench"):
        claim_output_dir(tmp_path / "out", "photos")
    with pytest.raises(ValueError, match="unknown output kind 'photos'"):
        kind_pattern("photos")
    assert register_kind("gap", r"^(gap\.json|similarities\.png|projection\.png)$") == "gap"  # the same again: nothing
    with pytest.raises(ValueError, match="registered twice"):
        register_kind("gap", r"^gap\.json$")
