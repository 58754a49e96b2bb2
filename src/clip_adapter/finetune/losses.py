"""Contrastive losses with hard-negative text columns (NegCLIP's N × 2N similarity matrix).

Example:
    >>> import torch.nn.functional as F
    >>> img = F.normalize(torch.eye(2, 4), dim=-1)
    >>> txt = torch.cat([img, F.normalize(torch.ones(2, 4), dim=-1)])  # 2 true captions, 2 hard negatives
    >>> float(hard_negative_infonce(img, txt, torch.tensor(100.0), torch.tensor([0, 1]), torch.tensor([0, 1]))) < 0.01
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hard_negative_infonce(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    scale: torch.Tensor,
    image_keys: torch.Tensor,
    text_keys: torch.Tensor,
) -> torch.Tensor:
    """InfoNCE over ``N`` images and ``T`` texts, the first ``len(text_keys)`` true captions, the rest hard negatives.

    Image ``i`` and true caption ``j`` are a positive pair when
    ``image_keys[i] == text_keys[j]`` (the same caption, or the same image
    drawn twice). Image→text rows span every column, hard negatives included;
    text→image rows are taken for the true captions only, since a perturbed
    caption has no image (NegCLIP's loss: both directions averaged). Every
    image needs a positive caption.
    """
    n_true = len(text_keys)
    logits = scale * F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T
    positives = (image_keys[:, None] == text_keys[None, :]).float()
    i2t_targets = torch.cat([positives, positives.new_zeros(len(image_keys), logits.shape[1] - n_true)], 1)
    loss_i2t = -(i2t_targets / i2t_targets.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    has_image = positives.sum(0) > 0
    t2i = positives.T[has_image]
    loss_t2i = -(t2i / t2i.sum(1, keepdim=True) * F.log_softmax(logits[:, :n_true].T[has_image], 1)).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


def caption_keys(captions: list[str]) -> torch.Tensor:
    """One integer per caption, equal for equal captions (they are the same positive)."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(c.strip().lower().rstrip("."), len(ids)) for c in captions])
