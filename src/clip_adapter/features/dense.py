"""Dense (per-location) image features, encoded once through the feature store.

Methods that look at *where* things are (Unmix-CLIP's per-location class
scores) need the spatial features before pooling, ``[H*W, embed_dim]`` per
image (:meth:`Backbone.encode_dense`). They are cached like pooled features:
the same :class:`FeatureStore`, the same encoder key (backbone, precision,
device) and a row key made of a pooled centre view's (image content and
evaluation transform) plus :data:`DENSE_VERSION`, under their own ``kind``
so the two never mix.
Images are encoded in canonical order (by content) in chunks, one shard per
chunk, so a killed run redoes only unfinished chunks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ..backbones.base import Backbone
from ..core.errors import ConfigError, DataError
from ..core.files import quoted
from ..core.progress import progress
from .extract import content_id
from .store import FeatureStore
from .transforms import eval_transform_id, eval_view, fingerprint

DENSE_KIND = "dense"
# Dense rows are H*W times larger than pooled ones (ViT-B/16: 196 x 512 floats),
# so shards hold fewer images than pooled chunks do.
DENSE_IMAGES_PER_CHUNK = 64
# Version of what encode_dense maps an image to; part of the row key, so rows written
# by an earlier mapping are never served after a change to it (bump on any change).
DENSE_VERSION = 1


def dense_store(backbone: Backbone, cache_dir: str | os.PathLike) -> FeatureStore:
    """The store of ``backbone``'s dense features under ``cache_dir``.

    Example:
        >>> # store = dense_store(bb, "~/.cache/clip-adapter")
    """
    return FeatureStore(cache_dir, backbone.encoder_fingerprint, DENSE_KIND, dim=backbone.embed_dim)


def dense_key(backbone: Backbone, content: str) -> str:
    """Row key of an image's dense features: the pooled centre view's fields plus :data:`DENSE_VERSION`.

    Example:
        >>> from clip_adapter.backbones import create_backbone
        >>> bb = create_backbone("toy", "none", precision="fp32")
        >>> dense_key(bb, "0" * 64) == dense_key(bb, "0" * 64) != dense_key(bb, "1" * 64)
        True
    """
    transform = eval_transform_id(backbone.preprocess)
    return fingerprint({"image": content, "transform": transform, "view": 0, "seed": None, "dense": DENSE_VERSION})


def extract_dense(
    backbone: Backbone, paths: Sequence[str | os.PathLike], store: FeatureStore, batch_size: int = 64
) -> torch.Tensor:
    """Dense features ``[N, H*W, D]`` for ``paths``, encoding only images not cached.

    A missing or undecodable image raises DataError naming it; a backbone
    without dense features raises ConfigError before anything is read.

    Example:
        >>> # dense = extract_dense(bb, ["a.png", "b.png"], dense_store(bb, cache))
    """
    if not backbone.supports_dense:
        raise ConfigError(f"backbone {backbone.id} has no dense (per-location) image features")
    contents = [_content(Path(p)) for p in paths]
    keys = {c: dense_key(backbone, c) for c in contents}
    missing = set(store.missing([keys[c] for c in sorted(set(contents))]))
    todo = sorted(c for c in set(contents) if keys[c] in missing)
    by_content = {c: Path(p) for c, p in zip(contents, paths)}
    bar = progress(total=len(todo), desc="encoding dense features", unit="image") if todo else None
    for start in range(0, len(todo), DENSE_IMAGES_PER_CHUNK):
        chunk = todo[start : start + DENSE_IMAGES_PER_CHUNK]
        pixels = torch.stack([_pixels(by_content[c], backbone) for c in chunk])
        rows = torch.cat([backbone.encode_dense(b) for b in pixels.split(batch_size)])
        store.put([keys[c] for c in chunk], rows, {keys[c]: str(by_content[c]) for c in chunk})
        bar.update(len(chunk))
    if bar is not None:
        bar.close()
    if not contents:
        return torch.empty(0, 0, backbone.embed_dim)
    return store.get([keys[c] for c in contents])


def _content(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"image not found: {quoted(path)}")
    return content_id(path)


def _pixels(path: Path, backbone: Backbone) -> torch.Tensor:
    from ..data.images import load_rgb

    rgb, _ = load_rgb(path)  # raises a DataError naming the file
    return eval_view(rgb, backbone.preprocess)
