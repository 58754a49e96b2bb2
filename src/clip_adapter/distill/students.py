"""Trainable students (and the pixels every model wants): toy CLIP presets or any open_clip architecture.

A student is written as a backbone checkpoint every other command loads:
a toy student as ``toy_clip.safetensors`` + ``toy_clip.json`` (``--backbone
toy --pretrained <folder>``), an open_clip student as ``student.safetensors``,
its state dict (``--backbone <arch> --pretrained <file>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import PreprocessConfig, create_backbone
from ..core.errors import ConfigError
from ..core.files import save_tensors
from ..toyworld.backbone import TOY_NAMES
from ..toyworld.model import MAX_LOGIT_SCALE, ToyClip, ToyClipConfig, count_parameters
from ..toyworld.pretrain import PREPROCESS, write_toy_checkpoint
from ..toyworld.tokenizer import ToyTokenizer

# Smaller toy CLIPs (the shipped one, "toy", has 3.11 M parameters). Halving every width makes
# "toy-small" 4.7x smaller and ~4x cheaper per image.
TOY_STUDENTS: dict[str, dict] = {
    "toy-small": dict(
        widths=(16, 32, 64, 128), depths=(1, 1, 1, 1), embed_dim=64, text_width=64, text_layers=2, text_heads=2
    ),
    "toy-tiny": dict(
        widths=(8, 16, 32, 64), depths=(1, 1, 1, 1), embed_dim=32, text_width=32, text_layers=1, text_heads=1
    ),
}
OPEN_CLIP_FILE = "student.safetensors"


def pixels_for(images: np.ndarray | torch.Tensor, preprocess: PreprocessConfig) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` → normalised float ``[B, 3, S, S]`` at the model's input side ``S``.

    Example:
        >>> pixels_for(np.zeros((2, 64, 64, 3), np.uint8), PreprocessConfig(image_size=32)).shape
        torch.Size([2, 3, 32, 32])
    """
    x = (
        images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
    )  # a DataLoader makes tensors
    x = x.permute(0, 3, 1, 2).float().div_(255)
    if x.shape[-1] != preprocess.image_size or x.shape[-2] != preprocess.image_size:
        mode = "bilinear" if preprocess.interpolation == "bilinear" else "bicubic"
        size = (preprocess.image_size, preprocess.image_size)
        x = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False).clamp_(0, 1)
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    return (x - mean) / std


class Student:
    """A CLIP being trained: its model, tokenizer, preprocessing, and how to write it as a backbone checkpoint.

    ``spec``: a toy preset (``toy`` = the shipped architecture, ``toy-small``, ``toy-tiny``) or an open_clip
    architecture name; ``pretrained``: ``none`` (seeded random weights) or a checkpoint to start from.

    Example:
        >>> s = Student("toy-small")
        >>> s.encode_text(s.tokenize(["a red circle."])).shape
        torch.Size([1, 64])
    """

    def __init__(self, spec: str, pretrained: str = "none", seed: int = 0) -> None:
        self.spec = spec
        self.is_toy = spec in TOY_STUDENTS or spec in TOY_NAMES
        if self.is_toy:
            self._init_toy(spec, pretrained, seed)
        else:
            self._init_open_clip(spec, pretrained, seed)
        if self.is_toy:
            self.model.to(memory_format=torch.channels_last)  # as pretraining: the CNN runs faster on CPU
        self.model.train().requires_grad_(True)

    def _init_toy(self, spec: str, pretrained: str, seed: int) -> None:
        if pretrained.lower() != "none":
            if spec in TOY_STUDENTS:
                raise ConfigError(
                    f"--student {spec} is an architecture; "
                    "to start from a checkpoint pass --student toy --student-pretrained it"
                )
            self.backbone = create_backbone("toy", pretrained, precision="fp32", device="cpu")
            self.model, self.tokenizer, self.preprocess = (
                self.backbone.model,
                self.backbone.tokenizer,
                self.backbone.preprocess,
            )
            return
        torch.manual_seed(seed)
        self.model = ToyClip(ToyClipConfig(**TOY_STUDENTS.get(spec, {})))
        self.tokenizer, self.preprocess = ToyTokenizer(context_length=self.model.cfg.context_length), PREPROCESS

    def _init_open_clip(self, spec: str, pretrained: str, seed: int) -> None:
        import open_clip

        if spec not in open_clip.list_models():
            presets = ", ".join(["toy", *TOY_STUDENTS])
            raise ConfigError(
                f"unknown student {spec!r}: a toy preset ({presets}) "
                "or an open_clip architecture (open_clip.list_models())"
            )
        self.backbone = create_backbone(spec, pretrained, precision="fp32", device="cpu", seed=seed)
        self.model, self.preprocess = self.backbone.model, self.backbone.preprocess

    @property
    def embed_dim(self) -> int:
        return self.model.cfg.embed_dim if self.is_toy else self.backbone.embed_dim

    @property
    def log_logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    def parameter_count(self) -> int:
        return count_parameters(self.model)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts)) if self.is_toy else self.backbone.tokenize(texts)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.is_toy:
            return self.model.encode_image(pixels.contiguous(memory_format=torch.channels_last))
        return self.model.encode_image(pixels)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.is_toy:
            return self.model.encode_text(tokens)
        return self.backbone.encode_token_embeddings(self.backbone.embed_tokens(tokens), tokens)  # differentiable

    def clamp_logit_scale(self) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def save(self, out: Path, info: dict) -> Path:
        """Write the student as a backbone checkpoint into ``out``; returns what ``--pretrained`` takes."""
        self.model.eval()
        if self.is_toy:
            write_toy_checkpoint(self.model, self.tokenizer, out, info)
            return out
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.model.state_dict().items()}
        save_tensors(
            out / OPEN_CLIP_FILE, state, metadata={"format": "open_clip-state-dict", "architecture": self.spec}
        )
        return out / OPEN_CLIP_FILE

    def backbone_args(self, saved: Path) -> tuple[str, str]:
        """``(--backbone, --pretrained)`` that load the saved student."""
        return ("toy" if self.is_toy else self.spec), str(saved)
