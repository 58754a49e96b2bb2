"""Pretrain the tiny CLIP on freshly rendered scenes with symmetric InfoNCE.

Every step renders a new batch of random scenes in the diverse ``photo`` mix
with one random caption each (on the fly: rendering is ~15 % of a step and
keeps every image new). Identical captions in a batch are all positives of
each other. The batch of step ``k`` depends only on ``(seed, k)``, so a run is
reproducible from its seed on the same machine (at the same ``threads``). The
progress bar shows on a terminal only (see :func:`clip_adapter.core.progress.progress`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._version import __version__
from ..backbones.base import PreprocessConfig, normalise_arrays
from ..backbones.precision import use_bf16
from ..core.config import Default, check_choice, check_range, defaults, option
from ..core.files import atomic_write_json, save_tensors
from ..core.optim import CsvLog, StepsOptimConfig, train_encoder
from .model import ToyClip, ToyClipConfig, count_parameters
from .render import IMAGE_SIZE, render_array
from .tokenizer import ToyTokenizer
from .world import caption, sample_scene

CHECKPOINT_STEM = "toy_clip"
CHECKPOINT_FORMAT = "clip-adapter-toy-clip"
CHECKPOINT_FORMAT_VERSION = 1
LOG_NAME = "pretrain_log.csv"
PREPROCESS = PreprocessConfig(image_size=IMAGE_SIZE, interpolation="bilinear")  # CLIP's mean/std


@dataclass
@defaults(
    steps=1200,
    warmup_steps=50,
    threads=Default(
        1, "torch CPU threads for training (results depend on it; 1 stays fast when another process takes a core)"
    ),
)
class PretrainConfig(StepsOptimConfig):
    """Settings of ``clip-adapter toy pretrain`` (the defaults made the shipped checkpoint)."""

    batch_size: int = option(128, "image-caption pairs per step")
    out_dir: str = option("runs/toy-pretrain", "directory for toy_clip.safetensors/.json and the CSV log")
    precision: str = option("auto", "autocast precision: auto (bf16 where fast), bf16 or fp32")
    workers: int = option(1, "1: render batches ahead in a worker process; 0: in the training loop (same batches)")
    widths: tuple[int, ...] = option((32, 64, 128, 256), "CNN stage widths")
    depths: tuple[int, ...] = option((1, 1, 2, 1), "CNN residual blocks per stage")
    embed_dim: int = option(128, "shared embedding dimension")
    text_layers: int = option(3, "text transformer layers")

    def validate(self) -> None:
        super().validate()
        check_range("batch_size", self.batch_size, 2)
        check_range("workers", self.workers, 0, 1)
        check_choice("precision", self.precision, ("auto", "bf16", "fp32"))

    def model_config(self) -> ToyClipConfig:
        return ToyClipConfig(
            widths=self.widths, depths=self.depths, embed_dim=self.embed_dim, text_layers=self.text_layers
        )


def to_pixels(images: np.ndarray, preprocess: PreprocessConfig = PREPROCESS) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` → normalised float ``[B, 3, H, W]`` (as ToTensor + Normalize do), at the renders' size."""
    return normalise_arrays(images, preprocess)


def render_batch(seed: int, step: int, batch_size: int) -> tuple[np.ndarray, list[str]]:
    """uint8 images ``[B, H, W, 3]`` and captions of step ``step`` (a function of ``(seed, step)`` only).

    Other models (a distillation student with its own tokenizer and input size) read these raw.

    Example:
        >>> images, texts = render_batch(0, 0, 2)
        >>> images.shape, len(texts)
        ((2, 64, 64, 3), 2)
    """
    rng = np.random.default_rng([seed, step])
    scenes = [sample_scene(rng) for _ in range(batch_size)]
    texts = [caption(scene, rng) for scene in scenes]
    return np.stack([render_array(scene, "photo", rng) for scene in scenes]), texts


