"""Encode images and prompts once, through the feature store.

Work is planned in chunks over the whole request in a canonical order (by
image content), and each chunk is committed as one shard. A killed run redoes
only unfinished chunks, with exactly the batches it would have used, so the
features it produces are bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from ..backbones.base import Backbone
from ..errors import DataError
from ..io import sha256_file
from ..progress import progress
from .store import FeatureStore
from .transforms import AugmentConfig, eval_transform_id, eval_view, fingerprint, train_transform_id, train_view

log = logging.getLogger(__name__)
IMAGES_PER_CHUNK = 256  # rows per shard = images x views; a killed run loses at most one chunk


@dataclass
class ExtractStats:
    """What an extraction did: rows encoded, seconds spent encoding, images skipped."""

    encoded: int = 0
    cached: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: "ExtractStats") -> None:
        self.encoded += other.encoded
        self.cached += other.cached
        self.seconds += other.seconds
        self.skipped += other.skipped

    def to_dict(self) -> dict:
        return {
            "encoded_views": self.encoded,
            "cached_views": self.cached,
            "encode_seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


@dataclass
class _Image:
    index: int  # position in the caller's list
    path: Path
    content: str  # SHA-256 of the file's bytes


def image_store(backbone: Backbone, cache_dir: str | os.PathLike) -> FeatureStore:
    return FeatureStore(cache_dir, backbone.encoder_fingerprint, "image")


def text_store(backbone: Backbone, cache_dir: str | os.PathLike) -> FeatureStore:
    return FeatureStore(cache_dir, backbone.encoder_fingerprint, "text")


def extract_images(
    backbone: Backbone,
    paths: Sequence[Path],
    store: FeatureStore,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    batch_size: int = 64,
    skip_bad: bool = False,
    desc: str = "images",
) -> tuple[torch.Tensor, list[int], ExtractStats]:
    """Features for ``paths``: ``[N, D]`` centre views, or ``[N, V, D]`` augmented views.

    Returns ``(features, kept, stats)`` where ``kept`` are the indices of
    ``paths`` that have features (all of them unless ``skip_bad``). A bad image
    raises DataError naming it, or with ``skip_bad`` is listed in
    ``stats.skipped`` and left out; it is never replaced by another image.

    Example:
        >>> # features, kept, stats = extract_images(bb, paths, image_store(bb, "~/.cache/clip-adapter"))
    """
    stats = ExtractStats()
    images = _identify(paths, skip_bad, stats)
    views = augment.views if augment else 1
    transform = train_transform_id(backbone.preprocess, augment) if augment else eval_transform_id(backbone.preprocess)

    def key(image: _Image, view: int) -> str:
        return fingerprint({"image": image.content, "transform": transform, "view": view, "seed": seed if augment else None})

    unique = sorted({img.content: img for img in images}.values(), key=lambda img: img.content)
    bad = _encode_missing(backbone, store, unique, views, key, augment, seed, batch_size, stats, skip_bad, desc)
    kept = [img for img in images if img.content not in bad]
    rows = store.get([key(img, v) for img in kept for v in range(views)])
    dim = rows.shape[-1] if rows.numel() else backbone.embed_dim
    features = rows.view(len(kept), views, dim) if augment else rows.view(len(kept), dim)
    return features, [img.index for img in kept], stats


def _identify(paths: Sequence[Path], skip_bad: bool, stats: ExtractStats) -> list[_Image]:
    images = []
    for index, path in enumerate(paths):
        try:
            if not Path(path).is_file():
                raise DataError(f"image not found: {path}")
            if Path(path).stat().st_size == 0:
                raise DataError(f"image {path} is an empty (zero-byte) file")
            images.append(_Image(index, Path(path), content_id(Path(path))))
        except (DataError, OSError) as exc:
            _bad_image(path, exc, skip_bad, stats)
    return images


def content_id(path: Path) -> str:
    """SHA-256 of a file's bytes, remembered per process while its size and mtime stand.

    A benchmark asks for the same test images in every (shots, seed) cell;
    without this it would re-read the whole test set each time. Any rewrite
    changes the nanosecond mtime, so a changed image is hashed again.
    """
    st = path.stat()
    return _hash_file(str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=2_000_000)
def _hash_file(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(path)


def _bad_image(path: Path, exc: Exception, skip_bad: bool, stats: ExtractStats) -> None:
    message = str(exc) if isinstance(exc, DataError) else f"image {path} cannot be read ({exc})"
    if not skip_bad:
        raise DataError(f"{message} (use --skip-bad to leave bad images out and list them)")
    stats.skipped.append((str(path), message))


def _encode_missing(backbone, store, images, views, key, augment, seed, batch_size, stats, skip_bad, desc) -> set[str]:
    """Encode every chunk with a missing row; returns content ids of images that could not be decoded."""
    chunks = [images[i : i + max(1, IMAGES_PER_CHUNK // views)] for i in range(0, len(images), max(1, IMAGES_PER_CHUNK // views))]
    todo = [c for c in chunks if store.missing([key(img, v) for img in c for v in range(views)])]
    stats.cached += (len(images) - sum(len(c) for c in todo)) * views
    bad: set[str] = set()
    if not todo:
        return bad
    bar = progress(total=sum(len(c) for c in todo) * views, desc=f"encoding {desc}", unit="view")
    with ThreadPoolExecutor(max_workers=1) as pool:  # decode the next chunk while this one encodes
        for chunk, (pixels, ok, failures) in zip(todo, _prefetch(pool, todo, backbone, views, augment, seed)):
            for img, exc in failures:
                _bad_image(img.path, exc, skip_bad, stats)
                bad.add(img.content)
            keys = [key(img, v) for img in ok for v in range(views)]
            if store.missing(keys):  # else only known-bad images kept the chunk open
                start = time.perf_counter()
                features = torch.cat([backbone.encode_images(b) for b in pixels.split(batch_size)])
                stats.seconds += time.perf_counter() - start
                stats.encoded += features.shape[0]
                store.put(keys, features, {k: str(img.path) for img in ok for k in (key(img, v) for v in range(views))})
            else:
                stats.cached += len(keys)
            bar.update(len(chunk) * views)
    bar.close()
    return bad


def _prefetch(pool, chunks, backbone, views, augment, seed) -> Iterator:
    future = pool.submit(_decode_chunk, chunks[0], backbone, views, augment, seed)
    for nxt in chunks[1:] + [None]:
        result = future.result()
        if nxt is not None:
            future = pool.submit(_decode_chunk, nxt, backbone, views, augment, seed)
        yield result


def _decode_chunk(chunk, backbone, views, augment, seed):
    from ..data.images import load_rgb

    tensors, ok, failures = [], [], []
    for img in chunk:
        try:
            rgb, _ = load_rgb(img.path)
        except DataError as exc:
            failures.append((img, exc))
            continue
        if augment:
            tensors += [train_view(rgb, backbone.preprocess, augment, img.content, v, seed) for v in range(views)]
        else:
            tensors.append(eval_view(rgb, backbone.preprocess))
        ok.append(img)
    pixels = torch.stack(tensors) if tensors else torch.empty(0)
    return pixels, ok, failures


def extract_texts(backbone: Backbone, prompts: Sequence[str], store: FeatureStore) -> torch.Tensor:
    """Raw text embeddings ``[P, D]`` for ``prompts``, encoding only those not cached."""
    keys = [fingerprint({"text": p}) for p in prompts]
    missing = sorted(set(store.missing(keys)))
    if missing:
        by_key = dict(zip(keys, prompts))
        todo = [by_key[k] for k in missing]
        store.put(missing, backbone.encode_texts(todo), {k: by_key[k] for k in missing})
    return store.get(keys)
