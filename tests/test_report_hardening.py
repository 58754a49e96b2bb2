"""``clip-adapter report`` on files it must not trust, and pages it must keep small.

Images come only from ``--data`` (never from paths an artifact records), ``--out`` never lands
on or in what the report reads, ``$`` in a name is a dollar sign, a malformed field is shown
as such (or one line, exit 2) and never an internal error, and the training history is
figures plus compact tables, not Python lists in cells.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

import clip_adapter
from clip_adapter.apps.report import build_report, figures
from clip_adapter.cli import main
from clip_adapter.core.errors import ClipAdapterError
from clip_adapter.pipeline import epoch_log_csv
from clip_adapter.toyworld import write_task_dataset

CHROMIUM = Path("/usr/bin/chromium")
# Values of the wrong type or range for any field: the fuzz puts each of them in each field in turn.
WRONG: list[Any] = [
    7,
    -1,
    True,
    "x $\\frac{$ y",
    "",
    "a\u0000b",
    ["?", None, 3],
    [{"a": 1}],
    {"k": [1]},
    None,
    10**300,
    float("inf"),
    -1e308,
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A toy task and a CLIP-Adapter artifact trained on it (with the log.csv ``clip-adapter train`` writes)."""
    root = tmp_path_factory.mktemp("hardening")
    data = write_task_dataset("color", "night", root / "data", 3, 2, 4, seed=0)
    cache = root / "cache"
    artifact = clip_adapter.fit(data, shots=2, cache_dir=cache, epochs=20).save_pretrained(root / "adapted")
    history = json.loads((artifact / "result.json").read_text())["history"]
    (artifact / "log.csv").write_text(epoch_log_csv(history))
    return {"root": root, "data": data, "cache": cache, "adapted": artifact}


def _copy(world: dict, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(world["adapted"], tmp_path / name))


def _edit(path: Path, change: Callable[[Any], Any]) -> None:
    data = json.loads(path.read_text())
    change(data)  # edits in place
    path.write_text(json.dumps(data))


def _report(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["report", *map(str, argv)])
    return code, capsys.readouterr().err


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _section(html: str, anchor: str) -> str:
    return html.split(f'<section id="{anchor}">', 1)[1].split("</section>", 1)[0]


# --- 1. images only from --data ----------------------------------------------------------------------


def test_paths_an_artifact_records_are_never_read(world, tmp_path, monkeypatch, capsys):
    """split.json listing absolute and ../ paths (and result.json a data root) makes no image of them read or shown."""
    run = _copy(world, tmp_path)
    private = tmp_path / "private"
    private.mkdir()
    split = json.loads((run / "split.json").read_text())
    entries = []
    for i, (rel, label, name) in enumerate(split["test"]):
        secret = private / f"secret_{i}.png"
        shutil.copy(world["data"] / "images" / rel, secret)
        entries.append([str(secret) if i % 2 else os.path.relpath(secret, run), label, name])
    split["test"] = entries
    (run / "split.json").write_text(json.dumps(split))
    _edit(run / "result.json", lambda r: r["data"].update(root=str(private)))
    opened: list[str] = []
    from PIL import Image

    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: (opened.append(str(fp)), real_open(fp, *a, **k))[1])
    out = tmp_path / "page.html"
    code, err = _report(capsys, run, "--cache-dir", world["cache"], "--out", out)
    html = out.read_text()
    assert code == 0, err
    assert not [p for p in opened if "private" in p]
    assert 'class="card"' not in html and "secret_" not in html
    assert "test images are read only from --data" in html
    # with --data, the dataset's own test split is used, still never the artifact's paths
    code, err = _report(
        capsys, run, "--data", world["data"], "--cache-dir", world["cache"], "--out", out, "--overwrite"
    )
    html = out.read_text()
    assert code == 0, err
    assert html.count('class="card"><img') == 12 and "secret_" not in html
    assert not [p for p in opened if "private" in p]


def _symlinked_folder(world: dict, tmp_path: Path, secret: Path) -> Path:
    """An ImageFolder copy of the task whose "blue" class holds a link to an image outside it."""
    data = Path(shutil.copytree(world["data"] / "images", tmp_path / "folder-data"))
    os.symlink(secret, data / "blue" / "zz_secret.png")
    return data


