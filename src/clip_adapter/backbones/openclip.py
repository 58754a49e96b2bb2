"""Backbones from open_clip: any ``open_clip.list_models()`` architecture.

``pretrained`` is one of:

- an open_clip tag such as ``openai`` or ``laion2b_s34b_b79k``: the weights
  are downloaded by open_clip (Hugging Face hub or URL) on a connected
  machine and then hashed and loaded like a local file;
- a path to a local ``.safetensors`` or ``.pt``/``.bin`` state dict (loaded
  with ``weights_only=True``; TorchScript archives are refused);
- ``none``: seeded random initialisation, for tests and offline trials.

For OpenAI weights from a local file, use the ``-quickgelu`` architecture
name (e.g. ``ViT-B-32-quickgelu``): those models were trained with QuickGELU.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import torch

from ..core.errors import ConfigError
from .base import Backbone, PreprocessConfig
from .checkpoint import load_into, load_state_dict
from .hub import fetch_weights
from .precision import parameter_count, resolve_device, resolve_precision


class OpenClipBackbone(Backbone):
    """A frozen open_clip model.

    Example:
        >>> bb = OpenClipBackbone("RN50", pretrained="none", precision="fp32")  # doctest: +SKIP
        >>> bb.id  # doctest: +SKIP
        'open_clip/RN50/random-init:0'
    """

    provider = "open_clip"
    accepts_truncated_tokens = True  # see encode_token_embeddings

    def __init__(
        self,
        name: str,
        pretrained: str = "none",
        precision: str = "auto",
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        import open_clip

        if name not in open_clip.list_models():
            raise ConfigError(f"unknown open_clip architecture {name!r} (see open_clip.list_models())")
        self.name, self.pretrained = name, str(pretrained)
        self.device = resolve_device(device)
        resolve_precision(precision, self.device)  # a bad value is refused before the model is built
        model, tag_cfg = self._build(open_clip, seed)
        self.precision = resolve_precision(precision, self.device, parameter_count(model))
        if not hasattr(model, "token_embedding"):
            raise ConfigError(f"{name}: only CLIP models with open_clip's own text tower are supported")
        self.logit_scale = float(model.logit_scale.detach().exp())  # read in fp32, before any bf16 cast
        _sequence_first(model.transformer)
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.embed_dim = int(
            model.text_projection.shape[-1]
            if not isinstance(model.text_projection, torch.nn.Linear)
            else model.text_projection.out_features
        )
        self.preprocess = _preprocess_config(model, tag_cfg)
        self._tokenizer = open_clip.get_tokenizer(name)

    def _build(self, open_clip, seed: int):
        pretrained = self.pretrained
        if pretrained.lower() == "none":
            torch.manual_seed(seed)
            logging.getLogger().disabled = True  # open_clip logs a warning for random weights
            try:
                model = open_clip.create_model(self.name, pretrained=None)
            finally:
                logging.getLogger().disabled = False
            self.weights_id = f"random-init:{seed}"
            return model, {}
        if os.path.exists(pretrained):
            path, tag_cfg = pretrained, {}
        else:
            tag_cfg = open_clip.get_pretrained_cfg(self.name, pretrained)
            if not tag_cfg:
                tags = ", ".join(open_clip.list_pretrained_tags_by_model(self.name)) or "none known"
                raise ConfigError(f"{pretrained!r} is neither a file nor an open_clip tag of {self.name} ({tags})")
            path = fetch_weights(tag_cfg, pretrained, self.name)  # the local cache first; fails fast offline
        model = open_clip.create_model(self.name, pretrained=None, force_quick_gelu=bool(tag_cfg.get("quick_gelu")))
        state, digest = load_state_dict(path)
        load_into(model, state, str(path))
        self.weights_id = f"sha256:{digest}"
        return model, tag_cfg

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode_image(pixels.to(self.device, self.dtype)).float()

    @property
    def supports_dense(self) -> bool:  # type: ignore[override]
        """True for open_clip's VisionTransformer (without an attentional pooler) and ModifiedResNet."""
        return _dense_kind(self.model.visual) is not None

    def encode_dense(self, pixels: torch.Tensor) -> torch.Tensor:
        """Per-location embeddings ``[B, H*W, embed_dim]`` (MaskCLIP's mapping, without its last-block value trick).

        ViT: the patch tokens of the last block through ``ln_post`` and ``proj``,
        as the class token is. ModifiedResNet: every location of the last
        feature map, with its positional embedding, through the attention
        pool's value and output projections (both affine, so the pooled
        embedding is the attention-weighted mean of these rows, per head).

        Example:
            >>> bb = OpenClipBackbone("RN50", pretrained="none", precision="fp32")  # doctest: +SKIP
            >>> bb.encode_dense(torch.zeros(1, 3, 224, 224)).shape  # doctest: +SKIP
            torch.Size([1, 49, 1024])
        """
        visual, kind = self.model.visual, _dense_kind(self.model.visual)
        if kind is None:
            raise ConfigError(
                f"backbone {self.id}: dense features need an open_clip VisionTransformer or ModifiedResNet "
                f"image tower, not {type(visual).__name__}"
            )
        with torch.no_grad():
            x = pixels.to(self.device, self.dtype)
            return (_vit_dense(visual, x) if kind == "vit" else _resnet_dense(visual, x)).float()

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tokenizer(list(texts))

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.token_embedding(tokens.to(self.device))

    def encode_token_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        from open_clip.transformer import text_global_pool

        # Rows may stop after their last end-of-text token: the mask is causal,
        # so the positions after it never reach the pooled output.
        m, n = self.model, embeddings.shape[1]
        x = embeddings.to(self.dtype) + m.positional_embedding[:n].to(self.dtype)
        mask = m.attn_mask[:n, :n] if m.attn_mask is not None else None
        x = m.ln_final(m.transformer(x, attn_mask=mask))
        x = text_global_pool(x, tokens.to(self.device), m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
        return x.float()


def _dense_kind(visual: torch.nn.Module) -> str | None:
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer) and getattr(visual, "attn_pool", None) is None:
        return "vit"  # an attentional pooler (CoCa) mixes the tokens: no per-location reading
    return "resnet" if isinstance(visual, ModifiedResNet) else None


