"""``clip-adapter report``: the HTML page of a run and of a bench output, checked as text and in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import clip_adapter
from clip_adapter.apps.report import build_report, default_output
from clip_adapter.apps.report.history import curves, x_axis
from clip_adapter.apps.report.html import pct
from clip_adapter.apps.report.markdown import markdown_to_html
from clip_adapter.cli import main
from clip_adapter.toyworld import write_task_dataset

CHROMIUM = Path("/usr/bin/chromium")
EXTERNAL = re.compile(r"(src|href)\s*=\s*[\"']?\s*(https?:|//)|url\(\s*[\"']?\s*(https?:|//)|@import", re.I)


def _fit(data: Path, cache: Path, out: Path, **options) -> Path:
    clf = clip_adapter.fit(data, shots=2, cache_dir=cache, epochs=20, **options)
    return clf.save_pretrained(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A toy task, a CLIP-Adapter artifact beside it, and one with α = 0 (zero-shot exactly)."""
    root = tmp_path_factory.mktemp("report")
    data = write_task_dataset("color", "night", root / "data", 3, 2, 4, seed=0)
    cache = root / "cache"
    adapted = _fit(data, cache, root / "adapted")
    identity = _fit(data, cache, root / "identity", alpha_grid=(0.0,), alpha=0.0)
    return {"root": root, "data": data, "cache": cache, "adapted": adapted, "identity": identity}


def _page(path: Path, **options) -> str:
    return build_report(path, **options)


def _images(html: str) -> list[str]:
    return re.findall(r'<img src="(data:image/png;base64,[^"]+)"', html)


def _assert_offline(html: str) -> None:
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_artifact_page_shows_every_section_with_the_recorded_numbers(world):
    html = _page(world["adapted"], data=world["data"])
    result = json.loads((world["adapted"] / "result.json").read_text())
    for anchor in ("configuration", "results", "calibration", "per-class", "confusion", "worst", "training", "adapter"):
        assert f'<section id="{anchor}">' in html
    assert '<section id="trust">' not in html  # no trust record fitted
    assert f'<span class="big" id="test-accuracy">{pct(result["test"]["accuracy"])}</span>' in html
    assert pct(result["zero_shot_test_accuracy"]) in html
    assert "Identical to the recorded result." in html  # re-evaluated from the cache: same numbers
    chosen = result["selection"]["chosen"]
    assert f"alpha = {chosen['alpha']}" in html
    assert f"{chosen['alpha']:.3f}" in html  # α the head applies, read back from the weights' config
    # one per-class row per class, and helped + hurt + unchanged add up to the class count
    table = html.split('class="per-class"')[1].split("</table>")[0]
    assert table.count("<tr>") - 1 == 8
    counts = re.search(r"(\d+) helped</span>, <span class=\"bad\">(\d+) hurt</span>, (\d+) unchanged \(of (\d+)", html)
    assert counts and sum(map(int, counts.groups()[:3])) == int(counts.group(4)) == 8
    # figures: per-class bars, confusion, 12 thumbnails (the default, of 32 test images), history per epoch and
    # per candidate, cosine histogram, reliability diagram
    assert html.count('class="card"><img') == 12
    assert len(_images(html)) in (12 + 5, 12 + 6)  # the per-class chart only when some class changed
    calibration = html.split('<section id="calibration">')[1].split("</section>")[0]
    assert (
        pct(result["test"]["calibration"]["ece"]) in calibration
        and pct(result["zero_shot_test_calibration"]["ece"]) in calibration
    )
    assert 'alt="reliability diagram"' in calibration and len(_images(calibration)) == 1
    _assert_offline(html)


def test_alpha_zero_adapter_moves_nothing_and_matches_zero_shot(world):
    """α = 0 is zero-shot exactly: cosine 1, no class helped or hurt, no prediction changed."""
    html = _page(world["identity"], data=world["data"])
    assert '0 helped</span>, <span class="bad">0 hurt</span>, 8 unchanged' in html
    row = re.search(r"cos\(α·A\(f\) \+ \(1−α\)·f, f\)</td><td class=\"num\">([\d.]+)</td>", html)
    assert row and float(row.group(1)) == pytest.approx(1.0, abs=1e-4)
    assert re.search(r"changed 0 of \d+ test predictions", html)


