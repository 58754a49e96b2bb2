"""The benchmark runner: results, skip-on-rerun, aggregation, plots, protocols, dataset layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clip_adapter.bench import BenchPlan, MethodSpec, load_benchmark, markdown, run_bench, summarise, write_reports
from clip_adapter.bench.plots import plot_summary
from clip_adapter.cli import main
from clip_adapter.core.errors import ConfigError, DataError
from clip_adapter.data import load_dataset
from clip_adapter.pipeline import FeatureConfig
from conftest import write_image_folder

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--precision", "fp32"]


@pytest.fixture
def two_datasets(tmp_path):
    return write_image_folder(tmp_path / "a", per_class=8), write_image_folder(
        tmp_path / "b", per_class=8, seed=3, fmt="PNG"
    )


def bench_argv(a, b, out, *extra):
    return [
        "bench",
        "--dataset",
        f"first={a}",
        "--dataset",
        f"second={b}",
        "--methods",
        "zero-shot,tip-adapter",
        "--method",
        "ca=clip-adapter:epochs=5",
        "--shots",
        "1,2",
        "--seeds",
        "1,2",
        "--views",
        "2",
        *TINY,
        "--out",
        str(out),
        *extra,
    ]


def test_bench_writes_results_table_and_plots_then_skips(two_datasets, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(bench_argv(*two_datasets, out)) == 0
    first = capsys.readouterr()
    results = sorted((out / "runs" / "val").rglob("*.json"))
    assert len(results) == 2 * 3 * 2 * 2  # datasets x methods x shots x seeds
    record = json.loads(results[0].read_text())
    for key in (
        "method_config",
        "selection",
        "protocol",
        "test",
        "timings",
        "versions",
        "data",
        "zero_shot_test_accuracy",
    ):
        assert key in record
    assert record["data"]["fingerprint"] and record["selection"]["chosen_on"]
    table = (out / "table_val.md").read_text()
    assert "## first" in table and "## Average over datasets" in table and "| ca |" in table and " ± " in table
    assert (out / "summary_val.csv").read_text().startswith("protocol,dataset,method,shots,mean,std,n")
    _check_calibration_outputs(out, len(results))
    import clip_adapter

    rows = clip_adapter.bench_results(out)  # DataFrame-ready: one dict per run
    assert len(rows) == len(results) and {"dataset", "method", "shots", "seed", "accuracy"} <= set(rows[0])
    assert {"ece", "nll", "brier", "aurc", "zero_shot_ece"} <= set(rows[0]) and all(0 <= r["ece"] <= 1 for r in rows)
    assert {p.name for p in (out / "plots").iterdir()} == {"val_first.png", "val_second.png", "val_average.png"}
    split = json.loads((out / "splits" / "first" / "shots2_seed1.json").read_text())
    assert len(split["train"]) == 6 and split["meta"]["seed"] == 1
    assert first.out.startswith("# Few-shot accuracy")

    stamps = {p: p.stat().st_mtime_ns for p in results}
    assert main(bench_argv(*two_datasets, out)) == 0
    assert "0 runs done, 24 already finished" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def _check_calibration_outputs(out: Path, runs: int) -> None:
    """The calibration table and CSV columns of a finished grid: every cell present, every number in range."""
    import csv
    import re

    table = (out / "table_calibration_val.md").read_text()
    assert (
        table.startswith("# Calibration — protocol `val`")
        and "### ECE (%, 15 bins)" in table
        and "### NLL (nats)" in table
    )
    assert (
        "## first" in table and "## Average over datasets" in table and "| zero-shot |" in table and "| ca |" in table
    )
    assert "recorded no calibration" not in table and "–" not in table  # every run of this grid records it
    ece = table.split("### ECE (%, 15 bins)")[1].split("###")[0]
    values = [float(v) for v in re.findall(r"\| (\d+\.\d\d)(?: ± \d+\.\d\d)?", ece)]
    assert len(values) == 3 * 2 and all(0 <= v <= 100 for v in values)  # methods x shots, in %
    with open(out / "results_val.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames[:9] == [
            "protocol",
            "dataset",
            "method",
            "shots",
            "seed",
            "accuracy",
            "zero_shot_accuracy",
            "fit_seconds",
            "chosen",
        ]  # the old columns first, in their order
        assert reader.fieldnames[9:] == [
            "ece",
            "nll",
            "brier",
            "aurc",
            "zero_shot_ece",
            "zero_shot_nll",
            "zero_shot_brier",
            "zero_shot_aurc",
            "ece_bins",
        ]
        rows = list(reader)
    assert len(rows) == runs and all(
        0 <= float(r["ece"]) <= 1
        and 0 <= float(r["brier"]) <= 2
        and float(r["nll"]) >= 0
        and 0 <= float(r["aurc"]) <= 1
        and r["ece_bins"] == "15"
        for r in rows
    )
    with open(out / "summary_val.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames[7:] == [
            "ece_mean",
            "ece_std",
            "nll_mean",
            "nll_std",
            "brier_mean",
            "brier_std",
            "aurc_mean",
            "aurc_std",
            "calibration_n",
        ]
        summary = list(reader)
    assert all(0 <= float(r["ece_mean"]) <= 1 and r["calibration_n"] == r["n"] for r in summary)


def test_changed_method_config_reruns_only_that_method(two_datasets, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(bench_argv(*two_datasets, out)) == 0
    argv = bench_argv(*two_datasets, out)
    argv[argv.index("ca=clip-adapter:epochs=5")] = "ca=clip-adapter:epochs=6"
    assert main(argv) == 0
    assert "8 runs done, 16 already finished" in capsys.readouterr().err


def test_oracle_protocol_is_labelled_everywhere(two_datasets, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(bench_argv(*two_datasets, out, "--protocol", "oracle")) == 0
    assert not (out / "runs" / "val").exists()
    assert "ORACLE" in (out / "table_oracle.md").read_text()
    record = json.loads(next((out / "runs" / "oracle").rglob("*.json")).read_text())
    assert record["protocol"] == "oracle" and "TEST" in record["selection"]["chosen_on"]


def test_summary_is_mean_and_std_over_seeds():
    rows = [
        {"dataset": "d", "method": "m", "shots": 1, "seed": s, "accuracy": a, "zero_shot_accuracy": 0.5}
        for s, a in ((1, 0.6), (2, 0.8))
    ]
    summary = summarise(rows)
    mean, std, n = summary[("d", "m", 1)]
    assert (round(mean, 6), round(std, 6), n) == (0.7, round(0.1414213562, 6), 2)
    assert summary[("d", "zero-shot", 1)] == (0.5, 0.0, 2)
    assert "70.00 ± 14.14" in markdown(summary, "val")


def test_method_spec_parsing():
    spec = MethodSpec.parse("both=clip-adapter:variant=both:alpha_grid=[0.1,0.5]")
    assert (spec.label, spec.method, dict(spec.overrides)) == (
        "both",
        "clip-adapter",
        {"variant": "both", "alpha_grid": (0.1, 0.5)},
    )
    assert MethodSpec.parse("gda").label == "gda"
    assert MethodSpec.parse("clip-adapter:variant=text").label == "clip-adapter[variant=text]"
    with pytest.raises(ConfigError):
        MethodSpec.parse("nope")


def test_duplicate_labels_are_refused(two_datasets):
    ds = load_dataset(two_datasets[0])
    with pytest.raises(ConfigError, match="unique"):
        BenchPlan({"a": ds}, [MethodSpec.parse("gda"), MethodSpec.parse("gda")])


def _coop_pets(root: Path) -> None:
    images = write_image_folder(root / "oxford_pets" / "images", per_class=4)
    entries = [
        [f"{c}/{i:03d}.jpg", k, c] for k, c in enumerate(sorted(p.name for p in images.iterdir())) for i in range(4)
    ]
    (root / "oxford_pets" / "split_zhou_OxfordPets.json").write_text(
        json.dumps({"train": entries, "val": entries[:3], "test": entries})
    )


def test_standard_benchmark_layouts(tmp_path):
    _coop_pets(tmp_path)
    pets = load_benchmark("oxford_pets", tmp_path)
    assert pets.name == "oxford_pets" and pets.classnames == ["blue square", "green square", "red square"]
    from clip_adapter.data import resolve_templates

    assert resolve_templates(None, pets.name) == ("a photo of a {}, a type of pet.",)
    fgvc = tmp_path / "fgvc_aircraft"
    (fgvc / "images").mkdir(parents=True)
    (fgvc / "variants.txt").write_text("707-320\nA300B4\n")
    for split in ("train", "val", "test"):
        (fgvc / f"images_variant_{split}.txt").write_text("0001 707-320\n0002 A300B4\n")
    assert load_benchmark("fgvc_aircraft", tmp_path).classnames == ["707-320", "A300B4"]
    imagenet = tmp_path / "imagenet"
    for split in ("train", "val"):
        write_image_folder(imagenet / "images" / split, per_class=2)
    (imagenet / "classnames.txt").write_text(
        "blue_square blue square\ngreen_square green square\nred_square red square\n"
    )
    net = load_benchmark("imagenet", tmp_path)
    assert net.count("val") == 0 and net.count("test") == 6 and net.classnames[0] == "blue square"
    with pytest.raises(DataError, match="folder not found"):
        load_benchmark("dtd", tmp_path)


def test_plots_are_written_atomically(tmp_path):
    summary = {("d", "m", 1): (0.5, 0.1, 3), ("d", "m", 4): (0.7, 0.05, 3), ("d", "zero-shot", 1): (0.4, 0.0, 3)}
    paths = plot_summary(summary, "val", tmp_path)
    assert [p.name for p in paths] == ["val_d.png", "val_average.png"] and all(p.stat().st_size > 1000 for p in paths)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_run_bench_library_api(two_datasets, tmp_path):
    from clip_adapter.backbones import create_backbone

    ds = load_dataset(two_datasets[0], name="a")
    plan = BenchPlan(
        {"a": ds},
        [MethodSpec.parse("gda")],
        shots=(1,),
        seeds=(1,),
        features=FeatureConfig(views=1, cache_dir=str(tmp_path / "c")),
    )
    report = run_bench(
        create_backbone("test-tiny-vit", "none", precision="fp32"), plan, tmp_path / "o", log=lambda _: None
    )
    assert report.ran == 1 and write_reports(tmp_path / "o", "val", report.results)["table"].is_file()


def test_a_malformed_run_file_is_left_out_with_a_warning(tmp_path):
    import warnings as w

    from clip_adapter.bench.aggregate import load_results

    good = {
        "protocol": "val",
        "data": {"dataset": "d"},
        "bench": {"label": "m"},
        "run": {"shots": 1, "seed": 1},
        "test": {"accuracy": 50.0},
        "zero_shot_test_accuracy": 40.0,
        "timings": {"fit_seconds": 1.0},
        "selection": {"chosen": {}},
    }
    paths = []
    for i, r in enumerate([good, {**good, "run": {"shots": "1", "seed": 1}}, {**good, "test": None}, [1], {}]):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(r))
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        rows = load_results(paths)
    assert len(rows) == 1 and len(caught) == 4 and all("malformed" in str(c.message) for c in caught)
