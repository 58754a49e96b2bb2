"""CLIP-KD's distillation losses (Yang et al., CVPR 2024): FD, ICL and CRD, each added to the CLIP loss.

``L = L_CLIP + λ·L_KD``, on one batch of image–caption pairs seen by a frozen
teacher and a trained student:

- **FD** (feature distillation): MSE between the L2-normalised teacher and
  student embeddings, image and text, through a linear projection of the
  student when the dimensions differ. As in the official code the MSE is
  ``F.mse_loss`` (a mean over every element, so ~``(2 − 2·cos)/D``), which is
  why the paper's λ is 2,000.
- **ICL** (interactive contrastive learning): student embeddings are the
  anchors, teacher embeddings the contrasted keys: student image → teacher
  texts and student text → teacher images, averaged; a learnable scale.
- **CRD** (contrastive relational distillation): KL divergence from the
  teacher's to the student's image→text and text→image softmax over the
  batch (temperature 1 on each model's own logit scale), averaged over the
  two directions.

Code vs paper: the official ``KDClipLoss`` multiplies ICL's logits by its raw
learnable parameter (initialised at ln(1/0.07) ≈ 2.66, i.e. temperature 0.38,
never exponentiated or clamped); the paper describes CLIP's learnable
temperature starting at 0.07 (scale ``exp(ln(1/0.07))``, clamped at 100):
``icl_scale="code"`` (default) or ``"paper"``. The paper sums CRD's two
directions, the code averages them (default, as here). Batch rows with the
same caption are all positives of each other in the CLIP and ICL losses (the
toy world's captions repeat; :func:`multi_positive_infonce`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from ..toyworld.model import MAX_LOGIT_SCALE
from ..toyworld.pretrain import multi_positive_infonce

KD_LOSSES = ("fd", "icl", "crd")
PAPER_WEIGHTS = {"fd": 2000.0, "icl": 1.0, "crd": 1.0}  # λ of the paper and its scripts
ICL_SCALES = ("code", "paper")
INIT_SCALE = math.log(1 / 0.07)


def _n(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def fd_loss(s_img: torch.Tensor, s_txt: torch.Tensor, t_img: torch.Tensor, t_txt: torch.Tensor) -> torch.Tensor:
    """Feature distillation: ``mse(n(s_img), n(t_img)) + mse(n(s_txt), n(t_txt))`` (student already projected).

    Example:
        >>> e = torch.randn(4, 8)
        >>> float(fd_loss(e, e, 2 * e, 3 * e)) < 1e-12  # the same directions: nothing to learn
        True
    """
    return F.mse_loss(_n(s_img), _n(t_img)) + F.mse_loss(_n(s_txt), _n(t_txt))


def icl_loss(
    s_img: torch.Tensor,
    s_txt: torch.Tensor,
    t_img: torch.Tensor,
    t_txt: torch.Tensor,
    scale: torch.Tensor,
    groups: torch.Tensor,
) -> torch.Tensor:
    """Interactive contrastive learning: student anchors against teacher keys, both directions, averaged.

    Example:
        >>> e = F.normalize(torch.randn(4, 8), dim=-1)
        >>> float(icl_loss(e, e, e, e, torch.tensor(100.0), torch.arange(4))) < 0.1
        True
    """
    positives = (groups[:, None] == groups[None, :]).float()
    targets = positives / positives.sum(1, keepdim=True)
    i2t = scale * _n(s_img) @ _n(t_txt).T
    t2i = scale * _n(s_txt) @ _n(t_img).T
    loss_i2t = -(targets * F.log_softmax(i2t, dim=1)).sum(1).mean()
    loss_t2i = -(targets * F.log_softmax(t2i, dim=1)).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


def crd_loss(
    s_img: torch.Tensor,
    s_txt: torch.Tensor,
    s_scale: torch.Tensor | float,
    t_img: torch.Tensor,
    t_txt: torch.Tensor,
    t_scale: float,
) -> torch.Tensor:
    """Contrastive relational distillation: ``KL(p_T ‖ p_S)`` of the in-batch image→text and text→image softmax.

    Works across embedding sizes (only ``B × B`` similarities are compared).

    Example:
        >>> _ = torch.manual_seed(0); s, t = torch.randn(4, 8), torch.randn(4, 16)
        >>> float(crd_loss(s, s, 10.0, s, s, 10.0)) < 1e-6, float(crd_loss(s, s, 10.0, t, t, 10.0)) > 0
        (True, True)
    """
    s_logits = s_scale * _n(s_img) @ _n(s_txt).T
    with torch.no_grad():
        t_logits = t_scale * _n(t_img) @ _n(t_txt).T

    def kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(student, dim=1), F.softmax(teacher, dim=1), reduction="batchmean")

    return (kl(s_logits, t_logits) + kl(s_logits.T, t_logits.T)) / 2


class KDLoss(nn.Module):
    """``L_CLIP + Σ λ_k·L_k`` over the chosen KD losses; holds the student→teacher projections and ICL's scale.

    Example:
        >>> kd = KDLoss(("fd", "crd"), student_dim=8, teacher_dim=16)
        >>> s, t, g = torch.randn(4, 8), torch.randn(4, 16), torch.arange(4)
        >>> total, parts = kd(s, s, torch.tensor(14.3), t, t, 14.3, g)
        >>> sorted(parts)
        ['clip', 'crd', 'fd']
    """

    def __init__(
        self,
        losses: tuple[str, ...],
        student_dim: int,
        teacher_dim: int,
        weights: dict[str, float] | None = None,
        clip_weight: float = 1.0,
        icl_scale: str = "code",
    ) -> None:
        super().__init__()
        unknown = [name for name in losses if name not in KD_LOSSES]
        if unknown:
            raise ConfigError(f"unknown distillation loss {unknown[0]!r}; choose from {', '.join(KD_LOSSES)}")
        if icl_scale not in ICL_SCALES:
            raise ConfigError(f"icl_scale must be one of {', '.join(ICL_SCALES)}, got {icl_scale!r}")
        self.losses, self.clip_weight, self.icl_scale = tuple(losses), clip_weight, icl_scale
        self.weights = {**PAPER_WEIGHTS, **(weights or {})}
        # Only FD and ICL compare embeddings across models; a projection is needed only when sizes differ.
        same = student_dim == teacher_dim
        self.proj_img = nn.Identity() if same else nn.Linear(student_dim, teacher_dim)
        self.proj_txt = nn.Identity() if same else nn.Linear(student_dim, teacher_dim)
        self.icl_logit_scale = nn.Parameter(torch.tensor(INIT_SCALE))

    def icl_scale_value(self) -> torch.Tensor:
        if self.icl_scale == "code":
            return self.icl_logit_scale
        return self.icl_logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def forward(
        self,
        s_img: torch.Tensor,
        s_txt: torch.Tensor,
        s_scale: torch.Tensor,
        t_img: torch.Tensor,
        t_txt: torch.Tensor,
        t_scale: float,
        groups: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {"clip": multi_positive_infonce(s_img, s_txt, s_scale, groups)}
        if "fd" in self.losses or "icl" in self.losses:
            p_img, p_txt = self.proj_img(s_img.float()), self.proj_txt(s_txt.float())
        if "fd" in self.losses:
            parts["fd"] = fd_loss(p_img, p_txt, t_img, t_txt)
        if "icl" in self.losses:
            parts["icl"] = icl_loss(p_img, p_txt, t_img, t_txt, self.icl_scale_value(), groups)
        if "crd" in self.losses:
            parts["crd"] = crd_loss(s_img, s_txt, s_scale, t_img, t_txt, t_scale)
        total = self.clip_weight * parts["clip"] + sum(self.weights[k] * parts[k] for k in self.losses)
        return total, {k: float(v.detach()) for k, v in parts.items()}
