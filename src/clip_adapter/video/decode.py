"""Video files → sampled RGB frames, with PyAV, and one-line errors naming the file.

Frames are sampled TSN-style (Wang et al., ECCV 2016): the video is cut into
``T`` equal segments and one frame is taken from each. At test time the frame
sits at a fixed offset inside its segment; with ``views`` temporal views, view
``v`` uses offset ``(v + 0.5) / views`` (one view: the segment's centre), so the
views interleave and every index is a pure function of ``(frame count, T, v,
views)``: deterministic, and the same frames on every run. A video shorter than
``T`` frames gets repeated indices (``[0, 0, 1, 1, 2, …]``): its frames are
shown in order, each several times, rather than refused.

Frames obey the image limits of :mod:`clip_adapter.data.images` (``MAX_PIXELS``
per frame, ``MAX_ASPECT_RATIO``): the size the container declares is checked
before anything is decoded, and every decoded frame again (a stream may change
size mid-way), so a few-megabyte clip of 12000x12000 frames is one line, not
gigabytes of memory. A file FFmpeg cannot parse is told apart from one that
parses but holds no video stream: when the container's own structure (mp4/mov
boxes, the Matroska/WebM segment, the AVI RIFF chunk) runs past the end of the
file, the message says it is truncated.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.errors import ConfigError, DataError
from ..core.files import quoted
from ..data.images import MAX_ASPECT_RATIO, MAX_PIXELS, size_problem

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
        raise unreadable(path, f"video {name} cannot be opened ({_reason(exc)})", "not-a-video") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        if kinds:  # it parses: a file of another kind (audio only, subtitles), unless its structure ends early
            raise unreadable(path, f"video {name} has no video stream (only {', '.join(kinds)})", "no-video-stream")
        raise unreadable(
            path, f"video {name} cannot be parsed: FFmpeg finds no stream in it (corrupt or truncated)", "corrupt-video"
        )
    demuxer = container.format.name
    if demuxer == "image2" or demuxer.endswith("_pipe"):  # FFmpeg's still-image readers: one "frame", not a clip
        container.close()
        raise BadVideo(f"video {name} is a still image ({demuxer}), not a video", "not-a-video")
    try:
        check_frame_size(path, *_declared_size(container.streams.video[0]))  # before any frame is decoded
    except BadVideo:
        container.close()
        raise
    return container


def check_frame_size(path: str | os.PathLike, width: int, height: int) -> None:
    """Refuse frames beyond the image limits (``MAX_PIXELS``, ``MAX_ASPECT_RATIO``); a size of 0 is unknown, passed.

    Example:
        >>> check_frame_size("a.mp4", 640, 360)
        >>> check_frame_size("a.mp4", 4000, 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        clip_adapter.video.decode.BadVideo: video a.mp4 has 4000x2 frames, an aspect ratio beyond 100:1; ...
    """
    kind = size_problem(width, height, MAX_PIXELS, MAX_ASPECT_RATIO)  # the image rule, one place (this module's limits)
    if kind is None or kind == "zero-size":
        return
    if kind == "decompression-bomb":
        raise BadVideo(
            f"video {quoted(path)} has {width}x{height} frames, beyond the {MAX_PIXELS:,}-pixel limit of a frame "
            "(a possible decompression bomb; downscale it)",
            "decompression-bomb",
        )
    if kind == "extreme-aspect-ratio":
        raise BadVideo(
            f"video {quoted(path)} has {width}x{height} frames, an aspect ratio beyond {MAX_ASPECT_RATIO}:1; "
            "resizing their short side to the encoder's input size would need absurd memory (crop or re-encode it)",
            "extreme-aspect-ratio",
        )


def _declared_size(stream) -> tuple[int, int]:
    """``(width, height)`` the container declares; ``(0, 0)`` when unknown
    (no decoder for the codec: decoding says so)."""
    context = stream.codec_context
    return (int(context.width or 0), int(context.height or 0)) if context is not None else (0, 0)


def _reason(exc: BaseException) -> str:
    text = str(exc).split("\n")[0] or exc.__class__.__name__
    return quoted(text)[:200]


def _checked(path: Path, frame) -> None:
    """Check a decoded frame's own size: the fallback when the header gave none, or the stream changed size."""
    check_frame_size(path, int(frame.width), int(frame.height))


def unreadable(path: Path, message: str, kind: str) -> BadVideo:
    """``message`` as a BadVideo, or a "truncated" one when the container's structure ends early."""
    detail = truncation(path)
    if detail:
        return BadVideo(f"video {quoted(path)} is truncated ({detail}): it cannot be read", "truncated-video")
    return BadVideo(message, kind)


def truncation(path: str | os.PathLike) -> str | None:
    """Why ``path`` looks cut short, from its container's own sizes (mp4/mov, Matroska/WebM, AVI), or None.

    Reads a few bytes per top-level box, never the media. None for formats it
    does not know and for files whose structure is complete.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "cut.mp4"
        >>> _ = p.write_bytes(
        ...     struct.pack(">I4s", 24, b"ftyp") + b"isom" * 4 + struct.pack(">I4s", 5000, b"mdat") + b"x" * 100
        ... )
        >>> truncation(p)
        "its 'mdat' box needs 5,000 bytes at byte 24, the file ends 108 bytes later"
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(16)
            if head[4:8] in _BMFF_TOP:
                return _bmff_truncation(handle, size)
            if head[:4] == b"RIFF" and len(head) >= 8:
                declared = struct.unpack("<I", head[4:8])[0]
                return (
                    f"its RIFF chunk declares {8 + declared:,} bytes, the file has {size:,}"
                    if 8 + declared > size
                    else None
                )
            if head[:4] == b"\x1a\x45\xdf\xa3":
                return _ebml_truncation(handle, size)
    except (OSError, struct.error):
        return None
    return None


# Top-level ISO-BMFF / QuickTime box types a file may start with.
_BMFF_TOP = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp"})


def _bmff_truncation(handle, size: int) -> str | None:
    offset, seen = 0, set()
    for _ in range(100_000):
        if offset >= size:
            break
        handle.seek(offset)
        header = handle.read(16)
        if len(header) < 8:
            return f"it ends inside a box header at byte {offset:,}"
        box, kind = struct.unpack(">I4s", header[:8])
        if box == 1:
            if len(header) < 16:
                return f"it ends inside a box header at byte {offset:,}"
            box = struct.unpack(">Q", header[8:16])[0]
        elif box == 0:  # the last box runs to the end of the file
            box = size - offset
        if box < 8:
            return None  # malformed rather than cut short: FFmpeg's own message says more
        label = kind.decode("latin-1")
        if offset + box > size:
            return (
                f"its {label!r} box needs {box:,} bytes at byte {offset:,}, the file ends {size - offset:,} bytes later"
            )
        seen.add(kind)
        offset += box
    if b"moov" not in seen and b"moof" not in seen:
        return "it has no 'moov' index box: a recording or download that did not finish"
    return None


def _ebml_truncation(handle, size: int) -> str | None:
    """The Segment of a Matroska/WebM file, when its declared size runs past the end (an unknown size passes)."""
    handle.seek(4)
    length, value, _ = _vint(handle)
    offset = 4 + length + value  # past the EBML header element
    handle.seek(offset)
    if handle.read(4) != b"\x18\x53\x80\x67":  # the Segment element
        return None if offset + 4 <= size else f"it ends inside its header at byte {size:,}"
    length, value, known = _vint(handle)
    end = offset + 4 + length + value
    if known and end > size:
        return f"its segment declares {end:,} bytes, the file has {size:,}"
    return None


def _vint(handle) -> tuple[int, int, bool]:
    """An EBML variable-size integer: ``(bytes, value, known)``; all value bits set means an unknown size."""
    first = handle.read(1)
    if not first or not first[0]:
        raise struct.error("bad EBML size")
    length = 9 - first[0].bit_length()
    rest = handle.read(length - 1)
    if len(rest) < length - 1:
        raise struct.error("cut EBML size")
    value = first[0] & (0xFF >> length)
    for byte in rest:
        value = (value << 8) | byte
    return length, value, value != (1 << (7 * length)) - 1


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
        info = VideoInfo(count, *_declared_size(stream), fps)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise unreadable(path, f"video {quoted(path)} cannot be read ({_reason(exc)})", "corrupt-video") from None
    finally:
        container.close()
    if info.num_frames <= 0:
        raise unreadable(path, f"video {quoted(path)} holds no frames", "no-frames")
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
            _checked(path, frame)  # every frame: a stream that grows mid-way stops here
            if index in wanted:
                out[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        raise unreadable(path, f"video {quoted(path)} cannot be decoded ({_reason(exc)})", "corrupt-video") from None
    finally:
        container.close()
    return out


def count_decoded(path: str | os.PathLike) -> int:
    """Decode every frame (for ``validate``: a corrupt stream shows only when decoded) and count them."""
    import av

    path = Path(path)
    container = _open(path)
    try:
        count = 0
        for frame in container.decode(video=0):
            _checked(path, frame)
            count += 1
        return count
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        raise unreadable(path, f"video {quoted(path)} cannot be decoded ({_reason(exc)})", "corrupt-video") from None
    finally:
        container.close()


def sampled_frames(
    path: str | os.PathLike, frames: int, views: int = 1
) -> tuple[list[list[int]], dict[int, np.ndarray]]:
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
    raise unreadable(Path(path), f"video {quoted(path)} holds no decodable frames", "no-frames")