def _dotdot_split(world: dict, tmp_path: Path, secret: Path) -> Path:
    """A split-JSON copy of the task whose first test entry is ``../../outside/secret.png``."""
    data = Path(shutil.copytree(world["data"], tmp_path / "split-data"))
    _edit(data / "split.json", lambda s: s["test"][0].__setitem__(0, os.path.relpath(secret, data / "images")))
    return data


@pytest.mark.parametrize("make", [_symlinked_folder, _dotdot_split], ids=["symlink", "dotdot"])
def test_data_images_outside_data_are_skipped_with_one_warning_line(make, world, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.png"
    shutil.copy(next((world["data"] / "images" / "red").glob("*.png")), secret)
    data = make(world, tmp_path, secret)
    run = _copy(world, tmp_path)
    out = tmp_path / "page.html"
    code, err = _report(capsys, run, "--data", data, "--cache-dir", world["cache"], "--out", out)
    assert code == 0, err
    warned = [line for line in err.splitlines() if "secret" in line]
    assert len(warned) == 1 and warned[0].startswith("warning:") and "outside" in warned[0], err
    html = out.read_text()
    assert "secret" not in html and html.count('class="card"><img') >= 1


def test_a_test_image_resolving_outside_data_is_skipped(world, tmp_path, monkeypatch):
    """The report's own check, behind the dataset reader's: every test path, links resolved, must be in --data."""
    from clip_adapter.apps.report import run_files
    from clip_adapter.data import load_dataset
    from clip_adapter.data.dataset import Sample

    data = Path(shutil.copytree(world["data"], tmp_path / "data"))
    dataset = load_dataset(data)
    dataset.splits["test"][0] = Sample(tmp_path / "elsewhere.png", 0)  # as if a reader had let it through
    (tmp_path / "elsewhere.png").write_bytes(b"not read")
    monkeypatch.setattr(run_files, "_load_dataset", lambda _: dataset)
    run = run_files.read_run_files(world["adapted"])
    with pytest.warns(UserWarning, match="elsewhere.png"):
        images = run_files.find_test_images(run, data)
    assert tmp_path / "elsewhere.png" not in images.paths and images.outside == [str(tmp_path / "elsewhere.png")]
    assert len(images.paths) == len(dataset.split("test")) - 1


def test_is_inside_resolves_symlinks(tmp_path):
    from clip_adapter.apps.report.run_files import data_root, is_inside

    (tmp_path / "data").mkdir()
    (tmp_path / "secret.png").write_bytes(b"x")
    os.symlink(tmp_path / "secret.png", tmp_path / "data" / "link.png")
    (tmp_path / "data" / "own.png").write_bytes(b"x")
    root = data_root(tmp_path / "data")
    assert is_inside(tmp_path / "data" / "own.png", root)
    assert not is_inside(tmp_path / "data" / "link.png", root)
    assert not is_inside(tmp_path / "data" / ".." / "secret.png", root)
    assert not is_inside(tmp_path / "data" / "missing.png", root)


# --- 2. --out never on or in what the report reads ---------------------------------------------------


def _no_work(monkeypatch) -> None:
    """Any page built means the refusal came too late."""
    import clip_adapter.apps.report as report

    def refuse(*_, **__):
        raise AssertionError("the report was built before --out was checked")

    monkeypatch.setattr(report, "build_report", refuse)


def test_out_inside_data_is_refused_before_any_work(world, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    data = Path(shutil.copytree(world["data"], tmp_path / "data3"))
    target = data / "images" / "red" / "report.html"
    code, err = _report(capsys, world["adapted"], "--data", data, "--out", target)
    assert code == 2 and len(_error_lines(err)) == 1 and len(err.strip().splitlines()) == 1, err
    assert "inside the input" in err and not target.exists()
    split_json = data / "split.json"  # --data given as the split file: its folder is the dataset
    code, err = _report(capsys, world["adapted"], "--data", split_json, "--out", data / "report.html")
    assert code == 2 and "inside the input" in err and not (data / "report.html").exists()


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "result.json", "split.json", "log.csv"])
def test_out_over_a_file_of_the_artifact_is_refused(name, world, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    run = _copy(world, tmp_path)
    before = (run / name).read_bytes()
    code, err = _report(capsys, run, "--out", run / name, "--overwrite")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is the input" in err, err
    assert (run / name).read_bytes() == before
    os.symlink(run / name, tmp_path / "link.html")  # the same file by another name
    code, err = _report(capsys, run, "--out", tmp_path / "link.html", "--overwrite")
    assert code == 2 and (run / name).read_bytes() == before


def _bench(world: dict, tmp_path: Path) -> Path:
    """A small bench output: a run JSON, a summary and a table."""
    bench = tmp_path / "bench"
    (bench / "runs" / "val" / "toy" / "ca").mkdir(parents=True)
    result = json.loads((world["adapted"] / "result.json").read_text())
    result["bench"] = {"label": "ca"}
    (bench / "runs" / "val" / "toy" / "ca" / "2shot_seed1.json").write_text(json.dumps(result))
    (bench / "summary_val.csv").write_text("protocol,dataset,method,shots,mean,std,n\nval,toy,ca,2,0.5,0.0,1\n")
    (bench / "table_val.md").write_text("# val\n\n| method | 2 shots |\n|---|---|\n| ca | 50.00 |\n")
    return bench


def test_bench_out_over_its_files_is_refused_and_its_own_page_replaced(world, tmp_path, capsys):
    bench = _bench(world, tmp_path)
    for target in (
        bench / "summary_val.csv",
        bench / "runs" / "val" / "toy" / "ca" / "2shot_seed1.json",
        bench / "runs" / "new.html",
    ):
        before = target.read_bytes() if target.exists() else None
        code, err = _report(capsys, bench, "--out", target, "--overwrite")
        assert code == 2 and len(err.strip().splitlines()) == 1, (target, err)
        assert (target.read_bytes() if target.exists() else None) == before
    assert _report(capsys, bench)[0] == 0  # the default bench/report.html
    assert _report(capsys, bench, "--overwrite")[0] == 0  # its own earlier page may be replaced
    (bench / "report.html").write_text("<p>my notes</p>")  # not a page this tool wrote
    code, err = _report(capsys, bench, "--overwrite")
    assert code == 2 and (bench / "report.html").read_text() == "<p>my notes</p>"


def test_new_file_beside_config_and_default_output_still_work(world, tmp_path, capsys):
    run = _copy(world, tmp_path)
    code, err = _report(capsys, run, "--out", run / "report.html")
    assert code == 0 and (run / "report.html").read_text().startswith("<!DOCTYPE html>"), err
    code, err = _report(capsys, run)
    assert code == 0 and (tmp_path / "run.report.html").is_file(), err
    code, err = _report(capsys, run, "--overwrite")
    assert code == 0, err


# --- 3. text is text ----------------------------------------------------------------------------------


def test_dollar_signs_in_class_names_and_log_columns_are_text(world, tmp_path, capsys):
    run = _copy(world, tmp_path)
    names = ["blue $\\frac{$", "cyan $", "$x^2$", "$$"]
    _edit(run / "config.json", lambda c: c["classnames"].__setitem__(slice(0, 4), names))
    _edit(run / "result.json", lambda r: r.pop("history"))  # so log.csv is what the training section draws
    _edit(run / "result.json", lambda r: r["test"].update(per_class_accuracy=dict.fromkeys(names, 0.5)))
    (run / "log.csv").write_text(
        "candidate,epoch,$loss_{$,selection_accuracy $\\alpha$\n"
        "$a=1,1,0.5,0.25\n$a=1,2,0.4,0.5\nb$,1,0.6,0.3\nb$,2,0.3,0.6\n"
    )
    out = tmp_path / "page.html"
    code, err = _report(capsys, run, "--out", out)
    assert code == 0, err
    html = out.read_text()
    assert "blue $\\frac{$" in html and "$x^2$" in html and "$loss_{$" in html


def test_figure_text_is_never_parsed_as_math(monkeypatch):
    """Every text artist of every figure, tick labels included, is drawn with mathtext off."""
    from matplotlib.text import Text

    texts: list[Text] = []
    real_png = figures.png_bytes

    def spy(fig):
        png = real_png(fig)  # drawn first: tick labels exist only once drawn
        texts.extend(t for t in fig.findobj(Text) if "$" in t.get_text())
        return png

    monkeypatch.setattr(figures, "png_bytes", spy)
    names = ["$x^2$", "a $\\frac{$ b"]
    figures.confusion_png([[1, 1], [0, 2]], names)
    figures.per_class_png([(names[0], 0.8, 0.2), (names[1], 0.1, 0.5)])
    figures.curves_png({"loss": {"$\\alpha$ loss": [(1.0, 2.0), (2.0, 1.0)]}}, "$epoch$")
    figures.histogram_png([0.1, 0.5], "$cos$", "$x$")
    figures.reliability_png(
        [
            {
                "title": "$\\alpha$ head",
                "bin_edges": [0, 0.5, 1],
                "count": [1, 1],
                "accuracy": [0.0, 1.0],
                "mean_confidence": [0.4, 0.9],
                "ece": 0.25,
            }
        ]
    )
    assert len(texts) >= 10 and all(t.get_parse_math() is False for t in texts)


# --- 4. malformed fields ------------------------------------------------------------------------------


def _paths(node: Any, prefix: tuple = (), depth: int = 0) -> list[tuple]:
    """Every field of a JSON document: object keys, and the first and last element of each list."""
    out = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list) and node:
        items = [(0, node[0])] + ([(len(node) - 1, node[-1])] if len(node) > 1 else [])
    else:
        return out
    for key, value in items:
        out.append((*prefix, key))
        if depth < 4:
            out += _paths(value, (*prefix, key), depth + 1)
    return out