def make_batch(
    seed: int, step: int, batch_size: int, tokenizer: ToyTokenizer
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels, tokens and caption-group ids of step ``step`` (a function of ``(seed, step)`` only).

    Example:
        >>> px, tok, groups = make_batch(0, 0, 4, ToyTokenizer())
        >>> px.shape, tok.shape[0], groups.shape
        (torch.Size([4, 3, 64, 64]), 4, torch.Size([4]))
    """
    images, texts = render_batch(seed, step, batch_size)
    tokens = tokenizer(texts)
    # Captions that tokenize identically are the same caption ("a circle." == "a circle").
    _, groups = torch.unique(tokens, dim=0, return_inverse=True)
    return to_pixels(images), tokens, groups


class BatchStream(torch.utils.data.IterableDataset):
    """Yields ``make_batch(seed, step)`` for every step in order."""

    def __init__(self, seed: int, steps: int, batch_size: int, tokenizer: ToyTokenizer) -> None:
        super().__init__()
        self.seed, self.steps, self.batch_size, self.tokenizer = seed, steps, batch_size, tokenizer

    def __iter__(self):
        return (make_batch(self.seed, step, self.batch_size, self.tokenizer) for step in range(self.steps))


def batches(cfg: PretrainConfig, tokenizer: ToyTokenizer):
    """Batches of every step, rendered ahead by a worker process when ``cfg.workers`` is 1."""
    stream = BatchStream(cfg.seed, cfg.steps, cfg.batch_size, tokenizer)
    if cfg.workers == 0:
        return iter(stream)
    return iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=1, prefetch_factor=4))


def multi_positive_infonce(
    image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor, groups: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE where every pair with the same caption group is a positive.

    Example:
        >>> e = F.normalize(torch.randn(4, 8), dim=-1)
        >>> float(multi_positive_infonce(e, e, torch.tensor(100.0), torch.arange(4))) < 0.1
        True
    """
    logits = scale * F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T
    positives = (groups[:, None] == groups[None, :]).float()
    targets = positives / positives.sum(1, keepdim=True)  # symmetric, so one target serves both ways
    loss_i2t = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t2i = -(targets * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


def clip_loss(model: ToyClip, batch: tuple, bf16: bool) -> torch.Tensor:
    """The multi-positive InfoNCE of one ``(pixels, tokens, groups)`` batch (the forward pass autocast to bf16 if
    asked)."""
    pixels, tokens, groups = batch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        image_emb = model.encode_image(pixels.contiguous(memory_format=torch.channels_last))
        text_emb = model.encode_text(tokens)
    return multi_positive_infonce(image_emb, text_emb, model.logit_scale.exp(), groups)


def pretrain(cfg: PretrainConfig, command: str | None = None) -> Path:
    """Pretrain a tiny CLIP and write ``<out_dir>/toy_clip.safetensors`` + ``.json`` + a CSV log.

    Returns the path of the ``.safetensors`` file.

    Example:
        >>> import tempfile
        >>> path = pretrain(PretrainConfig(steps=2, batch_size=8, out_dir=tempfile.mkdtemp()))  # doctest: +SKIP
        >>> path.name  # doctest: +SKIP
        'toy_clip.safetensors'
    """
    previous_threads = torch.get_num_threads()
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.set_flush_denormal(True)  # denormal activations can slow CPU kernels many-fold
        return _train(cfg, command)
    finally:  # leave the process as it was (tests and the CLI run more afterwards)
        torch.set_num_threads(previous_threads)
        torch.set_flush_denormal(False)


def _train(cfg: PretrainConfig, command: str | None) -> Path:
    torch.manual_seed(cfg.seed)
    model = ToyClip(cfg.model_config()).to(memory_format=torch.channels_last).train()
    tokenizer = ToyTokenizer(context_length=model.cfg.context_length)
    bf16, out = use_bf16(cfg.precision, model), Path(cfg.out_dir)
    tick = start = time.perf_counter()

    def row(step: int, loss: float, lr: float, parts: dict) -> dict:
        nonlocal tick
        speed, tick = cfg.batch_size / (time.perf_counter() - tick), time.perf_counter()
        return {
            "step": step,
            "loss": f"{loss:.5f}",
            "lr": f"{lr:.6g}",
            "logit_scale": f"{model.logit_scale.exp().item():.3f}",
            "images_per_s": f"{speed:.1f}",
        }

    train_encoder(
        model,
        lambda batch: clip_loss(model, batch, bf16),
        cfg,
        batches=batches(cfg, tokenizer),
        after_step=model.clamp_logit_scale,
        log=CsvLog(out / LOG_NAME),
        row=row,
        desc="toy pretrain",
        postfix=lambda r: {"loss": f"{float(r['loss']):.3f}", "img_s": f"{float(r['images_per_s']):.0f}"},
        hint="lower --lr",
    )
    wall = time.perf_counter() - start
    return save_checkpoint(model.eval(), tokenizer, cfg, out, wall, command)


def _default_command(cfg: PretrainConfig) -> str:
    defaults = PretrainConfig().to_dict()
    flags = []
    for key, value in cfg.to_dict().items():
        if value != defaults[key]:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            flags.append(f"--{key.replace('_', '-')} {shown}")
    return " ".join(["clip-adapter toy pretrain", *flags])


def save_checkpoint(
    model: ToyClip, tokenizer: ToyTokenizer, cfg: PretrainConfig, out: Path, wall: float, command: str | None
) -> Path:
    """Write the weights (safetensors, float32) and the JSON config beside them."""
    return write_toy_checkpoint(
        model,
        tokenizer,
        out,
        {
            "command": command or _default_command(cfg),
            "pretrain_config": cfg.to_dict(),
            "seed": cfg.seed,
            "steps": cfg.steps,
            "wall_time_s": round(wall, 1),
        },
    )


def write_toy_checkpoint(model: ToyClip, tokenizer: ToyTokenizer, out: Path, info: dict) -> Path:
    """Write ``toy_clip.safetensors`` (float32) and ``toy_clip.json`` (architecture, vocab, ``info``) into ``out``.

    Any toy CLIP written here loads with ``--backbone toy --pretrained <out>``; returns the weights' path.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> write_toy_checkpoint(ToyClip(ToyClipConfig()), ToyTokenizer(), out, {"command": "test"}).name
        'toy_clip.safetensors'
    """
    weights = out / f"{CHECKPOINT_STEM}.safetensors"
    state = {k: v.float().contiguous() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_tensors(weights, state, metadata={"format": CHECKPOINT_FORMAT})
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "architecture": model.cfg.to_dict(),
        "preprocess": PREPROCESS.to_dict(),
        "vocab": tokenizer.vocab,
        "library_version": __version__,
        "parameters": {"image": count_parameters(model.visual), "total": count_parameters(model)},
        "torch_version": torch.__version__,
    }
    atomic_write_json(out / f"{CHECKPOINT_STEM}.json", {**info, **meta})  # info never overrides the format fields
    return weights
