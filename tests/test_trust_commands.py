"""`clip-adapter calibrate`, `conformal` and `ood` end to end on a tiny toy artifact (toy backbone, offline, fast)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from clip_adapter import artifacts
from clip_adapter.artifacts import Classifier, load_with_backbone
from clip_adapter.cli import main
from clip_adapter.core.errors import ArtifactError, ConfigError
from clip_adapter.data import load_dataset
from clip_adapter.toyworld import write_task_dataset
from clip_adapter.trust.fit import updated_record, zero_shot_logits
from clip_adapter.trust.labelled import labelled_logits
from clip_adapter.trust.record import TrustRecord, apply_trust


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 2-shot toy artifact trained on a hard-ish toy task (night-time shapes), its data, and a shared cache."""
    work = tmp_path_factory.mktemp("trust")
    photos = write_task_dataset("shape", "night", work / "photos", 2, 5, 1, seed=0)
    cache = work / "cache"
    art = work / "art"
    assert (
        main(
            [
                "train",
                "--data",
                str(photos),
                "--shots",
                "2",
                "--views",
                "1",
                "--epochs",
                "3",
                "--precision",
                "fp32",
                "--cache-dir",
                str(cache),
                "--out",
                str(art),
            ]
        )
        == 0
    )
    cal = work / "cal"
    assert main(["calibrate", str(art), "--data", str(photos), "--cache-dir", str(cache), "--out", str(cal)]) == 0
    return {
        "work": work,
        "photos": photos,
        "cache": cache,
        "art": art,
        "cal": cal,
        "art_digests": digests(art),
        "cal_digests": digests(cal),
    }


def run(world, *argv: str) -> int:
    return main([*argv, "--cache-dir", str(world["cache"])])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


def logits_of(directory: Path, world, split: str = "val"):
    clf, backbone = load_with_backbone(directory)
    images = labelled_logits(clf, backbone, load_dataset(world["photos"]), split, world["cache"], "photos")
    return clf, backbone, images


def test_calibrate_writes_a_new_artifact_and_leaves_the_old_one(world):
    art, cal = world["art"], world["cal"]
    assert digests(art) == world["art_digests"]  # byte for byte, marker and ledger included
    for name in ("model.safetensors", "result.json", "split.json", "log.csv"):
        assert (cal / name).read_bytes() == (art / name).read_bytes()
    config = json.loads((cal / "config.json").read_text())
    assert config["format_version"] == artifacts.TRUST_FORMAT_VERSION == 2
    assert json.loads((art / "config.json").read_text())["format_version"] == 1
    prov = config["trust"]["provenance"]["calibration"]
    assert prov["split"] == "val" and prov["num_images"] == sum(prov["per_class_counts"].values()) > 0
    assert prov["overlap_with_training_shots"] == 0 and len(prov["images_fingerprint"]) == 64
    assert Classifier.from_pretrained(cal).trust.calibration is not None


def test_calibrated_probabilities_change_but_not_the_predictions(world):
    _, _, raw = logits_of(world["art"], world)
    clf, _, new = logits_of(world["cal"], world)
    assert torch.equal(raw.logits, new.logits)  # identical raw logits
    (step,) = clf.trust.calibration.steps
    assert step.kind == "temperature" and step.temperature != 1.0
    scores = apply_trust(clf.trust, new.logits)
    assert not torch.allclose(scores.probs, torch.softmax(new.logits, 1))
    assert torch.equal(scores.probs.argmax(1), new.logits.argmax(1))


def test_zero_shot_logits_match_a_zero_shot_artifact(world, tmp_path):
    zs_art = tmp_path / "zs"
    assert (
        main(
            [
                "train",
                "--data",
                str(world["photos"]),
                "--method",
                "zero-shot",
                "--shots",
                "0",
                "--precision",
                "fp32",
                "--cache-dir",
                str(world["cache"]),
                "--out",
                str(zs_art),
            ]
        )
        == 0
    )
    clf, backbone, images = logits_of(zs_art, world)
    ours = zero_shot_logits(backbone, clf, images.features, world["cache"])
    assert ours.shape == images.logits.shape and torch.allclose(ours, images.logits, atol=1e-5)