def _set(doc: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _stub_figures(monkeypatch) -> None:
    """Figures replaced by checks of what they are given: finite numbers, text labels, a square matrix."""
    import math

    def finite(*values: Any) -> None:
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values), values

    def confusion(matrix, classnames):
        assert len(matrix) == len(classnames) and all(len(row) == len(classnames) for row in matrix)
        finite(*(n for row in matrix for n in row))
        assert all(isinstance(n, str) for n in classnames)
        return b"\x89PNG"

    def curves(series, xlabel):
        assert isinstance(xlabel, str) and all(isinstance(label, str) for lines in series.values() for label in lines)
        finite(*(v for lines in series.values() for points in lines.values() for p in points for v in p))
        return b"\x89PNG"

    monkeypatch.setattr(figures, "confusion_png", confusion)
    monkeypatch.setattr(figures, "curves_png", curves)
    monkeypatch.setattr(
        figures, "per_class_png", lambda rows: (finite(*(v for r in rows for v in r[1:])), b"\x89PNG")[1]
    )
    monkeypatch.setattr(figures, "histogram_png", lambda values, *_: (finite(*values), b"\x89PNG")[1])

    def reliability(panels):
        for panel in panels:
            n = len(panel["count"])
            assert isinstance(panel["title"], str) and len(panel["bin_edges"]) == n + 1 and n >= 1
            assert len(panel["accuracy"]) == len(panel["mean_confidence"]) == n
            finite(
                *panel["bin_edges"],
                *panel["count"],
                *(v for v in panel["accuracy"] + panel["mean_confidence"] if v is not None),
            )
            finite(*(panel[k] for k in ("ece", "overall_accuracy", "overall_confidence") if panel.get(k) is not None))
        return b"\x89PNG"

    monkeypatch.setattr(figures, "reliability_png", reliability)


