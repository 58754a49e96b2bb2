"""Calibration and trust where people read results: the bench's tables and CSVs, and the report pages.

Every run records ``test.calibration`` and ``zero_shot_test_calibration``; the bench turns them into
``table_calibration_<protocol>.md`` and CSV columns (empty for run files written before), and the
artifact page draws the reliability diagrams and, when ``config.json`` has a trust record, says what
was fitted and what it guarantees. Malformed calibration or trust fields never stop a table or a page.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import clip_adapter
from clip_adapter.apps.report import build_report, figures
from clip_adapter.artifacts import Classifier
from clip_adapter.bench.aggregate import (
    calibration_fields,
    load_results,
    summarise,
    summarise_calibration,
    write_reports,
)
from clip_adapter.core.errors import ClipAdapterError
from clip_adapter.toyworld import write_task_dataset
from clip_adapter.trust.calibration import Calibration, TemperatureScaling, ZSNorm
from clip_adapter.trust.conformal import calibrate
from clip_adapter.trust.ood import OODDetector
from clip_adapter.trust.record import TrustRecord

CALIBRATION = {
    "num_samples": 4,
    "num_classes": 2,
    "n_bins": 15,
    "accuracy": 0.75,
    "mean_confidence": 0.8,
    "ece": 0.12,
    "mce": 0.3,
    "aurc": 0.1,
    "nll": 0.5,
    "brier": 0.3,
    "reliability": {
        "bin_edges": [i / 15 for i in range(16)],
        "count": [0] * 14 + [4],
        "fraction": [0.0] * 14 + [1.0],
        "mean_confidence": [None] * 14 + [0.8],
        "accuracy": [None] * 14 + [0.75],
    },
}
# Wrong values for the fuzz: wrong types, out of range, huge, text that matplotlib would read as math.
WRONG: list[Any] = [7, -1, True, "x $\\frac{$ y", ["?", None, 3], {"k": [1]}, None, 10**300, float("inf")]


def _run(
    dataset: str = "d",
    method: str = "m",
    shots: int = 1,
    seed: int = 1,
    accuracy: float = 0.5,
    calibration: Any = CALIBRATION,
    zero_shot: Any = CALIBRATION,
) -> dict[str, Any]:
    """A bench run record as the runner writes it (``calibration=None`` drops the keys: an older run file)."""
    record = {
        "protocol": "val",
        "data": {"dataset": dataset},
        "bench": {"label": method},
        "run": {"shots": shots, "seed": seed},
        "test": {"accuracy": accuracy},
        "zero_shot_test_accuracy": 0.4,
        "timings": {"fit_seconds": 1.0},
        "selection": {"chosen": {}},
    }
    if calibration is not None:
        record["test"]["calibration"] = calibration
    if zero_shot is not None:
        record["zero_shot_test_calibration"] = zero_shot
    return record


def _write(folder: Path, records: list[dict[str, Any]]) -> list[Path]:
    paths = []
    for i, record in enumerate(records):
        path = (
            folder
            / "runs"
            / "val"
            / record["data"]["dataset"]
            / record["bench"]["label"]
            / f"shots{record['run']['shots']}_seed{i}.json"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        paths.append(path)
    return paths


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- the bench's tables ----------------------------------------------------------------------------------


def test_old_run_files_without_calibration_still_aggregate(tmp_path):
    new = [
        _run(seed=s, accuracy=a, calibration={**CALIBRATION, "ece": e}) for s, a, e in ((1, 0.6, 0.1), (2, 0.8, 0.3))
    ]
    old = [_run(seed=3, accuracy=0.7, calibration=None, zero_shot=None)]
    files = write_reports(tmp_path, "val", _write(tmp_path, new + old))
    rows = _csv(files["results_csv"])
    assert len(rows) == 3 and [r["ece"] for r in rows] == ["0.1", "0.3", ""] and rows[2]["zero_shot_nll"] == ""
    summary = {r["method"]: r for r in _csv(files["summary_csv"])}
    assert (
        summary["m"]["n"] == "3" and summary["m"]["calibration_n"] == "2"
    )  # accuracy counts every run, calibration two
    assert float(summary["m"]["ece_mean"]) == pytest.approx(0.2) and float(summary["m"]["ece_std"]) == pytest.approx(
        0.141421, abs=1e-6
    )
    assert summary["zero-shot"]["calibration_n"] == "2" and float(summary["zero-shot"]["ece_mean"]) == pytest.approx(
        0.12
    )
    table = files["calibration_table"].read_text()
    assert (
        "1 of 3 runs recorded no calibration" in table
        and "| m | 20.00 ± 14.14 |" in table
        and "| zero-shot | 12.00 ± 0.00 |" in table
    )
    assert "| m | 0.500 ± 0.000 |" in table  # NLL in nats
    assert "70.00 ± 10.00" in files["table"].read_text()  # the accuracy table still averages all three runs


def test_only_old_run_files_give_a_calibration_table_that_says_so(tmp_path):
    files = write_reports(tmp_path, "val", _write(tmp_path, [_run(calibration=None, zero_shot=None)]))
    assert "No run recorded calibration." in files["calibration_table"].read_text()
    assert _csv(files["summary_csv"])[0]["ece_mean"] == "" and _csv(files["results_csv"])[0]["ece_bins"] == ""
    assert clip_adapter.bench_results(tmp_path)[0]["ece"] is None  # the API rows carry the new fields too


@pytest.mark.parametrize(
    "calibration",
    ["x", [1], {"ece": "high"}, {"ece": 2.0}, {"nll": -1.0}, {"brier": 3.0}, {"n_bins": True}, {"aurc": float("nan")}],
)
def test_a_malformed_calibration_record_is_missing_not_a_malformed_run(calibration, tmp_path):
    paths = _write(tmp_path, [_run(calibration=calibration), _run(seed=2)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = load_results(paths)
    assert len(rows) == 2  # the run's accuracy still counts
    messages = [str(c.message) for c in caught]
    assert (
        len(messages) == 1
        and "calibration cells are left empty" in messages[0]
        and "left out of the tables" not in messages[0]
    )
    good = {k: v for k, v in CALIBRATION.items() if k in ("ece", "nll", "brier", "aurc")}
    assert all(rows[0][k] in (None, good[k]) for k in good) and rows[0]["ece"] in (None, 0.12)
    assert rows[1]["ece"] == 0.12 and rows[0]["zero_shot_ece"] == 0.12


def test_calibration_fields_are_read_only_when_well_formed():
    fields, malformed = calibration_fields({"test": {"calibration": CALIBRATION}, "zero_shot_test_calibration": None})
    assert (fields["ece"], fields["brier"], fields["zero_shot_ece"], fields["ece_bins"], malformed) == (
        0.12,
        0.3,
        None,
        15,
        [],
    )
    assert calibration_fields([1]) == calibration_fields(
        {}
    )  # not even an object: everything missing, nothing malformed
    fields, malformed = calibration_fields({"test": {"calibration": {**CALIBRATION, "ece": None}}})
    assert fields["ece"] is None and malformed == []  # null (an empty test split) is unknown, not malformed


def test_zero_shot_calibration_counts_once_per_dataset_shots_and_seed():
    rows = [
        {"dataset": "d", "method": m, "shots": 1, "seed": 1, "ece": 0.2, "zero_shot_ece": 0.1}
        for m in ("a", "b", "zero-shot")
    ]
    calibration = summarise_calibration(rows)
    assert calibration[("d", "zero-shot", 1)]["ece"] == (
        0.1,
        0.0,
        1,
    )  # three runs record it; one (dataset, shots, seed)
    assert set(calibration) == set(summarise([{**r, "accuracy": 0.5, "zero_shot_accuracy": 0.4} for r in rows]))


# --- the artifact page ----------------------------------------------------------------------------------


def _trust_record(num_classes: int) -> TrustRecord:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(60, num_classes, generator=g) * 3
    probs = torch.softmax(logits, 1)
    return TrustRecord(
        Calibration((ZSNorm(), TemperatureScaling(1.7))),
        calibrate(probs, probs.argmax(1), 0.1, score="aps"),
        OODDetector.fit(logits, "msp"),
        provenance={
            "calibration": {"images": 60, "overlaps_training": False},
            "conformal": {"images": 60},
            "ood": {"images": 60, "overlaps_training": True},
        },
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A toy task, a CLIP-Adapter artifact trained on it, and the same artifact with a trust record."""
    root = tmp_path_factory.mktemp("trust-display")
    data = write_task_dataset("color", "night", root / "data", 3, 2, 4, seed=0)
    cache = root / "cache"
    adapted = clip_adapter.fit(data, shots=2, cache_dir=cache, epochs=20).save_pretrained(root / "adapted")
    clf = Classifier.from_pretrained(adapted)
    result = json.loads((adapted / "result.json").read_text())
    trusted = dataclasses.replace(clf, trust=_trust_record(len(clf.classnames))).save_pretrained(
        root / "trusted", {"result.json": result}
    )
    return {"root": root, "data": data, "cache": cache, "adapted": adapted, "trusted": trusted}


