"""Unmix-CLIP's losses: ASL for the multi-label task, MFI on the class text features.

Both follow the equations of the paper (Rawlekar et al., "Unmix-CLIP" /
"DCLIP: Efficiently Disentangling CLIP for Multi-Object Perception", 2025);
no official code could be found, so the reductions below are choices, said
where they are made.
"""

from __future__ import annotations

import torch

EPS = 1e-8  # the log's floor, as in the official ASL code


def asl_loss(
    logits: torch.Tensor, targets: torch.Tensor, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05
) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., ICCV 2021), summed over classes, averaged over images.

    ``L = -y (1-p)^γ+ log p - (1-y) p_δ^γ- log(1-p_δ)`` with ``p = σ(logit)`` and
    the shifted probability ``p_δ = max(p - δ, 0)`` (``clip`` is δ), which
    discards easy negatives. The defaults are the ASL paper's COCO recipe
    (γ+ = 0, γ- = 4, δ = 0.05). Averaging over images (the official code
    sums) keeps the learning rate independent of the batch size.

    Example:
        >>> y = torch.tensor([[1.0, 0.0]])
        >>> bool(asl_loss(torch.tensor([[4.0, -4.0]]), y) < asl_loss(torch.tensor([[-4.0, 4.0]]), y))
        True
    """
    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp(min=0) if clip > 0 else p
    pos = targets * torch.log(p.clamp(min=EPS))
    neg = (1 - targets) * torch.log((1 - p_neg).clamp(min=EPS))
    if gamma_pos > 0:
        pos = pos * (1 - p).pow(gamma_pos)
    if gamma_neg > 0:
        neg = neg * p_neg.pow(gamma_neg)
    return -(pos + neg).sum(1).mean()


def mfi_loss(text: torch.Tensor, offdiag_weight: float) -> torch.Tensor:
    """Mutual feature information loss ``Σᵢ(Sᵢᵢ-1)² + λ Σᵢ≠ⱼ Sᵢⱼ²`` on ``S = T Tᵀ``.

    ``text`` are the projected class text features ``[N, d']``, *not*
    normalised: on unit vectors ``Sᵢᵢ`` is always 1 and the first term, which
    keeps the features from collapsing, would do nothing. (Their inputs are
    unit CLIP features and the projector starts as the identity, so ``S``
    starts as CLIP's cosine similarity matrix.)

    Example:
        >>> float(mfi_loss(torch.eye(3), 0.5))
        0.0
        >>> float(mfi_loss(torch.ones(2, 1), 0.5))  # two identical unit features: λ·2
        1.0
    """
    sim = text @ text.T
    diag = torch.diagonal(sim)
    off = sim - torch.diag_embed(diag)
    return (diag - 1).pow(2).sum() + offdiag_weight * off.pow(2).sum()