def _fuzz(file: Path, paths: list[tuple], wrong: list[Any], folder: Path | None = None, **options) -> list[str]:
    """Put each wrong value in each field of ``file`` in turn; return what raised anything but a ClipAdapterError."""
    original, name = file.read_text(), file.name
    failures = []
    for path in paths:
        for value in wrong:
            doc = json.loads(original)
            _set(doc, path, value)
            file.write_text(json.dumps(doc))
            try:
                html = build_report(folder or file.parent, **options)
            except ClipAdapterError as exc:
                if "\n" in str(exc):
                    failures.append(f"{name} {path} = {value!r}: a message of several lines")
                continue
            except Exception as exc:  # noqa: BLE001 - exactly what the test looks for
                failures.append(f"{name} {path} = {value!r}: {exc.__class__.__name__}: {exc}")
                continue
            if not html.startswith("<!DOCTYPE html>"):
                failures.append(f"{name} {path} = {value!r}: no page")
    file.write_text(original)
    return failures


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*ignoring unknown key")  # a mutated method_config gains a key "k"
@pytest.mark.parametrize("name", ["config.json", "result.json"])
def test_fuzz_every_field_with_wrong_types_never_raises_an_internal_error(name, world, tmp_path, monkeypatch):
    _stub_figures(monkeypatch)
    run = _copy(world, tmp_path)
    paths = _paths(json.loads((run / name).read_text()))
    assert len(paths) > 40
    failures = _fuzz(run / name, paths, WRONG, cache_dir=world["cache"])
    assert not failures, f"{len(failures)} failures, e.g.\n" + "\n".join(failures[:15])


