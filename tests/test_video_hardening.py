"""Video hardening: frame-size limits, truncated files, --skip-bad reporting, plain output formats, the quick toy
CLIP.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from clip_adapter.cli import main as cli_main  # noqa: E402
from clip_adapter.core.errors import ClipAdapterError, DataError  # noqa: E402
from clip_adapter.data import images  # noqa: E402
from clip_adapter.video import decode, extract_clip_features, frame_store  # noqa: E402
from clip_adapter.video.decode import BadVideo, count_decoded, decode_frames, probe, sampled_frames, truncation  # noqa: E402
from clip_adapter.video.toyclips import encode_mp4, write_toy_videos  # noqa: E402


def encode(frames: np.ndarray, fmt: str = "mp4", codec: str = "libx264") -> bytes:
    """Video bytes of uint8 ``[T, H, W, 3]`` frames in container ``fmt``."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def clip(frames: int = 8, height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def toy_videos(tmp_path_factory) -> Path:
    return write_toy_videos(tmp_path_factory.mktemp("tv") / "toy", train=1, val=0, test=1, frames=8, size=32)


# --- 1. frame size limits ------------------------------------------------------------------------------


def test_the_limits_are_the_image_limits_not_copies():
    assert decode.MAX_PIXELS is images.MAX_PIXELS and decode.MAX_ASPECT_RATIO is images.MAX_ASPECT_RATIO


def test_an_extreme_aspect_ratio_is_refused_from_the_header_before_any_frame_is_decoded(tmp_path, monkeypatch):
    wide = tmp_path / "wide clip.mp4"
    wide.write_bytes(encode(clip(2, 2, 4000)))  # 2 frames of 4000x2: a few hundred bytes
    monkeypatch.setattr(decode, "_checked", lambda path, frame: pytest.fail("a frame was decoded"))
    for read in (probe, lambda p: sampled_frames(p, 8), lambda p: decode_frames(p, [0]), count_decoded):
        with pytest.raises(BadVideo, match=r"wide clip\.mp4 has 4000x2 frames, an aspect ratio beyond 100:1") as exc:
            read(wide)
        assert exc.value.kind == "extreme-aspect-ratio" and "\n" not in str(exc.value)
        assert isinstance(exc.value, ClipAdapterError) and exc.value.exit_code == 2


def test_a_frame_beyond_the_pixel_limit_is_refused_from_the_header(tmp_path, monkeypatch):
    big = tmp_path / "big.mp4"
    big.write_bytes(encode(clip(2, 32, 48)))
    monkeypatch.setattr(decode, "_checked", lambda path, frame: pytest.fail("a frame was decoded"))
    monkeypatch.setattr(decode, "MAX_PIXELS", 32 * 48 - 1)  # the clip is one pixel over the limit
    with pytest.raises(BadVideo, match=r"big\.mp4 has 48x32 frames, beyond the 1,535-pixel limit of a frame") as exc:
        probe(big)
    assert exc.value.kind == "decompression-bomb"
    monkeypatch.setattr(decode, "MAX_PIXELS", 32 * 48)  # at the limit: accepted
    assert probe(big).width == 48


def _mpeg2(frames: np.ndarray) -> bytes:
    return encode(frames, "mpegts", "mpeg2video")


def test_decoded_frames_are_checked_too_when_the_stream_grows_mid_way(tmp_path, monkeypatch):
    grows = tmp_path / "grows.mpg"  # the header says 32x32; from frame 4 on the frames are 64x48
    grows.write_bytes(_mpeg2(np.full((4, 32, 32, 3), 90, np.uint8)) + _mpeg2(np.full((4, 48, 64, 3), 200, np.uint8)))
    monkeypatch.setattr(decode, "MAX_PIXELS", 2000)
    assert probe(grows).width == 32 and list(decode_frames(grows, [0])) == [0]  # the first frames pass
    for read in (lambda p: decode_frames(p, range(8)), count_decoded):
        with pytest.raises(BadVideo, match=r"grows\.mpg has 64x48 frames, beyond the 2,000-pixel limit") as exc:
            read(grows)
        assert exc.value.kind == "decompression-bomb"


