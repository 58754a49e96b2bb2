"""Video: zero-shot action recognition with a frozen CLIP, on real video files.

The layers, each usable alone, in the order data flows through them:

* :mod:`.dataset`: a folder per class, or PySlowFast/Open-VCLIP split CSVs with a class map;
* :mod:`.decode`: PyAV decoding with TSN segment sampling (``T`` frames, test-time views);
* :mod:`.features`: per-frame image features through the feature cache;
* :mod:`.descriptions`: descriptive prompts per class (STDD's text side);
* :mod:`.scoring`: frame averaging (two variants) and STDD's prompt-level matching;
* :mod:`.metrics`: top-1, top-5, per-class, and accuracy within time-reversed pairs;
* :mod:`.zeroshot`: the pipeline over them; :mod:`.toyclips`: the toy world in motion (its actions
  in :mod:`.toyactions`, the shape–action class set in :mod:`.toycombos`);
* :mod:`.cross`: the zero-shot cross-dataset protocol (train on some actions, test on disjoint
  splits of others, mean ± std over the splits) through the same pipeline;
* :mod:`.bench`: the base-to-novel protocol (frozen and trained rows, base/novel/HM/pairs, table and plot).

Training a video encoder: :mod:`.stdd` (STDD's parameter-free space-time cross
attention inside the ViT blocks of the toy ViT and of open_clip), :mod:`.train`
(fine-tuning on seen actions with FROSTER's residual distillation; the output
is a checkpoint every video command takes), :mod:`.clipencode` (clips encoded
whole when the attention is on), :mod:`.pretrain` (the toy video CLIP: a ViT
tower that reads the motion words). They replace the per-frame features and
keep the rest.

Example:
    >>> from clip_adapter.video import segment_indices, get_scorer
    >>> segment_indices(num_frames=10, frames=5)
    [1, 3, 5, 7, 9]
"""

from .bench import BaseToNovelConfig, run_base_to_novel
from .cross import EvalSplit, class_overlap, evaluate_cross_dataset, load_eval_sets, training_classes
from .dataset import VideoDataset, load_video_dataset, read_classmap, read_split_dir, read_video_folder
from .decode import (
    BadVideo,
    clip_indices,
    decode_frames,
    probe,
    random_segment_indices,
    sampled_frames,
    segment_indices,
)
from .descriptions import class_prompts, read_descriptions
from .features import VideoStats, extract_clip_features, frame_store
from .metrics import pair_accuracy, top_k_accuracy, video_report
from .scoring import SCORERS, embed_mean, frame_mean, get_scorer, pad_prompts, prompt_match, score_clips
from .zeroshot import VideoZeroShotConfig, evaluate_zero_shot, predict_videos

__all__ = [
    "SCORERS",
    "BaseToNovelConfig",
    "BadVideo",
    "EvalSplit",
    "VideoDataset",
    "VideoStats",
    "VideoZeroShotConfig",
    "class_overlap",
    "class_prompts",
    "clip_indices",
    "decode_frames",
    "embed_mean",
    "evaluate_cross_dataset",
    "evaluate_zero_shot",
    "extract_clip_features",
    "frame_mean",
    "frame_store",
    "get_scorer",
    "load_eval_sets",
    "load_video_dataset",
    "pad_prompts",
    "pair_accuracy",
    "predict_videos",
    "probe",
    "prompt_match",
    "random_segment_indices",
    "read_classmap",
    "read_descriptions",
    "read_split_dir",
    "read_video_folder",
    "run_base_to_novel",
    "sampled_frames",
    "score_clips",
    "segment_indices",
    "top_k_accuracy",
    "training_classes",
    "video_report",
]