# Fields whose values end up drawn (the rest reach figures only through checks the stubbed fuzz covers).
FIGURE_FIELDS = [
    ("test", "confusion_matrix", 0, 0),
    ("history", 0, "epochs", 0, "loss"),
    ("history", 0, "epochs", 1, "epoch"),
    ("history", 0, "alpha"),
    ("history", 0, "selection_accuracy"),
    ("selection", "grid"),
    ("test", "calibration", "reliability", "bin_edges", 1),
    ("zero_shot_test_calibration", "reliability", "count", -1),
    ("test", "calibration", "ece"),
]


@pytest.mark.slow
def test_fuzz_fields_that_reach_figures_with_real_drawing(world, tmp_path):
    run = _copy(world, tmp_path)
    (run / "log.csv").unlink()
    wrong = ["x $\\frac{$ y", -1e308, [{"a": 1}]]
    failures = _fuzz(run / "result.json", FIGURE_FIELDS, wrong, cache_dir=world["cache"])
    assert not failures, "\n".join(failures[:15])


def test_fuzz_log_csv_cells_with_real_drawing(world, tmp_path, capsys):
    run = _copy(world, tmp_path)
    _edit(run / "result.json", lambda r: r.pop("history"))
    for cell in ("inf", "nan", "-1e308", "9" * 400, "$x_{$", ""):
        (run / "log.csv").write_text(
            f"candidate,epoch,loss,selection_accuracy\n{cell},1,{cell},0.5\n{cell},{cell},0.3,{cell}\n"
        )
        code, err = _report(capsys, run, "--out", tmp_path / "page.html", "--overwrite")
        assert code == 0, (cell, err)


def test_malformed_fields_are_shown_as_malformed_and_named(world, tmp_path, capsys):
    run = _copy(world, tmp_path)
    _edit(
        run / "result.json",
        lambda r: r["test"].update(
            accuracy="high", confusion_matrix=[["a", "b"]], per_class_accuracy={"blue": 0.5, "cyan": "all"}
        ),
    )
    _edit(run / "result.json", lambda r: r.update(data=[1], history={"not": "a list"}))
    out = tmp_path / "page.html"
    code, err = _report(capsys, run, "--out", out)
    assert code == 0, err
    html = out.read_text()
    assert '<span class="big" id="test-accuracy">malformed</span>' in html
    for field in (
        "result.json test.accuracy",
        "result.json test.confusion_matrix",
        "result.json data",
        "result.json test.per_class_accuracy",
        "result.json history",
    ):
        assert field in html, field
    assert "confusion matrix (result.json test.confusion_matrix) is malformed" in html


@pytest.mark.parametrize("classnames", [5, "cat", [1, 2], ["a", "a"], None, [["x"]]])
def test_malformed_class_names_are_one_line_naming_file_and_field(classnames, world, tmp_path, capsys):
    run = _copy(world, tmp_path)
    _edit(run / "config.json", lambda c: c.update(classnames=classnames))
    code, err = _report(capsys, run, "--out", tmp_path / "page.html")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "config.json" in err and "classnames" in err


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(backbone=5),
        lambda c: c["backbone"].update(name=5),
        lambda c: c["backbone"].update(name="no-such-net"),
        lambda c: c["backbone"].update(pretrained=["x"]),
        lambda c: c["backbone"].update(precision={"a": 1}),
        lambda c: c.update(head_meta=[1]),
        lambda c: c["method_config"].update(variant=5),
        lambda c: c.update(templates="x"),
    ],
    ids=[
        "backbone",
        "name-int",
        "name-unknown",
        "pretrained-list",
        "precision-dict",
        "head-meta",
        "variant",
        "templates",
    ],
)
def test_malformed_config_with_data_is_not_re_evaluated_but_reported(change, world, tmp_path, monkeypatch, capsys):
    _stub_figures(monkeypatch)
    run = _copy(world, tmp_path)
    _edit(run / "config.json", change)
    code, err = _report(
        capsys, run, "--data", world["data"], "--cache-dir", world["cache"], "--out", tmp_path / "page.html"
    )
    assert code in (0, 2) and len(_error_lines(err)) <= 1, err
    if code == 0:
        assert "Not re-evaluated" in (tmp_path / "page.html").read_text()


