"""Zero-shot scores of clips from per-frame features and per-class prompt embeddings.

Inputs are raw features: frames ``[N, V, T, D]`` (clips, temporal views,
frames) and prompts ``[C, P, D]`` with a ``[C, P]`` mask (classes may have
different numbers of prompts). Every scorer works on one view at a time and
averages the views' scores, as multi-view testing does; the result is
``logit_scale × cosine``-like logits ``[N, C]``.

* ``frame-mean``: each frame against each class's prompt ensemble, averaged
  over frames (the frame-averaging baseline every paper reports);
* ``embed-mean``: the mean of the normalised frame embeddings against the
  ensemble (the mean-of-frame-embeddings variant);
* ``prompt-match``: STDD's prompt-level matching,
  ``½(mean_p max_t s_tp + mean_t max_p s_tp)`` over the class's prompts ``p``
  and the clip's frames ``t``.

None of them sees frame order: a clip and its time reversal score the same.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError

SCORERS = ("frame-mean", "embed-mean", "prompt-match")
CHUNK = 256  # clips per prompt-match block: bounds the [n, C, T, P] similarity tensor


def pad_prompts(per_class: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-class prompt embeddings ``[P_c, D]`` into ``[C, P, D]`` plus a boolean mask ``[C, P]``.

    Example:
        >>> emb, mask = pad_prompts([torch.ones(1, 4), torch.ones(3, 4)])
        >>> emb.shape, mask.sum(dim=1).tolist()
        (torch.Size([2, 3, 4]), [1, 3])
    """
    width = max(t.shape[0] for t in per_class)
    dim = per_class[0].shape[-1]
    emb = torch.zeros(len(per_class), width, dim)
    mask = torch.zeros(len(per_class), width, dtype=torch.bool)
    for c, t in enumerate(per_class):
        emb[c, : t.shape[0]] = t.float()
        mask[c, : t.shape[0]] = True
    return emb, mask


def class_ensemble(prompts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalised mean of each class's normalised prompt embeddings ``[C, D]`` (CLIP's prompt ensemble)."""
    normed = F.normalize(prompts.float(), dim=-1) * mask[..., None]
    return F.normalize(normed.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1), dim=-1)


def frame_mean(frames: torch.Tensor, prompts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cosine of every frame with each class ensemble, averaged over frames and views: ``[N, C]``.

    Example:
        >>> f = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])     # 1 clip, 1 view, 2 frames
        >>> p, m = pad_prompts([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])])
        >>> frame_mean(f, p, m).tolist()
        [[0.5, 0.5]]
    """
    classes = class_ensemble(prompts, mask)
    return torch.einsum("nvtd,cd->nc", F.normalize(frames.float(), dim=-1), classes) / (
        frames.shape[1] * frames.shape[2]
    )


def embed_mean(frames: torch.Tensor, prompts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cosine of each view's mean normalised frame embedding with each class ensemble, averaged over views."""
    classes = class_ensemble(prompts, mask)
    clips = F.normalize(F.normalize(frames.float(), dim=-1).mean(dim=2), dim=-1)  # [N, V, D]
    return torch.einsum("nvd,cd->nc", clips, classes) / frames.shape[1]


def prompt_match(frames: torch.Tensor, prompts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """STDD's score ``½(mean_p max_t s + mean_t max_p s)`` per view, averaged over views.

    Example:
        >>> f = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])     # frames: "start", "end"
        >>> p, m = pad_prompts([torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0]])])
        >>> prompt_match(f, p, m).tolist()                    # class 0 describes both frames
        [[1.0, 0.75]]
    """
    text = F.normalize(prompts.float(), dim=-1)
    valid = mask.to(text.dtype)
    out = []
    for start in range(0, frames.shape[0], CHUNK):
        clip = F.normalize(frames[start : start + CHUNK].float(), dim=-1)
        sims = torch.einsum("nvtd,cpd->nvctp", clip, text)
        best_frame = sims.max(dim=3).values  # [n, V, C, P]: each prompt's best frame
        per_prompt = (best_frame * valid).sum(dim=-1) / valid.sum(dim=-1).clamp(min=1)
        best_prompt = sims.masked_fill(~mask[None, None, :, None, :], float("-inf")).max(dim=4).values  # [n, V, C, T]
        out.append((0.5 * (per_prompt + best_prompt.mean(dim=-1))).mean(dim=1))
    return torch.cat(out) if out else torch.zeros(0, prompts.shape[0])


def get_scorer(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The scorer called ``name`` (one of :data:`SCORERS`).

    Example:
        >>> get_scorer("embed-mean").__name__
        'embed_mean'
    """
    table = {"frame-mean": frame_mean, "embed-mean": embed_mean, "prompt-match": prompt_match}
    if name not in table:
        raise ConfigError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    return table[name]


def score_clips(
    name: str, frames: torch.Tensor, prompts: torch.Tensor, mask: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """Logits ``[N, C]``: scorer ``name``'s similarity times the backbone's ``logit_scale``."""
    return logit_scale * get_scorer(name)(frames, prompts, mask)
