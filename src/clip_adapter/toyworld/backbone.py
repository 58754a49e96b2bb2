"""The tiny CLIP as a frozen :class:`~clip_adapter.backbones.Backbone` (``--backbone toy``).

``pretrained`` is ``shipped`` (the checkpoint inside the package), a path to
a toy checkpoint (its ``.safetensors`` file with the ``.json`` beside it, or
the directory holding both), or ``none`` for a seeded random initialisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..backbones import BACKBONES
from ..backbones.base import Backbone, PreprocessConfig
from ..backbones.checkpoint import load_into, load_state_dict
from ..backbones.precision import parameter_count, resolve_device, resolve_precision
from ..core.errors import ArtifactError
from ..core.files import read_json
from .model import ToyClip, ToyClipConfig
from .pretrain import CHECKPOINT_FORMAT, CHECKPOINT_STEM, PREPROCESS
from .tokenizer import ToyTokenizer

SHIPPED_DIR = Path(__file__).parent / "checkpoint"
SHIPPED = "shipped"
RANDOM = "none"
TOY_NAMES = (
    "toy",
    "toy-cnn",
)  # the names it registers in BACKBONES; "toy-cnn" is the architecture name artifacts record


def shipped_checkpoint() -> Path:
    """Path of the checkpoint that ships inside the package."""
    return SHIPPED_DIR / f"{CHECKPOINT_STEM}.safetensors"


def resolve_checkpoint(pretrained: str | Path) -> tuple[Path, Path]:
    """``(weights, config)`` paths for ``shipped``, a ``.safetensors`` file or a directory."""
    path = shipped_checkpoint() if str(pretrained) == SHIPPED else Path(pretrained)
    if path.is_dir():
        path = path / f"{CHECKPOINT_STEM}.safetensors"
    if path.suffix != ".safetensors":
        raise ArtifactError(f"toy checkpoint must be a .safetensors file or a directory holding one: {path}")
    if not path.is_file():
        raise ArtifactError(f"toy checkpoint not found: {path}")
    return path, path.with_suffix(".json")


def read_checkpoint_config(path: Path) -> dict[str, Any]:
    """The checkpoint's JSON, checked for the fields a model needs."""
    meta = read_json(path, "toy checkpoint config", error=ArtifactError)
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"toy checkpoint config {path} is not a {CHECKPOINT_FORMAT} file")
    for key, kind in (("architecture", dict), ("preprocess", dict), ("vocab", list)):
        if not isinstance(meta.get(key), kind):
            raise ArtifactError(f"toy checkpoint config {path}: missing or malformed {key!r}")
    return meta


def load_toy_clip(pretrained: str | Path) -> tuple[ToyClip, ToyTokenizer, PreprocessConfig, str]:
    """Model, tokenizer, preprocessing and ``sha256:<hex>`` weights id of a toy checkpoint.

    Example:
        >>> model, tokenizer, preprocess, weights_id = load_toy_clip("shipped")
        >>> weights_id.startswith("sha256:")
        True
    """
    weights, config_path = resolve_checkpoint(pretrained)
    meta = read_checkpoint_config(config_path)
    try:
        cfg = ToyClipConfig.from_dict(meta["architecture"], where=str(config_path))
        preprocess = PreprocessConfig.from_dict(meta["preprocess"], where=str(config_path))
        tokenizer = ToyTokenizer(meta["vocab"], context_length=cfg.context_length)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"toy checkpoint config {config_path} is invalid: {exc}") from None
    if len(tokenizer) != cfg.vocab_size:
        raise ArtifactError(
            f"toy checkpoint config {config_path}: vocab has {len(tokenizer)} words, architecture {cfg.vocab_size}"
        )
    model = ToyClip(cfg)
    state, digest = load_state_dict(weights)  # one read: parsed, checked, hashed
    load_into(model, state, str(weights))  # names the first missing, extra or mis-shaped tensor
    return model, tokenizer, preprocess, f"sha256:{digest}"