def test_fuzz_bench_run_json_never_raises_an_internal_error(world, tmp_path, monkeypatch):
    _stub_figures(monkeypatch)
    monkeypatch.setattr(figures, "shots_png", lambda *_: b"\x89PNG")
    bench = _bench(world, tmp_path)
    (bench / "table_val.md").unlink()  # so the table and plots are rebuilt from the run JSON
    run = next((bench / "runs").rglob("*.json"))
    top = [(k,) for k in json.loads(run.read_text())] + [
        ("run", "shots"),
        ("run", "seed"),
        ("test", "accuracy"),
        ("timings", "fit_seconds"),
        ("bench", "label"),
        ("data", "dataset"),
        ("test", "calibration"),
        ("test", "calibration", "ece"),
        ("zero_shot_test_calibration", "nll"),
        ("test", "calibration", "n_bins"),
    ]
    failures = _fuzz(run, top, WRONG, folder=bench)
    assert not failures, "\n".join(failures[:15])


# --- 5. a compact training history -------------------------------------------------------------------


def _visible(html: str) -> str:
    """The page without its folded (<details>) parts: what a reader scrolls through."""
    return re.sub(r"<details>.*?</details>", "", html, flags=re.S)


def test_training_history_is_figures_and_compact_tables(world, tmp_path):
    run = _copy(world, tmp_path)
    html = build_report(run, cache_dir=world["cache"])
    training = _section(html, "training")
    history = json.loads((run / "result.json").read_text())["history"]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", training, flags=re.S)
    assert cells and not [c for c in cells if re.search(r"\{'|\[\{|\{&#x27;|\{&quot;", c)]  # no Python repr, no object
    assert max(len(c) for c in cells) <= 120
    tables = re.findall(r"<table.*?</table>", _visible(training), flags=re.S)
    assert len(tables) == 1 and tables[0].count("<tr>") == len(history) + 1  # one row per candidate, plus the header
    assert tables[0].count("✓") == 1  # the chosen candidate
    assert len(re.findall(r"<img ", training)) == 2  # per-epoch curves and the candidates against α
    assert "log.csv (" in training and "not shown again" in training
    from clip_adapter.apps.report.fields import shown

    folded = re.findall(r"<details>.*?</details>", training, flags=re.S)
    chosen = json.loads((run / "result.json").read_text())["selection"]["chosen"]["alpha"]
    assert len(folded) == 1 and f"chosen candidate (alpha={shown(chosen)} " in folded[0]
    assert _visible(html).count("<tr>") <= 60  # the whole page, unfolded parts: a bounded number of rows


def test_log_csv_alone_is_grouped_by_candidate(world, tmp_path):
    run = _copy(world, tmp_path)
    history = json.loads((run / "result.json").read_text())["history"]
    _edit(run / "result.json", lambda r: r.pop("history"))
    training = _section(build_report(run), "training")
    tables = re.findall(r"<table.*?</table>", _visible(training), flags=re.S)
    trained = [h for h in history if h.get("epochs")]  # a candidate that trained no epoch (α = 0) has no log rows
    assert len(tables) == 1 and tables[0].count("<tr>") == len(trained) + 1
    assert tables[0].count("✓") == 1 and "final loss" in tables[0]


def test_history_page_height_in_headless_chromium(world, tmp_path):
    """Rendered, the page of a 32-image run stays a few screens tall (it was ~21,000 px)."""
    if not CHROMIUM.is_file():
        pytest.skip("/usr/bin/chromium is missing (tests/test_report.py installs it where it can)")
    run = _copy(world, tmp_path)
    html = build_report(run, data=world["data"], cache_dir=world["cache"])
    script = (
        "<script>addEventListener('load', () => document.body.setAttribute('data-height', "
        "document.documentElement.scrollHeight));</script>"
    )
    probe = tmp_path / "probe.html"
    probe.write_text(
        html.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';").replace(
            "</body>", script + "</body>"
        )
    )
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000",
        "--dump-dom",
    ]
    dom = subprocess.run([str(CHROMIUM), *flags, probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    height = re.search(r'data-height="(\d+)"', dom)
    assert height and int(height.group(1)) < 9000, height and height.group(1)


def test_the_report_never_uses_a_cache_folder_the_artifact_names(tmp_path):
    # A received result.json may name any folder as its cache: the report must not read or write there.
    from clip_adapter.apps.report.evaluation import cache_dir_for

    elsewhere = tmp_path / "victim"
    elsewhere.mkdir()

    class Run:
        result_fields = {"features.cache_dir": str(elsewhere)}

    assert cache_dir_for(Run(), None) != elsewhere
    assert cache_dir_for(Run(), tmp_path / "mine") == tmp_path / "mine"
