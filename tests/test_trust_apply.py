"""An artifact's trust record reaches every answer: predict (CLI and API), eval and serve give the same calibrated
probabilities, conformal sets and OOD verdicts, and a reader that predates the record refuses the artifact."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from clip_adapter import artifacts
from clip_adapter.artifacts import Classifier
from clip_adapter.cli import main
from clip_adapter.core.errors import ArtifactError
from clip_adapter.trust.calibration import Calibration, TemperatureScaling
from clip_adapter.trust.conformal import calibrate
from clip_adapter.trust.ood import OODDetector
from clip_adapter.trust.record import TrustRecord
from test_serve import build_world


@pytest.fixture(scope="module")
def trusted(tmp_path_factory):
    model, images, artifact = build_world(tmp_path_factory)
    clf = Classifier.from_pretrained(artifact)
    num_classes = len(clf.classnames)
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, num_classes, (200,), generator=gen)
    logits = torch.randn(200, num_classes, generator=gen) * 3 + 6 * torch.nn.functional.one_hot(labels, num_classes)
    calibration = Calibration((TemperatureScaling(3.0),))
    probs = torch.softmax(calibration.apply(logits.double()), dim=1)
    conformal = calibrate(probs, labels, 0.1, score="aps")
    # An OOD threshold every real image passes except none: the 5th percentile of very confident logits.
    ood = OODDetector.fit(logits * 10, score="msp")
    record = TrustRecord(calibration, conformal, ood, {"calibration": {"note": "synthetic, for the plumbing"}})
    out = tmp_path_factory.mktemp("trusted") / "art"
    Classifier(
        clf.method, clf.head, clf.classnames, clf.templates, clf.backbone, clf.selection, record
    ).save_pretrained(out)
    return artifact, out, images, record


def test_the_record_round_trips_and_is_format_version_2(trusted):
    _, out, _, record = trusted
    config = json.loads((out / "config.json").read_text())
    assert config["format_version"] == 2 and set(config["trust"]) == {"calibration", "conformal", "ood", "provenance"}
    assert Classifier.from_pretrained(out).trust == record


def test_a_reader_that_predates_the_record_refuses_it(trusted, monkeypatch):
    _, out, _, _ = trusted
    monkeypatch.setattr(artifacts, "TRUST_FORMAT_VERSION", 1)  # what an older reader knows
    with pytest.raises(ArtifactError, match="format version 2 is not supported"):
        Classifier.from_pretrained(out)


def test_a_tampered_record_is_one_artifact_error(trusted, tmp_path):
    import shutil

    _, out, _, _ = trusted
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    config = json.loads((copy / "config.json").read_text())
    config["trust"]["conformal"]["alpha"] = 7
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="trust") as refusal:
        Classifier.from_pretrained(copy)
    assert "\n" not in str(refusal.value)


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_calibrates_and_gives_sets_and_ood_verdicts(trusted, capsys):
    plain, out, images, _ = trusted
    assert main(["predict", str(plain), *map(str, images[:3]), "--top-k", "2"]) == 0
    before = _csv(capsys.readouterr().out)
    assert main(["predict", str(out), *map(str, images[:3]), "--top-k", "2"]) == 0
    after = _csv(capsys.readouterr().out)
    assert [r["class"] for r in after] == [r["class"] for r in before]  # temperature keeps the ranking
    assert [r["probability"] for r in after] != [r["probability"] for r in before]  # but not the confidence
    assert all(r["set"] and r["unknown"] in ("True", "False") for r in after)
    assert all(r["class"] in r["set"].split(";") or r["rank"] == "2" for r in after)


def test_reject_needs_a_threshold_and_labels_unknown_images(trusted, capsys):
    plain, out, images, _ = trusted
    capsys.readouterr()
    assert main(["predict", str(plain), str(images[0]), "--reject"]) == 2
    assert "clip-adapter ood" in capsys.readouterr().err
    assert main(["predict", str(out), *map(str, images), "--reject", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all((r["label"] == "unknown") == r["unknown"] for r in rows)


def test_cli_predict_the_api_and_serve_give_the_same_records(trusted, tmp_path, capsys):
    """One function builds the records of all three: the same keys, and from the same features the same values."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import clip_adapter
    from clip_adapter.apps.serve import create_app

    _, out, images, _ = trusted
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    inputs = [*map(str, images[:3]), str(broken)]
    capsys.readouterr()
    assert main(["predict", str(out), *inputs, "--top-k", "2", "--format", "json", "--skip-bad"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    model = clip_adapter.load(out)  # the same feature cache as the command (the test's own)
    from_api = model.predict(inputs, top_k=2, skip_bad=True)
    assert from_cli == from_api
    assert [set(r) for r in from_api[:3]] == [{"path", "label", "score", "top_k", "set", "ood_score", "unknown"}] * 3
    assert from_api[3]["path"] == str(broken) and from_api[3]["label"] is None and from_api[3]["top_k"] == []
    with TestClient(create_app(model)) as client:
        files = [("images", (p.name, p.read_bytes(), "image/png")) for p in images[:3]]
        served = client.post("/predict?top_k=2", files=files).json()["predictions"]
    assert [r["path"] for r in served] == [f"images[{i}] ({p.name})" for i, p in enumerate(images[:3])]
    for got, want in zip(served, from_api):  # serve encodes its uploads itself: equal up to float noise
        assert set(got) == set(want)
        assert (got["label"], got["set"], got["unknown"]) == (want["label"], want["set"], want["unknown"])
        assert [c for c, _ in got["top_k"]] == [c for c, _ in want["top_k"]]
        assert got["score"] == pytest.approx(want["score"], abs=1e-4)
        assert got["ood_score"] == pytest.approx(want["ood_score"], abs=1e-4)


def test_eval_reports_calibration_coverage_and_ood(trusted, tmp_path, capsys):
    from PIL import Image

    _, out, images, _ = trusted
    data = images[0].parents[2]  # the toy dataset folder (split.json + images/)
    ood = tmp_path / "ood"
    ood.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (i * 80, 0, 0)).save(ood / f"{i}.png")
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(data), "--ood-data", str(ood)]) == 0
    printed = capsys.readouterr().out
    assert "calibration (15-bin top-label ECE)" in printed and "before the artifact's calibration" in printed
    assert "conformal sets (aps" in printed and "out of distribution (msp" in printed
    assert main(["eval", str(out), "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["calibration"]["ece"] <= 1 and 0 <= report["conformal"]["coverage"] <= 1


def test_a_randomised_set_does_not_depend_on_the_batch_an_image_comes_in():
    # By batch position, every single-image call (API, serve) shared one U and coverage fell to 0.83 at α = 0.1.
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(400, 6, generator=gen, dtype=torch.float64) * 2, dim=1)
    labels = torch.multinomial(probs, 1, generator=gen).flatten()
    predictor = calibrate(probs[:200], labels[:200], 0.1, score="aps", randomized=True, seed=3)
    batch = predictor.predict_sets(probs[200:])
    alone = torch.cat([predictor.predict_sets(probs[i : i + 1]) for i in range(200, 400)])
    assert torch.equal(batch, alone)