class ToyClipBackbone(Backbone):
    """The built-in tiny CLIP (CNN or ViT image tower, as its checkpoint says), frozen.

    Example:
        >>> bb = ToyClipBackbone(precision="fp32")
        >>> bb.encode_texts(["a photo of a red circle."]).shape == (1, bb.embed_dim)
        True
    """

    provider = "toy"
    accepts_truncated_tokens = True  # ToyClip.encode_token_embeddings takes rows cut after <eot>

    def __init__(self, pretrained: str = SHIPPED, precision: str = "auto", device: str = "auto", seed: int = 0) -> None:
        self.pretrained = str(pretrained)
        self.device = resolve_device(device)
        resolve_precision(precision, self.device)  # a bad value is refused before any loading
        if self.pretrained.lower() == RANDOM:
            torch.manual_seed(seed)
            model, tokenizer, self.preprocess = ToyClip(ToyClipConfig()), ToyTokenizer(), PREPROCESS
            self.weights_id = f"random-init:{seed}"
        else:
            model, tokenizer, self.preprocess, self.weights_id = load_toy_clip(self.pretrained)
        self.name = f"toy-{model.cfg.image_tower}"  # "toy-cnn" for every checkpoint made before the ViT option
        self.precision = resolve_precision(precision, self.device, parameter_count(model))
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.embed_dim = model.cfg.embed_dim
        self.logit_scale = float(model.logit_scale.float().exp())

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode_image(pixels.to(self.device, self.dtype)).float()

    @property
    def supports_dense(self) -> bool:  # type: ignore[override]
        """Dense features come from the CNN tower's attention pool; the ViT tower has none here."""
        return self.model.cfg.image_tower == "cnn"

    def encode_dense(self, pixels: torch.Tensor) -> torch.Tensor:
        """Per-location embeddings ``[B, grid*grid, embed_dim]`` of the CNN's last feature map.

        MaskCLIP's reading of an attention pool: each location (with its
        positional embedding, as the pool sees it) goes through the value and
        output projections only. Both are affine, so the pooled embedding is
        the attention-weighted mean of these rows (plus the mean token's row),
        head by head; with one head, exactly.

        Example:
            >>> bb = ToyClipBackbone(pretrained="none", precision="fp32")
            >>> bb.encode_dense(torch.zeros(2, 3, 64, 64)).shape
            torch.Size([2, 16, 128])
        """
        from ..core.errors import ConfigError

        if self.model.cfg.image_tower != "cnn":
            raise ConfigError(
                f"dense features are defined for the toy CNN tower only, not {self.name} "
                f"(its checkpoint {self.pretrained})"
            )
        visual = self.model.visual
        pool = visual.pool
        with torch.no_grad():
            grid = visual.trunk(pixels.to(self.device, self.dtype))
            tokens = grid.flatten(2).transpose(1, 2)  # [B, HW, C]
            if tokens.shape[1] + 1 != pool.position.shape[0]:
                raise ConfigError(
                    f"toy dense features need {self.preprocess.image_size}-pixel inputs, got {tuple(pixels.shape[-2:])}"
                )
            tokens = tokens + pool.position[1:].to(tokens.dtype)
            width = tokens.shape[-1]
            values = F.linear(tokens, pool.qkv.weight[2 * width :], pool.qkv.bias[2 * width :])
            return pool.out(values).float()

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    def unknown_words(self, texts: Sequence[str]) -> dict[str, list[str]]:
        """Words outside the toy vocabulary (they become ``<unk>``), per text that has any.

        Example:
            >>> ToyClipBackbone(pretrained="none", precision="fp32").unknown_words(["golden retriever", "red circle"])
            {'golden retriever': ['golden', 'retriever']}
        """
        found = {text: self.tokenizer.unknown_words(text) for text in texts}
        return {text: words for text, words in found.items() if words}

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(tokens.to(self.device))

    def encode_token_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.to(self.device, self.dtype)
        return self.model.encode_token_embeddings(embeddings, tokens.to(self.device)).float()


def create_toy_backbone(
    pretrained: str | None = None, precision: str = "auto", device: str = "auto", seed: int = 0
) -> ToyClipBackbone:
    """``create_backbone("toy")``: the shipped checkpoint unless ``pretrained`` names another (or ``none``)."""
    return ToyClipBackbone(pretrained=pretrained or SHIPPED, precision=precision, device=device, seed=seed)


for _name in TOY_NAMES:
    BACKBONES.register(_name)(create_toy_backbone)
