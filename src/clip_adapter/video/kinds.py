"""The output kinds the video commands write, registered with the files each may hold.

Example:
    >>> from clip_adapter.core.outputs import kind_pattern
    >>> bool(kind_pattern(VIDEO_EVAL).match("predictions.csv")), bool(kind_pattern(TOY_VIDEOS).match("videos"))
    (True, True)
"""

from __future__ import annotations

from ..core.outputs import register_kind

TOY_VIDEOS = register_kind(
    "toy-video-dataset", r"^(videos|(train|val|test)\.csv|classmap\.json|descriptions\.json|meta\.json)$"
)
VIDEO_EVAL = register_kind("video-eval", r"^(metrics\.json|predictions\.csv)$")
VIDEO_CROSS = register_kind("video-cross-dataset", r"^(metrics\.json|predictions\.csv)$")
VIDEO_BASE_TO_NOVEL = register_kind("video-base-to-novel", r"^(results\.json|table\.md|base_to_novel\.png|runs)$")
# The toy video CLIP (video.pretrain) and a trained video encoder (video.train): checkpoints other commands load.
TOY_VIDEO_CLIP = register_kind("toy-video-clip", r"^toy_clip\.(safetensors|json)$")
VIDEO_TRAIN = register_kind(
    "video-train",
    r"^(toy_clip\.(safetensors|json)|finetuned\.(safetensors|json)|stdd\.json|video_train_log\.csv|result\.json)$",
)
