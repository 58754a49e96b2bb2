"""The output kinds the video commands write (their allowed files are in ``outputs.KIND_ENTRIES``)."""

from __future__ import annotations

TOY_VIDEOS = "toy-video-dataset"
VIDEO_EVAL = "video-eval"
VIDEO_CROSS = "video-cross-dataset"
VIDEO_BASE_TO_NOVEL = "video-base-to-novel"
