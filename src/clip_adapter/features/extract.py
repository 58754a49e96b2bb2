"""Encode images and prompts once, through the feature store.

Work is planned in chunks over the whole request in a canonical order (by
image content), and each chunk is committed as one shard. A killed run redoes
only unfinished chunks, with exactly the batches it would have used, so the
features it produces are bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch

from ..backbones.base import Backbone
from ..core.errors import DataError
from ..core.files import sha256_file
from ..core.progress import progress
from ..data.templates import prompts_for
from .store import FeatureStore
from .transforms import AugmentConfig, eval_transform_id, eval_view, fingerprint, train_transform_id, train_view

log = logging.getLogger(__name__)
IMAGES_PER_CHUNK = 256  # rows per shard = images x views; a killed run loses at most one chunk
# What a bad image's error suggests by default; a caller whose command has no --skip-bad passes its own (or None).
SKIP_BAD_HINT = "use --skip-bad to leave bad images out and list them"


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


@dataclass(frozen=True)
class ImageRef:
    """One image to encode: its place in the caller's list, its path and its content id (the chunk jobs carry these)."""

    index: int  # position in the caller's list
    path: Path
    content: str  # SHA-256 of the file's bytes


def image_store(backbone: Backbone, cache_dir: str | os.PathLike) -> FeatureStore:
    """``backbone``'s image features under ``cache_dir`` (rows of any width but its ``embed_dim`` are never served)."""
    return FeatureStore(cache_dir, backbone.encoder_fingerprint, "image", dim=backbone.embed_dim)


def text_store(backbone: Backbone, cache_dir: str | os.PathLike) -> FeatureStore:
    """``backbone``'s text features under ``cache_dir`` (rows of any width but its ``embed_dim`` are never served)."""
    return FeatureStore(cache_dir, backbone.encoder_fingerprint, "text", dim=backbone.embed_dim)


def extract_images(
    backbone: Backbone,
    paths: Sequence[Path],
    store: FeatureStore,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    batch_size: int = 64,
    skip_bad: bool = False,
    desc: str = "images",
    *,
    bad_hint: str | None = SKIP_BAD_HINT,
) -> tuple[torch.Tensor, list[int], ExtractStats]:
    """Features for ``paths``: ``[N, D]`` centre views, or ``[N, V, D]`` augmented views.

    Returns ``(features, kept, stats)`` where ``kept`` are the indices of
    ``paths`` that have features (all of them unless ``skip_bad``). A bad image
    raises DataError naming it, or with ``skip_bad`` is listed in
    ``stats.skipped`` and left out; it is never replaced by another image.
    ``bad_hint`` ends that DataError's message in brackets: by default it
    points at ``--skip-bad``, which a command without that option must not do.

    Example:
        >>> # features, kept, stats = extract_images(bb, paths, image_store(bb, "~/.cache/clip-adapter"))
    """
    stats = ExtractStats()
    images = _identify(paths, skip_bad, stats, bad_hint)
    views = augment.views if augment else 1
    transform = train_transform_id(backbone.preprocess, augment) if augment else eval_transform_id(backbone.preprocess)

    def key(image: ImageRef, view: int) -> str:
        return fingerprint(
            {"image": image.content, "transform": transform, "view": view, "seed": seed if augment else None}
        )

    unique = sorted({img.content: img for img in images}.values(), key=lambda img: img.content)
    bad = _encode_missing(
        backbone, store, unique, views, key, augment, seed, batch_size, stats, skip_bad, desc, bad_hint
    )
    kept = [img for img in images if img.content not in bad]
    rows = store.get([key(img, v) for img in kept for v in range(views)])
    dim = rows.shape[-1] if rows.numel() else backbone.embed_dim
    features = rows.view(len(kept), views, dim) if augment else rows.view(len(kept), dim)
    return features, [img.index for img in kept], stats


def _identify(
    paths: Sequence[Path], skip_bad: bool, stats: ExtractStats, bad_hint: str | None = SKIP_BAD_HINT
) -> list[ImageRef]:
    images = []
    for index, path in enumerate(paths):
        try:
            if not Path(path).is_file():
                raise DataError(f"image not found: {path}")
            if Path(path).stat().st_size == 0:
                raise DataError(f"image {path} is an empty (zero-byte) file")
            images.append(ImageRef(index, Path(path), content_id(Path(path))))
        except (DataError, OSError) as exc:
            _bad_image(path, exc, skip_bad, stats, bad_hint)
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


def _bad_image(
    path: Path, exc: Exception, skip_bad: bool, stats: ExtractStats, bad_hint: str | None = SKIP_BAD_HINT
) -> None:
    message = str(exc) if isinstance(exc, DataError) else f"image {path} cannot be read ({exc})"
    if not skip_bad:
        raise DataError(f"{message} ({bad_hint})" if bad_hint else message)
    stats.skipped.append((str(path), message))


@dataclass(frozen=True)
class ChunkPlan:
    """How every chunk of one :func:`extract_images` call is decoded and encoded (the same for all its chunks)."""

    views: int
    augment: AugmentConfig | None
    seed: int
    batch_size: int


@dataclass
class ChunkJob:
    """One chunk to encode: its images and the content ids of those with a row missing from the store."""

    images: list[ImageRef]
    needed: set[str]


@dataclass
class ChunkResult:
    """A chunk's decoded images, decode failures, and features (``None``: nothing it needed could be decoded)."""

    job: ChunkJob
    ok: list[ImageRef]
    failures: list[tuple[ImageRef, Exception]]
    features: torch.Tensor | None
    seconds: float