def _section(html: str, anchor: str) -> str:
    return html.split(f'<section id="{anchor}">', 1)[1].split("</section>", 1)[0]


def _images(html: str) -> list[str]:
    return re.findall(r'<img src="data:image/png;base64,[^"]+"', html)


def _copy(world: dict, tmp_path: Path, name: str = "adapted") -> Path:
    return Path(shutil.copytree(world[name], tmp_path / name))


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_the_trust_section_says_what_was_fitted_on_what_and_what_it_guarantees(world):
    html = build_report(world["trusted"])
    trust = _section(html, "trust")
    assert "ZS-Norm" in trust and "T = 1.7" in trust and "over-confident" in trust
    assert "APS" in trust and "at least 90.0% of test images" in trust and "60 calibration images" in trust
    assert "MSP" in trust and "accepts at least 95.0% of the 60 in-distribution validation images" in trust
    assert trust.count("Fitted on") == 3 and "overlap the training shots (overlaps_training)" in trust
    assert "Pass --data" in trust and "loader refuses" not in trust
    assert '<section id="calibration">' in html and html.index('id="calibration"') < html.index('id="trust"')


def test_with_data_the_trust_record_is_applied_to_the_test_images(world):
    html = build_report(world["trusted"], data=world["data"], cache_dir=world["cache"])
    trust = _section(html, "trust")
    assert "On the re-evaluated test images" in trust and "32 test images" in trust
    for row in (
        "ECE, raw → calibrated",
        "set coverage (target)",
        "mean set size",
        "accepted as in-distribution (target)",
    ):
        assert row in trust
    assert "(90.00%)" in trust and "(95.00%)" in trust


