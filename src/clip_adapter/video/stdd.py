"""STDD's space-time cross attention: no new parameters, inside every block of a ViT image encoder.

Frames of a clip are encoded together as a ``[B·T, 1 + P², D]`` token batch
(class token first, a ``P × P`` patch grid). In each block, following the
official ``STCrossAttentionBlock`` (github Mia-YatingYu/STDD,
``slowfast/models/customize_visiontransformer.py``):

1. **window masking**: the grid is cut into 2×2 windows; in every window
   ``mask_rate`` of the positions are dropped and the rest kept, the pattern
   rolled by one position from frame to frame (``_window_masking``);
2. **channel mixing** of the kept tokens, per temporal scale ``s``: with
   ``k = D // channel_fold``, for ``i < s`` the first ``k/2^i`` channels come
   from frame ``t-(i+1)`` and the matching slice ending at channel ``2k`` from
   frame ``t+(i+1)`` (zeros past the clip's ends); channels from ``2k`` on
   stay; the class token is not mixed (``_channel_mixing``);
3. the block's own attention on each mixed branch (with its residual), the
   branches averaged; the same attention on the unshifted tokens;
4. the kept positions of the unshifted result are overwritten with the mixed
   result, the class token taken from the mixed branch (``_padding``);
5. MLP: as the official ``forward``, the residual is added to the overwritten
   tokens but the MLP reads ``ln_2`` of the *unshifted* attention output.

Defaults are the released scripts': ``mask_rate`` 0.5, ``channel_fold`` 32,
temporal scales ``[1, 2]``. Randomness: in training (``randomize``) the mask
pattern starts at a random roll per clip (``spatial_repeat``) and its rows are
permuted over frames at random (``temporal_shuffle``), as the official code
does. The official code permutes the rows at random at *test* time too; here
test time uses the unpermuted rolled pattern (frame ``t`` rolled by ``t``), so
a clip always gets the same features.

The weights are not touched: each block's ``forward`` is replaced on the
instance (the state dict keeps its keys; :func:`remove_space_time` restores
it). Outside :meth:`SpaceTime.clips` (single images, text) the blocks run as
before, and ``enabled=False`` (the ablation) runs them frame by frame.

Example:
    >>> from clip_adapter.toyworld.model import ToyClip, ToyClipConfig
    >>> model = ToyClip(ToyClipConfig(image_tower="vit", patch_size=16)).eval()
    >>> st = install_space_time(model.visual, SpaceTimeConfig())
    >>> with st.clips(4):
    ...     model.encode_image(torch.zeros(8, 3, 64, 64)).shape      # 2 clips × 4 frames
    torch.Size([8, 128])
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..core.config import Config, check_range, option
from ..core.errors import ConfigError


@dataclass
class SpaceTimeConfig(Config):
    """Settings of the space-time cross attention (recorded in a trained checkpoint's ``stdd.json``)."""

    enabled: bool = option(True, "space-time attention on (off: frame-wise blocks, the ablation)")
    mask_rate: float = option(0.5, "share of each window's positions left out of the mixed branch")
    window: int = option(2, "window side in patches")
    channel_fold: int = option(32, "D // channel_fold channels are taken from neighbouring frames (0: none)")
    temporal_scales: tuple[int, ...] = option((1, 2), "temporal scales (frames reached) of the mixed branches")

    def validate(self) -> None:
        check_range("mask_rate", self.mask_rate, 0.0, 0.99)
        check_range("window", self.window, 1, 16)
        check_range("channel_fold", self.channel_fold, 0, 4096)
        if not self.temporal_scales or any(s < 1 for s in self.temporal_scales):
            raise ConfigError(f"temporal_scales must be positive integers, got {list(self.temporal_scales)}")


def window_mask(
    batch: int, frames: int, grid: int, cfg: SpaceTimeConfig, randomize: bool, device: torch.device | None = None
) -> torch.Tensor:
    """Boolean ``[batch, frames, grid²]``: True where a patch is left out of the mixed branch.

    Example:
        >>> m = window_mask(1, 2, 2, SpaceTimeConfig(), randomize=False)
        >>> m.int().tolist()        # one 2×2 window, half masked, rolled by one position per frame
        [[[1, 1, 0, 0], [0, 1, 1, 0]]]
    """
    cell = cfg.window * cfg.window
    cells = (grid // cfg.window) ** 2
    masked = int(cfg.mask_rate * frames * grid * grid) // (frames * cells)  # the official count per window
    base = torch.tensor([1] * masked + [0] * (cell - masked), dtype=torch.bool, device=device)
    offsets = torch.arange(frames, device=device).expand(batch, frames)
    if randomize:
        start = torch.randint(cell, (batch, 1), device=device)
        order = torch.rand(batch, frames, device=device).argsort(dim=1)
        offsets = (offsets + start).gather(1, order)
    within = torch.arange(cell, device=device)
    pattern = base[(within[None, None, :] - offsets[..., None]) % cell]  # roll right by the offset: [B, T, cell]
    pos = torch.arange(grid, device=device) % cfg.window
    in_window = (pos[:, None] * cfg.window + pos[None, :]).flatten()  # each grid position's place in its window
    return pattern[:, :, in_window]


def channel_mix(tokens: torch.Tensor, scale: int, fold: int) -> torch.Tensor:
    """Official ``_channel_mixing`` on ``[B, T, N, D]`` tokens (no class token).

    Example:
        >>> x = torch.arange(3.0)[None, :, None, None].expand(1, 3, 1, 4)   # frame index in every channel
        >>> channel_mix(x, 1, 4)[0, :, 0].tolist()    # channel 0 from t-1, channel 1 from t+1, the rest stay
        [[0.0, 1.0, 0.0, 0.0], [0.0, 2.0, 1.0, 1.0], [1.0, 0.0, 2.0, 2.0]]
    """
    init = tokens.shape[-1] // fold if fold else 0
    if init == 0:
        return tokens
    out = torch.zeros_like(tokens)
    out[..., 2 * init :] = tokens[..., 2 * init :]
    width = init
    for i in range(scale):
        shift = i + 1
        if shift < tokens.shape[1]:
            out[:, shift:, :, :width] = tokens[:, :-shift, :, :width]
            out[:, :-shift, :, 2 * init - width : 2 * init] = tokens[:, shift:, :, 2 * init - width : 2 * init]
        width //= 2  # as the official code: a scale whose slice has shrunk to nothing shifts nothing
    return out


def space_time_block(
    block: nn.Module, x: torch.Tensor, frames: int, cfg: SpaceTimeConfig, randomize: bool
) -> torch.Tensor:
    """One block's forward with space-time cross attention; ``x`` is batch-first ``[B·T, 1 + P², D]``."""
    attend = _attention(block)
    mlp = lambda t: getattr(block, "ls_2", nn.Identity())(block.mlp(t))  # noqa: E731
    bt, length, dim = x.shape
    grid = math.isqrt(length - 1)
    batch = bt // frames
    mask = window_mask(batch, frames, grid, cfg, randomize, x.device)
    keep = (~mask).sum(-1).min()
    kept_index = mask.int().argsort(dim=-1, stable=True)[..., :keep]  # [B, T, K]: kept positions, grid order
    patches = x[:, 1:].reshape(batch, frames, grid * grid, dim)
    gather_at = kept_index[..., None].expand(-1, -1, -1, dim)
    kept = patches.gather(2, gather_at)
    cls = x[:, :1]
    branches = []
    for scale in cfg.temporal_scales:
        mixed = torch.cat([cls, channel_mix(kept, scale, cfg.channel_fold).reshape(bt, -1, dim)], 1)
        branches.append(mixed + attend(block.ln_1(mixed)))
    mixed = torch.stack(branches).mean(0)
    full = x + attend(block.ln_1(x))
    merged = (
        full[:, 1:]
        .reshape(batch, frames, grid * grid, dim)
        .scatter(2, gather_at, mixed[:, 1:].reshape(batch, frames, -1, dim))
    )
    padded = torch.cat([mixed[:, :1], merged.reshape(bt, grid * grid, dim)], 1)
    return padded + mlp(block.ln_2(full))


def _attention(block: nn.Module):
    """The block's attention on normalised batch-first tokens, with its layer scale if any."""
    scale = getattr(block, "ls_1", nn.Identity())
    return lambda t: scale(block.attention(q_x=t))


class SpaceTime:
    """The installed space-time attention of one ViT: which blocks, the settings, the clip length in use."""

    def __init__(self, visual: nn.Module, cfg: SpaceTimeConfig) -> None:
        self.visual, self.cfg = visual, cfg
        self.frames: int | None = None
        self.randomize = False  # the training-time random masks; the trainer turns it on around its steps
        transformer = getattr(visual, "transformer", None)
        self.blocks = getattr(transformer, "resblocks", None)
        if self.blocks is None or not all(hasattr(b, "attention") and hasattr(b, "ln_1") for b in self.blocks):
            raise ConfigError(
                f"space-time attention needs a ViT image tower with attention blocks, not {type(visual).__name__} "
                "(use --stdd off; a toy CLIP from `video toy-pretrain --quick` has the CNN tower, the default "
                "recipe the ViT)"
            )
        self.batch_first = getattr(transformer, "batch_first", True)

    @contextlib.contextmanager
    def clips(self, frames: int) -> Iterator["SpaceTime"]:
        """Within this, image batches are ``frames`` consecutive frames per clip (``[B·T, 3, H, W]``)."""
        previous, self.frames = self.frames, frames
        try:
            yield self
        finally:
            self.frames = previous

    def forward(self, block: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        frames = self.frames
        if not self.cfg.enabled or frames is None or frames < 2:
            return type(block).forward(block, x, *args, **kwargs)
        if kwargs.get("attn_mask") is not None or any(a is not None for a in args):
            raise ConfigError("space-time attention does not take attention masks or cross-attention inputs")
        tokens = x if self.batch_first else x.transpose(0, 1)
        self._check(tokens, frames)
        out = space_time_block(block, tokens, frames, self.cfg, self.randomize)
        return out if self.batch_first else out.transpose(0, 1)

    def _check(self, tokens: torch.Tensor, frames: int) -> None:
        grid = math.isqrt(tokens.shape[1] - 1)
        if grid * grid + 1 != tokens.shape[1] or grid % self.cfg.window:
            raise ConfigError(
                f"space-time attention needs a class token and a square patch grid divisible by the "
                f"{self.cfg.window}x{self.cfg.window} window; got {tokens.shape[1]} tokens"
            )
        if tokens.shape[0] % frames:
            raise ConfigError(f"a batch of {tokens.shape[0]} frames is not whole clips of {frames} frames")


def install_space_time(visual: nn.Module, cfg: SpaceTimeConfig | None = None) -> SpaceTime:
    """Route every block of ``visual.transformer.resblocks`` through space-time attention; returns the handle.

    Works on the toy ViT and on open_clip's ``VisionTransformer``; a CNN tower is refused in one line.
    """
    handle = SpaceTime(visual, cfg or SpaceTimeConfig())
    for block in handle.blocks:
        block.forward = _bound(handle, block)
    visual._space_time = handle  # noqa: SLF001 - found again by space_time_of
    return handle


def _bound(handle: SpaceTime, block: nn.Module):
    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return handle.forward(block, x, *args, **kwargs)

    return forward


def space_time_of(visual: nn.Module) -> SpaceTime | None:
    """The handle installed on ``visual``, if any."""
    return getattr(visual, "_space_time", None)


def remove_space_time(visual: nn.Module) -> None:
    """Give the blocks their own ``forward`` back."""
    handle = space_time_of(visual)
    if handle is None:
        return
    for block in handle.blocks:
        block.__dict__.pop("forward", None)
    del visual._space_time