# Who encodes the chunks of the extractions run inside `encoding_with(...)`: the
# local loop below by default, or e.g. Ray actors (clip_adapter.distributed).
# A context variable, so every caller of extract_images (encode_split, the CLI)
# gets the same shards either way without a parameter threaded through each.
_RUNNER: contextvars.ContextVar = contextvars.ContextVar("clip_adapter_chunk_runner", default=None)


@contextlib.contextmanager
def encoding_with(runner: Callable[[Backbone, ChunkPlan, list[ChunkJob]], Iterable[ChunkResult]]) -> Iterator[None]:
    """Encode the chunks of every extraction inside the block with ``runner`` instead of locally.

    ``runner(backbone, plan, jobs)`` yields one :class:`ChunkResult` per job, in
    any order; the shards are still committed here, so they are exactly a
    local run's (same keys, names, checksums, atomic writes).

    Example:
        >>> with encoding_with(encode_chunks_locally):
        ...     pass  # extract_images(...) calls here use the runner
    """
    token = _RUNNER.set(runner)
    try:
        yield
    finally:
        _RUNNER.reset(token)


def plan_chunks(images: list[ImageRef], views: int) -> list[list[ImageRef]]:
    """The request's images (in canonical order) cut into chunks of about ``IMAGES_PER_CHUNK`` rows."""
    size = max(1, IMAGES_PER_CHUNK // views)
    return [images[i : i + size] for i in range(0, len(images), size)]


def _encode_missing(
    backbone, store, images, views, key, augment, seed, batch_size, stats, skip_bad, desc, bad_hint=SKIP_BAD_HINT
) -> set[str]:
    """Encode every chunk with a missing row; returns content ids of images that could not be decoded."""
    jobs = []
    for chunk in plan_chunks(images, views):
        missing = set(store.missing([key(img, v) for img in chunk for v in range(views)]))
        if missing:
            jobs.append(
                ChunkJob(chunk, {img.content for img in chunk if any(key(img, v) in missing for v in range(views))})
            )
    stats.cached += (len(images) - sum(len(j.images) for j in jobs)) * views
    bad: set[str] = set()
    if not jobs:
        return bad
    bar = progress(total=sum(len(j.images) for j in jobs) * views, desc=f"encoding {desc}", unit="view")
    runner = _RUNNER.get() or encode_chunks_locally
    for result in runner(backbone, ChunkPlan(views, augment, seed, batch_size), jobs):
        for img, exc in result.failures:
            _bad_image(img.path, exc, skip_bad, stats, bad_hint)
            bad.add(img.content)
        keys = [key(img, v) for img in result.ok for v in range(views)]
        stats.seconds += result.seconds
        if result.features is not None:
            stats.encoded += result.features.shape[0]
            store.put(
                keys,
                result.features,
                {k: str(img.path) for img in result.ok for k in (key(img, v) for v in range(views))},
            )
        else:  # only known-bad images kept the chunk open
            stats.cached += len(keys)
        bar.update(len(result.job.images) * views)
    bar.close()
    return bad


def encode_chunks_locally(backbone: Backbone, plan: ChunkPlan, jobs: list[ChunkJob]) -> Iterator[ChunkResult]:
    """The local runner: decode the next chunk on a thread while this one encodes."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        for job, (pixels, ok, failures) in zip(jobs, _prefetch(pool, [j.images for j in jobs], backbone, plan)):
            yield encode_decoded(backbone, plan, job, pixels, ok, failures)


def encode_decoded(
    backbone: Backbone, plan: ChunkPlan, job: ChunkJob, pixels: torch.Tensor, ok: list, failures: list
) -> ChunkResult:
    """Encode a decoded chunk in ``plan.batch_size`` batches, unless none of its decoded images is needed.

    Every runner encodes through this, so a chunk's batches (and hence its
    features, bit for bit) do not depend on who encodes it.
    """
    if not any(img.content in job.needed for img in ok):
        return ChunkResult(job, ok, failures, None, 0.0)
    start = time.perf_counter()
    features = torch.cat([backbone.encode_images(b) for b in pixels.split(plan.batch_size)])
    return ChunkResult(job, ok, failures, features, time.perf_counter() - start)


def _prefetch(pool, chunks, backbone, plan: ChunkPlan) -> Iterator:
    future = pool.submit(decode_chunk, chunks[0], backbone, plan)
    for nxt in chunks[1:] + [None]:
        result = future.result()
        if nxt is not None:
            future = pool.submit(decode_chunk, nxt, backbone, plan)
        yield result


def decode_chunk(
    chunk: list[ImageRef], backbone: Backbone, plan: ChunkPlan
) -> tuple[torch.Tensor, list[ImageRef], list[tuple[ImageRef, Exception]]]:
    """Pixels of every view of every decodable image of ``chunk``, the images kept, and the failures."""
    from ..data.images import load_rgb

    tensors, ok, failures = [], [], []
    for img in chunk:
        try:
            rgb, _ = load_rgb(img.path)
        except DataError as exc:
            failures.append((img, exc))
            continue
        if plan.augment:
            tensors += [
                train_view(rgb, backbone.preprocess, plan.augment, img.content, v, plan.seed) for v in range(plan.views)
            ]
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


def prompt_embeddings(
    backbone: Backbone, classnames: Sequence[str], templates: Sequence[str], cache_dir: str | os.PathLike
) -> torch.Tensor:
    """Raw embeddings of every class prompt ``[C*T, D]`` (class-major), through the text cache in ``cache_dir``."""
    return extract_texts(backbone, prompts_for(classnames, templates), text_store(backbone, cache_dir))