def test_zs_norm_calibration_needs_and_uses_zero_shot_logits(world, tmp_path, capsys):
    out = tmp_path / "zsn"
    assert (
        run(
            world,
            "calibrate",
            str(world["art"]),
            "--data",
            str(world["photos"]),
            "--method",
            "zs-norm+temperature",
            "--out",
            str(out),
        )
        == 0
    )
    clf, backbone, images = logits_of(out, world)
    assert [s.kind for s in clf.trust.calibration.steps] == ["zs-norm", "temperature"]
    with pytest.raises(ConfigError, match="zero-shot"):
        apply_trust(clf.trust, images.logits)
    zs = zero_shot_logits(backbone, clf, images.features, world["cache"])
    assert torch.equal(apply_trust(clf.trust, images.logits, zs).probs.argmax(1), images.logits.argmax(1))
    # conformal on a ZS-Norm artifact: its sets come from the same calibrated probabilities predict computes
    conf = tmp_path / "zsn-conf"
    capsys.readouterr()
    assert (
        run(
            world,
            "conformal",
            str(out),
            "--data",
            str(world["photos"]),
            "--split",
            "test",
            "--alpha",
            "0.2",
            "--score",
            "aps",
            "--out",
            str(conf),
            "--json",
        )
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert (
        shown["part"] == "conformal"
        and shown["provenance"]["split"] == "test"
        and shown["provenance"]["num_images"] == 8
    )
    clf, _, test = logits_of(conf, world, "test")
    sets = apply_trust(clf.trust, test.logits, zero_shot_logits(backbone, clf, test.features, world["cache"])).sets
    assert sets[torch.arange(len(test)), test.labels].double().mean().item() >= 0.8


def test_conformal_covers_its_calibration_images_and_says_so(world, tmp_path, capsys):
    out, alpha = tmp_path / "conf", 0.2
    assert (
        run(
            world,
            "conformal",
            str(world["cal"]),
            "--data",
            str(world["photos"]),
            "--alpha",
            str(alpha),
            "--out",
            str(out),
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "calibrated on 40 images" in captured.out and ">= 0.8" in captured.out and "exchangeable" in captured.out
    assert "calibration was fitted on" in captured.err  # the same val images as the calibration: warned
    assert digests(world["cal"]) == world["cal_digests"]
    clf, _, images = logits_of(out, world)
    conformal = clf.trust.conformal
    assert conformal.n_calibration == len(images) == 40 and conformal.alpha == alpha
    assert clf.trust.calibration == Classifier.from_pretrained(world["cal"]).trust.calibration  # kept
    sets = apply_trust(clf.trust, images.logits).sets
    coverage = sets[torch.arange(len(images)), images.labels].double().mean().item()
    assert coverage >= 1 - alpha
    prov = clf.trust.provenance["conformal"]
    assert prov["num_images"] == 40 and "exchangeable" in prov["guarantee"] and prov["calibrated_probabilities"]


def test_randomised_lac_draws_u_from_the_logits_and_gives_each_image_one_set(world, tmp_path):
    out = tmp_path / "conf-lac"
    args = ("--data", str(world["photos"]), "--alpha", "0.2", "--score", "lac", "--randomized", "--out", str(out))
    assert run(world, "conformal", str(world["cal"]), *args) == 0
    clf, _, images = logits_of(out, world)
    conformal = clf.trust.conformal
    assert conformal.score == "lac" and conformal.randomized and conformal.noise == "logits"
    assert 0 <= conformal.q_tie <= 1
    batch = apply_trust(clf.trust, images.logits).sets
    alone = torch.cat([apply_trust(clf.trust, images.logits[i : i + 1]).sets for i in range(len(images))])
    assert batch.equal(alone)  # U is a hash of each image's own logits, not of its place in the batch


@pytest.mark.parametrize(
    "alpha, says",
    [("0", "alpha must be in (0, 1)"), ("1.5", "alpha must be in (0, 1)"), ("0.01", "cannot support alpha=0.01")],
)
def test_conformal_refuses_an_alpha_the_images_cannot_support(world, tmp_path, capsys, alpha, says):
    out = tmp_path / "conf"
    assert (
        run(world, "conformal", str(world["cal"]), "--data", str(world["photos"]), "--alpha", alpha, "--out", str(out))
        == 2
    )
    assert says in error_line(capsys) and not out.exists()


def test_ood_threshold_on_raw_logits(world, tmp_path, capsys):
    out = tmp_path / "ood"
    assert run(world, "ood", str(world["cal"]), "--data", str(world["photos"]), "--out", str(out)) == 0
    assert "threshold" in capsys.readouterr().out
    clf, _, images = logits_of(out, world)
    detector = clf.trust.ood
    assert (
        detector.score == "mcm" and detector.logit_scale == clf.head.meta["logit_scale"] and detector.n_validation == 40
    )
    accepted = (~apply_trust(clf.trust, images.logits).is_ood).double().mean().item()
    assert accepted >= 0.95
    assert clf.trust.calibration is not None  # other parts kept
    # fewer than 20 in-distribution images: refused before encoding
    assert (
        run(
            world,
            "ood",
            str(world["art"]),
            "--data",
            str(world["photos"]),
            "--split",
            "test",
            "--out",
            str(tmp_path / "o2"),
        )
        == 2
    )
    assert "at least 20" in error_line(capsys)


def test_a_class_the_artifact_does_not_know_is_refused(world, tmp_path, capsys):
    held = tmp_path / "held"
    classes = sorted(p.name for p in (world["photos"] / "images").iterdir() if p.is_dir())
    for name in (classes[0], "hexagon"):
        (held / name).mkdir(parents=True)
        for src in sorted((world["photos"] / "images" / classes[0]).glob("*.png"))[:4]:
            shutil.copy(src, held / name / src.name)
    out = tmp_path / "out"
    assert run(world, "calibrate", str(world["art"]), "--data", str(held), "--split", "all", "--out", str(out)) == 2
    line = error_line(capsys)
    assert "'hexagon'" in line and "not trained on" in line and not out.exists()


def test_fitting_a_part_twice_is_refused_without_replace(world, tmp_path, capsys):
    data = ["--data", str(world["photos"])]
    assert run(world, "calibrate", str(world["cal"]), *data, "--out", str(tmp_path / "twice")) == 2
    assert "already calibrated" in error_line(capsys) and not (tmp_path / "twice").exists()
    conf = tmp_path / "conf"
    assert run(world, "conformal", str(world["cal"]), *data, "--out", str(conf)) == 0
    assert run(world, "conformal", str(conf), *data, "--out", str(tmp_path / "c2")) == 2
    assert "--replace" in error_line(capsys)
    # a new calibration makes the conformal sets stale: refused, then dropped with a warning under --replace
    assert run(world, "calibrate", str(conf), *data, "--replace", "--out", str(tmp_path / "recal")) == 0
    assert "dropped the artifact's conformal predictor" in capsys.readouterr().err
    trust = Classifier.from_pretrained(tmp_path / "recal").trust
    assert trust.conformal is None and "conformal" not in trust.provenance and trust.calibration is not None
    with pytest.raises(ConfigError, match="drops its conformal"):
        updated_record(Classifier.from_pretrained(conf).trust, "calibration", trust.calibration, {}, replace=False)
    # conformal sets on the raw probabilities, then a calibration: refused as stale without --replace
    raw_conf = tmp_path / "raw-conf"
    assert run(world, "conformal", str(world["art"]), *data, "--out", str(raw_conf)) == 0
    assert run(world, "calibrate", str(raw_conf), *data, "--out", str(tmp_path / "stale")) == 2
    assert "stale" in error_line(capsys) and not (tmp_path / "stale").exists()


def test_overlap_with_training_shots_is_warned(world, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        run(world, "ood", str(world["art"]), "--data", str(world["photos"]), "--split", "all", "--out", str(out)) == 0
    )
    err = capsys.readouterr().err
    assert "training shots of this artifact" in err
    prov = Classifier.from_pretrained(out).trust.provenance["ood"]
    assert prov["overlap_with_training_shots"] == 16 and prov["split"] == "all"  # 8 classes x 2 shots


def test_an_old_reader_refuses_the_new_artifact(world, monkeypatch):
    assert json.loads((world["cal"] / "config.json").read_text())["format_version"] == 2
    monkeypatch.setattr(
        artifacts, "TRUST_FORMAT_VERSION", artifacts.FORMAT_VERSION
    )  # a reader that knows version 1 only
    with pytest.raises(ArtifactError, match="format version 2 is not supported"):
        Classifier.from_pretrained(world["cal"])
    monkeypatch.undo()
    assert (
        Classifier.from_pretrained(world["cal"]).trust is not None
        and Classifier.from_pretrained(world["art"]).trust is None
    )


def test_output_rules(world, tmp_path, capsys):
    art, data = world["art"], ["--data", str(world["photos"])]
    assert run(world, "calibrate", str(art), *data, "--out", str(art)) == 2
    assert "input" in error_line(capsys)
    assert run(world, "calibrate", str(art), *data, "--out", str(art / "inside")) == 2
    assert "inside the input" in error_line(capsys)
    assert run(world, "calibrate", str(art), *data, "--out", str(world["cal"])) == 2  # exists: --overwrite needed
    assert "--overwrite" in error_line(capsys)
    again = tmp_path / "again"
    assert run(world, "calibrate", str(art), *data, "--out", str(again)) == 0
    assert run(world, "calibrate", str(art), *data, "--out", str(again), "--overwrite") == 0
    (again / "notes.txt").write_text("mine")
    assert run(world, "calibrate", str(art), *data, "--out", str(again), "--overwrite") == 2
    assert "did not write" in error_line(capsys) and (again / "notes.txt").exists()
    assert digests(art) == world["art_digests"]


def test_no_validation_split_is_refused_with_what_to_pass(world, tmp_path, capsys):
    split = json.loads((world["photos"] / "split.json").read_text())
    split_file = tmp_path / "no-val.json"
    split_file.write_text(json.dumps({"train": split["train"], "test": split["test"]}))
    argv = ["calibrate", str(world["art"]), "--data", str(world["photos"] / "images"), "--split-file", str(split_file)]
    assert run(world, *argv, "--out", str(tmp_path / "out")) == 2
    assert "--split all" in error_line(capsys)


def test_the_commands_have_help(capsys):
    for command in ("calibrate", "conformal", "ood"):
        assert main([command, "--help"]) == 0
        assert "usage: clip-adapter" in capsys.readouterr().out


def test_record_helpers_refuse_in_one_line():
    record = TrustRecord()
    with pytest.raises(ValueError):
        updated_record(record, "nonsense", None, {})
