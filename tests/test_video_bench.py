"""`video base-to-novel`: the base-to-novel protocol in the library (frozen and trained rows, table, plot)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("av")

from clip_adapter.cli import main as cli_main  # noqa: E402
from clip_adapter.core.errors import ConfigError  # noqa: E402
from clip_adapter.toyworld.model import ToyClip, ToyClipConfig  # noqa: E402
from clip_adapter.toyworld.pretrain import write_toy_checkpoint  # noqa: E402
from clip_adapter.toyworld.tokenizer import ToyTokenizer  # noqa: E402
from clip_adapter.video.bench import base_novel_split, harmonic_mean, summarise  # noqa: E402
from clip_adapter.video.dataset import load_video_dataset  # noqa: E402
from clip_adapter.video.toyclips import BASE, NOVEL, write_toy_videos  # noqa: E402

SMALL = {"frames": 4, "size": 32}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """The full toy world, and a base-only and a novel-only copy holding the same test clips (same seed)."""
    root = tmp_path_factory.mktemp("b2n")
    torch.manual_seed(0)
    model = ToyClip(ToyClipConfig(image_tower="vit", patch_size=16, vit_width=64, vit_layers=2)).eval()
    write_toy_checkpoint(model, ToyTokenizer(), root / "vit", {"command": "test"})
    return {
        "vit": root / "vit",
        "cache": root / "cache",
        "full": write_toy_videos(root / "full", train=2, val=1, test=1, seed=0, **SMALL),
        "base": write_toy_videos(root / "base", train=0, val=0, test=1, seed=0, actions="base", **SMALL),
        "novel": write_toy_videos(root / "novel", train=0, val=0, test=1, seed=0, actions="novel", **SMALL),
    }


def _args(world, out: Path, *extra: str) -> list[str]:
    return [
        "video",
        "base-to-novel",
        "--split-dir",
        str(world["full"]),
        "--out",
        str(out),
        "--backbone",
        "toy",
        "--pretrained",
        str(world["vit"]),
        "--precision",
        "fp32",
        "--frames",
        "4",
        "--cache-dir",
        str(world["cache"]),
        *extra,
    ]


@pytest.fixture(scope="module")
def bench(world, tmp_path_factory) -> tuple[Path, str]:
    """One run: both frozen rows and the STDD-style row, one seed, 2 steps; its folder and what it printed."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("run") / "b2n"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = cli_main(
            _args(
                world,
                out,
                "--variants",
                "frozen-frame-mean",
                "frozen-prompt-match",
                "stdd",
                "--seeds",
                "1",
                "--steps",
                "2",
                "--shots",
                "2",
                "--batch-clips",
                "2",
                "--val-every",
                "1",
            )
        )
    assert rc == 0
    return out, printed.getvalue()


