"""STDD stage 2: the toy ViT tower, space-time cross attention, video training and its checkpoint in the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.cli import main as cli_main  # noqa: E402
from clip_adapter.core.errors import ConfigError  # noqa: E402
from clip_adapter.toyworld.model import ToyClip, ToyClipConfig  # noqa: E402
from clip_adapter.toyworld.pretrain import write_toy_checkpoint  # noqa: E402
from clip_adapter.toyworld.tokenizer import ToyTokenizer  # noqa: E402
from clip_adapter.video.stdd import (  # noqa: E402
    SpaceTimeConfig,
    channel_mix,
    install_space_time,
    remove_space_time,
    window_mask,
)
from clip_adapter.video.toyclips import write_toy_videos  # noqa: E402
from clip_adapter.video.train import Projector, distill_loss, read_stdd  # noqa: E402
from conftest import TINY  # noqa: E402

OFF = SpaceTimeConfig(mask_rate=0.0, channel_fold=0)  # nothing masked, nothing shifted


def toy_vit(seed: int = 0) -> ToyClip:
    torch.manual_seed(seed)
    return ToyClip(ToyClipConfig(image_tower="vit", patch_size=16, vit_width=64, vit_layers=2)).eval()


def _visuals(tiny_backbone):
    return [("toy", toy_vit(), 64), ("open_clip", tiny_backbone.model, 32)]


@pytest.fixture(scope="module")
def toy_vit_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vit")
    write_toy_checkpoint(toy_vit(), ToyTokenizer(), out, {"command": "test"})
    return out


@pytest.fixture(scope="module")
def toy_videos(tmp_path_factory) -> Path:
    return write_toy_videos(tmp_path_factory.mktemp("tv") / "toy", train=2, val=1, test=1, frames=8, size=32)


# --- the toy ViT tower -----------------------------------------------------------------------------------


def test_cnn_stays_the_default_and_the_vit_loads_from_its_checkpoint(toy_vit_checkpoint):
    shipped = create_backbone("toy", precision="fp32")
    assert shipped.name == "toy-cnn" and shipped.model.cfg.image_tower == "cnn"
    bb = create_backbone("toy", pretrained=str(toy_vit_checkpoint), precision="fp32")
    assert bb.name == "toy-vit" and bb.encode_images(torch.zeros(2, 3, 64, 64)).shape == (2, 128)
    with pytest.raises(ConfigError, match="toy CNN tower only"):
        bb.encode_dense(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ConfigError, match="image_tower"):
        ToyClipConfig(image_tower="rnn")


# --- space-time cross attention ----------------------------------------------------------------------


def test_window_mask_keeps_half_of_every_window_rolled_per_frame():
    m = window_mask(3, 4, 4, SpaceTimeConfig(), randomize=False)
    assert m.shape == (3, 4, 16) and (m.sum(-1) == 8).all()
    windows = m[0].view(4, 2, 2, 2, 2).permute(0, 1, 3, 2, 4).reshape(4, 4, 4)  # frame, window, position in window
    assert (windows.sum(-1) == 2).all()  # half of every 2x2 window
    assert all(torch.equal(windows[t, 0], windows[0, 0].roll(t)) for t in range(4))  # rolled one place per frame
    torch.manual_seed(0)
    rand = window_mask(8, 4, 4, SpaceTimeConfig(), randomize=True)
    assert (rand.sum(-1) == 8).all() and not all(torch.equal(rand[i], m[0]) for i in range(8))


def test_channel_mix_takes_a_few_channels_from_neighbouring_frames():
    x = torch.arange(4.0)[None, :, None, None].expand(1, 4, 1, 64).clone()  # every channel holds its frame index
    one = channel_mix(x, 1, 32)[0, :, 0]  # 2 channels from t-1, 2 from t+1, the rest stay
    assert (
        one[1, :2].tolist() == [0.0, 0.0]
        and one[1, 2:4].tolist() == [2.0, 2.0]
        and (one[:, 4:] == x[0, :, 0, 4:]).all()
    )
    two = channel_mix(x, 2, 32)[0, :, 0]  # the second scale overwrites half the slices with t∓2
    assert two[2, 0].item() == 0.0 and two[2, 1].item() == 1.0 and two[1, 3].item() == 3.0
    assert torch.equal(channel_mix(x, 2, 0), x)


def test_masks_off_equals_the_plain_blocks_on_toy_and_open_clip_vits(tiny_backbone):
    for name, model, size in _visuals(tiny_backbone):
        pixels = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            plain = model.encode_image(pixels)
            handle = install_space_time(model.visual, OFF)
            with handle.clips(4):
                off = model.encode_image(pixels)
            handle.cfg = SpaceTimeConfig()
            with handle.clips(4):
                on = model.encode_image(pixels)
            outside = model.encode_image(pixels)  # single images: the plain blocks
        remove_space_time(model.visual)
        assert torch.allclose(off, plain, atol=1e-5), name
        assert not torch.allclose(on, plain, atol=1e-3), name
        assert torch.equal(outside, plain), name


def test_test_time_is_deterministic_training_masks_are_random_and_frame_order_now_matters(tiny_backbone):
    for name, model, size in _visuals(tiny_backbone):
        pixels = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(2))
        reverse = pixels.flip(0)
        handle = install_space_time(model.visual, SpaceTimeConfig())
        with torch.no_grad(), handle.clips(4):
            first, second = model.encode_image(pixels), model.encode_image(pixels)
            backwards = model.encode_image(reverse)
            handle.randomize = True
            torch.manual_seed(0)
            draws = [model.encode_image(pixels) for _ in range(4)]
            handle.randomize = False
        remove_space_time(model.visual)
        assert torch.equal(first, second), name
        assert any(not torch.allclose(d, draws[0]) for d in draws[1:]), name
        # Frame-wise, a reversed clip has the same bag of features; with space-time attention it does not.
        assert not torch.allclose(first.mean(0), backwards.mean(0), atol=1e-4), name
        with torch.no_grad():
            frame_wise = model.encode_image(pixels).mean(0), model.encode_image(reverse).mean(0)
        assert torch.allclose(*frame_wise, atol=1e-5), name


def test_bad_space_time_inputs_are_one_line(tiny_backbone):
    cnn = ToyClip(ToyClipConfig())
    with pytest.raises(ConfigError, match="ViT image tower"):
        install_space_time(cnn.visual)
    handle = install_space_time(tiny_backbone.model.visual, SpaceTimeConfig())
    try:
        with handle.clips(3), pytest.raises(ConfigError, match="not whole clips of 3"):
            tiny_backbone.model.encode_image(torch.zeros(4, 3, 32, 32))
        handle.cfg = SpaceTimeConfig(window=3)
        with handle.clips(2), pytest.raises(ConfigError, match="divisible by the 3x3 window"):
            tiny_backbone.model.encode_image(torch.zeros(4, 3, 32, 32))
    finally:
        remove_space_time(tiny_backbone.model.visual)
    with pytest.raises(ConfigError, match="temporal_scales"):
        SpaceTimeConfig(temporal_scales=(0,))


# --- training ---------------------------------------------------------------------------------------------


def test_distillation_has_gradient_to_the_student_and_the_projector():
    torch.manual_seed(0)
    projector = Projector(8, 0.1)
    student = torch.randn(4, 8, requires_grad=True)
    distill_loss(student, torch.randn(4, 8), projector).backward()
    assert student.grad.abs().sum() > 0 and projector.mlp[0].weight.grad.abs().sum() > 0


def _train_args(toy_videos: Path, out: Path, *backbone: str) -> list[str]:
    return [
        "video",
        "train",
        "--split-dir",
        str(toy_videos),
        "--out",
        str(out),
        "--steps",
        "3",
        "--val-every",
        "2",
        "--frames",
        "4",
        "--batch-clips",
        "4",
        "--shots",
        "2",
        "--precision",
        "fp32",
        "--train-precision",
        "fp32",
        *backbone,
    ]


def test_cli_train_then_zero_shot_and_predict_on_the_toy_vit(toy_videos, toy_vit_checkpoint, tmp_path, capsys):
    out = tmp_path / "stdd"
    assert cli_main(_train_args(toy_videos, out, "--pretrained", str(toy_vit_checkpoint))) == 0
    meta = read_stdd(out)
    assert (
        meta["space_time"]["enabled"]
        and meta["seen_classes"] == json.loads((toy_videos / "meta.json").read_text())["base"]
    )
    log = (out / "video_train_log.csv").read_text().splitlines()
    assert log[0].startswith("step") and len(log) >= 4
    base = create_backbone("toy", pretrained=str(toy_vit_checkpoint), precision="fp32").model.visual.state_dict()
    tuned = create_backbone("toy", pretrained=str(out), precision="fp32").model.visual.state_dict()
    changed = any(not torch.equal(base[k], tuned[k]) for k in base)
    assert changed == (meta["result"]["selected_step"] > 0)  # the saved weights are those of the chosen step
    capsys.readouterr()
    zs = tmp_path / "zs"
    assert (
        cli_main(
            [
                "video",
                "zero-shot",
                "--split-dir",
                str(toy_videos),
                "--out",
                str(zs),
                "--frames",
                "4",
                "--precision",
                "fp32",
                "--pretrained",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads((zs / "metrics.json").read_text())
    assert (
        metrics["extraction"]["frames_cached"] == 0 and metrics["metrics"]["num_clips"] == 11
    )  # temporal path, uncached
    capsys.readouterr()
    clip = next((toy_videos / "videos" / "growing").glob("*.mp4"))
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
                "--precision",
                "fp32",
                "--pretrained",
                str(out),
                "--format",
                "json",
                "--top-k",
                "2",
            ]
        )
        == 0
    )
    assert len(json.loads(capsys.readouterr().out)[0]["top_k"]) == 2


def test_cli_train_on_tiny_open_clip_round_trips_and_ablation_off(toy_videos, tmp_path, capsys):
    out = tmp_path / "oc"
    assert (
        cli_main(
            _train_args(
                toy_videos, out, "--backbone", TINY, "--pretrained", "none", "--stdd", "off", "--distill-weight", "0"
            )
        )
        == 0
    )
    assert read_stdd(out)["space_time"]["enabled"] is False and (out / "finetuned.safetensors").is_file()
    out_on = tmp_path / "oc-on"
    assert cli_main(_train_args(toy_videos, out_on, "--backbone", TINY, "--pretrained", "none")) == 0
    zs = tmp_path / "zs"
    assert (
        cli_main(
            [
                "video",
                "zero-shot",
                "--split-dir",
                str(toy_videos),
                "--out",
                str(zs),
                "--frames",
                "4",
                "--precision",
                "fp32",
                "--backbone",
                TINY,
                "--pretrained",
                str(out_on / "finetuned.safetensors"),
            ]
        )
        == 0
    )
    assert json.loads((zs / "metrics.json").read_text())["extraction"]["frames_cached"] == 0


def test_bad_training_inputs_are_one_line(toy_videos, toy_vit_checkpoint, tmp_path, capsys):
    args = _train_args(toy_videos, tmp_path / "x", "--pretrained", str(toy_vit_checkpoint))
    assert cli_main(args + ["--classes", "moving left,flying"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flying" in err[0]
    assert cli_main(_train_args(toy_videos, tmp_path / "y", "--backbone", "toy")) == 2  # the shipped CNN: no ViT blocks
    assert "ViT image tower" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "stdd.json").write_text("{}")
    with pytest.raises(ConfigError, match="stdd.json"):
        read_stdd(bad)


def test_toy_video_pretraining_reads_motion_words_and_loads(tmp_path, capsys):
    from clip_adapter.video.pretrain import VideoPretrainConfig, motion_vocab, pretrain_batch

    images, texts = pretrain_batch(VideoPretrainConfig(batch_size=8, motion_fraction=0.5), 0)
    assert images.shape == (8, 64, 64, 3) and any("moving" in t or "ing" in t.split()[-1] for t in texts[4:])
    assert not ToyTokenizer(motion_vocab()).unknown_words("a red circle rotating counterclockwise")
    # State captions: every one is a clause of the description file, its frame the state it describes.
    from clip_adapter.video.pretrain import motion_frame
    from clip_adapter.video.toyclips import descriptions

    clauses = {c for group in descriptions().values() for c in group}
    rng = np.random.default_rng(0)
    states = [motion_frame(rng, state_share=1.0) for _ in range(40)]
    assert all(caption in clauses for _, caption in states) and len({c for _, c in states}) > 10
    actions = [motion_frame(rng, state_share=0.0)[1] for _ in range(20)]
    assert not any(caption in clauses for caption in actions)
    out = tmp_path / "vclip"
    assert (
        cli_main(
            ["video", "toy-pretrain", "--out", str(out), "--steps", "1", "--batch-size", "4", "--precision", "fp32"]
        )
        == 0
    )
    bb = create_backbone("toy", pretrained=str(out), precision="fp32")
    assert bb.name == "toy-vit" and not bb.unknown_words(["a shape shrinking"])
    assert (
        cli_main(["video", "toy-pretrain", "--out", str(out), "--steps", "1"]) == 2
    )  # our output: only with --overwrite


def test_train_without_validation_clips_is_refused_before_training(toy_vit_checkpoint, tmp_path, capsys):
    no_val = write_toy_videos(tmp_path / "noval", train=2, val=0, test=1, frames=8, size=32)
    out = tmp_path / "stdd"
    assert cli_main(_train_args(no_val, out, "--pretrained", str(toy_vit_checkpoint))) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert len(errors) == 1 and "no validation clips" in errors[0]
    assert not out.exists() or not any(out.iterdir())