def test_adapted_run_moves_features_and_differs_from_zero_shot(world):
    html = _page(world["adapted"], data=world["data"])
    row = re.search(r"cos\(α·A\(f\) \+ \(1−α\)·f, f\)</td><td class=\"num\">([\d.-]+)</td>", html)
    result = json.loads((world["adapted"] / "result.json").read_text())
    if result["selection"]["chosen"]["alpha"] > 0:
        assert row and float(row.group(1)) < 0.9999
    else:  # validation chose zero-shot: then nothing may move
        assert row and float(row.group(1)) == pytest.approx(1.0, abs=1e-4)


def test_without_data_the_page_says_so_and_data_brings_the_images(world, tmp_path):
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(world["adapted"], moved)
    os.symlink(
        world["data"], tmp_path / "elsewhere" / "data"
    )  # beside the artifact, and recorded in result.json: not used
    html = _page(moved, cache_dir=world["cache"])
    assert "test images are read only from --data" in html
    assert 'class="card"' not in html
    assert '<section id="confusion">' in html and len(_images(html)) >= 2  # confusion from result.json, history
    with_data = _page(moved, data=world["data"], cache_dir=world["cache"])
    assert with_data.count('class="card"><img') == 12


def test_cli_writes_beside_an_artifact_refuses_to_overwrite_and_names_bad_folders(world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world["adapted"], run)
    target = default_output(run)
    assert target == tmp_path / "run.report.html"  # not inside: the artifact must stay our own output
    assert main(["report", str(run), "--cache-dir", str(world["cache"])]) == 0
    assert target.read_text().startswith("<!DOCTYPE html>")
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(["report", str(run), "--overwrite", "--cache-dir", str(world["cache"])]) == 0
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "neither a clip-adapter artifact" in err and len(err.strip().splitlines()) == 1


def test_default_output_never_adds_a_file_inside_one_of_our_outputs(world, tmp_path):
    from clip_adapter.core.outputs import is_own_output, mark_output_dir

    demo = tmp_path / "demo"
    mark_output_dir(demo, "demo")
    shutil.copytree(world["adapted"], demo / "artifact")
    assert default_output(demo / "artifact") == tmp_path / "demo-artifact.report.html"
    assert default_output(demo) == tmp_path / "demo.report.html"
    assert is_own_output(demo, "demo") and is_own_output(demo / "artifact", "artifact")


