"""Output paths: nothing the user did not ask us to replace is ever deleted, and a kill loses nothing.

Each test names a way a user's files were lost before (an output folder holding a thesis, the
dataset itself as --out, a regular file as --out, a killed replacement) and checks the refusal or
the recovery, and that no work was done first (the feature cache stays empty).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clip_adapter.cli import main
from clip_adapter.core.errors import OutputError
from clip_adapter.core.files import TMP_MARK, atomic_dir, clean_stale_temporaries
from clip_adapter.core.outputs import MARKER, check_cache_dir, claim_output_dir, is_own_output, mark_output_dir
from clip_adapter.core.ownership import TEMP_PROOF

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


def refused(capsys, argv, code=2) -> str:
    capsys.readouterr()  # only this command's output
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def no_work_done(tmp_path: Path) -> bool:
    cache = Path(os.environ["CLIP_ADAPTER_CACHE"])
    return not cache.exists() or not any(cache.rglob("*.safetensors"))


def test_a_folder_holding_someone_elses_files_is_refused_before_any_work(image_folder, tmp_path, capsys):
    mywork = tmp_path / "mywork"
    mywork.mkdir()
    (mywork / "thesis.tex").write_text("five years")
    message = refused(capsys, train_argv(image_folder, mywork))
    assert "did not write" in message and "thesis.tex" in message
    assert (mywork / "thesis.tex").read_text() == "five years" and sorted(os.listdir(mywork)) == ["thesis.tex"]
    assert no_work_done(tmp_path)
    # --overwrite replaces only our own artifacts: the thesis stays.
    refused(capsys, train_argv(image_folder, mywork, "--overwrite"))
    assert (mywork / "thesis.tex").read_text() == "five years"


def test_the_dataset_itself_or_a_folder_inside_it_is_refused(image_folder, tmp_path, capsys):
    before = snapshot(image_folder)
    assert "is the input" in refused(capsys, train_argv(image_folder, image_folder))
    assert "inside the input" in refused(capsys, train_argv(image_folder, image_folder / "red_square" / "run"))
    assert "inside the input" in refused(
        capsys, train_argv(image_folder, tmp_path / "o", "--cache-dir", str(image_folder / "cache"))
    )
    assert snapshot(image_folder) == before and no_work_done(tmp_path)


def test_the_current_folder_is_refused_before_any_work(image_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = refused(capsys, train_argv(image_folder, "."))
    assert "contains the input" in message or "did not write" in message
    assert no_work_done(tmp_path) and image_folder.is_dir()


def test_an_existing_regular_file_is_refused_and_kept(image_folder, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert "not a folder" in refused(capsys, train_argv(image_folder, target))
    assert target.read_text() == "keep me" and not list(tmp_path.glob(f"*{TMP_MARK}*"))


def test_our_own_artifact_is_replaced_only_with_overwrite(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(image_folder, out)) == 0
    first = (out / "model.safetensors").read_bytes()
    assert "--overwrite" in refused(capsys, train_argv(image_folder, out, "--seed", "2"))
    assert (out / "model.safetensors").read_bytes() == first
    assert main(train_argv(image_folder, out, "--seed", "2", "--overwrite")) == 0
    assert json.loads((out / "result.json").read_text())["run"]["seed"] == 2
    assert not list(tmp_path.glob(f"*{TMP_MARK}*"))
    # A user's file added to the artifact makes it no longer only ours: refused even with --overwrite.
    (out / "my-notes.md").write_text("notes")
    assert "my-notes.md" in refused(capsys, train_argv(image_folder, out, "--overwrite"))
    assert (out / "my-notes.md").read_text() == "notes"


def test_toy_dataset_refuses_an_existing_folder_and_replaces_its_own(tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "photo.jpg").write_bytes(b"mine")
    argv = ["toy", "dataset", "--task", "shape", "--train", "1", "--val", "1", "--test", "1", "--out", str(out)]
    assert "did not write" in refused(capsys, argv)
    assert (out / "photo.jpg").read_bytes() == b"mine"
    fresh = tmp_path / "fresh"
    argv[-1] = str(fresh)
    assert main(argv) == 0 and (fresh / "split.json").is_file() and (fresh / MARKER).is_file()
    assert "--overwrite" in refused(capsys, argv)
    assert main([*argv, "--overwrite", "--seed", "3"]) == 0
    assert json.loads((fresh / "split.json").read_text())["meta"]["seed"] == 3


def test_bench_resumes_into_its_own_output_and_refuses_anything_else(image_folder, tmp_path, capsys):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "data.csv").write_text("mine")
    assert "did not write" in refused(capsys, ["bench", "--dataset", f"x={image_folder}", *TINY, "--out", str(out)])
    assert "inside the input" in refused(
        capsys, ["bench", "--dataset", f"x={image_folder}", *TINY, "--out", str(image_folder / "b")]
    )
    assert (out / "data.csv").read_text() == "mine"
    mark = tmp_path / "marked"
    claim_output_dir(mark, "bench", resume=True)
    mark_output_dir(mark, "bench")
    assert claim_output_dir(mark, "bench", resume=True) == mark
    (mark / "runs").mkdir()  # a folder we never wrote into proves nothing
    with pytest.raises(OutputError, match="runs/"):
        claim_output_dir(mark, "bench", resume=True)
    (mark / "runs").rmdir()
    with pytest.raises(OutputError, match="overwrite"):
        claim_output_dir(mark, "bench")


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_single_file_outputs_refuse_folders_and_existing_files(command, image_folder, tmp_path, capsys):
    art = tmp_path / "art"
    assert main(train_argv(image_folder, art)) == 0
    capsys.readouterr()
    tail = [str(image_folder / "red_square")] if command == "predict" else ["--data", str(image_folder)]
    folder = tmp_path / "existing"
    folder.mkdir()
    assert "is a folder" in refused(capsys, [command, str(art), *tail, "--out", str(folder)])
    existing = tmp_path / "old.txt"
    existing.write_text("keep")
    assert "--overwrite" in refused(capsys, [command, str(art), *tail, "--out", str(existing)])
    assert existing.read_text() == "keep"
    assert main([command, str(art), *tail, "--out", str(existing), "--overwrite"]) == 0
    assert existing.read_text() != "keep"


def test_cache_dir_that_is_a_file_is_one_line(image_folder, tmp_path, capsys):
    cache = tmp_path / "cache-file"
    cache.write_text("x")
    assert "is a file" in refused(capsys, train_argv(image_folder, tmp_path / "o", "--cache-dir", str(cache)))
    assert cache.read_text() == "x"


def test_read_only_empty_cache_dir_is_refused(tmp_path, monkeypatch):
    # Root ignores permission bits, so the access check is simulated.
    empty = tmp_path / "ro"
    empty.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match="read-only and empty") as refusal:
        check_cache_dir(empty)
    assert refusal.value.exit_code == 3  # the machine refused, as a failed write to a read-only cache says
    (empty / "shard").write_text("cached")
    assert check_cache_dir(empty) == empty  # a read-only shared cache still serves what it holds


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(image_folder, tmp_path):
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import conftest  # registers the tiny test model
        resource.setrlimit(resource.RLIMIT_FSIZE, (3_000, 3_000))
        from clip_adapter.cli import main
        sys.exit(main({train_argv(image_folder, tmp_path / "full")!r}))
    """)
    env = {**os.environ, "CLIP_ADAPTER_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("warning:")]
    assert proc.returncode == 3 and len(lines) == 1 and "File too large" in lines[0], proc.stderr
    assert not (tmp_path / "full").exists() and not list(tmp_path.glob(f"*{TMP_MARK}*"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _our_temporary(directory: Path, target: str, pid: int, role: str = "dir", host: str | None = None) -> Path:
    """A temporary as a killed writer of ours leaves it: the name and, inside, the proof written first."""
    from clip_adapter.core.files import host_tag

    host = host or host_tag()
    path = directory / f"{target}{TMP_MARK}{pid}@{host}-{'old' if role == 'old' else 'abc123'}"
    path.mkdir()
    proof = {"format": "clip-adapter-temporary", "target": target, "pid": pid, "host": host, "role": role}
    (path / TEMP_PROOF).write_text(json.dumps(proof))
    return path


def test_stale_temporaries_of_dead_writers_are_cleaned_and_live_ones_kept(tmp_path):
    dead, target = _dead_pid(), tmp_path / "art"
    stale = _our_temporary(tmp_path, "art", dead)
    (stale / "config.json").write_text("{}")
    live = _our_temporary(tmp_path, "art", os.getpid())
    user = tmp_path / "art.tmp-notes"  # not one of ours: no pid in the name
    user.write_text("mine")
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("new")
    assert not stale.exists() and live.exists() and user.read_text() == "mine" and (target / "f").read_text() == "new"


def test_temporaries_written_on_another_machine_are_never_judged_dead(tmp_path):
    # A shared cache on a cluster: a pid from another host says nothing about its writer here.
    from clip_adapter.core.files import host_tag, temp_prefix

    dead = _dead_pid()
    ours = _our_temporary(tmp_path, "shard", dead)
    theirs = _our_temporary(tmp_path, "shard", dead, host="0" * 8 if host_tag() != "0" * 8 else "1" * 8)
    assert temp_prefix(tmp_path / "shard").startswith(f"shard{TMP_MARK}{os.getpid()}@{host_tag()}-")
    assert clean_stale_temporaries(tmp_path) == 1
    assert not ours.exists() and theirs.is_dir()


def test_an_output_moved_aside_by_a_killed_writer_is_put_back(tmp_path):
    target = tmp_path / "art"
    aside = _our_temporary(tmp_path, "art", _dead_pid(), role="old")
    (aside / "config.json").write_text("old")
    assert clean_stale_temporaries(tmp_path) == 0
    assert (target / "config.json").read_text() == "old" and not aside.exists()
    assert not (target / TEMP_PROOF).exists()


KILL_LOOP = """
import json, sys
from pathlib import Path
from clip_adapter.core.files import atomic_dir
from clip_adapter.core.outputs import is_own_output, mark_output_dir
target = Path(sys.argv[1])
for i in range(100000):
    with atomic_dir(target, may_replace=lambda p: is_own_output(p, "artifact")) as tmp:
        mark_output_dir(tmp, "artifact")
        (tmp / "model.safetensors").write_bytes(b"w" * 4096)
        (tmp / "config.json").write_text(json.dumps({"format": "clip-adapter-artifact", "i": i}))
    if i == 0:
        print("ready", flush=True)
"""


@pytest.mark.slow
def test_a_kill_at_any_instant_leaves_the_old_or_the_new_artifact(tmp_path):
    target = tmp_path / "art"
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", KILL_LOOP, str(target)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)  # somewhere inside the replace loop
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert is_own_output(target, "artifact"), sorted(os.listdir(tmp_path))
        assert len((target / "model.safetensors").read_bytes()) == 4096
    clean_stale_temporaries(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["art"]


def test_outputs_respect_the_umask(image_folder, tmp_path):
    old = os.umask(0o022)
    try:
        assert main(train_argv(image_folder, tmp_path / "art")) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "art").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "art" / "model.safetensors").stat().st_mode) == 0o644
    shards = list(Path(os.environ["CLIP_ADAPTER_CACHE"]).rglob("*.safetensors"))
    assert shards and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in shards)


