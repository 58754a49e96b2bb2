"""Per-frame features of whole clips through a temporal image encoder (space-time attention installed).

With space-time attention a frame's feature depends on the other frames of
its clip, so the per-frame feature cache (keyed by frame) does not apply:
each view's ``T`` frames are decoded, preprocessed and encoded together. The
output has the cache path's shape, ``[N, views, T, D]``, so every scorer
(frame-mean, embed-mean, prompt-match) reads it unchanged.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..backbones.base import Backbone
from ..core.errors import DataError
from ..features.transforms import eval_view
from .decode import BadVideo, sampled_frames
from .features import VideoStats, _bad_video
from .stdd import SpaceTime


def frames_to_pixels(frames: Sequence[np.ndarray], backbone: Backbone) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` frames → the backbone's preprocessed pixels ``[T, 3, S, S]``."""
    return torch.stack([eval_view(Image.fromarray(f), backbone.preprocess) for f in frames])


def encode_clip_pixels(backbone: Backbone, space_time: SpaceTime, pixels: torch.Tensor, frames: int) -> torch.Tensor:
    """Features ``[B·T, D]`` of ``B`` clips' frames ``[B·T, 3, S, S]`` with the space-time attention on."""
    with space_time.clips(frames):
        return backbone.encode_images(pixels)


def extract_temporal_features(
    backbone: Backbone,
    space_time: SpaceTime,
    paths: Sequence[str | os.PathLike],
    frames: int = 8,
    views: int = 1,
    batch_clips: int = 8,
    skip_bad: bool = False,
) -> tuple[torch.Tensor, list[int], VideoStats]:
    """Raw features ``[N, views, frames, D]`` of the videos at ``paths`` (bad ones as in the cached path).

    Example:
        >>> # feats, kept, stats = extract_temporal_features(bb, install_space_time(bb.model.visual), ["a.mp4"])
    """
    stats, kept, pending, out = VideoStats(), [], [], []
    for index, path in enumerate(paths):
        started = time.perf_counter()
        try:
            if not Path(path).is_file():
                raise BadVideo(f"video not found: {path}", "missing-file")
            indices, decoded = sampled_frames(path, frames, views)
            pending.append(frames_to_pixels([decoded[i] for view in indices for i in view], backbone))
            kept.append(index)
        except (DataError, OSError) as exc:
            _bad_video(Path(path), exc, skip_bad, stats)
        stats.decode_seconds += time.perf_counter() - started
        if len(pending) >= batch_clips:
            out.append(_encode(backbone, space_time, pending, frames, stats))
            pending = []
    if pending:
        out.append(_encode(backbone, space_time, pending, frames, stats))
    stats.clips = len(kept)
    feats = torch.cat(out) if out else torch.zeros(0, backbone.embed_dim)
    # The width is named: with every clip skipped, -1 would be ambiguous for a tensor of 0 elements.
    return feats.view(len(kept), views, frames, feats.shape[-1]), kept, stats


def _encode(
    backbone: Backbone, space_time: SpaceTime, pending: list[torch.Tensor], frames: int, stats: VideoStats
) -> torch.Tensor:
    started = time.perf_counter()
    pixels = torch.cat(pending)  # clip-major, view-major, then frames: whole clips of `frames`
    feats = encode_clip_pixels(backbone, space_time, pixels, frames)
    stats.encode_seconds += time.perf_counter() - started
    stats.frames_encoded += pixels.shape[0]
    return feats
