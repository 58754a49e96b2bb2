"""Pretrain a toy *video* CLIP: a ViT image tower that reads the motion words, in minutes on a CPU.

Frozen image CLIPs learn action words from single web images: a photo of
someone "sitting down" mostly shows where the motion ends. The toy version:
half of each batch is the ordinary toy-world scenes and captions
(:func:`clip_adapter.toyworld.pretrain.render_batch`), the other half single
frames of toy motion clips. Half of those are from a clip's **last quarter**,
captioned with its action ("a red circle moving left"); the rest are any of
its states captioned with the clause the description file uses for it ("a
shape on the right" for the first frames of "moving left", "a shape moving from
the right to the left" for its last ones). So "moving left" is grounded in "a
shape on the left", "growing" in "a large shape", the description clauses mean
what they say, and a frame-averaged frozen model cannot tell a clip from its
time reversal (both visit the same states), while a temporal encoder can: the
action is where the clip *ends*, which holds for actions never fine-tuned on
(the novel actions of the base-to-novel split) too.

The vocabulary is the default one plus every word of the toy actions and
their descriptions the default one lacks. The result is a toy checkpoint
(``--backbone toy --pretrained DIR``).

The quick recipe (:data:`QUICK`, ``video toy-pretrain --quick``) starts the
image tower from a toy checkpoint too (``image_from``: the shipped CNN), so a
few hundred small steps are enough to try the video commands; the default
recipe trains a new ViT, the tower STDD's space-time attention needs.

Example:
    >>> cfg = VideoPretrainConfig(steps=1, batch_size=4)
    >>> images, texts = pretrain_batch(cfg, 0)
    >>> images.shape, len(texts)
    ((4, 64, 64, 3), 4)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backbones.precision import use_bf16
from ..core.config import Default, check_choice, check_range, defaults, option
from ..core.files import atomic_dir
from ..core.optim import StepsOptimConfig, train_encoder
from ..core.outputs import claim_output_dir, is_own_output, mark_output_dir
from ..toyworld.model import ToyClip, ToyClipConfig
from ..toyworld.pretrain import clip_loss, render_batch, to_pixels, write_toy_checkpoint
from ..toyworld.tokenizer import ToyTokenizer, default_vocab
from .toyactions import ACTIONS, CLASSES, descriptions
from .toyclips import render_clip_object

OUTPUT_KIND = "toy-video-clip"
CAPTIONS = ("a {color} {shape} {action}", "a {shape} {action}", "a shape {action}", "a photo of a shape {action}.")
END_FRAMES = 5  # a clip is rendered with 5 frames (u = 0, .25, .5, .75, 1); the last two are captioned
# `video toy-pretrain --quick`: a first toy video CLIP in about two minutes, for trying the video
# commands. It starts from the shipped CLIP's CNN image tower, which already reads the toy world's shapes,
# positions and sizes, so 200 steps of 64 pairs ground the motion words (a new ViT needs the default
# 1,500 steps of 128: 200 of them left it near the shipped CLIP). Chosen on the default toy video dataset
# (not checked on held-out video worlds). Measured on the 2-core AMD EPYC (AVX-512), fp32, one thread,
# beside other jobs: 2 min 19 s; 11-action test top-1 26.1 % (shipped CLIP 12.5, chance 9.1), top-5 93.2;
# frozen base/novel 31.2 / 47.5 (README). One thread: with the cores shared, two threads ran a step 5x
# slower. A CNN has no attention blocks: `video train` needs --stdd off.
QUICK = {"steps": 200, "batch_size": 64, "image_from": "shipped", "threads": 1}


def warmup_for(steps: int) -> int:
    """Warm-up steps of a run of ``steps``: a tenth of it, at most 100 (so 100 for the default 1,500).

    Example:
        >>> warmup_for(1500), warmup_for(300), warmup_for(5)
        (100, 30, 1)
    """
    return min(100, max(1, steps // 10))


@dataclass
@defaults(steps=1500, warmup_steps=100, threads=Default(2, "torch CPU threads (0: torch's default)"))
class VideoPretrainConfig(StepsOptimConfig):
    """Settings of the toy video CLIP's pretraining.

    Measured only on the default toy video dataset: 200 steps left a new ViT near the shipped
    CLIP where the default 1,500 steps of 128 did not (see :data:`QUICK`). lr 5e-4 and weight
    decay 0.05 are the toy image pretraining's; the other values' origin is not recorded.
    Not checked on held-out video worlds.
    """

    batch_size: int = option(128, "image-caption pairs per step")
    motion_fraction: float = option(0.5, "share of each batch that is a captioned frame of a motion clip")
    state_share: float = option(0.5, "share of those captioned with the frame's state clause instead of the action")
    precision: str = option("auto", "auto (bf16 where fast), bf16 or fp32")
    vit_width: int = option(96, "ViT width")
    vit_layers: int = option(3, "ViT blocks")
    patch_size: int = option(16, "ViT patch side (64-pixel frames: a 4x4 grid, two 2x2 space-time windows a side)")
    text_from: str = option("shipped", "toy checkpoint whose text tower starts the run ('none': from scratch)")
    image_from: str = option(
        "none", "toy checkpoint whose image tower (and architecture) starts the run ('none': a new ViT)"
    )

    def validate(self) -> None:
        super().validate()
        check_range("batch_size", self.batch_size, 2)
        check_range("motion_fraction", self.motion_fraction, 0.0, 1.0)
        check_range("state_share", self.state_share, 0.0, 1.0)
        check_choice("precision", self.precision, ("auto", "bf16", "fp32"))

    def model_config(self, vocab_size: int) -> ToyClipConfig:
        return ToyClipConfig(
            image_tower="vit",
            vit_width=self.vit_width,
            vit_layers=self.vit_layers,
            patch_size=self.patch_size,
            vocab_size=vocab_size,
        )


def motion_vocab() -> list[str]:
    """The default toy vocabulary plus the action and description words it lacks (sorted, appended).

    Example:
        >>> vocab = motion_vocab()
        >>> "clockwise" in vocab and "clockwise" not in default_vocab()
        True
    """
    base = default_vocab()
    probe = ToyTokenizer(base)
    texts = [*CLASSES, *(c for clauses in descriptions().values() for c in clauses)]
    extra = sorted({w for t in texts for w in probe.unknown_words(t)})
    return [*base, *extra]


def _init_text_tower(model: ToyClip, source: str) -> None:
    """Copy a toy checkpoint's text tower and temperature into ``model``; new words start as its ``<unk>`` row.

    The image tower then only has to meet an existing text space, which takes
    a few hundred steps instead of thousands.
    """
    from ..toyworld.backbone import load_toy_clip

    donor, donor_tokenizer, _, _ = load_toy_clip(source)
    state = {
        k: v for k, v in donor.state_dict().items() if not k.startswith("visual.") and k != "token_embedding.weight"
    }
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        old = donor.token_embedding.weight
        model.token_embedding.weight[: old.shape[0]] = old
        model.token_embedding.weight[old.shape[0] :] = old[donor_tokenizer.unk_id]


def _image_donor_model(source: str, vocab_size: int) -> ToyClip:
    """A model of ``source``'s architecture (``vocab_size`` words) holding its image tower:
    frames it can already read."""
    from ..toyworld.backbone import load_toy_clip

    donor = load_toy_clip(source)[0]
    model = ToyClip(donor.cfg.replace(vocab_size=vocab_size))
    model.visual.load_state_dict(donor.visual.state_dict())
    return model


def motion_frame(rng: np.random.Generator, state_share: float = 0.5) -> tuple[np.ndarray, str]:
    """One frame of a random toy action clip and its caption.

    With probability ``1 - state_share`` the frame is from the clip's last
    quarter and captioned with its action ("a red circle moving left"). Otherwise
    any of the clip's five states is captioned with the clause that describes
    it (``Action.start``/``middle``/``end``, or the ``motion`` clause for an end
    frame), so the description files' words mean what they say to the frozen
    model, as an LLM-written description's words do to a real CLIP.
    """
    action = ACTIONS[rng.integers(len(ACTIONS))]
    frames, obj = render_clip_object(action.name, rng, frames=END_FRAMES, size=64)
    if rng.random() >= state_share:
        template = CAPTIONS[rng.integers(len(CAPTIONS))]
        return frames[-1 - rng.integers(2)], template.format(color=obj.color, shape=obj.shape, action=action.name)
    k = int(rng.integers(END_FRAMES))
    clauses = (action.start,) if k < 2 else (action.middle,) if k == 2 else (action.end, action.motion)
    return frames[k], clauses[rng.integers(len(clauses))]


def pretrain_batch(cfg: VideoPretrainConfig, step: int) -> tuple[np.ndarray, list[str]]:
    """uint8 images and captions of step ``step`` (a function of ``(seed, step)`` only)."""
    motion = int(round(cfg.batch_size * cfg.motion_fraction))
    images, texts = render_batch(cfg.seed, step, cfg.batch_size - motion)
    rng = np.random.default_rng([cfg.seed, step, 7])  # 7: a stream apart from render_batch's
    pairs = [motion_frame(rng, cfg.state_share) for _ in range(motion)]
    if pairs:
        images = np.concatenate([images, np.stack([p[0] for p in pairs])])
        texts = [*texts, *(p[1] for p in pairs)]
    return images, texts


def pretrain_video_clip(cfg: VideoPretrainConfig, out_dir: str | Path, log=print, overwrite: bool = False) -> Path:
    """Pretrain the toy video CLIP and write ``toy_clip.safetensors``/``.json`` into ``out_dir``; returns the weights.

    Example:
        >>> # pretrain_video_clip(VideoPretrainConfig(steps=1500), "runs/toy-video-clip")
    """
    out = claim_output_dir(out_dir, OUTPUT_KIND, overwrite=overwrite)  # checked before minutes of work
    previous = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        tokenizer = ToyTokenizer(motion_vocab())
        model = (
            _image_donor_model(cfg.image_from, len(tokenizer))
            if cfg.image_from.lower() != "none"
            else ToyClip(cfg.model_config(len(tokenizer)))
        )
        model.train()
        if cfg.text_from.lower() != "none":
            _init_text_tower(model, cfg.text_from)
        bf16 = use_bf16(cfg.precision, model)
        start, losses = time.perf_counter(), []

        def loss_at(step: int) -> torch.Tensor:
            images, texts = pretrain_batch(cfg, step)
            tokens = tokenizer(texts)
            _, groups = torch.unique(tokens, dim=0, return_inverse=True)  # identical captions are all positives
            return clip_loss(model, (to_pixels(images), tokens, groups), bf16)

        def progress_line(step: int, loss: float, lr: float, parts: dict) -> None:
            losses.append(loss)
            if (step + 1) % 100 == 0:
                log(
                    f"step {step + 1}/{cfg.steps} loss {np.mean(losses[-100:]):.3f} "
                    f"({time.perf_counter() - start:.0f} s)"
                )

        train_encoder(
            model, loss_at, cfg, after_step=model.clamp_logit_scale, row=progress_line, desc=None, hint="lower lr"
        )
        info = {
            "command": "clip_adapter.video.pretrain",
            "pretrain_config": cfg.to_dict(),
            "seed": cfg.seed,
            "steps": cfg.steps,
            "wall_time_s": round(time.perf_counter() - start, 1),
            "final_loss": round(float(np.mean(losses[-50:])), 4),
        }
        with atomic_dir(out, may_replace=lambda p: overwrite and is_own_output(p, OUTPUT_KIND)) as tmp:
            mark_output_dir(tmp, OUTPUT_KIND)
            write_toy_checkpoint(model.eval(), tokenizer, tmp, info)
        return out / "toy_clip.safetensors"
    finally:
        torch.set_num_threads(previous)