def test_a_trust_record_the_loader_refuses_is_flagged_and_the_page_still_made(world, tmp_path):
    run = _copy(world, tmp_path, "trusted")
    _edit(run / "config.json", lambda c: c["trust"]["conformal"].update(n_classes=3))
    html = build_report(run)
    assert "The artifact loader refuses this trust record" in _section(html, "trust")
    _edit(run / "config.json", lambda c: c.update(format_version=1))
    assert "an artifact with a trust section is version 2" in _section(build_report(run), "trust")


def test_result_json_without_calibration_says_so_and_data_computes_it(world, tmp_path):
    run = _copy(world, tmp_path)

    def strip(result: dict) -> None:
        result["test"].pop("calibration")
        result.pop("zero_shot_test_calibration")

    _edit(run / "result.json", strip)
    calibration = _section(build_report(run), "calibration")
    assert "records no calibration" in calibration and not _images(calibration)
    calibration = _section(build_report(run, data=world["data"], cache_dir=world["cache"]), "calibration")
    assert "computed here from the re-evaluation of 32 test images" in calibration and len(_images(calibration)) == 1


def test_malformed_calibration_fields_are_shown_and_named(world, tmp_path):
    run = _copy(world, tmp_path)
    _edit(
        run / "result.json",
        lambda r: (
            r["test"]["calibration"].update(ece="low", nll=-2),
            r["zero_shot_test_calibration"]["reliability"].update(count=[1, 2]),
        ),
    )
    html = build_report(run)
    calibration = _section(html, "calibration")
    assert calibration.count(">malformed<") == 2 and "reliability diagram of zero-shot CLIP is malformed" in calibration
    assert len(_images(calibration)) == 1  # the adapted model's diagram is still drawn
    for field in (
        "result.json test.calibration.ece",
        "result.json test.calibration.nll",
        "result.json zero_shot_test_calibration.reliability",
    ):
        assert field in _section(html, "configuration")
    _edit(run / "result.json", lambda r: r.update(zero_shot_test_calibration=[1]))
    assert "not recorded" not in _section(build_report(run), "calibration")


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every field under ``node``: object keys, and the first element of each list."""
    items = list(node.items()) if isinstance(node, dict) else [(0, node[0])] if isinstance(node, list) and node else []
    out = []
    for key, value in items:
        out += [(*prefix, key), *_paths(value, (*prefix, key))]
    return out


def _set(doc: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def test_fuzz_trust_and_calibration_fields_never_raise_an_internal_error(world, tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "reliability_png", lambda panels: b"\x89PNG")
    monkeypatch.setattr(figures, "curves_png", lambda *_: b"\x89PNG")
    monkeypatch.setattr(figures, "confusion_png", lambda *_: b"\x89PNG")
    monkeypatch.setattr(figures, "histogram_png", lambda *_: b"\x89PNG")
    run = _copy(world, tmp_path, "trusted")
    config = json.loads((run / "config.json").read_text())
    targets = [("config.json", ("trust", *p)) for p in [()] + _paths(config["trust"])]
    targets += [
        ("result.json", p)
        for p in [
            ("test", "calibration"),
            ("zero_shot_test_calibration", "reliability"),
            ("test", "calibration", "reliability", "bin_edges"),
        ]
    ]
    assert len(targets) > 40
    failures = []
    for name, path in targets:
        original = (run / name).read_text()
        for value in WRONG:
            doc = json.loads(original)
            if path:
                _set(doc, path, value)
            (run / name).write_text(json.dumps(doc))
            try:
                html = build_report(run)
            except ClipAdapterError as exc:
                if "\n" in str(exc):
                    failures.append(f"{name} {path} = {value!r}: a message of several lines")
                continue
            except Exception as exc:  # noqa: BLE001 - exactly what the test looks for
                failures.append(f"{name} {path} = {value!r}: {exc.__class__.__name__}: {exc}")
                continue
            if not html.startswith("<!DOCTYPE html>") or "<script" in html:
                failures.append(f"{name} {path} = {value!r}: no page")
        (run / name).write_text(original)
    assert not failures, f"{len(failures)} failures, e.g.\n" + "\n".join(failures[:15])


def test_the_reliability_figure_draws_text_as_text():
    from matplotlib.text import Text

    texts: list[Text] = []
    real = figures.png_bytes

    def spy(fig):
        png = real(fig)
        texts.extend(fig.findobj(Text))
        return png

    panel = {
        "title": "$\\frac{$ head",
        "bin_edges": [0, 0.5, 1],
        "count": [3, 0],
        "accuracy": [0.5, None],
        "mean_confidence": [0.4, None],
        "ece": 0.1,
        "overall_accuracy": 0.5,
        "overall_confidence": 0.4,
    }
    try:
        figures.png_bytes = spy
        png = figures.reliability_png([panel, {**panel, "title": "zero-shot"}])
    finally:
        figures.png_bytes = real
    assert png.startswith(b"\x89PNG") and any("$" in t.get_text() for t in texts)
    assert all(t.get_parse_math() is False for t in texts if "$" in t.get_text())


# --- the bench page -------------------------------------------------------------------------------------


def _bench(world: dict, tmp_path: Path, calibration: bool = True) -> Path:
    bench = tmp_path / "bench"
    result = json.loads((world["adapted"] / "result.json").read_text())
    result["bench"] = {"label": "ca"}
    if not calibration:
        result["test"].pop("calibration")
        result.pop("zero_shot_test_calibration")
    _write(bench, [result, {**result, "run": {**result["run"], "seed": 2}}])
    return bench


def test_bench_page_shows_the_calibration_table_beside_the_accuracy_one(world, tmp_path):
    bench = _bench(world, tmp_path)
    write_reports(bench, "val", sorted((bench / "runs").rglob("*.json")))
    html = build_report(bench)
    section = _section(html, "protocol-val")
    assert "Few-shot accuracy" in section and "Calibration — protocol" in section and "ECE (%, 15 bins)" in section
    ece = 100 * json.loads(next((bench / "runs").rglob("*.json")).read_text())["test"]["calibration"]["ece"]
    assert (
        f"| ca | {ece:.2f} ± 0.00 |" in (bench / "table_calibration_val.md").read_text()
        and f"{ece:.2f} ± 0.00" in section
    )
    assert "protocol-calibration_val" not in html and "calibration table below is rebuilt" not in section
    (bench / "table_calibration_val.md").unlink()
    section = _section(build_report(bench), "protocol-val")
    assert (
        "table_calibration_val.md is missing; the calibration table below is rebuilt" in section
        and f"{ece:.2f} ± 0.00" in section
    )


def test_bench_page_of_old_runs_without_calibration_says_so(world, tmp_path):
    bench = _bench(world, tmp_path, calibration=False)
    section = _section(build_report(bench), "protocol-val")
    assert "no run records calibration" in section and "Few-shot accuracy" in section


def test_bench_page_shows_the_full_val_protocol(world, tmp_path):
    bench = _bench(world, tmp_path)
    runs = bench / "runs"
    (runs / "val").rename(runs / "full-val")
    for path in (runs / "full-val").rglob("*.json"):
        _edit(path, lambda r: r.update(protocol="full-val"))
    write_reports(bench, "full-val", sorted(runs.rglob("*.json")))
    html = build_report(bench)
    assert '<section id="protocol-full-val">' in html and "Calibration — protocol <code>full-val</code>" in html


def test_the_examples_in_the_docstrings_hold():
    import doctest

    from clip_adapter.apps.report import fields
    from clip_adapter.bench import aggregate

    for module in (aggregate, fields, figures):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
