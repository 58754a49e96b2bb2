"""Video files → sampled RGB frames, with PyAV, and one-line errors naming the file.

Frames are sampled TSN-style (Wang et al., ECCV 2016): the video is cut into
``T`` equal segments and one frame is taken from each. At test time the frame
sits at a fixed offset inside its segment; with ``views`` temporal views, view
``v`` uses offset ``(v + 0.5) / views`` (one view: the segment's centre), so the
views interleave and every index is a pure function of ``(frame count, T, v,
views)``: deterministic, and the same frames on every run. A video shorter than
``T`` frames gets repeated indices (``[0, 0, 1, 1, 2, …]``): its frames are
shown in order, each several times, rather than refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..io import quoted

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg"})
# Version of what decoding produces from a file's bytes; part of the feature-cache key.
DECODE_VERSION = 1
MAX_FRAMES = 1_000_000  # a frame count beyond this is a broken header, not a video


class BadVideo(DataError):
    """A video that cannot be used; ``kind`` groups it in ``validate`` reports."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def is_video_name(path: str | os.PathLike) -> bool:
    """True for file names with a known video extension (case-insensitive).

    Example:
        >>> is_video_name("clips/a.MP4"), is_video_name("a.jpg")
        (True, False)
    """
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def segment_indices(num_frames: int, frames: int, view: int = 0, views: int = 1) -> list[int]:
    """TSN test-time indices: one frame per segment at offset ``(view + 0.5) / views``.

    Example:
        >>> segment_indices(16, 4)
        [2, 6, 10, 14]
        >>> segment_indices(16, 4, view=1, views=2)
        [3, 7, 11, 15]
        >>> segment_indices(3, 6)  # shorter than T: frames repeat, in order
        [0, 0, 1, 1, 2, 2]
    """
    if num_frames < 1 or frames < 1 or views < 1 or not 0 <= view < views:
        raise ConfigError(f"cannot sample {frames} frames (view {view} of {views}) from {num_frames} frames")
    step = num_frames / frames
    offset = (view + 0.5) / views
    return [min(num_frames - 1, int(step * (t + offset))) for t in range(frames)]


def random_segment_indices(num_frames: int, frames: int, rng: np.random.Generator) -> list[int]:
    """TSN training indices: a random frame inside each segment (for training, from a seeded ``rng``).

    Example:
        >>> idx = random_segment_indices(16, 4, np.random.default_rng(0))
        >>> [i // 4 for i in idx]
        [0, 1, 2, 3]
    """
    if num_frames < 1 or frames < 1:
        raise ConfigError(f"cannot sample {frames} frames from {num_frames} frames")
    step = num_frames / frames
    return [min(num_frames - 1, int(step * (t + float(rng.random())))) for t in range(frames)]


def clip_indices(num_frames: int, frames: int, views: int) -> list[list[int]]:
    """Indices of every test view: ``views`` lists of ``frames`` indices."""
    return [segment_indices(num_frames, frames, v, views) for v in range(views)]


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: frame count (or counted packets), size, frame rate."""

    num_frames: int
    width: int
    height: int
    fps: float


def _open(path: Path):
    import av

    name = quoted(path)
    if not path.is_file():
        raise BadVideo(f"video not found: {name}", "missing-file")
    if path.stat().st_size == 0:
        raise BadVideo(f"video {name} is an empty (zero-byte) file", "zero-byte")
    try:
        container = av.open(str(path), "r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise BadVideo(f"video {name} cannot be opened ({_reason(exc)})", "not-a-video") from None
    if not container.streams.video:
        container.close()
        raise BadVideo(f"video {name} has no video stream", "no-video-stream")
    demuxer = container.format.name
    if demuxer == "image2" or demuxer.endswith("_pipe"):  # FFmpeg's still-image readers: one "frame", not a clip
        container.close()
        raise BadVideo(f"video {name} is a still image ({demuxer}), not a video", "not-a-video")
    return container


def _reason(exc: BaseException) -> str:
    text = str(exc).split("\n")[0] or exc.__class__.__name__
    return quoted(text)[:200]


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count and size of a video without decoding it (packets are counted when the header has no count).

    Example:
        >>> probe("/no/such.mp4")
        Traceback (most recent call last):
        ...
        clip_adapter.video.decode.BadVideo: video not found: /no/such.mp4
    """
    import av

    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        count = int(stream.frames or 0)
        if count <= 0:
            count = sum(1 for packet in container.demux(stream) if packet.size)
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        info = VideoInfo(count, int(stream.codec_context.width or 0), int(stream.codec_context.height or 0), fps)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise BadVideo(f"video {quoted(path)} cannot be read ({_reason(exc)})", "corrupt-video") from None
    finally:
        container.close()
    if info.num_frames <= 0:
        raise BadVideo(f"video {quoted(path)} holds no frames", "no-frames")
    if info.num_frames > MAX_FRAMES:
        raise BadVideo(f"video {quoted(path)} claims {info.num_frames} frames: a broken header", "corrupt-video")
    return info


def decode_frames(path: str | os.PathLike, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """RGB uint8 ``[H, W, 3]`` frames at ``indices`` (decoding stops after the last one needed).

    Returns ``{index: frame}`` for the distinct indices that exist; the caller
    checks for any that do not (the header overstated the frame count).
    A decoding error anywhere before the last needed frame is a BadVideo
    naming the file.
    """
    import av

    path, wanted = Path(path), set(int(i) for i in indices)
    last = max(wanted) if wanted else -1
    out: dict[int, np.ndarray] = {}
    container = _open(path)
    try:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                out[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        raise BadVideo(f"video {quoted(path)} cannot be decoded ({_reason(exc)})", "corrupt-video") from None
    finally:
        container.close()
    return out


def count_decoded(path: str | os.PathLike) -> int:
    """Decode every frame (for ``validate``: a corrupt stream shows only when decoded) and count them."""
    import av

    path = Path(path)
    container = _open(path)
    try:
        return sum(1 for _ in container.decode(video=0))
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        raise BadVideo(f"video {quoted(path)} cannot be decoded ({_reason(exc)})", "corrupt-video") from None
    finally:
        container.close()


def sampled_frames(path: str | os.PathLike, frames: int, views: int = 1) -> tuple[list[list[int]], dict[int, np.ndarray]]:
    """Indices of every view and the decoded frames they need.

    When the header overstated the frame count (the stream ends early), the
    indices are recomputed from the frames actually decoded.

    Example:
        >>> sampled_frames("/no/such.mp4", 8)
        Traceback (most recent call last):
        ...
        clip_adapter.video.decode.BadVideo: video not found: /no/such.mp4
    """
    count = probe(path).num_frames
    for _ in range(2):
        views_idx = clip_indices(count, frames, views)
        needed = sorted({i for view in views_idx for i in view})
        decoded = decode_frames(path, needed)
        if len(decoded) == len(needed):
            return views_idx, decoded
        count = count_decoded(path)  # the header lied: sample from what is really there
        if count == 0:
            break
    raise BadVideo(f"video {quoted(path)} holds no decodable frames", "no-frames")