def _vit_dense(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = visual.transformer(visual._embeds(x))
    _, tokens = visual._global_pool(visual.ln_post(x))  # the patch tokens, whatever the pool type
    return tokens @ visual.proj if visual.proj is not None else tokens


def _resnet_dense(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    for stage in (visual.stem, visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = stage(x)
    pool = visual.attnpool
    tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
    if tokens.shape[1] + 1 != pool.positional_embedding.shape[0]:
        raise ConfigError(f"dense features need the backbone's input size; got a {tuple(x.shape[-2:])} feature grid")
    tokens = tokens + pool.positional_embedding[1:].to(tokens.dtype)
    return pool.c_proj(pool.v_proj(tokens))


def _sequence_first(transformer: torch.nn.Module) -> None:
    """Run the text transformer sequence-first.

    Outputs are bit-identical; the batch-first path feeds non-contiguous bf16
    tensors to ``F.linear``, which made bf16 text forward+backward (CoOp)
    several times slower than fp32 on CPU.
    """
    blocks = list(getattr(transformer, "resblocks", []))
    if not hasattr(transformer, "batch_first") or not all(
        isinstance(getattr(b, "attn", None), torch.nn.MultiheadAttention) for b in blocks
    ):
        return  # custom attention blocks only run batch-first
    transformer.batch_first = False
    for block in blocks:
        block.attn.batch_first = False


def _preprocess_config(model: torch.nn.Module, tag_cfg: dict) -> PreprocessConfig:
    from open_clip.model import get_model_preprocess_cfg

    cfg = {
        **get_model_preprocess_cfg(model),
        **{k: v for k, v in tag_cfg.items() if k in ("mean", "std", "interpolation")},
    }
    size = cfg.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return PreprocessConfig(
        image_size=int(size),
        mean=tuple(cfg.get("mean", PreprocessConfig().mean)),
        std=tuple(cfg.get("std", PreprocessConfig().std)),
        interpolation=str(cfg.get("interpolation", "bicubic")),
    )
