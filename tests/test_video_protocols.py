"""Video protocols: toy subsets of actions, zero-shot cross-dataset, `video train`'s validation flags, per-batch
decoding.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")

import clip_adapter.video.train as video_train  # noqa: E402
from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.cli import main as cli_main  # noqa: E402
from clip_adapter.core.errors import ConfigError, DataError  # noqa: E402
from clip_adapter.data.dataset import Sample  # noqa: E402
from clip_adapter.finetune.trainable import TrainableClip  # noqa: E402
from clip_adapter.finetune.trainer import TrainerConfig  # noqa: E402
from clip_adapter.toyworld.model import ToyClip, ToyClipConfig  # noqa: E402
from clip_adapter.toyworld.pretrain import write_toy_checkpoint  # noqa: E402
from clip_adapter.toyworld.tokenizer import ToyTokenizer  # noqa: E402
from clip_adapter.video.clipencode import frames_to_pixels  # noqa: E402
from clip_adapter.video.cross import STD_NOTE, class_overlap, load_eval_sets, summarise, training_classes  # noqa: E402
from clip_adapter.video.dataset import load_video_dataset  # noqa: E402
from clip_adapter.video.decode import BadVideo, decode_frames, probe, random_segment_indices, segment_indices  # noqa: E402
from clip_adapter.video.stdd import SpaceTimeConfig, install_space_time, remove_space_time  # noqa: E402
from clip_adapter.video.toyclips import BASE, NOVEL, encode_mp4, render_clip, select_actions, write_toy_videos  # noqa: E402  # noqa: E402
from clip_adapter.video.train import ClipSet, VideoTrainConfig, read_stdd, train_video, validation_logits  # noqa: E402
from clip_adapter.video.zeroshot import VideoZeroShotConfig, score_videos, text_side  # noqa: E402
from conftest import TINY  # noqa: E402

SMALL = {"frames": 8, "size": 32}


@pytest.fixture(scope="module")
def toy_vit_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = ToyClip(ToyClipConfig(image_tower="vit", patch_size=16, vit_width=64, vit_layers=2)).eval()
    out = tmp_path_factory.mktemp("vit")
    write_toy_checkpoint(model, ToyTokenizer(), out, {"command": "test"})
    return out


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    """A source set of the base actions and two target 'splits' of the novel actions (different seeds)."""
    root = tmp_path_factory.mktemp("worlds")
    return {
        "source": write_toy_videos(root / "source", 2, 1, 0, seed=0, actions="base", **SMALL),
        "t1": write_toy_videos(root / "t1", 0, 0, 1, seed=1, actions="novel", **SMALL),
        "t2": write_toy_videos(root / "t2", 0, 0, 1, seed=2, actions="novel", **SMALL),
        "mixed": write_toy_videos(root / "mixed", 0, 0, 1, seed=3, actions="growing,moving up", **SMALL),
    }


def _last_error(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]


# --- toy datasets over a subset of the actions ----------------------------------------------------------------


def test_toy_subset_holds_only_its_actions_and_the_same_clips_as_the_full_set(worlds, tmp_path):
    t1 = worlds["t1"]
    assert json.loads((t1 / "classmap.json").read_text()) == {str(i): a for i, a in enumerate(NOVEL)}
    meta = json.loads((t1 / "meta.json").read_text())
    assert meta["base"] == [] and meta["novel"] == list(NOVEL) and sorted(meta["actions"]) == list(NOVEL)
    assert meta["time_reversed_pairs"] == [
        ["moving down", "moving up"],
        ["rotating clockwise", "rotating counterclockwise"],
    ]
    assert sorted(json.loads((t1 / "descriptions.json").read_text())) == list(NOVEL)
    rows = (t1 / "test.csv").read_text().splitlines()
    assert rows[1] == "videos/moving_down/test_0000.mp4,1"  # labels index the subset
    full = write_toy_videos(tmp_path / "full", 0, 0, 1, seed=1, **SMALL)
    same = "videos/moving_down/test_0000.mp4"
    assert (full / same).read_bytes() == (t1 / same).read_bytes()  # an action's clip does not depend on the subset
    other_seed = worlds["t2"] / same
    assert other_seed.read_bytes() != (t1 / same).read_bytes()
    assert select_actions("base") == BASE and select_actions(None) == tuple(sorted(BASE + NOVEL))


def test_shape_action_classes_split_novel_combinations_of_trained_shapes_and_actions(tmp_path, capsys):
    from clip_adapter.video.toyclips import render_clip_object
    from clip_adapter.video.toycombos import ACTION_GROUP_A, SHAPE_GROUPS, parse_combo

    out = tmp_path / "combos"
    assert (
        cli_main(
            [
                "video",
                "toy-dataset",
                "--classes",
                "shape-actions",
                "--out",
                str(out),
                "--train",
                "0",
                "--val",
                "0",
                "--test",
                "1",
                "--frames",
                "4",
                "--size",
                "32",
            ]
        )
        == 0
    )
    meta = json.loads((out / "meta.json").read_text())
    names = list(json.loads((out / "classmap.json").read_text()).values())
    base, novel = set(meta["base"]), set(meta["novel"])
    assert len(names) == 44 and base | novel == set(names) and not base & novel and len(base) == len(novel) == 22
    trained = [parse_combo(n) for n in base]
    assert {s for s, _ in trained} == {s for g in SHAPE_GROUPS for s in g}  # every shape is trained on ...
    assert {a for _, a in trained} == set(BASE + NOVEL)  # ... and every action, but no novel combination
    for a, b in meta["time_reversed_pairs"]:  # a pair never straddles the split
        assert (a in base) == (b in base) and parse_combo(a)[0] == parse_combo(b)[0]
    assert len(meta["time_reversed_pairs"]) == 20 and meta["templates"] == ["a photo of a {}."]
    assert sorted(json.loads((out / "descriptions.json").read_text())) == sorted(names)
    assert (out / "videos" / "triangle_moving_left" / "test_0000.mp4").is_file()
    shape = SHAPE_GROUPS[1][0]
    assert render_clip_object(ACTION_GROUP_A[0], np.random.default_rng(0), 4, 32, shape)[1].shape == shape
    dataset = load_video_dataset(None, out)
    assert dataset.meta["base"] == meta["base"] and dataset.templates == ("a photo of a {}.",)
    capsys.readouterr()
    refused = tmp_path / "both"
    assert (
        cli_main(["video", "toy-dataset", "--classes", "shape-actions", "--actions", "base", "--out", str(refused)])
        == 2
    )
    err = _last_error(capsys)
    assert len(err) == 1 and "--classes shape-actions" in err[0] and not refused.exists()


@pytest.mark.parametrize(
    "actions, message",
    [
        ("moving up,flying", "'flying'"),
        ("growing", "at least two"),
        ("growing,growing", "named twice in --actions: growing"),
    ],
)
def test_bad_toy_actions_are_one_line_and_write_nothing(tmp_path, capsys, actions, message):
    out = tmp_path / "x"
    assert (
        cli_main(
            [
                "video",
                "toy-dataset",
                "--out",
                str(out),
                "--actions",
                actions,
                "--train",
                "0",
                "--val",
                "0",
                "--test",
                "1",
                "--frames",
                "8",
                "--size",
                "32",
            ]
        )
        == 2
    )
    err = _last_error(capsys)
    assert len(err) == 1 and message in err[0] and "--actions" in err[0]
    assert not out.exists()
    with pytest.raises(ConfigError, match=message):
        select_actions(actions)


# --- zero-shot cross-dataset ------------------------------------------------------------------------------------


def _cross(worlds, out: Path, *extra: str, evals=("t1", "t2")) -> list[str]:
    return [
        "video",
        "cross-dataset",
        "--eval-split-dir",
        *[str(worlds[e]) for e in evals],
        "--out",
        str(out),
        "--frames",
        "4",
        "--precision",
        "fp32",
        *extra,
    ]


def test_cross_dataset_reports_each_split_as_zero_shot_does_and_their_mean_std(
    worlds, toy_vit_checkpoint, tmp_path, capsys
):
    out = tmp_path / "cross"
    backbone = [
        "--backbone",
        "toy",
        "--pretrained",
        str(toy_vit_checkpoint),
        "--scorer",
        "prompt-match",
        "--descriptions",
        str(worlds["t1"] / "descriptions.json"),
    ]
    assert cli_main(_cross(worlds, out, "--train-split-dir", str(worlds["source"]), *backbone)) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 1 and table[0].startswith("top-1 % |") and "reversed pairs" in table[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["name"] for s in metrics["splits"]] == [str(worlds["t1"]), str(worlds["t2"])]
    assert (
        metrics["train_classes"] == list(BASE)
        and metrics["allow_overlap"] is False
        and metrics["overlap_checked"] is True
    )
    assert metrics["std"] == STD_NOTE  # t1 and t2 sit in one folder: one dataset, one summary
    assert metrics["summary_by_dataset"] == {worlds["t1"].parent.name: metrics["summary"]}
    for split, name in zip(metrics["splits"], ("t1", "t2")):
        zs = tmp_path / f"zs-{name}"
        assert (
            cli_main(
                [
                    "video",
                    "zero-shot",
                    "--split-dir",
                    str(worlds[name]),
                    "--out",
                    str(zs),
                    "--frames",
                    "4",
                    "--precision",
                    "fp32",
                    *backbone,
                ]
            )
            == 0
        )  # the same evaluator: the same numbers
        single = json.loads((zs / "metrics.json").read_text())["metrics"]
        assert split["num_clips"] == 5 and split["num_classes"] == 5
        assert (split["top1"], split["top5"]) == (single["top1"], single["top5"])
        assert split["time_reversed_pairs"] == single["time_reversed_pairs"]["accuracy"]
    top1 = [s["top1"] for s in metrics["splits"]]
    assert metrics["summary"]["top1"]["mean"] == pytest.approx(statistics.fmean(top1))
    assert metrics["summary"]["top1"]["std"] == pytest.approx(statistics.pstdev(top1))
    csv_rows = (out / "predictions.csv").read_text().splitlines()
    assert csv_rows[0] == "split,path,label,predicted" and len(csv_rows) == 11
    capsys.readouterr()
    assert cli_main(_cross(worlds, out, *backbone)) == 2 and "--overwrite" in capsys.readouterr().err
    assert cli_main(_cross(worlds, out, "--overwrite", *backbone)) == 0  # our own output may be replaced


def test_cross_dataset_refuses_overlap_in_one_line_unless_allowed(worlds, toy_vit_checkpoint, tmp_path, capsys):
    bb = ["--backbone", "toy", "--pretrained", str(toy_vit_checkpoint)]
    out = tmp_path / "c"
    args = _cross(worlds, out, "--train-split-dir", str(worlds["source"]), *bb, evals=("t1", "mixed"))
    assert cli_main(args) == 2
    err = _last_error(capsys)
    assert len(err) == 1 and str(worlds["mixed"]) in err[0] and "growing" in err[0] and "moving up" not in err[0]
    assert not out.exists() or not any(out.iterdir())
    named = _cross(worlds, out, "--train-split-dir", str(worlds["source"]), *bb, "--allow-overlap", evals=())
    named[3:3] = [f"novel={worlds['t1']}", f"mixed={worlds['mixed']}"]  # NAME=DIR: the dataset each split belongs to
    assert cli_main(named) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["allow_overlap"] and metrics["splits"][1]["overlap_with_training"] == ["growing"]
    assert [s["name"] for s in metrics["splits"]] == [str(worlds["t1"]), str(worlds["mixed"])]
    assert set(metrics["summary_by_dataset"]) == {"novel", "mixed"} and metrics["summary"] is None


def test_cross_dataset_reads_the_seen_actions_of_a_trained_checkpoint(worlds, toy_vit_checkpoint, tmp_path, capsys):
    trained = tmp_path / "stdd"
    assert (
        cli_main(
            [
                "video",
                "train",
                "--split-dir",
                str(worlds["source"]),
                "--out",
                str(trained),
                "--steps",
                "1",
                "--frames",
                "4",
                "--batch-clips",
                "2",
                "--shots",
                "1",
                "--precision",
                "fp32",
                "--train-precision",
                "fp32",
                "--pretrained",
                str(toy_vit_checkpoint),
            ]
        )
        == 0
    )
    capsys.readouterr()
    args = _cross(worlds, tmp_path / "c", "--backbone", "toy", "--pretrained", str(trained), evals=("t1", "mixed"))
    assert cli_main(args) == 2  # no --train-split-dir: the checkpoint's stdd.json names its seen actions
    assert "growing" in _last_error(capsys)[0]
    assert cli_main(_cross(worlds, tmp_path / "d", "--backbone", "toy", "--pretrained", str(trained))) == 0
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert metrics["train_classes"] == list(BASE) and metrics["splits"][0]["extraction"]["frames_cached"] == 0
    assert metrics["config"]["scorer"] == "frame-mean" and metrics["overlap_checked"] is True  # as stdd.json records
    assert (
        cli_main(
            _cross(worlds, tmp_path / "e", "--backbone", "toy", "--pretrained", str(trained), "--scorer", "embed-mean")
        )
        == 0
    )
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["config"]["scorer"] == "embed-mean"  # unless told


def test_bad_cross_dataset_inputs_are_one_line(worlds, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(worlds["t1"], target_is_directory=True)
    cases = [
        (["--eval-split-dir", str(tmp_path / "nope")], "evaluation split folder not found"),
        (["--eval-data", str(tmp_path / "nope")], "evaluation video folder not found"),
        (["--eval-split-dir", str(worlds["source"]), "--split", "test"], "has no test clips (it has: train, val)"),
        (["--eval-split-dir", str(worlds["t1"]), str(worlds["t1"])], "given twice"),
        (
            ["--eval-split-dir", str(worlds["t1"]), f"{worlds['t1'].parent}/./t1"],
            "given twice",
        ),  # one folder, two spellings
        (["--eval-split-dir", str(worlds["t1"]), "--eval-data", str(link)], "given twice"),
        (
            ["--eval-split-dir", str(worlds["t1"]), "--train-split-dir", str(tmp_path / "gone")],
            "training split folder not found",
        ),
        (
            [
                "--eval-split-dir",
                str(worlds["t1"]),
                "--train-split-dir",
                str(worlds["source"]),
                "--train-classmap",
                "/nope",
            ],
            "give only one of --train-split-dir, --train-classmap:",
        ),  # the class map would win; the folder would be ignored
        (
            [
                "--eval-split-dir",
                str(worlds["t1"]),
                "--train-data",
                str(worlds["source"] / "videos"),
                "--train-classmap",
                "/nope",
            ],
            "give only one of --train-data, --train-classmap:",
        ),
        (
            ["--eval-data", str(worlds["t1"] / "videos"), "--eval-classmap", str(worlds["t1"] / "classmap.json")],
            "--eval-classmap and --video-root apply to --eval-split-dir folders",
        ),
        (
            ["--eval-data", str(worlds["t1"] / "videos"), "--video-root", str(worlds["t1"])],
            "apply to --eval-split-dir folders",
        ),
        ([], "give the evaluation splits"),
        (
            ["--eval-split-dir", str(worlds["t1"]), "--descriptions", str(worlds["source"] / "descriptions.json")],
            f"evaluation split {worlds['t1']}: description file has no clauses for class 'changing color'",
        ),
    ]
    for extra, message in cases:
        out = tmp_path / "o"
        assert cli_main(["video", "cross-dataset", "--out", str(out), "--backbone", "toy", *extra]) == 2, message
        err = _last_error(capsys)
        assert len(err) == 1 and message in err[0], (message, err)
    with pytest.raises(DataError, match="give the evaluation splits"):
        load_eval_sets()
    assert summarise([{"top1": 0.5, "top5": None}, {"top1": 1.0, "top5": None}]) == {
        "top1": {"mean": 0.75, "std": 0.25, "splits": 2}
    }


def test_cross_dataset_on_a_random_weight_open_clip_vit(worlds, tmp_path, capsys):
    out = tmp_path / "oc"
    folder = worlds["t2"] / "videos"  # a folder per class, no test/ inside: every clip, as `video zero-shot` takes it
    assert (
        cli_main(
            _cross(
                worlds,
                out,
                "--eval-data",
                str(folder),
                "--backbone",
                TINY,
                "--pretrained",
                "none",
                "--stdd",
                "on",
                "--views",
                "2",
                evals=("t1",),
            )
        )
        == 0
    )
    table = capsys.readouterr().out.strip()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["name"] for s in metrics["splits"]] == [str(worlds["t1"]), str(folder)]
    assert [s["split"] for s in metrics["splits"]] == ["test", "all"]
    assert [s["num_clips"] for s in metrics["splits"]] == [5, 5] and metrics["config"]["views"] == 2
    assert metrics["config"]["scorer"] == "frame-mean"  # no stdd.json: the plain default
    # Two datasets (the folders holding them differ): each its own summary, no mean across them.
    worlds_name = worlds["t1"].parent.name
    assert [s["dataset"] for s in metrics["splits"]] == [worlds_name, "t2"] and metrics["summary"] is None
    by = metrics["summary_by_dataset"]
    assert set(by) == {worlds_name, "t2"} and by["t2"]["top1"] == {
        "mean": metrics["splits"][1]["top1"],
        "std": 0.0,
        "splits": 1,
    }
    assert f"{worlds_name} mean " in table and "t2 mean " in table and " | mean " not in table
    assert metrics["splits"][0]["extraction"]["frames_cached"] == 0


# --- `video train`: per-batch decoding, and the validation scorer/views/batch size -----------------------------------


def _old_pixels(path: Path, backbone) -> torch.Tensor:
    """What the first ClipSet held: every frame decoded and preprocessed up front."""
    decoded = decode_frames(path, range(probe(path).num_frames))
    return frames_to_pixels([decoded[i] for i in sorted(decoded)], backbone)


def test_clipset_decodes_per_batch_the_pixels_the_old_path_held(worlds):
    backbone = create_backbone("toy", precision="fp32")
    dataset = load_video_dataset(None, worlds["source"])
    samples = dataset.split("train")[:4]
    old = [_old_pixels(s.path, backbone) for s in samples]
    one_clip = 8 * 32 * 32 * 3  # uint8 bytes of one toy clip: the budget below holds two of the four
    for hold in (0, 2 * one_clip, 1 << 30):  # decoded per batch / partly held / all held
        clips = ClipSet(samples, backbone, {i: i for i in range(dataset.num_classes)}, hold_bytes=hold)
        which = [2, 0, 3]
        got, labels = clips.batch(which, 5, np.random.default_rng([7, 3]))
        rng = np.random.default_rng([7, 3])  # the same draws, in the same order, as the old path made
        want = torch.cat([old[i][random_segment_indices(old[i].shape[0], 5, rng)] for i in which])
        assert torch.equal(got, want) and labels.tolist() == [samples[i].label for i in which]
        views, _ = clips.batch([1], 4, None, views=2)
        n = old[1].shape[0]
        assert torch.equal(views, old[1][segment_indices(n, 4, 0, 2) + segment_indices(n, 4, 1, 2)])
        # What is held: uint8 frames only, within the budget, never float pixels.
        assert not any(isinstance(v, torch.Tensor) for v in vars(clips).values())
        assert all(f.dtype == np.uint8 for frames in clips.held.values() for f in frames) and clips.held_bytes <= hold
        assert len(clips.held) == {0: 0, 2 * one_clip: 2, 1 << 30: 4}[hold]


@pytest.mark.parametrize("scorer, views", [("embed-mean", 1), ("frame-mean", 2), ("prompt-match", 2)])
def test_validation_scores_what_zero_shot_reports_for_the_scorer_and_views(worlds, toy_vit_checkpoint, scorer, views):
    backbone = create_backbone("toy", pretrained=str(toy_vit_checkpoint), precision="fp32")
    dataset = load_video_dataset(None, worlds["source"])
    samples = dataset.split("val")
    prompts, mask, _ = text_side(
        backbone, dataset.classnames, dataset.templates, worlds["source"] / "descriptions.json"
    )
    view = TrainableClip(backbone, unfreeze="image", precision="fp32")
    space_time = install_space_time(view.model.visual, SpaceTimeConfig())
    try:
        clips = ClipSet(samples, backbone, {i: i for i in range(dataset.num_classes)})
        calls = []
        encode = view.encode_images
        view.encode_images = lambda pixels: calls.append(pixels.shape[0]) or encode(pixels)
        logits = {}
        for batch_size in (4 * views, 64):
            cfg = VideoTrainConfig(frames=4, scorer=scorer, views=views, batch_size=batch_size)
            with torch.no_grad():
                logits[batch_size] = validation_logits(view, space_time, clips, prompts, mask, cfg)
        # batch 4·views frames = one clip per encoder call; 64 frames = every clip (6 clips) at once
        assert calls == [4 * views] * len(samples) + [4 * views * len(samples)]
        calls.clear()
        encode_bb = backbone.encode_images
        backbone.encode_images = lambda pixels: calls.append(pixels.shape[0]) or encode_bb(pixels)
        want, kept, _ = score_videos(
            backbone,
            [s.path for s in samples],
            prompts,
            mask,
            VideoZeroShotConfig(frames=4, views=views, scorer=scorer, batch_size=8 * views),
        )
        # zero-shot's --batch-size counts every view's frames, as validation's does: 8·views frames = two whole clips
        assert calls == [8 * views] * (len(samples) // 2)
    finally:
        remove_space_time(view.model.visual)
    assert kept == list(range(len(samples)))
    assert torch.allclose(logits[64] * backbone.logit_scale, want, atol=1e-4)
    assert torch.allclose(logits[4 * views], logits[64], atol=1e-5)


@pytest.mark.slow
def test_video_train_uses_its_scorer_views_and_batch_size_and_stays_deterministic(
    worlds, toy_vit_checkpoint, tmp_path, capsys, monkeypatch
):
    def run(out: Path, *extra: str) -> dict:
        assert (
            cli_main(
                [
                    "video",
                    "train",
                    "--split-dir",
                    str(worlds["source"]),
                    "--out",
                    str(out),
                    "--steps",
                    "2",
                    "--val-every",
                    "1",
                    "--frames",
                    "4",
                    "--batch-clips",
                    "3",
                    "--shots",
                    "2",
                    "--precision",
                    "fp32",
                    "--train-precision",
                    "fp32",
                    "--pretrained",
                    str(toy_vit_checkpoint),
                    *extra,
                ]
            )
            == 0
        )
        return json.loads((out / "result.json").read_text())

    a = run(
        tmp_path / "a",
        "--scorer",
        "prompt-match",
        "--views",
        "2",
        "--batch-size",
        "8",
        "--descriptions",
        str(worlds["source"] / "descriptions.json"),
    )
    assert {k: a["train_config"][k] for k in ("scorer", "views", "batch_size")} == {
        "scorer": "prompt-match",
        "views": 2,
        "batch_size": 8,
    }
    b = run(
        tmp_path / "b",
        "--scorer",
        "prompt-match",
        "--views",
        "2",
        "--batch-size",
        "8",
        "--descriptions",
        str(worlds["source"] / "descriptions.json"),
    )
    # Same seed, same run: every loss, gradient norm and validation score.
    log = (tmp_path / "a" / "video_train_log.csv").read_text()
    assert log == (tmp_path / "b" / "video_train_log.csv").read_text() and log.count("\n") == 6
    assert {k: v for k, v in a["result"].items() if k != "wall_time_s"} == {
        k: v for k, v in b["result"].items() if k != "wall_time_s"
    }
    # The same run through the API with a budget of 0 (nothing held, every batch decoded from the files): the same log.
    made = []

    class Spy(ClipSet):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(video_train, "ClipSet", Spy)
    backbone = create_backbone("toy", pretrained=str(toy_vit_checkpoint), precision="fp32")
    dataset = load_video_dataset(None, worlds["source"])
    prompts, mask, _ = text_side(backbone, list(BASE), dataset.templates, worlds["source"] / "descriptions.json")
    cfg = VideoTrainConfig(
        frames=4, batch_clips=3, shots=2, precision="fp32", scorer="prompt-match", views=2, batch_size=8, hold_mb=0
    )
    trainer = TrainerConfig(steps=2, lr=1e-4, warmup_steps=0, val_every=1, seed=1)
    train_video(backbone, dataset, cfg, SpaceTimeConfig(), trainer, tmp_path / "streamed", prompts, mask)
    assert len(made) == 2 and all(len(c) > 0 and not c.held and c.held_bytes == 0 for c in made)
    assert (tmp_path / "streamed" / "video_train_log.csv").read_text() == log
    default = run(tmp_path / "c")  # the official STDD score: frame-averaged logits without descriptions ...
    assert default["train_config"]["scorer"] == "frame-mean" and default["train_config"]["views"] == 1
    described = run(tmp_path / "d", "--descriptions", str(worlds["source"] / "descriptions.json"))
    assert described["train_config"]["scorer"] == "prompt-match"  # ... prompt-level matching with them
    capsys.readouterr()  # scoring it without its descriptions runs, and says so in one line
    assert (
        cli_main(
            [
                "video",
                "zero-shot",
                "--split-dir",
                str(worlds["source"]),
                "--out",
                str(tmp_path / "zs"),
                "--frames",
                "4",
                "--precision",
                "fp32",
                "--pretrained",
                str(tmp_path / "d"),
            ]
        )
        == 0
    )
    warned = [line for line in capsys.readouterr().err.splitlines() if "trained on description prompts" in line]
    assert len(warned) == 1 and warned[0].startswith("warning:") and "--descriptions" in warned[0]
    capsys.readouterr()
    assert cli_main(["video", "train", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "frames per encoder batch when validating" in help_text and "the score trained and validated" in help_text


# --- review fixes: unreadable splits, stdd.json, frames that change size, broken streams, names, the overlap check ---


def test_a_split_whose_every_clip_is_unreadable_is_one_line(worlds, toy_vit_checkpoint, tmp_path, capsys):
    broken = shutil.copytree(worlds["t2"], tmp_path / "data" / "t2")
    clips = sorted((broken / "videos").rglob("test_*.mp4"))
    for i, clip in enumerate(clips):
        clip.write_bytes(np.random.default_rng(i).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for stdd in ("off", "on"):  # the cached per-frame path and the space-time path
        out = tmp_path / f"o-{stdd}"
        assert (
            cli_main(
                [
                    "video",
                    "cross-dataset",
                    "--eval-split-dir",
                    str(worlds["t1"]),
                    str(broken),
                    "--skip-bad",
                    "--out",
                    str(out),
                    "--frames",
                    "4",
                    "--precision",
                    "fp32",
                    "--backbone",
                    "toy",
                    "--pretrained",
                    str(toy_vit_checkpoint),
                    "--stdd",
                    stdd,
                ]
            )
            == 2
        )
        err = _last_error(capsys)
        assert err == [f"error: evaluation split {broken}: every clip was unreadable ({len(clips)} skipped)"], err
        assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("seen_classes", 5, "seen_classes must be a list of class names"),
        ("seen_classes", [["x"]], "seen_classes must be a list of class names"),
        ("seen_classes", "moving up", "seen_classes must be a list of class names"),  # not read letter by letter
        ("train_config", {"scorer": "max"}, "train_config.scorer must be one of"),
        ("train_config", [], "train_config must be a JSON object"),
    ],
)
def test_a_malformed_stdd_json_is_a_config_error_naming_it(worlds, tmp_path, capsys, field, value, message):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "stdd.json").write_text(json.dumps({"format": "clip-adapter-video-stdd", "space_time": {}, field: value}))
    with pytest.raises(ConfigError, match=message):
        read_stdd(folder)
    assert (
        cli_main(_cross(worlds, tmp_path / "o", "--backbone", "toy", "--pretrained", str(folder), evals=("t1",))) == 2
    )
    err = _last_error(capsys)
    assert len(err) == 1 and str(folder / "stdd.json") in err[0] and message in err[0]


def _mpeg2(frames: np.ndarray) -> bytes:
    """MPEG-2 in MPEG-TS: two such streams concatenated are one file whose frame size changes mid-stream."""
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def test_clipset_holds_a_clip_whose_frames_change_size(tmp_path):
    path = tmp_path / "resized.mpg"
    path.write_bytes(_mpeg2(np.full((4, 32, 32, 3), 90, np.uint8)) + _mpeg2(np.full((4, 48, 64, 3), 200, np.uint8)))
    decoded = decode_frames(path, range(probe(path).num_frames))
    assert len({f.shape for f in decoded.values()}) == 2  # the file really changes size mid-stream
    backbone = create_backbone("toy", precision="fp32")
    held = ClipSet([Sample(path, 0)], backbone, {0: 0})
    streamed = ClipSet([Sample(path, 0)], backbone, {0: 0}, hold_bytes=0)
    assert len(held.held[0]) == len(decoded) and held.held_bytes == sum(f.nbytes for f in decoded.values())
    assert not streamed.held
    for seed in (1, 2, 3):
        got, _ = held.batch([0], 6, np.random.default_rng(seed))
        assert torch.equal(got, streamed.batch([0], 6, np.random.default_rng(seed))[0])
    assert torch.equal(held.batch([0], 4, None, views=2)[0], streamed.batch([0], 4, None, views=2)[0])


def test_the_budget_counts_decoded_bytes_when_the_header_gives_no_size(worlds, monkeypatch):
    real = video_train.probe
    monkeypatch.setattr(video_train, "probe", lambda p: dataclasses.replace(real(p), width=0, height=0))
    samples = load_video_dataset(None, worlds["source"]).split("train")[:4]
    one_clip = 8 * 32 * 32 * 3
    clips = ClipSet(
        samples,
        create_backbone("toy", precision="fp32"),
        {i: i for i in range(len(BASE))},
        hold_bytes=one_clip + one_clip // 2,
    )
    assert len(clips.held) == 1 and clips.held_bytes == one_clip  # a header estimate of 0 bytes would hold all four


def test_a_clip_that_breaks_mid_stream_stops_before_the_first_step(tmp_path):
    data = bytearray(encode_mp4(render_clip("growing", np.random.default_rng(0), 8, 32), 8))
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    start, end = (
        at + 4 + 3 * size // 4,
        at - 4 + size,
    )  # the last frames' bytes; the header and the first frame stay good
    data[start:end] = np.random.default_rng(1).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    path = tmp_path / "tail.mp4"
    path.write_bytes(bytes(data))
    assert probe(path).num_frames == 8 and 0 in decode_frames(path, [0])  # what a header check sees: a good video
    backbone = create_backbone("toy", precision="fp32")
    for hold in (0, 1 << 30):  # counted only, or held
        with pytest.raises(BadVideo, match=f"video {path} cannot be decoded"):
            ClipSet([Sample(path, 0)], backbone, {0: 0}, hold_bytes=hold)


def test_class_names_match_across_spelling_case_and_camelcase_not_meaning(worlds, tmp_path, capsys):
    spellings = ["moving-up", "MovingUp", "moving up.", "Moving_Up", "moving down"]
    assert class_overlap(["moving up"], spellings) == spellings[:4]
    assert class_overlap(["ApplyEyeMakeup"], ["apply eye makeup", "applying eye makeup"]) == ["apply eye makeup"]
    classmap = tmp_path / "ucf-style.json"
    classmap.write_text(json.dumps({"0": "MovingUp", "1": "Juggling"}))
    assert (
        cli_main(_cross(worlds, tmp_path / "o", "--train-classmap", str(classmap), "--backbone", "toy", evals=("t1",)))
        == 2
    )
    err = _last_error(capsys)
    assert len(err) == 1 and "shares 1 class name(s)" in err[0] and "moving up" in err[0]
    assert training_classes(classmap=classmap) == ["MovingUp", "Juggling"]
    assert cli_main(["video", "cross-dataset", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Names are compared, not meanings" in text and "population std (ddof 0), as Open-VCLIP/FROSTER" in text
    assert "NAME=DIR" in text and "default: its test clips, else all" in text
    assert (
        "the scorer a `video train` checkpoint was validated with" in text
        and "whole clips of --views x --frames" in text
    )


def test_cross_dataset_without_training_classes_warns_and_records_it(worlds, tmp_path, capsys):
    out = tmp_path / "o"
    assert cli_main(_cross(worlds, out, "--backbone", "toy", evals=("t1",))) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "not checked for overlap" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: no training classes known")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overlap_checked"] is False and metrics["train_classes"] == []


def test_the_training_loss_is_the_official_stdd_score_of_the_frames(worlds, toy_vit_checkpoint):
    """Cross-entropy of the configured scorer over per-frame features, as TemporalClipVideo.forward trains."""
    from clip_adapter.finetune.trainable import TrainableClip
    from clip_adapter.video.scoring import score_clips
    from clip_adapter.video.stdd import install_space_time
    from clip_adapter.video.train import few_shot

    backbone = create_backbone("toy", pretrained=str(toy_vit_checkpoint), precision="fp32")
    dataset = load_video_dataset(None, worlds["source"])
    prompts, mask, _ = text_side(backbone, list(BASE), dataset.templates, worlds["source"] / "descriptions.json")
    view = TrainableClip(backbone, unfreeze="image", precision="fp32")
    frame_wise = install_space_time(view.model.visual, SpaceTimeConfig(enabled=False))  # no random masks: comparable
    label_of = {dataset.classnames.index(n): i for i, n in enumerate(BASE)}
    data = ClipSet(few_shot(dataset.split("train"), list(label_of), 2, 1), backbone, label_of, 1 << 30)
    losses = {}
    for scorer in ("prompt-match", "frame-mean", "embed-mean"):
        cfg = VideoTrainConfig(frames=4, batch_clips=3, distill_weight=0.0, scorer=scorer, precision="fp32")
        losses[scorer] = video_train._loss_fn(view, None, frame_wise, None, data, (prompts, mask), cfg, seed=1)(0)
        rng = np.random.default_rng([1, 0])  # the step's batch, drawn as the loss draws it
        pixels, labels = data.batch(rng.choice(len(data), size=3, replace=False), 4, rng)
        with torch.no_grad():
            frames = view.encode_images(pixels).view(3, 1, 4, -1)
        want = torch.nn.functional.cross_entropy(score_clips(scorer, frames, prompts, mask, view.logit_scale()), labels)
        assert torch.allclose(losses[scorer].detach(), want, atol=1e-5)
    # Three different scores: frame-mean and embed-mean can lie within 1e-4 of each other on a batch of nearly
    # static clips, far above float noise (each matched its own formula to 1e-5 above, on identical frames).
    values = sorted(float(v.detach()) for v in losses.values())
    assert all(b - a > 1e-6 for a, b in zip(values, values[1:])), values