@pytest.fixture(scope="module")
def bench_dir(world):
    out = world["root"] / "bench"
    argv = [
        "bench",
        "--dataset",
        f"toy={world['data']}",
        "--methods",
        "zero-shot",
        "--method",
        "ca=clip-adapter:epochs=2",
        "--method",
        "ca-text=clip-adapter:variant=text:epochs=2",
        "--shots",
        "1,2",
        "--seeds",
        "1",
        "--views",
        "2",
        "--cache-dir",
        str(world["cache"]),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert main([*argv, "--setting", "base-to-new"]) == 0  # a transfer protocol in the same output
    return out


def test_bench_page_shows_tables_plots_and_chosen_ratios(bench_dir):
    html = _page(bench_dir)
    assert (
        '<section id="overview">' in html and '<section id="protocol-val">' in html and '<section id="adapter">' in html
    )
    rows = [line.split(",") for line in (bench_dir / "summary_val.csv").read_text().splitlines()[1:]]
    for _, dataset, method, shots, mean, *_ in rows:
        assert f"{100 * float(mean):.2f}" in html  # every mean of the bench's summary is on the page
    section = html.split('<section id="protocol-val">')[1].split("</section>")[0]
    assert (
        "Calibration — protocol" in section and "ECE (%, 15 bins)" in section
    )  # table_calibration_val.md, in its protocol
    assert '<section id="protocol-calibration_val">' not in html
    for row in rows:
        if row[7]:  # ece_mean: every ECE of the summary is in the calibration table
            assert f"{100 * float(row[7]):.2f}" in section
    plots = sorted((bench_dir / "plots").glob("val_*.png"))
    assert len(_images(html)) == len(plots) - 1  # one dataset: its average plot is the same curve, shown once
    assert default_output(bench_dir) == bench_dir / "report.html"  # a bench folder may hold its report
    chosen = json.loads(next((bench_dir / "runs" / "val" / "toy" / "ca-text").glob("*.json")).read_text())["selection"][
        "chosen"
    ]
    assert f"β={chosen['alpha']}" in html  # the text variant's searched ratio is β
    assert '<section id="transfer">' in html and "Base-to-new generalisation" in html
    b2n = [line.split(",") for line in (bench_dir / "summary_b2n_val.csv").read_text().splitlines()[1:]]
    assert b2n and all(f"{100 * float(row[-1]):.2f}" in html for row in b2n if row[-1])  # harmonic means
    _assert_offline(html)


def test_bench_page_rebuilds_missing_table_and_plots_from_runs(bench_dir, tmp_path):
    copy = tmp_path / "bench"
    shutil.copytree(bench_dir, copy)
    (copy / "table_val.md").unlink()
    shutil.rmtree(copy / "plots")
    html = _page(copy)
    assert "rebuilt from the run JSONs" in html and len(_images(html)) == 1
    assert html.count("<table>") >= 2


def test_history_with_epochs_is_plotted_against_epoch():
    records = [
        {"epoch": e, "alpha": a, "loss": 1.0 / e, "val_accuracy": 0.5 + 0.01 * e} for a in (0.2, 0.6) for e in (1, 2, 3)
    ]
    assert x_axis(records, ["alpha", "lr"]) == "epoch"
    png, xlabel = curves(records, ["alpha", "lr"])
    assert xlabel == "epoch" and png.startswith(b"\x89PNG")
    assert curves([{"steps": 1}], [])[0] is None  # nothing that is an accuracy or a loss: no figure


def test_markdown_and_names_are_escaped():
    html = markdown_to_html("# <b>x</b>\n\n| method | 1 shot |\n|---|---|\n| <img src=x> | 50.00 |\n")
    assert "<b>" not in html and "&lt;img src=x&gt;" in html and '<td class="num">50.00</td>' in html


# --- headless Chromium ------------------------------------------------------------------------------


def _chromium() -> Path:
    """/usr/bin/chromium (``scripts/setup.sh`` installs it where it can); skip with the reason when it is missing."""
    if not CHROMIUM.is_file():
        pytest.skip(
            "/usr/bin/chromium is missing: `bash scripts/setup.sh` installs Debian's chromium "
            "when run as root with apt-get"
        )
    return CHROMIUM


def _browse(chromium: Path, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,2000",
    ]
    return subprocess.run([str(chromium), *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=120)


def _decoded_sizes_page(html: str, path: Path) -> Path:
    """A copy whose only change lets one inline script list each image's decoded width (images stay data:-only)."""
    script = (
        "<script>addEventListener('load', () => document.body.setAttribute('data-widths', "
        "Array.from(document.images).map(i => i.naturalWidth).join(',')));</script>"
    )
    probe = html.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';").replace(
        "</body>", script + "</body>"
    )
    path.write_text(probe)
    return path


@pytest.mark.parametrize("kind", ["artifact", "bench"])
def test_page_renders_offline_in_headless_chromium(kind, world, bench_dir, tmp_path):
    chromium = _chromium()
    source = world["adapted"] if kind == "artifact" else bench_dir
    out = tmp_path / f"{kind}.html"
    data = ["--data", str(world["data"]), "--cache-dir", str(world["cache"])] if kind == "artifact" else []
    assert main(["report", str(source), "--out", str(out), *data]) == 0
    shot = tmp_path / f"{kind}.png"
    done = _browse(chromium, out, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 20_000, done.stderr[-500:]
    from PIL import Image

    with Image.open(shot) as image:  # a rendered page, not a blank or error screen: many colours, header blue on top
        assert image.size == (1280, 2000)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 500
        header = image.convert("RGB").getpixel((20, 20))
        assert all(abs(a - b) <= 3 for a, b in zip(header, (0x1F, 0x3A, 0x5F))), header
    dom = _browse(chromium, out, tmp_path / "profile-dom", "--dump-dom").stdout
    wanted = (
        ["Configuration and protocol", "Per-class accuracy vs zero-shot", "What the adapter did"]
        if kind == "artifact"
        else ["Few-shot results — protocol val", "CLIP-Adapter: chosen ratios"]
    )
    for text in wanted:
        assert text in dom
    probe = _decoded_sizes_page(out.read_text(), tmp_path / f"{kind}-probe.html")
    widths = re.search(
        r'data-widths="([\d,]*)"', _browse(chromium, probe, tmp_path / "profile-probe", "--dump-dom").stdout
    )
    assert widths and widths.group(1), "the page's images were not listed"
    assert all(int(w) > 0 for w in widths.group(1).split(",")), f"an embedded image did not decode: {widths.group(1)}"
    assert len(widths.group(1).split(",")) == len(_images(out.read_text()))
