"""The command line, end to end on real image files, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clip_adapter.cli import main

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--precision", "fp32"]


def train(image_folder, out, *extra):
    return main(
        [
            "train",
            "--data",
            str(image_folder),
            *TINY,
            "--shots",
            "4",
            "--views",
            "2",
            "--epochs",
            "20",
            "--lr",
            "0.01",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_train_eval_predict_end_to_end(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(image_folder, out) == 0
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        "config.json",
        "model.safetensors",
        "result.json",
        "split.json",
        "log.csv",
    }
    log = (out / "log.csv").read_text().splitlines()
    assert (
        log[0] == "candidate,epoch,loss,lr,selection_accuracy,selection_loss" and len(log) > 20
    )  # per epoch, per candidate
    result = json.loads((out / "result.json").read_text())
    assert result["protocol"] == "val" and result["selection"]["chosen_on"] == "few-shot validation split"
    assert result["zero_shot_test_accuracy"] is not None and result["versions"]["clip_adapter"]
    split = json.loads((out / "split.json").read_text())
    assert split["meta"]["shots"] == 4 and len(split["train"]) == 12
    capsys.readouterr()

    assert main(["eval", str(out), "--data", str(image_folder), "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["accuracy"] == pytest.approx(result["test"]["accuracy"])
    matrix = metrics["confusion_matrix"]
    assert len(matrix["counts"]) == 3 and matrix["labels"] == ["blue square", "green square", "red square"]
    assert set(metrics["per_class_accuracy"]) == {"red square", "green square", "blue square"}
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(image_folder), "--split", "all"]) == 0
    printed = capsys.readouterr().out  # the summary goes to stdout, so `> out.txt` keeps it
    assert "(30 images)" in printed and "per-class accuracy:" in printed and "confusion matrix" in printed

    capsys.readouterr()
    assert main(["predict", str(out), str(image_folder / "red_square"), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "path,rank,class,probability" and len(lines) == 1 + 2 * 10
    assert main(["predict", str(out), str(image_folder / "red_square" / "000.jpg"), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)  # one prediction record per image (clip_adapter.inference)
    assert len(records) == 1 and len(records[0]["top_k"]) == 3
    assert abs(sum(p for _, p in records[0]["top_k"]) - 1) < 1e-3


def test_same_command_same_seed_gives_identical_artifacts(image_folder, tmp_path):
    assert train(image_folder, tmp_path / "a") == 0
    assert train(image_folder, tmp_path / "b", "--cache-dir", str(tmp_path / "other-cache")) == 0
    for name in ("model.safetensors", "split.json", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_every_command_has_help(capsys):
    for command in (
        "train",
        "eval",
        "predict",
        "extract",
        "methods",
        "bench",
        "validate",
        "demo",
        "toy",
        "report",
        "serve",
        "index",
        "search",
        "cache",
        "gap",
        "compose-bench",
        "finetune",
        "distill",
        "multilabel",
        "video",
    ):
        assert main([command, "--help"]) == 0
        assert "usage: clip-adapter" in capsys.readouterr().out


def error_of(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_user_errors_are_one_line_and_leave_nothing_behind(image_folder, tmp_path, capsys):
    out = tmp_path / "never"
    assert "not found" in error_of(capsys, ["train", "--data", str(tmp_path / "nope"), *TINY, "--out", str(out)])
    assert "unknown method 'magic'" in error_of(
        capsys, ["train", "--data", str(image_folder), *TINY, "--method", "magic", "--out", str(out)]
    )
    assert "variant must be one of" in error_of(
        capsys, ["train", "--data", str(image_folder), *TINY, "--variant", "sideways", "--out", str(out)]
    )
    assert "no option 'colour'" in error_of(
        capsys, ["train", "--data", str(image_folder), *TINY, "--set", "colour=red", "--out", str(out)]
    )
    assert "unknown open_clip architecture" in error_of(
        capsys, ["train", "--data", str(image_folder), "--backbone", "ViT-Z-99", "--out", str(out)]
    )
    bad = sorted((image_folder / "red_square").iterdir())[0]
    bad.write_bytes(b"\xff\xd8\xff garbage")
    message = error_of(
        capsys, ["train", "--data", str(image_folder), *TINY, "--shots", "16", "--views", "1", "--out", str(out)]
    )
    assert bad.name in message and "--skip-bad" in message
    assert not out.exists() and not list(tmp_path.glob("never*"))


def test_skip_bad_lists_the_skipped_images_in_the_result(image_folder, tmp_path):
    bad = sorted((image_folder / "green_square").iterdir())[3]
    bad.write_bytes(b"")
    assert train(image_folder, tmp_path / "r", "--shots", "16", "--skip-bad") == 0
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert [s["path"] for s in result["extraction"]["skipped"]] == [str(bad)]


def test_artifact_on_the_wrong_backbone_is_refused(image_folder, tmp_path, capsys, tiny_backbone):
    from clip_adapter.core.files import save_tensors

    assert train(image_folder, tmp_path / "run") == 0
    weights = tmp_path / "other.safetensors"
    save_tensors(weights, {k: v.float() for k, v in tiny_backbone.model.state_dict().items()})
    capsys.readouterr()
    message = error_of(capsys, ["predict", str(tmp_path / "run"), str(image_folder), "--pretrained", str(weights)])
    assert "random-init:0" in message and "sha256:" in message


@pytest.mark.slow
def test_console_script_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "clip_adapter", "methods"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "clip-adapter" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "clip_adapter", "eval", str(tmp_path / "none"), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "method",
    [
        "zero-shot",
        "clip-adapter",
        "linear-probe",
        "tip-adapter",
        "tip-adapter-f",
        "coop",
        "cocoop",
        "clap",
        "gda",
        "auto",
    ],
)
def test_every_method_trains_saves_loads_and_predicts_through_the_cli(method, image_folder, tmp_path, capsys):
    from clip_adapter.methods import get_method, list_methods

    assert set(list_methods()) == {
        "zero-shot",
        "clip-adapter",
        "linear-probe",
        "tip-adapter",
        "tip-adapter-f",
        "coop",
        "cocoop",
        "clap",
        "gda",
        "auto",
    }
    fields = get_method(method).Config.help_texts()
    extra = ["--set", "epochs=2"] if "epochs" in fields else []
    extra += ["--set", "n_ctx=2"] if "n_ctx" in fields and method == "coop" else []
    out = tmp_path / method
    assert (
        main(
            [
                "train",
                "--data",
                str(image_folder),
                *TINY,
                "--method",
                method,
                "--shots",
                "2",
                "--views",
                "1",
                *extra,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    recorded = json.loads((out / "config.json").read_text())["method"]
    assert recorded == method or (method == "auto" and recorded in get_method("auto")().config.candidates)
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(image_folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == recorded
    assert (
        main(["predict", str(out), str(image_folder / "red_square" / "000.jpg"), "--top-k", "1", "--format", "json"])
        == 0
    )
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 1 and records[0]["label"] in {"red square", "green square", "blue square"}


def test_progress_is_logged_as_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    import clip_adapter.core.progress as progress_module

    monkeypatch.delenv("CLIP_ADAPTER_NO_PROGRESS")
    monkeypatch.setattr(progress_module, "LOG_AFTER_S", 0.0)
    bar = progress_module.progress(total=4, desc="encoding test", unit="img")
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        lines[0].startswith("encoding test: 1/4 (25%) img")
        and lines[-1].endswith("— done")
        and "\r" not in "".join(lines)
    )
    monkeypatch.setenv("CLIP_ADAPTER_NO_PROGRESS", "1")
    silent = progress_module.progress(total=2, desc="quiet")
    silent.update(2)
    silent.close()
    assert capsys.readouterr().err == ""


def test_cache_lists_and_prunes_and_predict_can_leave_it_alone(image_folder, tmp_path, capsys, monkeypatch):
    import os

    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIP_ADAPTER_CACHE", str(cache))
    assert train(image_folder, tmp_path / "run") == 0
    capsys.readouterr()
    assert main(["cache"]) == 0
    listing = capsys.readouterr().out
    assert "1 encoder(s)" in listing and "image/text" in listing
    before = len(list(cache.rglob("shard-*.json")))
    extra = tmp_path / "new"
    extra.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (12, 200, 99)).save(extra / "x.png")  # an image the cache has never seen
    assert main(["predict", str(tmp_path / "run"), str(extra), "--no-cache"]) == 0
    assert len(list(cache.rglob("shard-*.json"))) == before  # nothing kept for the predicted image
    assert main(["cache", "prune"]) == 2 and "exactly one of" in capsys.readouterr().err
    assert main(["cache", "prune", "--older-than", "1"]) == 0 and "removed 0 shard(s)" in capsys.readouterr().out
    key = os.listdir(cache)[0]
    assert main(["cache", "prune", "--encoder", key]) == 0
    assert not list(cache.rglob("shard-*")) and "removed" in capsys.readouterr().out
