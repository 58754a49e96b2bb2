"""Per-frame image features of sampled clips, through the on-disk feature store.

Frames are encoded one by one by the frozen image encoder (the layer STDD's
space-time attention replaces, in a later stage, by a temporal one) and cached
per frame under the key ``(file content hash, frame index, decoder version,
eval transform)`` in a store of its own kind (``video-frame``) under the
backbone's encoder fingerprint. A frame shared by two sampling settings (T=8
and T=16, or two views) is encoded once, and a second run decodes nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ..backbones.base import Backbone
from ..core.errors import DataError
from ..core.progress import progress
from ..features.extract import content_id
from ..features.store import FeatureStore
from ..features.transforms import eval_transform_id, eval_view, fingerprint
from .decode import DECODE_VERSION, BadVideo, clip_indices, probe, sampled_frames

STORE_KIND = "video-frame"
ROWS_PER_SHARD = 1024  # frames per committed shard: a killed run loses at most this many


@dataclass
class VideoStats:
    """What an extraction did: clips, frames encoded or read from the cache, seconds, videos skipped."""

    clips: int = 0
    frames_encoded: int = 0
    frames_cached: int = 0
    decode_seconds: float = 0.0
    encode_seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "clips": self.clips,
            "frames_encoded": self.frames_encoded,
            "frames_cached": self.frames_cached,
            "decode_seconds": round(self.decode_seconds, 3),
            "encode_seconds": round(self.encode_seconds, 3),
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def frame_store(backbone: Backbone, cache_dir: str | os.PathLike) -> FeatureStore:
    """The per-frame feature store of ``backbone`` under ``cache_dir``.

    Example:
        >>> # store = frame_store(backbone, "~/.cache/clip-adapter")
    """
    return FeatureStore(cache_dir, backbone.encoder_fingerprint, STORE_KIND, dim=backbone.embed_dim)


def frame_key(content: str, index: int, transform: str) -> str:
    """Cache key of one decoded, preprocessed frame."""
    return fingerprint({"video": content, "frame": int(index), "decode": DECODE_VERSION, "transform": transform})


class _Pending:
    """Rows waiting to be encoded and committed together."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.pixels: list[torch.Tensor] = []
        self.sources: dict[str, str] = {}


def extract_clip_features(
    backbone: Backbone,
    paths: Sequence[str | os.PathLike],
    store: FeatureStore,
    frames: int = 8,
    views: int = 1,
    batch_size: int = 64,
    skip_bad: bool = False,
) -> tuple[torch.Tensor, list[int], VideoStats]:
    """Raw per-frame features ``[N, views, frames, D]`` of the videos at ``paths``.

    Returns ``(features, kept, stats)``: ``kept`` are the indices of ``paths``
    with features (all unless ``skip_bad``). A missing, empty, corrupt or
    unreadable video raises a DataError naming it, or with ``skip_bad`` is
    listed in ``stats.skipped`` and left out.

    Example:
        >>> # feats, kept, stats = extract_clip_features(bb, ["a.mp4"], frame_store(bb, cache), frames=8)
    """
    stats, transform = VideoStats(), eval_transform_id(backbone.preprocess)
    pending, keys_per_video, kept = _Pending(), [], []
    bar = progress(total=len(paths), desc="videos", unit="clip")
    for index, path in enumerate(paths):
        try:
            keys_per_video.append(_plan_video(Path(path), backbone, store, frames, views, transform, pending, stats))
            kept.append(index)
        except (DataError, OSError) as exc:
            _bad_video(Path(path), exc, skip_bad, stats)
        if len(pending.keys) >= ROWS_PER_SHARD:
            _flush(backbone, store, pending, batch_size, stats)
        bar.update(1)
    _flush(backbone, store, pending, batch_size, stats)
    bar.close()
    stats.clips = len(kept)
    rows = store.get([k for keys in keys_per_video for k in keys])
    dim = rows.shape[-1] if rows.numel() else backbone.embed_dim
    return rows.view(len(kept), views, frames, dim), kept, stats


def _plan_video(
    path: Path,
    backbone: Backbone,
    store: FeatureStore,
    frames: int,
    views: int,
    transform: str,
    pending: _Pending,
    stats: VideoStats,
) -> list[str]:
    """Keys of every (view, frame) of one video; frames not cached are decoded and queued."""
    if not path.is_file():
        raise BadVideo(f"video not found: {path}", "missing-file")
    content = content_id(path)
    started = time.perf_counter()
    indices = clip_indices(probe(path).num_frames, frames, views)
    keys = [frame_key(content, i, transform) for view in indices for i in view]
    queued = set(pending.keys)
    todo = [k for k in dict.fromkeys(store.missing(keys)) if k not in queued]
    if todo:
        indices, decoded = sampled_frames(path, frames, views)  # may correct a header's frame count
        keys = [frame_key(content, i, transform) for view in indices for i in view]
        todo = [k for k in dict.fromkeys(store.missing(keys)) if k not in queued]
        by_key = {frame_key(content, i, transform): i for i in decoded}
        for key in todo:
            pending.keys.append(key)
            pending.pixels.append(eval_view(Image.fromarray(decoded[by_key[key]]), backbone.preprocess))
            pending.sources[key] = f"{path}#frame={by_key[key]}"
    stats.decode_seconds += time.perf_counter() - started
    stats.frames_cached += len(keys) - len(todo)
    return keys


def _flush(backbone: Backbone, store: FeatureStore, pending: _Pending, batch_size: int, stats: VideoStats) -> None:
    if not pending.keys:
        return
    started = time.perf_counter()
    out = [
        backbone.encode_images(torch.stack(pending.pixels[s : s + batch_size]))
        for s in range(0, len(pending.keys), batch_size)
    ]
    store.put(pending.keys, torch.cat(out), pending.sources)
    stats.encode_seconds += time.perf_counter() - started
    stats.frames_encoded += len(pending.keys)
    pending.keys, pending.pixels, pending.sources = [], [], {}


def _bad_video(path: Path, exc: Exception, skip_bad: bool, stats: VideoStats) -> None:
    message = str(exc) if isinstance(exc, DataError) else f"video {path} cannot be read ({exc})"
    if not skip_bad:
        raise DataError(f"{message} (use --skip-bad to leave bad videos out and list them)")
    stats.skipped.append((str(path), message))
