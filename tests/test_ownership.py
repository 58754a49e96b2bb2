"""Ours means proven ours: a user's file beside or inside an output is never moved, replaced or deleted.

Each test is a way a user's file was lost before: a look-alike temporary name beside ``--out``
(``photos.tmp-2023-backup``), a file added to an earlier output at the top or deep inside it, a file
of ours the user edited, an output path that is one of the command's inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from clip_adapter.cli import main
from clip_adapter.core.errors import OutputError
from clip_adapter.core.files import (
    TMP_MARK,
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    clean_stale_temporaries,
    host_tag,
)
from clip_adapter.core.outputs import claim_output_dir, claim_output_file, is_own_output, mark_output_dir
from clip_adapter.core.ownership import LEDGER, unowned_entries

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--precision", "fp32"]


def train_argv(data, out, *extra):
    return [
        "train",
        "--data",
        str(data),
        *TINY,
        "--shots",
        "2",
        "--views",
        "1",
        "--epochs",
        "2",
        "--out",
        str(out),
        *extra,
    ]


def refused(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_look_alike_temporaries_beside_out_are_left_alone(image_folder, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    backup = d / "photos.tmp-2023-backup"
    backup.write_text("x")
    old = d / "photos.tmp-2024-old"  # named like a moved-aside output, but no proof inside
    old.mkdir()
    (old / "thesis.tex").write_text("years of work")
    dead = _dead_pid()
    exact = d / f"photos{TMP_MARK}{dead}@{host_tag()}-old"  # our exact pattern, a dead pid, our host: still no proof
    exact.mkdir()
    (exact / "keep.txt").write_text("mine")
    assert main(train_argv(image_folder, d / "photos")) == 0
    assert backup.read_text() == "x"
    assert (old / "thesis.tex").read_text() == "years of work"
    assert (exact / "keep.txt").read_text() == "mine"
    assert (d / "photos" / "config.json").is_file()


def test_a_look_alike_file_is_never_swept_from_a_cache_folder(tmp_path):
    dead = _dead_pid()
    look_alike = tmp_path / f"shard{TMP_MARK}{dead}@{host_tag()}-abc"
    look_alike.write_text("a user's file")
    assert clean_stale_temporaries(tmp_path) == 0 and look_alike.read_text() == "a user's file"


def test_overwrite_refuses_a_user_file_at_the_top_of_an_artifact(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(image_folder, out)) == 0
    notebook = out / "analysis.tmp-v2.ipynb"  # '.tmp-' in a name made it invisible before
    notebook.write_text("{}")
    assert "analysis.tmp-v2.ipynb" in refused(capsys, train_argv(image_folder, out, "--overwrite"))
    assert notebook.read_text() == "{}"


def test_overwrite_refuses_an_edited_file_of_ours(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(image_folder, out)) == 0
    log = out / "log.csv"
    log.write_text(log.read_text() + "my notes on this run\n")
    assert "changed since" in refused(capsys, train_argv(image_folder, out, "--overwrite"))
    assert log.read_text().endswith("my notes on this run\n")


def test_toy_dataset_overwrite_refuses_a_photo_added_deep_inside(tmp_path, capsys):
    out = tmp_path / "t"
    argv = ["toy", "dataset", "--task", "color", "--train", "1", "--val", "1", "--test", "1", "--out", str(out)]
    assert main(argv) == 0
    class_dir = next(p for p in (out / "images").rglob("*") if p.is_dir() and any(p.glob("*.png")))
    photo = class_dir / "MY_OWN_PHOTO.png"
    photo.write_bytes(b"precious")
    empty = out / "images" / "my-empty-folder"
    empty.mkdir()
    message = refused(capsys, [*argv, "--overwrite"])
    assert "MY_OWN_PHOTO.png" in message
    assert photo.read_bytes() == b"precious" and empty.is_dir()
    photo.unlink()
    assert "my-empty-folder/" in refused(capsys, [*argv, "--overwrite"])
    empty.rmdir()
    assert main([*argv, "--overwrite", "--seed", "4"]) == 0


def test_a_symlink_inside_an_output_is_not_ours(tmp_path):
    out = tmp_path / "o"
    with atomic_dir(out) as tmp:
        mark_output_dir(tmp, "gap")
        (tmp / "gap.json").write_text("{}")
    assert is_own_output(out, "gap")
    (out / "link").symlink_to(tmp_path)
    assert not is_own_output(out, "gap") and unowned_entries(out) == ["link"]


def test_incremental_writes_into_an_output_are_recorded_and_resumable(tmp_path):
    out = tmp_path / "bench"
    claim_output_dir(out, "bench", resume=True)
    mark_output_dir(out, "bench")
    atomic_write_bytes(out / "runs" / "a" / "result.json", b"{}")
    atomic_write_bytes(out / "table_acc.md", b"| a |")
    assert claim_output_dir(out, "bench", resume=True) == out
    (out / "runs" / "a" / "mine.txt").write_text("x")
    with pytest.raises(OutputError, match="runs/a/mine.txt"):
        claim_output_dir(out, "bench", resume=True)


def test_a_nested_output_is_judged_by_its_own_ledger(tmp_path):
    out = tmp_path / "demo"
    mark_output_dir(out, "demo")
    with atomic_dir(out / "artifact") as tmp:
        mark_output_dir(tmp, "artifact")
        (tmp / "config.json").write_text("{}")
    assert unowned_entries(out) == []
    (out / "artifact" / "extra.txt").write_text("x")
    assert unowned_entries(out) == ["artifact/extra.txt"]


def test_an_output_of_an_older_version_without_a_ledger_is_refused_with_the_reason(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / ".clip-adapter-output.json").write_text(json.dumps({"kind": "toy-dataset"}))
    (out / "split.json").write_text("{}")
    with pytest.raises(OutputError, match="older version"):
        claim_output_dir(out, "toy-dataset", overwrite=True)
    assert (out / "split.json").read_text() == "{}"


def test_a_torn_ledger_line_is_ignored(tmp_path):
    out = tmp_path / "o"
    mark_output_dir(out, "bench")
    atomic_write_bytes(out / "a.txt", b"a")
    with open(out / LEDGER, "a") as handle:
        handle.write('{"path": "b.txt", "sha')  # a kill in the middle of a line
    (out / "b.txt").write_text("b")
    assert unowned_entries(out) == ["b.txt"]


def test_single_file_outputs_refuse_to_land_in_their_inputs(tmp_path):
    data = tmp_path / "data"
    (data / "red").mkdir(parents=True)
    config = tmp_path / "art" / "config.json"
    config.parent.mkdir()
    config.write_text("{}")
    with pytest.raises(OutputError, match="inside the input"):
        claim_output_file(data / "red" / "report.html", inputs=[data])
    with pytest.raises(OutputError, match="input"):
        claim_output_file(config, overwrite=True, inputs=[config])
    assert config.read_text() == "{}"


def test_a_file_written_beside_an_output_is_entered_in_its_ledger(tmp_path):
    out = tmp_path / "art"
    with atomic_dir(out) as tmp:
        mark_output_dir(tmp, "artifact")
        (tmp / "config.json").write_text("{}")
    atomic_write_bytes(out / "report.html", b"<html>")
    assert is_own_output(out, "artifact")
    entries = [json.loads(line)["path"] for line in (out / LEDGER).read_text().splitlines()]
    assert "report.html" in entries and os.path.isfile(out / "report.html")


def test_a_symlink_as_out_is_named_as_one(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(OutputError, match="is a symbolic link"):
        claim_output_dir(link, "artifact")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import write_image_folder

    root = tmp_path_factory.mktemp("own")
    data = write_image_folder(root / "photos")
    assert main(train_argv(data, root / "run")) == 0
    return data, root / "run"


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_predict_and_eval_refuse_an_out_inside_their_inputs(trained, command, capsys):
    data, run = trained
    tail = [str(data)] if command == "predict" else ["--data", str(data)]
    config = (run / "config.json").read_text()
    for target, words in ((data / "red" / "out.csv", "inside the input"), (run / "config.json", "input")):
        message = refused(capsys, [command, str(run), *tail, "--out", str(target), "--overwrite"])
        assert words in message
    assert (run / "config.json").read_text() == config and not (data / "red" / "out.csv").exists()


def test_a_proof_file_inside_an_output_does_not_make_a_folder_ours(tmp_path):
    # A kill can leave our proof file in a finished output; only a temporary's *name* plus its proof is proof.
    out = tmp_path / "o"
    with atomic_dir(out) as tmp:
        mark_output_dir(tmp, "gap")
        (tmp / "gap.json").write_text("{}")
    sub = out / "sub"
    sub.mkdir()
    proof = {"format": "clip-adapter-temporary", "target": "sub", "pid": 1, "host": host_tag(), "role": "dir"}
    (sub / ".clip-adapter-temp.json").write_text(json.dumps(proof))
    (sub / "thesis.tex").write_text("years of work")
    assert not is_own_output(out, "gap") and "sub/thesis.tex" in unowned_entries(out)
    (out / ".clip-adapter-temp.json").mkdir()  # a folder under a bookkeeping name is not bookkeeping
    assert ".clip-adapter-temp.json/" in unowned_entries(out)


def test_a_failed_read_in_the_writers_block_is_not_reported_as_a_failed_write(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_bytes((tmp_path / "missing-input").read_bytes())
    assert not (tmp_path / "out.txt").exists() and sorted(os.listdir(tmp_path)) == []


def test_outputs_reached_through_a_symlink_and_dotdot_are_still_recorded(tmp_path):
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "deep")
    out = tmp_path / "link" / ".." / "bench"  # on disk: real/bench
    mark_output_dir(out, "bench")
    atomic_write_bytes(out / "results_x.csv", b"a,b\n")
    assert claim_output_dir(tmp_path / "real" / "bench", "bench", resume=True) == tmp_path / "real" / "bench"
