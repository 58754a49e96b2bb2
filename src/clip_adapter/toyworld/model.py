"""The tiny CLIP: a small residual CNN (or ViT) image tower and a small causal text transformer.

Both towers end in a shared ``embed_dim`` space; a learnable logit scale
(initialised at 1/0.07, clamped at 100 as in CLIP) sets the softmax
temperature. The image tower pools with CLIP's attention pooling, which keeps
where things are (captions and tasks mention positions); the text tower reads
its output at the end-of-text token.

``image_tower="vit"`` swaps the CNN for a small ViT (patch embedding, class
token, pre-norm blocks laid out like open_clip's — ``ln_1``/``attn``/``ln_2``/
``mlp`` — so :mod:`clip_adapter.video.stdd` can run space-time attention
inside them). The default stays ``"cnn"``: the shipped checkpoint and every
result made with it are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import Config, check_choice, check_range, option
from .render import IMAGE_SIZE
from .tokenizer import CONTEXT_LENGTH, EOT, SPECIAL_TOKENS, default_vocab

INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)
IMAGE_TOWERS = ("cnn", "vit")


@dataclass
class ToyClipConfig(Config):
    """Architecture of the tiny CLIP (recorded in every checkpoint's JSON)."""

    image_size: int = option(IMAGE_SIZE, "input side in pixels")
    widths: tuple[int, ...] = option((32, 64, 128, 256), "channels of each CNN stage (each halves the resolution)")
    depths: tuple[int, ...] = option((1, 1, 2, 1), "residual blocks per CNN stage")
    embed_dim: int = option(128, "shared embedding dimension")
    text_width: int = option(128, "text transformer width")
    text_layers: int = option(3, "text transformer layers")
    text_heads: int = option(4, "text attention heads")
    context_length: int = option(CONTEXT_LENGTH, "tokens per text, including <sot> and <eot>")
    vocab_size: int = option(len(default_vocab()), "number of token ids")
    eot_id: int = option(SPECIAL_TOKENS.index(EOT), "id of the end-of-text token the text is read at")
    image_tower: str = option("cnn", "cnn (residual CNN + attention pool) or vit (small ViT, class token)")
    patch_size: int = option(8, "ViT patch side in pixels")
    vit_width: int = option(128, "ViT width")
    vit_layers: int = option(4, "ViT blocks")
    vit_heads: int = option(4, "ViT attention heads")

    def validate(self) -> None:
        check_range("image_size", self.image_size, 16, 1024)
        check_choice("image_tower", self.image_tower, IMAGE_TOWERS)
        if self.image_tower == "vit":
            if self.image_size % self.patch_size:
                raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
            check_range("vit_width / vit_heads", self.vit_width % self.vit_heads, 0, 0)
            check_range("vit_layers", self.vit_layers, 1, 64)
        if len(self.widths) != len(self.depths) or not self.widths:
            raise ValueError("widths and depths need one entry per stage")
        check_range("text_width / text_heads", self.text_width % self.text_heads, 0, 0)

    @property
    def grid(self) -> int:
        """Side of the last feature map: the stem and every later CNN stage halve the input; a ViT's patch grid."""
        if self.image_tower == "vit":
            return self.image_size // self.patch_size
        return self.image_size // 2 ** len(self.widths)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with a skip connection."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(width, width), nn.ReLU(inplace=True), _conv_bn(width, width))
        nn.init.zeros_(self.body[-1][1].weight)  # start as identity: stabler early training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class AttentionPool(nn.Module):
    """CLIP's attention pooling: the mean token attends over the positioned grid."""

    def __init__(self, width: int, grid: int, heads: int, out_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.position = nn.Parameter(torch.randn(grid * grid + 1, width) / width**0.5)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1) + self.position.to(tokens.dtype)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        b, n, c = k.shape
        split = lambda t: t.reshape(b, -1, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        pooled = F.scaled_dot_product_attention(split(q[:, :1]), split(k), split(v))
        return self.out(pooled.transpose(1, 2).reshape(b, c))


class ImageTower(nn.Module):
    """Strided residual CNN → attention pooling → ``embed_dim``."""

    def __init__(self, cfg: ToyClipConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, cfg.widths[0], stride=2), nn.ReLU(inplace=True)]
        for i, (width, depth) in enumerate(zip(cfg.widths, cfg.depths)):
            if i > 0:
                layers += [_conv_bn(cfg.widths[i - 1], width, stride=2), nn.ReLU(inplace=True)]
            layers += [ResidualBlock(width) for _ in range(depth)]
        self.trunk = nn.Sequential(*layers)
        self.pool = AttentionPool(cfg.widths[-1], cfg.grid, heads=max(1, cfg.widths[-1] // 64), out_dim=cfg.embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pool(self.trunk(pixels))


class VitBlock(nn.Module):
    """Pre-norm ViT block with open_clip's layout: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``.

    ``attention`` takes normalised tokens ``[B, L, D]`` (batch first), as
    open_clip's ``ResidualAttentionBlock.attention`` does, so the space-time
    wrapper treats both alike.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def attention(self, q_x: torch.Tensor) -> torch.Tensor:
        return self.attn(q_x, q_x, q_x, need_weights=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class VitTransformer(nn.Module):
    """The blocks, at ``resblocks`` as in open_clip (``finetune.trainable``'s ``image-last-N`` finds them there)."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(VitBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class VitImageTower(nn.Module):
    """Patch embedding + class token + positions → ViT blocks → class token → ``embed_dim``."""

    def __init__(self, cfg: ToyClipConfig) -> None:
        super().__init__()
        width = cfg.vit_width
        self.conv1 = nn.Conv2d(3, width, cfg.patch_size, cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) / width**0.5)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.grid**2 + 1, width) / width**0.5)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = VitTransformer(width, cfg.vit_layers, cfg.vit_heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, cfg.embed_dim) / width**0.5)

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Output tokens ``[B, 1 + grid², width]`` after ``ln_post`` (class token first)."""
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # [B, HW, C]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + self.positional_embedding.to(x.dtype)
        return self.ln_post(self.transformer(self.ln_pre(x)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tokens(pixels)[:, 0] @ self.proj


class TextBlock(nn.Module):
    """Pre-norm causal self-attention and MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.ln_1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.ln_2(x))


class ToyClip(nn.Module):
    """The tiny CLIP.

    Example:
        >>> model = ToyClip(ToyClipConfig())
        >>> model.encode_image(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 128])
    """

    def __init__(self, cfg: ToyClipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = VitImageTower(cfg) if cfg.image_tower == "vit" else ImageTower(cfg)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, cfg.text_width))
        self.blocks = nn.ModuleList(TextBlock(cfg.text_width, cfg.text_heads) for _ in range(cfg.text_layers))
        self.ln_final = nn.LayerNorm(cfg.text_width)
        self.text_projection = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens)

    def encode_token_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Text transformer on token embeddings, read at each row's ``<eot>``.

        Rows may be cut after their last ``<eot>`` (attention is causal, so
        later positions never reach the pooled output).
        """
        x = embeddings + self.positional_embedding[: embeddings.shape[1]].to(embeddings.dtype)
        for block in self.blocks:
            x = block(x)
        x = self.ln_final(x)
        eot = (tokens == self.cfg.eot_id).int().argmax(dim=1)
        return self.text_projection(x[torch.arange(x.shape[0], device=x.device), eot])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encode_token_embeddings(self.embed_tokens(tokens), tokens)

    def clamp_logit_scale(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def count_parameters(module: nn.Module) -> int:
    """Number of scalars in ``module``'s parameters."""
    return sum(p.numel() for p in module.parameters())