def test_writes_results_table_and_plot_with_the_protocol_and_config(bench):
    out, printed = bench
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "video-base-to-novel"
    assert results["base"] == list(BASE) and results["novel"] == list(NOVEL)
    assert results["config"]["seeds"] == [1] and results["config"]["steps"] == 2 and results["config"]["shots"] == 2
    assert list(results["table"]) == ["frozen-frame-mean", "frozen-prompt-match", "stdd"]
    table = (out / "table.md").read_text()
    assert table.splitlines()[0] == "| row | base | novel | HM | reversed pairs |" and len(table.splitlines()) == 5
    assert table.strip() in printed  # the table printed is the table written
    assert "| STDD-style |" in table and "| frame averaging (frozen) |" in table
    assert (out / "base_to_novel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "runs" / "stdd-seed1" / "stdd.json").is_file()  # the trained row went through `video train`'s trainer
    assert json.loads((out / "runs" / "stdd-seed1" / "result.json").read_text())["seen_classes"] == list(BASE)


def test_hm_is_the_harmonic_mean_of_the_reported_base_and_novel(bench):
    results = json.loads((bench[0] / "results.json").read_text())
    for name, runs in results["rows"].items():
        for run in runs:
            a, b = run["base"], run["novel"]
            assert run["hm"] == pytest.approx(2 * a * b / (a + b) if a + b else 0.0), name
            assert run["pairs"] is not None and 0.0 <= run["pairs"] <= 1.0  # the toy meta lists pairs
        assert results["table"][name]["hm"]["mean"] == pytest.approx(runs[0]["hm"])
        assert results["table"][name]["hm"]["std"] == 0.0  # one seed / one frozen evaluation


@pytest.mark.parametrize(
    "variant, scorer, described",
    [("frozen-frame-mean", "frame-mean", False), ("frozen-prompt-match", "prompt-match", True)],
)
def test_frozen_rows_equal_video_zero_shot_on_the_same_classes(bench, world, tmp_path, variant, scorer, described):
    row = json.loads((bench[0] / "results.json").read_text())["rows"][variant][0]
    wins = clips = 0.0
    for side in ("base", "novel"):
        zs = tmp_path / f"zs-{side}"
        text = ["--descriptions", str(world["full"] / "descriptions.json")] if described else []
        assert (
            cli_main(
                [
                    "video",
                    "zero-shot",
                    "--split-dir",
                    str(world[side]),
                    "--out",
                    str(zs),
                    "--backbone",
                    "toy",
                    "--pretrained",
                    str(world["vit"]),
                    "--precision",
                    "fp32",
                    "--frames",
                    "4",
                    "--scorer",
                    scorer,
                    "--cache-dir",
                    str(world["cache"]),
                    *text,
                ]
            )
            == 0
        )
        metrics = json.loads((zs / "metrics.json").read_text())["metrics"]
        assert row[side] == metrics["top1"], side
        pairs = metrics["time_reversed_pairs"]
        wins, clips = wins + pairs["accuracy"] * pairs["num_clips"], clips + pairs["num_clips"]
    assert row["pairs"] == pytest.approx(wins / clips)


def _last_error(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--base", "appearing,flying"], "--base class(es) not in the dataset"),
        (["--base", "appearing,growing", "--novel", "growing,shrinking"], "both base and novel: 'growing'"),
        (["--base", ",".join(BASE + NOVEL)], "no novel classes"),
        (["--variants", "frozen-frame-mean", "--seeds", "1", "1"], "seeds must be distinct"),
        (["--unfreeze", "text"], "unfreeze must be image or image-last-N, got 'text'"),
    ],
)
def test_bad_inputs_are_one_line_and_write_nothing(world, tmp_path, capsys, extra, message):
    out = tmp_path / "o"
    assert cli_main(_args(world, out, "--variants", "frozen-frame-mean", *extra)) == 2
    err = _last_error(capsys)
    assert len(err) == 1 and message in err[0], err
    assert not out.exists() or not any(out.iterdir())


def test_an_out_folder_holding_user_files_is_refused_in_one_line_and_left_alone(world, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    assert cli_main(_args(world, out, "--variants", "frozen-frame-mean")) == 2
    err = _last_error(capsys)
    assert len(err) == 1 and "thesis.tex" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_an_earlier_output_needs_overwrite(world, tmp_path, capsys):
    out = tmp_path / "again"
    assert cli_main(_args(world, out, "--variants", "frozen-frame-mean")) == 0
    capsys.readouterr()
    assert (
        cli_main(_args(world, out, "--variants", "frozen-frame-mean")) == 2 and "--overwrite" in capsys.readouterr().err
    )
    assert cli_main(_args(world, out, "--variants", "frozen-frame-mean", "--overwrite")) == 0


def test_split_defaults_to_the_meta_and_novel_to_the_rest(world):
    dataset = load_video_dataset(None, world["full"])
    assert base_novel_split(dataset) == (list(BASE), list(NOVEL))
    assert base_novel_split(dataset, ["growing"])[1] == [n for n in dataset.classnames if n != "growing"]
    with pytest.raises(ConfigError, match="named twice|names a class twice"):
        base_novel_split(dataset, ["growing", "growing"])
    assert harmonic_mean(0.6, 0.3) == pytest.approx(0.4)
    assert summarise([{"hm": 0.5, "pairs": None}, {"hm": 0.7, "pairs": None}]) == {
        "hm": {"mean": pytest.approx(0.6), "std": pytest.approx(0.1)},
        "pairs": {"mean": None, "std": None},
    }
