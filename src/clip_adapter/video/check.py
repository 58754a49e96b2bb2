"""``validate`` for video datasets: every problem in one pass, as for images.

Reads the dataset leniently (every bad row or folder recorded), decodes every
frame of every video (a corrupt stream shows only when decoded; a truncated
file whose first frames decode is a warning), hashes the files to find
duplicates across splits, and notes videos shorter than the frames a run
samples (their frames are repeated, not refused).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import DataError
from ..core.files import sha256_file
from ..data.issues import Issues, check_files, show
from .dataset import CSV_SPLITS, VideoDataset, load_video_dataset
from .decode import BadVideo, count_decoded, truncation


def _check_one(path: Path, frames: int) -> tuple[Path, str | None, list[tuple[str, str, str]]]:
    try:
        count = count_decoded(path)
        digest = sha256_file(path)
    except BadVideo as exc:
        return path, None, [(exc.kind, "error", str(exc))]
    except (DataError, OSError) as exc:
        return path, None, [("unreadable", "error", f"video {show(path)} cannot be read ({show(exc)})")]
    if count == 0:
        return path, None, [("no-frames", "error", f"video {show(path)} holds no decodable frames")]
    found = []
    cut = truncation(path)
    if cut:  # its first frames decode: usable, but probably not the clip it should be
        found.append(
            (
                "truncated-video",
                "warning",
                f"video {show(path)} is truncated ({cut}); only its first {count} frame(s) decode and are sampled",
            )
        )
    if count < frames:
        found.append(
            ("short-video", "info", f"video {show(path)} has {count} frames, fewer than {frames}: frames will repeat")
        )
    return path, digest, found


def check_videos(dataset: VideoDataset, issues: Issues, frames: int = 8, workers: int = 2) -> dict[Path, str]:
    """Decode every video of ``dataset``; record problems in ``issues``; return content hashes of the good ones."""
    paths = sorted({s.path for split in dataset.splits.values() for s in split})
    return check_files(paths, lambda p: _check_one(p, frames), issues, workers, "checking videos", "video")


def read_leniently(
    path: str | os.PathLike, root: str | os.PathLike | None = None, classmap: str | os.PathLike | None = None
) -> tuple[VideoDataset, Issues]:
    """The dataset at ``path`` (folder per class, or split CSVs) with every problem collected, not raised."""
    issues = Issues(strict=False)
    return load_video_dataset(path, None, root, classmap, issues), issues


def empty_classes(dataset: VideoDataset, issues: Issues) -> None:
    """An error for each class of a class map with no video in any split file.

    Only for split CSVs: the folder reader already reports each empty class folder.
    """
    if dataset.layout != "csv":
        return
    seen = {s.label for split in dataset.splits.values() for s in split}
    files = ", ".join(f"{k}.csv" for k in CSV_SPLITS if k in dataset.splits)
    for label, name in enumerate(dataset.classnames):
        if label not in seen:
            issues.add("empty-class", f"class {label} {name!r} has no videos in {files}")
