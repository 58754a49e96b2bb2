"""Video: readers, PyAV decoding and sampling, the frame cache, scorers, the toy clips, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from clip_adapter.cli import main as cli_main  # noqa: E402
from clip_adapter.core.errors import DataError  # noqa: E402
from clip_adapter.video import (  # noqa: E402
    embed_mean,
    extract_clip_features,
    frame_mean,
    frame_store,
    load_video_dataset,
    pad_prompts,
    prompt_match,
    random_segment_indices,
    read_classmap,
    read_descriptions,
    segment_indices,
    video_report,
)
from clip_adapter.video.decode import probe  # noqa: E402
from clip_adapter.video.toyclips import CLASSES, encode_mp4, render_clip, time_reversed_pairs, write_toy_videos  # noqa: E402
from clip_adapter.video.zeroshot import VideoZeroShotConfig, evaluate_zero_shot  # noqa: E402


def write_mp4(path: Path, frames: int = 8, size: int = 32, colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    """A real H.264 mp4 whose frame ``t`` has brightness that grows with ``t`` (so frames differ)."""
    clip = np.zeros((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        clip[t] = (np.asarray(colour) * (0.3 + 0.7 * t / max(frames - 1, 1))).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mp4(clip))
    return path


@pytest.fixture(scope="module")
def toy_backbone():
    from clip_adapter.backbones import create_backbone

    return create_backbone("toy", precision="fp32")


@pytest.fixture(scope="module")
def toy_videos(tmp_path_factory) -> Path:
    return write_toy_videos(tmp_path_factory.mktemp("tv") / "toy", train=1, val=0, test=2, frames=8, size=32)


# --- sampling -------------------------------------------------------------------------------------------


def test_segment_indices_are_tsn_centres_views_interleave_and_short_videos_repeat():
    assert segment_indices(16, 8) == [1, 3, 5, 7, 9, 11, 13, 15]
    views = [segment_indices(16, 4, v, 2) for v in range(2)]
    assert views == [[1, 5, 9, 13], [3, 7, 11, 15]]
    short = segment_indices(3, 8)
    assert short == sorted(short) and set(short) == {0, 1, 2} and len(short) == 8
    rng = np.random.default_rng(0)
    for _ in range(20):  # a random frame inside each segment
        assert [i * 8 // 32 for i in random_segment_indices(32, 8, rng)] == list(range(8))


# --- readers --------------------------------------------------------------------------------------------


def test_folder_reader_cleans_class_names_ignores_other_files_and_refuses_an_empty_class(tmp_path):
    for cls in ("push_up", "jump"):
        for i in range(2):
            write_mp4(tmp_path / "v" / cls / f"{i}.mp4", frames=4, size=16)
    (tmp_path / "v" / "jump" / "notes.txt").write_text("not a video")
    ds = load_video_dataset(tmp_path / "v")
    assert ds.classnames == ["jump", "push up"] and ds.default_split == "all"
    assert sorted((s.path.name, s.label) for s in ds.split("all")) == [
        ("0.mp4", 0),
        ("0.mp4", 1),
        ("1.mp4", 0),
        ("1.mp4", 1),
    ]
    (tmp_path / "v" / "sit").mkdir()
    with pytest.raises(DataError, match=r"class folder .*sit.* has no videos") as exc:
        load_video_dataset(tmp_path / "v")
    assert "\n" not in str(exc.value)


def _split_dir(tmp_path: Path, test_rows: str, classmap: object = None) -> Path:
    root = tmp_path / "splits"
    write_mp4(root / "clips" / "a.mp4", frames=4, size=16)
    write_mp4(root / "clips" / "b c.mp4", frames=4, size=16)
    (root / "train.csv").write_text("clips/a.mp4,0\nclips/b c.mp4,1\n")
    (root / "test.csv").write_text(test_rows)
    (root / "classmap.json").write_text(json.dumps(classmap if classmap is not None else {"1": "run", "0": "jump"}))
    return root


def test_split_csv_reader_reads_commas_spaces_and_a_header(tmp_path):
    root = _split_dir(tmp_path, "label_path,label\nclips/a.mp4 1\n\nclips/b c.mp4,0\n")
    ds = load_video_dataset(split_dir=root)
    assert ds.classnames == ["jump", "run"] and ds.layout == "csv"
    assert [(s.path.name, s.label) for s in ds.split("test")] == [("a.mp4", 1), ("b c.mp4", 0)]
    assert load_video_dataset(root).split("train")[1].label == 1  # --data holding CSVs is read the same


@pytest.mark.parametrize(
    "rows, message",
    [
        ("clips/missing.mp4,0\n", r"test.csv line 1: video not found: .*missing.mp4"),
        ("clips/a.mp4,7\n", r"test.csv line 1: label 7 is outside the class map \(0..1\)"),
        ("clips/a.mp4,0\nclips/a.mp4,run\n", r"test.csv line 2: label 'run' is not a class index"),
        ("just-a-path\n", r"test.csv line 1: expected 'relative/path,label'"),
    ],
)
def test_split_csv_reader_names_the_bad_row(tmp_path, rows, message):
    root = _split_dir(tmp_path, rows)
    with pytest.raises(DataError, match=message) as exc:
        load_video_dataset(split_dir=root)
    assert "\n" not in str(exc.value)


def test_classmap_must_number_classes_from_zero(tmp_path):
    root = _split_dir(tmp_path, "clips/a.mp4,0\n", classmap={"0": "jump", "2": "run"})
    with pytest.raises(DataError, match=r"class map .*classmap.json: class index 1 is missing"):
        load_video_dataset(split_dir=root)
    (root / "classmap.json").write_text(json.dumps(["jump", "run"]))
    assert read_classmap(root / "classmap.json") == ["jump", "run"]
    (root / "classmap.json").unlink()
    with pytest.raises(DataError, match="class map not found"):
        load_video_dataset(split_dir=root)


# --- decoding errors and the frame cache ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"is an empty \(zero-byte\) file"),
        (b"\x00\x01garbage" * 100, r"cannot be (opened|read|decoded)"),
        (None, r"video not found"),
    ],
)
def test_bad_videos_are_one_line_naming_the_file(tmp_path, tiny_backbone, content, message):
    path = tmp_path / "bad clip.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as exc:
        extract_clip_features(tiny_backbone, [path], frame_store(tiny_backbone, tmp_path / "cache"), frames=4)
    assert "bad clip.mp4" in str(exc.value) and "\n" not in str(exc.value)


def test_a_png_named_mp4_and_skip_bad(tmp_path, tiny_backbone):
    from PIL import Image

    fake = tmp_path / "photo.mp4"
    Image.new("RGB", (8, 8)).save(fake, format="PNG")
    good = write_mp4(tmp_path / "good.mp4", frames=6)
    store = frame_store(tiny_backbone, tmp_path / "cache")
    with pytest.raises(DataError, match="photo.mp4"):
        extract_clip_features(tiny_backbone, [good, fake], store, frames=4)
    feats, kept, stats = extract_clip_features(tiny_backbone, [good, fake], store, frames=4, skip_bad=True)
    assert (
        kept == [0] and feats.shape == (1, 1, 4, tiny_backbone.embed_dim) and stats.skipped[0][0].endswith("photo.mp4")
    )


def test_short_video_repeats_frames_and_cache_hit_is_identical(tmp_path, tiny_backbone):
    short = write_mp4(tmp_path / "short.mp4", frames=3)
    assert probe(short).num_frames == 3
    store = frame_store(tiny_backbone, tmp_path / "cache")
    feats, _, stats = extract_clip_features(tiny_backbone, [short], store, frames=8, views=2)
    assert feats.shape == (1, 2, 8, tiny_backbone.embed_dim) and stats.frames_encoded == 3  # 3 distinct frames
    assert torch.equal(feats[0, 0, 0], feats[0, 0, 1])  # index 0 repeated
    writes = store.writes
    again, _, stats2 = extract_clip_features(
        tiny_backbone, [short], frame_store(tiny_backbone, tmp_path / "cache"), frames=8, views=2
    )
    assert torch.equal(feats, again) and stats2.frames_encoded == 0 and store.writes == writes
    # A changed file (new content) is never served from the old features.
    write_mp4(short, frames=3, colour=(20, 200, 20))
    changed, _, stats3 = extract_clip_features(tiny_backbone, [short], store, frames=8, views=2)
    assert stats3.frames_encoded == 3 and not torch.equal(changed, feats)


# --- scorers and metrics --------------------------------------------------------------------------------


def test_prompt_match_is_stdds_formula_and_frame_scores_ignore_order():
    torch.manual_seed(0)
    frames = torch.randn(3, 2, 5, 6)
    prompts, mask = pad_prompts([torch.randn(2, 6), torch.randn(4, 6), torch.randn(1, 6)])
    got = prompt_match(frames, prompts, mask)
    f = torch.nn.functional.normalize(frames, dim=-1)
    for n in range(3):
        for c, count in enumerate(mask.sum(1).tolist()):
            p = torch.nn.functional.normalize(prompts[c, :count], dim=-1)
            per_view = [
                0.5 * ((f[n, v] @ p.T).max(0).values.mean() + (f[n, v] @ p.T).max(1).values.mean()) for v in range(2)
            ]
            assert got[n, c].item() == pytest.approx(sum(per_view).item() / 2, abs=1e-5)
    reversed_frames = frames.flip(dims=[2])
    for scorer in (frame_mean, embed_mean, prompt_match):
        assert torch.allclose(scorer(frames, prompts, mask), scorer(reversed_frames, prompts, mask), atol=1e-6)


def test_video_report_top5_and_pairs():
    logits = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    report = video_report(logits, torch.tensor([0, 1, 2]), ["a", "b", "c"], pairs=[(0, 1)])
    assert (
        report["top1"] == pytest.approx(2 / 3)
        and report["top5"] == 1.0
        and report["chance_top1"] == pytest.approx(1 / 3)
    )
    assert report["time_reversed_pairs"] == {"accuracy": 0.5, "num_clips": 2, "chance": 0.5}
    assert report["per_class_accuracy"] == {"a": 1.0, "b": 0.0, "c": 1.0}


def test_descriptions_json_yaml_and_missing_class(tmp_path, toy_backbone):
    from clip_adapter.video.descriptions import class_prompts

    (tmp_path / "d.json").write_text(
        json.dumps({"push_up": ["{} on the floor", "arms bend"], "jump": "feet leave the ground"})
    )
    desc = read_descriptions(tmp_path / "d.json")
    assert class_prompts(["push up", "Jump"], [], desc) == [
        ["push up on the floor", "arms bend"],
        ["feet leave the ground"],
    ]
    with pytest.raises(DataError, match="no clauses for class 'sit'"):
        class_prompts(["sit"], [], desc)
    (tmp_path / "bad.json").write_text(json.dumps({"jump": []}))
    with pytest.raises(DataError, match=r"bad.json: class 'jump' must have a non-empty list"):
        read_descriptions(tmp_path / "bad.json")
    # With templates, as the official STDD text_prompt: the class prompt, then "<class>, <clause>" per template.
    assert class_prompts(["push up"], ["a video of {}.", "{}"], desc) == [
        [
            "a video of push up.",
            "a video of push up, arms bend.",
            "push up",
            "push up, arms bend",
            "push up on the floor",
        ]
    ]
    pytest.importorskip("yaml")
    (tmp_path / "d.yaml").write_text("jump:\n  - feet leave the ground\n  - lands again\n")
    assert read_descriptions(tmp_path / "d.yaml") == {"jump": ["feet leave the ground", "lands again"]}


# --- the toy world in motion ----------------------------------------------------------------------------


def _centre_x(frame: np.ndarray) -> float:
    background = np.median(frame.reshape(-1, 3), axis=0)
    ys, xs = np.nonzero(np.abs(frame.astype(float) - background).sum(-1) > 60)
    return float(xs.mean())


def test_toy_clips_move_as_named_and_pairs_are_reversals():
    left = render_clip("moving left", np.random.default_rng(1), frames=8, size=64)
    right = render_clip("moving right", np.random.default_rng(1), frames=8, size=64)
    assert _centre_x(left[0]) > _centre_x(left[-1]) + 20 and _centre_x(right[0]) < _centre_x(right[-1]) - 20
    assert ["moving left", "moving right"] in time_reversed_pairs() and len(time_reversed_pairs()) == 5
    # Same parameters, reversed time: the frames match up to the per-frame noise.
    assert np.abs(left.astype(int) - right[::-1].astype(int)).mean() < 8


def test_toy_writer_is_deterministic_and_writes_both_layouts(tmp_path, toy_videos):
    again = write_toy_videos(tmp_path / "again", train=1, val=0, test=2, frames=8, size=32)
    files = sorted(p.relative_to(toy_videos) for p in toy_videos.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((toy_videos / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = write_toy_videos(tmp_path / "other", train=1, val=0, test=2, frames=8, size=32, seed=1)
    assert (other / "videos/growing/test_0000.mp4").read_bytes() != (
        toy_videos / "videos/growing/test_0000.mp4"
    ).read_bytes()
    meta = json.loads((toy_videos / "meta.json").read_text())
    assert sorted(meta["base"] + meta["novel"]) == list(CLASSES) and not set(meta["base"]) & set(meta["novel"])
    csv_ds, folder_ds = load_video_dataset(split_dir=toy_videos), load_video_dataset(toy_videos / "videos")
    assert csv_ds.classnames == folder_ds.classnames == list(CLASSES)
    assert len(csv_ds.split("test")) == 2 * len(CLASSES) and len(folder_ds.split("all")) == 3 * len(CLASSES)
    assert set(read_descriptions(toy_videos / "descriptions.json")) == set(CLASSES)
    assert probe(toy_videos / "videos/growing/test_0000.mp4").num_frames == 8


# --- zero-shot on the toy CLIP and a random open_clip ViT -----------------------------------------------


@pytest.mark.parametrize("scorer", ["frame-mean", "prompt-match"])
def test_zero_shot_on_toy_clip_and_tiny_vit(toy_videos, toy_backbone, tiny_backbone, tmp_path, scorer):
    dataset = load_video_dataset(split_dir=toy_videos)
    descriptions = toy_videos / "descriptions.json" if scorer == "prompt-match" else None
    for backbone in (toy_backbone, tiny_backbone):
        config = VideoZeroShotConfig(frames=4, views=2, scorer=scorer)
        with pytest.warns(UserWarning, match="cannot read") if backbone is toy_backbone else _nothing():
            result = evaluate_zero_shot(
                backbone, dataset, "test", config, descriptions=descriptions, cache_dir=tmp_path
            )
        metrics = result["metrics"]
        assert metrics["num_clips"] == 2 * len(CLASSES) and 0 <= metrics["top1"] <= metrics["top5"] <= 1
        assert metrics["time_reversed_pairs"]["num_clips"] == 2 * 10
        assert len(result["predictions"]) == metrics["num_clips"]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- CLI ------------------------------------------------------------------------------------------------


def test_cli_zero_shot_predict_and_output_rules(toy_videos, tmp_path, capsys):
    out = tmp_path / "zs"
    assert (
        cli_main(
            [
                "video",
                "zero-shot",
                "--split-dir",
                str(toy_videos),
                "--out",
                str(out),
                "--frames",
                "4",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["text"]["templates"] == ["a photo of a shape {}."]
    assert "top-1" in capsys.readouterr().out and (out / "predictions.csv").read_text().startswith(
        "path,label,predicted"
    )
    args = [
        "video",
        "zero-shot",
        "--data",
        str(toy_videos / "videos"),
        "--out",
        str(out),
        "--frames",
        "4",
        "--precision",
        "fp32",
        "--backbone",
        "test-tiny-vit",
        "--pretrained",
        "none",
        "--scorer",
        "embed-mean",
    ]
    assert cli_main(args) == 2 and "already holds" in capsys.readouterr().err  # our own output: only with --overwrite
    assert cli_main(args + ["--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["split"] == "all"
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    assert (
        cli_main(args[:-6] + ["--out", str(foreign), "--overwrite"]) == 2 and "did not write" in capsys.readouterr().err
    )
    assert (foreign / "thesis.tex").read_text() == "years of work"
    inside = ["video", "zero-shot", "--split-dir", str(toy_videos), "--out", str(toy_videos / "zs")]
    assert cli_main(inside) == 2 and "inside the input" in capsys.readouterr().err
    clip = toy_videos / "videos/moving_left/test_0000.mp4"
    assert (
        cli_main(
            [
                "video",
                "predict",
                "--video",
                str(clip),
                "--classmap",
                str(toy_videos / "classmap.json"),
                "--frames",
                "4",
                "--top-k",
                "2",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "path,rank,class,probability" and len(lines) == 3  # one row per rank, as the image `predict`
    assert [line.split(",")[:2] for line in lines[1:]] == [[str(clip), "1"], [str(clip), "2"]] and '"' not in "".join(
        lines
    )
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    predict = [
        "video",
        "predict",
        "--video",
        str(clip),
        str(junk),
        "--classmap",
        str(toy_videos / "classmap.json"),
        "--frames",
        "4",
    ]
    assert cli_main(predict) == 2 and "junk.mp4" in capsys.readouterr().err
    assert cli_main(predict + ["--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 6 and "skipped" in captured.err and "junk.mp4" in captured.err


def test_cli_toy_dataset_and_validate_videos(tmp_path, capsys):
    out = tmp_path / "toy"
    assert (
        cli_main(
            [
                "video",
                "toy-dataset",
                "--out",
                str(out),
                "--train",
                "1",
                "--val",
                "0",
                "--test",
                "0",
                "--frames",
                "4",
                "--size",
                "16",
            ]
        )
        == 0
    )
    assert (
        cli_main(["video", "toy-dataset", "--out", str(out), "--train", "1"]) == 2
        and "--overwrite" in capsys.readouterr().err
    )
    assert cli_main(["validate", "--videos", str(out)]) == 0
    assert "11 classes, 11 readable videos checked" in capsys.readouterr().out
    (out / "videos/growing/train_0000.mp4").write_bytes(b"\x00not a video at all" * 50)
    assert cli_main(["validate", "--videos", str(out / "videos"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [i["path"].endswith("growing/train_0000.mp4") for i in report["issues"] if i["severity"] == "error"] == [
        True
    ]
    assert cli_main(["validate"]) == 2 and "give --data (images) or --videos" in capsys.readouterr().err