def test_is_own_output_recognises_only_complete_own_folders(tmp_path):
    art = tmp_path / "a"
    with atomic_dir(art) as tmp:
        mark_output_dir(tmp, "artifact")
        (tmp / "config.json").write_text(json.dumps({"format": "clip-adapter-artifact"}))
    assert is_own_output(art, "artifact") and not is_own_output(art, "bench")
    (art / "config.json").write_text(json.dumps({"format": "something-else"}))  # changed since we wrote it
    assert not is_own_output(art, "artifact")
    legacy = tmp_path / "legacy"  # a look-alike: the right names, no ledger of ours
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps({"format": "clip-adapter-artifact"}))
    assert not is_own_output(legacy, "artifact")


def test_an_existing_empty_folder_receives_the_output(tmp_path):
    from clip_adapter.core.files import atomic_dir

    target = tmp_path / "out"
    target.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "result.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == [".clip-adapter-files.jsonl", "result.json"]


def test_a_folder_filled_while_writing_is_never_replaced(tmp_path):
    from clip_adapter.core.files import atomic_dir

    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(OutputError):
        with atomic_dir(target) as tmp:
            (tmp / "result.json").write_text("{}")
            (target / "notes.md").write_text("the user's")  # appears after the claim
    assert sorted(p.name for p in target.iterdir()) == ["notes.md"]
