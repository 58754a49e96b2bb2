"""The modality gap of a CLIP and modality inversion ("Cross the Gap", Mistretta et al., ICLR 2025).

:mod:`.stats` measures the gap and the intra-/cross-modal similarity distributions, :mod:`.plots`
draws them, :mod:`.inversion` maps image features into the text modality (OTI) and text features
into the image modality (OVI), :mod:`.retrieval` compares intra-modal with inverted (inter-modal)
retrieval by mAP, and :mod:`.analyse` runs all of it on a dataset (``clip-adapter gap``).

Example:
    >>> import torch
    >>> stats = gap_statistics(torch.randn(20, 8) + 2, torch.randn(10, 8) - 2)
    >>> stats["gap"]["centroid_distance"] > 1
    True
"""

from .inversion import (
    InversionConfig,
    InversionResult,
    encode_pseudo_tokens,
    pseudo_prompt,
    textual_inversion,
    visual_inversion,
)
from .retrieval import mean_average_precision, retrieval_comparison
from .stats import compare, gap_statistics, joint_pca, pairwise_cosines, summarise

__all__ = [
    "InversionConfig",
    "InversionResult",
    "compare",
    "encode_pseudo_tokens",
    "gap_statistics",
    "joint_pca",
    "mean_average_precision",
    "pairwise_cosines",
    "pseudo_prompt",
    "retrieval_comparison",
    "summarise",
    "textual_inversion",
    "visual_inversion",
]
