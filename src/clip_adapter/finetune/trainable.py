"""A trainable view over a backbone: its encoders with gradients, chosen parts unfrozen.

:class:`~clip_adapter.backbones.Backbone` is frozen by contract; fine-tuning
needs the same encoders with gradients. Both providers that hold their torch
module at ``backbone.model`` are supported: the toy CLIP (:class:`ToyClip`)
and open_clip CLIP models. The view reuses the backbone's own token path
(``embed_tokens`` → ``encode_token_embeddings``), so a text is encoded in
training exactly as it is at inference, and ``model.encode_image`` for pixels.

What is unfrozen (``unfreeze``):

- ``all``: both towers and the logit scale;
- ``text`` / ``image``: one tower (token and positional embeddings, blocks,
  final norm and projection for text; the whole visual module for images);
- ``text-last-N`` / ``image-last-N`` / ``last-N``: the last ``N`` transformer
  blocks of that tower (of both, for ``last-N``) plus what follows them (final
  norm and projection). The toy image tower is a CNN: it has no blocks to count.

The module stays in ``eval()`` mode while training: the toy CNN's batch-norm
statistics stay those of pretraining (small, compositionally skewed
fine-tuning batches would otherwise shift them), and CLIP models have no
dropout to switch on. The weights are trained in float32; ``autocast`` runs
the forward in bf16 only where the hardware is fast at it
(:func:`~clip_adapter.backbones.precision.cpu_has_fast_bf16`, CUDA).

Example:
    >>> from clip_adapter.backbones import create_backbone
    >>> view = TrainableClip(create_backbone("toy", pretrained="none", precision="fp32"), unfreeze="text")
    >>> view.encode_texts(["a red circle"]).requires_grad
    True
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator, Sequence

import torch
from torch import nn

from ..backbones.base import Backbone
from ..backbones.precision import parameter_count, resolve_precision
from ..core.config import check_choice
from ..core.errors import ConfigError

PROVIDERS = ("toy", "open_clip")
_SPEC = re.compile(r"^(all|text|image)$|^(?:(text|image)-)?last-(\d+)$")


class TrainableClip:
    """Encoders of ``backbone`` with gradients; ``unfreeze`` chooses what trains (see the module docstring)."""

    def __init__(self, backbone: Backbone, unfreeze: str = "all", precision: str = "auto") -> None:
        if backbone.provider not in PROVIDERS or not isinstance(getattr(backbone, "model", None), nn.Module):
            raise ConfigError(f"fine-tuning supports the toy and open_clip backbones, not {backbone.id}")
        check_choice("precision", precision, ("auto", "bf16", "fp32"))
        self.backbone = backbone
        self.model: nn.Module = backbone.model.float().eval()  # float32 master weights; autocast does bf16
        backbone.precision = "fp32"  # the backbone's own casts must not undo that
        self.unfreeze = unfreeze
        self.bf16 = resolve_precision(precision, backbone.device, parameter_count(self.model)) == "bf16"
        set_trainable(self.model, backbone.provider, unfreeze)

    @property
    def preprocess(self):
        return self.backbone.preprocess

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast where fast, else a no-op."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw image embeddings ``[B, D]`` with gradients to the unfrozen image parameters."""
        with self.autocast():
            return self.model.encode_image(pixels.to(self.device)).float()

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.backbone.tokenize(list(texts))

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raw text embeddings ``[N, D]`` of token ids, through the backbone's own token path."""
        tokens = tokens.to(self.device)
        with self.autocast():
            return self.backbone.encode_token_embeddings(self.backbone.embed_tokens(tokens), tokens).float()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode_tokens(self.tokenize(texts))

    def logit_scale(self) -> torch.Tensor:
        """The model's temperature ``exp(logit_scale)`` (trainable only with ``unfreeze=all``)."""
        return self.model.logit_scale.exp().float()

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.model.named_parameters() if p.requires_grad)

    def extend_vocab(self, words: Sequence[str]) -> list[str]:
        """Add ``words`` to a toy CLIP's vocabulary; returns the words that were new.

        New rows of the token embedding are copies of ``<unk>``'s row: the
        base model read these words as ``<unk>``, so the extended model
        encodes every text exactly as before until training moves them.
        The token embedding then trains whatever ``unfreeze`` says (with
        ``text-last-N`` it would otherwise stay frozen and the new words would
        remain ``<unk>`` forever). open_clip's byte-level BPE already reads any
        word: nothing to add.

        Example:
            >>> from clip_adapter.backbones import create_backbone
            >>> view = TrainableClip(create_backbone("toy", pretrained="none", precision="fp32"), unfreeze="text")
            >>> view.extend_vocab(["no", "circle"])
            ['no']
        """
        if self.backbone.provider != "toy":
            return []
        from .vocab import extend_toy_vocab

        added = extend_toy_vocab(self.backbone, words)
        if added:
            self.model.token_embedding.weight.requires_grad_(True)
        return added


def set_trainable(model: nn.Module, provider: str, unfreeze: str) -> None:
    """Freeze ``model``, then unfreeze the parts ``unfreeze`` names (a ConfigError for an unknown spec)."""
    match = _SPEC.match(unfreeze)
    if not match:
        raise ConfigError(f"unfreeze {unfreeze!r} is not one of all, text, image, last-N, text-last-N, image-last-N")
    model.requires_grad_(False)
    whole, tower, count = match.group(1), match.group(2), match.group(3)
    if whole == "all":
        model.requires_grad_(True)
        return
    if whole:
        _tower_params(model, provider, whole, None)
        return
    for side in [tower] if tower else ["text", "image"]:
        _tower_params(model, provider, side, int(count))


def _tower_params(model: nn.Module, provider: str, side: str, last: int | None) -> None:
    if side == "image":
        if last is None:
            model.visual.requires_grad_(True)
            return
        blocks = getattr(getattr(model.visual, "transformer", None), "resblocks", None)
        if blocks is None:
            raise ConfigError(
                f"the {provider} image tower ({type(model.visual).__name__}) "
                f"has no transformer blocks to unfreeze the last {last} of"
            )
        _unfreeze_last(blocks, last, "image")
        for name in ("ln_post", "proj", "attn_pool"):
            _unfreeze_attr(model.visual, name)
        return
    blocks = model.blocks if provider == "toy" else model.transformer.resblocks
    if last is None:
        for name in ("token_embedding", "positional_embedding"):
            _unfreeze_attr(model, name)
        last = len(blocks)
    _unfreeze_last(blocks, last, "text")
    for name in ("ln_final", "text_projection"):
        _unfreeze_attr(model, name)


def _unfreeze_last(blocks: nn.ModuleList, last: int, side: str) -> None:
    if not 1 <= last <= len(blocks):
        raise ConfigError(f"unfreeze: the {side} tower has {len(blocks)} blocks; cannot unfreeze the last {last}")
    for block in list(blocks)[-last:]:
        block.requires_grad_(True)


def _unfreeze_attr(owner: nn.Module, name: str) -> None:
    part = getattr(owner, name, None)
    if isinstance(part, nn.Module):
        part.requires_grad_(True)
    elif isinstance(part, nn.Parameter):
        part.requires_grad_(True)