def test_a_header_without_a_size_falls_back_to_each_decoded_frame(tmp_path, monkeypatch):
    wide = tmp_path / "wide.mp4"
    wide.write_bytes(encode(clip(2, 2, 4000)))
    monkeypatch.setattr(decode, "_declared_size", lambda stream: (0, 0))  # as a container that gives no size
    with pytest.raises(BadVideo, match=r"wide\.mp4 has 4000x2 frames, an aspect ratio beyond 100:1"):
        sampled_frames(wide, 4)


def test_oversized_videos_are_one_line_in_extraction_skipped_with_skip_bad_and_errors_in_validate(
    tmp_path, tiny_backbone, capsys
):
    folder = tmp_path / "videos"
    (folder / "jump").mkdir(parents=True)
    (folder / "run").mkdir()
    (folder / "jump" / "good.mp4").write_bytes(encode_mp4(clip(4)))
    (folder / "run" / "good.mp4").write_bytes(encode_mp4(clip(4, seed=1)))
    wide = folder / "run" / "panorama.mp4"
    wide.write_bytes(encode(clip(2, 2, 4000)))
    store = frame_store(tiny_backbone, tmp_path / "cache")
    with pytest.raises(DataError, match=r"panorama\.mp4 has 4000x2 frames.*--skip-bad") as exc:
        extract_clip_features(tiny_backbone, [wide], store, frames=4)
    assert "\n" not in str(exc.value)
    feats, kept, stats = extract_clip_features(
        tiny_backbone, [folder / "jump" / "good.mp4", wide], store, frames=4, skip_bad=True
    )
    assert kept == [0] and stats.skipped[0][0] == str(wide) and "4000x2" in stats.skipped[0][1]
    base = [
        "video",
        "zero-shot",
        "--data",
        str(folder),
        "--frames",
        "4",
        "--backbone",
        "test-tiny-vit",
        "--pretrained",
        "none",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert cli_main(base + ["--out", str(tmp_path / "zs")]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "panorama.mp4 has 4000x2 frames" in errors[0]
    assert cli_main(base + ["--out", str(tmp_path / "zs2"), "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "skipped" in line] == [
        f"warning: skipped 1 unreadable video(s): {wide} (each with its reason in {tmp_path / 'zs2' / 'metrics.json'})"
    ]
    metrics = json.loads((tmp_path / "zs2" / "metrics.json").read_text())
    assert metrics["metrics"]["num_clips"] == 2 and "4000x2" in metrics["extraction"]["skipped"][0]["reason"]
    assert cli_main(["validate", "--videos", str(folder), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(i["kind"], i["severity"]) for i in report["issues"] if i["path"] == str(wide)] == [
        ("extreme-aspect-ratio", "error")
    ]


# --- 2. truncated files and --skip-bad on the console --------------------------------------------------


def test_a_truncated_mp4_says_truncated_wherever_it_is_cut(tmp_path):
    data = encode_mp4(clip(8))
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(data)
    assert truncation(whole) is None
    cut = tmp_path / "cut.mp4"
    messages = set()
    for end in range(8, len(data) - 1, max(1, len(data) // 97)):
        cut.write_bytes(data[:end])
        try:
            sampled_frames(cut, 8)
        except BadVideo as exc:
            assert exc.kind == "truncated-video" and "\n" not in str(exc), (end, str(exc))
            assert str(exc).startswith(f"video {cut} is truncated (") and "no video stream" not in str(exc)
            messages.add(str(exc).split("(")[1].split()[1])
    assert {"'mdat'", "'moov'"} <= messages  # cut in the media, and in the index behind it


def test_no_video_stream_is_only_said_of_a_complete_file_without_one(tmp_path):
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for _ in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    audio = tmp_path / "song.mp4"
    audio.write_bytes(buffer.getvalue())
    with pytest.raises(BadVideo, match=r"^video .*song\.mp4 has no video stream \(only audio\)$") as exc:
        probe(audio)
    assert exc.value.kind == "no-video-stream"
    audio.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    with pytest.raises(BadVideo, match=r"song\.mp4 is truncated"):
        probe(audio)


@pytest.mark.parametrize(
    "fmt, codec, ext, detail",
    [
        ("webm", "libvpx", "webm", "its segment declares"),
        ("matroska", "libx264", "mkv", "its segment declares"),
        ("avi", "mpeg4", "avi", "its RIFF chunk declares"),
        ("mov", "libx264", "mov", "box needs"),
    ],
)
def test_truncation_is_read_from_each_containers_own_sizes(tmp_path, fmt, codec, ext, detail):
    data = encode(clip(8), fmt, codec)
    whole, cut = tmp_path / f"whole.{ext}", tmp_path / f"cut.{ext}"
    whole.write_bytes(data)
    cut.write_bytes(data[: len(data) // 2])
    assert truncation(whole) is None and detail in truncation(cut)


def test_validate_warns_of_a_truncated_video_whose_first_frames_decode(tmp_path, capsys):
    folder = tmp_path / "videos"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    (folder / "a" / "0.mkv").write_bytes(encode(clip(8), "matroska")[:-600])  # its first frames still decode
    (folder / "b" / "0.mp4").write_bytes(encode_mp4(clip(8, seed=2)))
    assert cli_main(["validate", "--videos", str(folder), "--json"]) == 0
    issues = json.loads(capsys.readouterr().out)["issues"]
    assert [(i["kind"], i["severity"]) for i in issues if i["kind"] == "truncated-video"] == [
        ("truncated-video", "warning")
    ]


def test_zero_shot_skip_bad_prints_one_warning_with_the_count_and_the_first_names(toy_videos, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(toy_videos / "videos", data)
    bad = sorted(data.glob("*/train_0000.mp4"))[:5]
    for path in bad:
        path.write_bytes(path.read_bytes()[:-300])  # cut inside the index: unreadable
    out = tmp_path / "zs"
    assert (
        cli_main(
            [
                "video",
                "zero-shot",
                "--data",
                str(data),
                "--out",
                str(out),
                "--frames",
                "4",
                "--skip-bad",
                "--precision",
                "fp32",
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    skipped = json.loads((out / "metrics.json").read_text())["extraction"]["skipped"]
    assert sorted(s["path"] for s in skipped) == [str(p) for p in bad] and all(
        "is truncated" in s["reason"] for s in skipped
    )
    first = ", ".join(s["path"] for s in skipped[:3])
    assert lines == [
        f"warning: skipped 5 unreadable video(s): {first} and 2 more (each with its reason in {out / 'metrics.json'})"
    ]


# --- 3. output formats ---------------------------------------------------------------------------------


def test_predict_csv_has_plain_columns_as_the_image_predict(toy_videos, capsys):
    clips = [toy_videos / "videos/moving_left/test_0000.mp4", toy_videos / "videos/growing/test_0000.mp4"]
    args = [
        "video",
        "predict",
        "--video",
        *map(str, clips),
        "--classes",
        "moving left,growing,a, b",
        "--frames",
        "4",
        "--top-k",
        "2",
        "--precision",
        "fp32",
    ]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == "path,rank,class,probability" and '""' not in text
    assert [(r["path"], r["rank"]) for r in rows] == [
        (str(clips[0]), "1"),
        (str(clips[0]), "2"),
        (str(clips[1]), "1"),
        (str(clips[1]), "2"),
    ]
    assert all(r["class"] in ("moving left", "growing", "a", "b") for r in rows)
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)
    assert float(rows[0]["probability"]) >= float(rows[1]["probability"])
    assert cli_main(args + ["--format", "json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert [[(t["label"], f"{t['score']:.6f}") for t in v["top_k"]] for v in as_json] == [
        [(r["class"], r["probability"]) for r in rows[i : i + 2]] for i in (0, 2)
    ]


def test_zero_shot_prints_the_time_reversed_pairs_as_a_percentage(toy_videos, tmp_path, capsys):
    assert (
        cli_main(
            [
                "video",
                "zero-shot",
                "--split-dir",
                str(toy_videos),
                "--out",
                str(tmp_path / "zs"),
                "--frames",
                "4",
                "--precision",
                "fp32",
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    pairs = json.loads((tmp_path / "zs" / "metrics.json").read_text())["metrics"]["time_reversed_pairs"]
    line = [line for line in out.splitlines() if line.startswith("time-reversed pairs")]
    assert line == [
        f"time-reversed pairs: {100 * pairs['accuracy']:.2f} % beat their reversal ({pairs['num_clips']} clips; "
        "chance 50.00 %)"
    ]


# --- 4. the quick toy video CLIP -----------------------------------------------------------------------


def test_toy_pretrain_quick_is_a_preset_and_the_default_recipe_is_unchanged(tmp_path, monkeypatch, capsys):
    from clip_adapter.video import pretrain

    seen = []

    def record(cfg, out, log=print, overwrite=False):
        seen.append(cfg)
        return Path(out) / "toy_clip.safetensors"

    monkeypatch.setattr(pretrain, "pretrain_video_clip", record)
    out = str(tmp_path / "clip")
    for extra in ([], ["--quick"], ["--quick", "--steps", "40"], ["--steps", "5", "--batch-size", "8"]):
        assert cli_main(["video", "toy-pretrain", "--out", out, *extra]) == 0
    default, quick, quick_40, small = (cfg.to_dict() for cfg in seen)
    fields = ("steps", "batch_size", "lr", "warmup_steps", "motion_fraction", "threads", "image_from")
    assert [default[k] for k in fields] == [
        1500,
        128,
        5e-4,
        100,
        0.5,
        2,
        "none",
    ]  # the recipe of the README's video tables
    assert {k: quick[k] for k in pretrain.QUICK} == pretrain.QUICK and quick["warmup_steps"] == pretrain.QUICK[
        "steps"
    ] // 10
    assert (quick_40["steps"], quick_40["batch_size"], quick_40["warmup_steps"]) == (
        40,
        pretrain.QUICK["batch_size"],
        4,
    )
    assert [small[k] for k in fields] == [5, 8, 5e-4, 1, 0.5, 2, "none"]  # a short run warms up over a tenth of it
    printed = capsys.readouterr().out.splitlines()
    assert [("needs --stdd off" in line) for line in printed] == [False, True, True, False]


def test_the_quick_toy_video_clip_starts_from_the_shipped_cnn_and_reads_the_motion_words(tmp_path, capsys):
    import torch

    from clip_adapter.backbones import create_backbone

    out = tmp_path / "quick"
    assert (
        cli_main(
            [
                "video",
                "toy-pretrain",
                "--quick",
                "--steps",
                "1",
                "--batch-size",
                "4",
                "--precision",
                "fp32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    quick, shipped = (
        create_backbone("toy", pretrained=str(out), precision="fp32"),
        create_backbone("toy", precision="fp32"),
    )
    assert quick.name == shipped.name == "toy-cnn" and not quick.unknown_words(["a shape rotating counterclockwise"])
    assert json.loads((out / "toy_clip.json").read_text())["pretrain_config"]["image_from"] == "shipped"
    # One small step from the shipped image tower: its image features are still close to the shipped ones.
    pixels = torch.rand(2, 3, 64, 64)
    cosine = torch.nn.functional.cosine_similarity(quick.encode_images(pixels), shipped.encode_images(pixels))
    assert (cosine > 0.9).all()
    video = [
        "video",
        "train",
        "--split-dir",
        str(tmp_path / "none"),
        "--backbone",
        "toy",
        "--pretrained",
        str(out),
        "--out",
        str(tmp_path / "t"),
    ]
    write_toy_videos(tmp_path / "none", train=1, val=1, test=0, frames=4, size=32)
    assert cli_main(video + ["--steps", "1"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "use --stdd off" in errors[0]


def test_the_examples_in_the_changed_modules_run():
    import doctest

    from clip_adapter.video import pretrain, run

    for module in (decode, run, pretrain):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
