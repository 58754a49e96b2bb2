"""Whatever reaches the command line from an input ends in one line and a distinct exit status.

The cause this guards: the CLI used to catch only the project's own error types, so an
OSError, ValueError or MemoryError from deep inside printed a traceback. Now every exception
is one line (the traceback behind --debug), and options are range-checked before any work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip_adapter.cli import main
from clip_adapter.metrics import top_k

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--precision", "fp32"]


def one_line(capsys, argv, code=2) -> str:
    capsys.readouterr()
    got = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert got == code, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


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


@pytest.fixture
def failing_command(monkeypatch):
    """Make `methods` raise the given exception, as a stand-in for any failure deep in a command."""
    import clip_adapter.cli.methods_cmd as methods_cmd

    def install(exc: BaseException) -> None:
        def boom(args):
            raise exc

        monkeypatch.setattr(methods_cmd, "main", boom)

    return install


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (
            OSError(27, "File too large", "/data/out/model.safetensors"),
            3,
            "File too large: /data/out/model.safetensors",
        ),
        (PermissionError(13, "Permission denied", "/root/x"), 3, "Permission denied: /root/x"),
        (MemoryError(), 4, "out of memory"),
        (ValueError("bad\nvalue"), 5, "internal error (ValueError: bad\\nvalue)"),
        (RuntimeError("CUDA error"), 5, "internal error (RuntimeError: CUDA error)"),
    ],
)
def test_any_exception_is_one_line_with_a_distinct_status(exc, code, text, failing_command, capsys):
    failing_command(exc)
    assert text in one_line(capsys, ["methods"], code)


def test_debug_shows_the_traceback(failing_command, capsys, monkeypatch):
    failing_command(ValueError("deep"))
    assert main(["--debug", "methods"]) == 5
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("CLIP_ADAPTER_DEBUG", "1")
    assert main(["methods"]) == 5
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [
        ["--seed", str(10**20)],
        ["--init-seed", str(10**20)],
        ["--aug-seed", "-1"],
        ["--batch-size", "0"],
        ["--views", "0"],
        ["--epochs", "0"],
        ["--shots", "-2"],
        ["--seed", "seven"],
    ],
)
def test_out_of_range_options_fail_before_any_work(extra, image_folder, tmp_path, capsys):
    message = one_line(capsys, train_argv(image_folder, tmp_path / "o", *extra))
    assert extra[0] in message
    cache = Path(os.environ["CLIP_ADAPTER_CACHE"])
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))


def test_bench_seed_and_shot_lists_are_range_checked(image_folder, tmp_path, capsys):
    assert "--seeds" in one_line(
        capsys, ["bench", "--dataset", f"x={image_folder}", *TINY, "--seeds", str(10**20), "--out", str(tmp_path / "b")]
    )
    assert "--shots" in one_line(
        capsys, ["bench", "--dataset", f"x={image_folder}", *TINY, "--shots", "-1", "--out", str(tmp_path / "b")]
    )


@pytest.fixture
def artifact(image_folder, tmp_path):
    out = tmp_path / "art"
    assert main(train_argv(image_folder, out)) == 0
    return out


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_batch_size_zero_is_refused_for_predict_and_eval(command, artifact, image_folder, capsys):
    tail = [str(image_folder / "red_square")] if command == "predict" else ["--data", str(image_folder)]
    assert "--batch-size" in one_line(capsys, [command, str(artifact), *tail, "--batch-size", "0"])


def test_a_file_name_with_a_newline_stays_one_line(artifact, tmp_path, capsys):
    message = one_line(capsys, ["predict", str(artifact), str(tmp_path / "evil\nname.jpg")])
    assert "evil\\nname.jpg" in message


def _non_utf8_image(folder: Path) -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    name = os.fsencode(folder) + b"/caf\xe9.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(os.fsdecode(name))
    return name


@pytest.mark.slow
def test_non_utf8_file_names_through_predict_on_a_strict_utf8_stdout(artifact, tmp_path):
    raw = _non_utf8_image(tmp_path / "odd")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import conftest; "
        "from clip_adapter.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "predict", str(artifact), str(tmp_path / "odd"), "--top-k", "1"],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert raw in proc.stdout  # the name as it is on disk, byte for byte
    out = tmp_path / "pred.csv"
    proc = subprocess.run(
        [sys.executable, "-c", script, "predict", str(artifact), str(tmp_path / "odd"), "--out", str(out)],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0 and raw in out.read_bytes()


def test_ties_are_broken_by_class_index():
    probs = torch.tensor([[0.2, 0.4, 0.4], [0.5, 0.25, 0.25]])
    values, indices = top_k(probs, 2)
    assert indices.tolist() == [[1, 2], [0, 1]] and values[0, 0] == values[0, 1]


def _named_folder(root: Path, names: list[str], per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            pixels[..., c % 3] = 255
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_class_names_the_toy_tokenizer_cannot_read_are_refused_for_prompt_methods(tmp_path, capsys):
    data = _named_folder(tmp_path / "pets", ["siamese", "pug", "red"])
    argv = ["train", "--data", str(data), "--shots", "2", "--views", "1"]
    message = one_line(capsys, [*argv, "--epochs", "2", "--out", str(tmp_path / "a")])
    assert "'siamese': siamese" in message and "'pug': pug" in message and "'red'" not in message.split("identical")[0]
    assert "identical prompts for 'pug' = 'siamese'" in message and "--allow-unknown-words" in message
    capsys.readouterr()
    assert main([*argv, "--epochs", "2", "--allow-unknown-words", "--out", str(tmp_path / "b")]) == 0
    assert "cannot read" in capsys.readouterr().err  # still reported, as a warning
    assert main([*argv, "--method", "linear-probe", "--out", str(tmp_path / "c")]) == 0  # no prompts: a warning only
