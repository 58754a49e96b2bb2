"""The small interface every CLIP backbone implements.

A backbone is frozen: it turns pixels and prompts into raw (unnormalised)
embeddings and says which weights it holds. Methods never see the encoders
except through this interface, and most never see them at all: they work on
features cached by :mod:`clip_adapter.features`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..core.config import Config, check_choice, check_range, option
from ..core.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class PreprocessConfig(Config):
    """How a backbone expects its pixels: data looked up per model, never typed into code."""

    image_size: int = option(224, "side of the square input, in pixels")
    mean: tuple[float, ...] = option((0.48145466, 0.4578275, 0.40821073), "per-channel mean")
    std: tuple[float, ...] = option((0.26862954, 0.26130258, 0.27577711), "per-channel std")
    interpolation: str = option("bicubic", "resize interpolation: bicubic, bilinear or nearest")

    def validate(self) -> None:
        check_range("image_size", self.image_size, 8, 4096)
        check_choice("interpolation", self.interpolation, ("bicubic", "bilinear", "nearest"))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three channels and std > 0")


def normalise_arrays(images: np.ndarray, pre: PreprocessConfig) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` → normalised float ``[B, 3, H, W]``, the same float operations as ToTensor + Normalize.

    Example:
        >>> normalise_arrays(
        ...     np.full((1, 2, 2, 3), 255, np.uint8), PreprocessConfig(mean=(0.5,) * 3, std=(0.5,) * 3)
        ... ).unique()
        tensor([1.])
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (x - mean) / std


class Backbone(abc.ABC):
    """A frozen CLIP: image and text encoders into one embedding space.

    Subclasses set ``name``, ``pretrained``, ``weights_id``, ``embed_dim``,
    ``logit_scale``, ``preprocess``, ``precision`` and ``device`` and implement
    the token-level text path, which prompt-learning methods (CoOp, CoCoOp)
    need; ``encode_texts`` is built on it.

    Example:
        >>> from clip_adapter.backbones import create_backbone
        >>> bb = create_backbone("toy", pretrained="none", precision="fp32")
        >>> bb.encode_texts(["a red circle"]).shape[-1] == bb.embed_dim
        True
    """

    provider: str = "abstract"
    # True when encode_token_embeddings accepts rows cut after their last
    # end-of-text token (prompt learners then skip the padding's compute).
    accepts_truncated_tokens: bool = False
    # True when encode_dense gives per-location features (an optional capability).
    supports_dense: bool = False
    name: str
    pretrained: str
    weights_id: str  # "sha256:<hex>" of the checkpoint file, or "random-init:<seed>"
    embed_dim: int
    logit_scale: float
    preprocess: PreprocessConfig
    precision: str  # "bf16" or "fp32", resolved (never "auto")
    device: torch.device

    @property
    def id(self) -> str:
        """Stable name of architecture and weights, e.g. ``open_clip/ViT-B-32/sha256:ab12…``."""
        return f"{self.provider}/{self.name}/{self.weights_id}"

    @property
    def encoder_fingerprint(self) -> dict[str, str]:
        """Everything about the encoder that changes the numbers it produces."""
        return {"backbone": self.id, "precision": self.precision, "device": self.device.type}

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    @abc.abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw image embeddings, float32 ``[B, embed_dim]``, for preprocessed ``pixels``."""

    def encode_dense(self, pixels: torch.Tensor) -> torch.Tensor:
        """Per-location image embeddings, float32 ``[B, H*W, embed_dim]``, for preprocessed ``pixels``.

        The spatial features before pooling, mapped into the joint embedding
        space the way MaskCLIP (Zhou et al., ECCV 2022) does: ViT patch tokens
        through the final norm and projection, an attention pool's value and
        output projections applied at every location. Rows are in raster
        order (row-major over the feature grid). Optional: backbones that
        implement it set ``supports_dense``; the default refuses in one line.

        Example:
            >>> from clip_adapter.backbones import create_backbone
            >>> bb = create_backbone("toy", pretrained="none", precision="fp32")
            >>> bb.supports_dense, bb.encode_dense(torch.zeros(1, 3, 64, 64)).shape[-1] == bb.embed_dim
            (True, True)
        """
        raise ConfigError(f"backbone {self.id} has no dense (per-location) image features")

    @abc.abstractmethod
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``[N, context_length]`` (long)."""

    @abc.abstractmethod
    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[N, context_length, width]`` before the text transformer."""

    @abc.abstractmethod
    def encode_token_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Run the text transformer on (possibly learned) token embeddings.

        ``tokens`` gives the positions: the output is read at each row's
        end-of-text token, as CLIP does. Returns float32 ``[N, embed_dim]``.
        Gradients flow to ``embeddings``; the weights stay frozen.
        """

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Raw text embeddings, float32 ``[N, embed_dim]``."""
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[start : start + batch_size]).to(self.device)
            out.append(self.encode_token_embeddings(self.embed_tokens(tokens), tokens).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    def unknown_words(self, texts: Sequence[str]) -> dict[str, list[str]]:
        """Words the tokenizer cannot represent, per text that has any.

        A text missing from the result is read in full. Class names whose words
        are unknown get prompts that may be identical to another class's
        (both become ``<unk>``), so their text embeddings cannot tell them
        apart. The default is ``{}``: byte-level BPE tokenizers (CLIP's,
        open_clip's) can represent any text; backbones with a closed
        vocabulary override this.

        Example:
            >>> from clip_adapter.backbones import create_backbone
            >>> create_backbone("toy", pretrained="none", precision="fp32").unknown_words(
            ...     ["red circle", "Siamese", "pug"]
            ... )
            {'Siamese': ['Siamese'], 'pug': ['pug']}
        """
        return {}

    def describe(self) -> dict[str, object]:
        """What an artifact records about the backbone it was trained on."""
        return {
            "provider": self.provider,
            "name": self.name,
            "pretrained": self.pretrained,
            "id": self.id,
            "embed_dim": self.embed_dim,
            "precision": self.precision,
        }
