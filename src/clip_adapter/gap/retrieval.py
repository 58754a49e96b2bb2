"""Intra-modal retrieval against its inverted, inter-modal counterpart, by mean average precision.

Image-to-image retrieval compares two image features, a similarity CLIP was never trained on.
With OTI the query image becomes a text feature (its pseudo-word prompt) and is compared with
the gallery images, inter-modally. Text-to-text retrieval and OVI are the mirror image.
Relevance is "same label" (on a toy-world task: same class, e.g. same shape *and* colour for
``shape-color``). Ties in score rank in gallery order, so results are deterministic.

Example:
    >>> import torch
    >>> scores = torch.tensor([[0.9, 0.1, 0.5]])
    >>> mean_average_precision(scores, torch.tensor([[True, False, True]]))
    1.0
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core.errors import DataError
from .inversion import InversionConfig, encode_pseudo_tokens, pseudo_prompt, textual_inversion, visual_inversion


def average_precisions(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """AP of each query row of ``scores`` ``[Q, G]`` given boolean ``relevant`` ``[Q, G]``; NaN where nothing is
    relevant.

    Example:
        >>> import torch
        >>> ap = average_precisions(torch.tensor([[0.1, 0.9, 0.5]]), torch.tensor([[True, False, True]]))
        >>> round(float(ap[0]), 4)  # (1/2 + 2/3) / 2
        0.5833
    """
    if scores.shape != relevant.shape or scores.dim() != 2:
        raise DataError(
            f"scores {tuple(scores.shape)} and relevance {tuple(relevant.shape)} must be matching [Q, G] matrices"
        )
    order = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices
    rel = torch.gather(relevant.float(), 1, order)
    hits = rel.cumsum(dim=1)
    ranks = torch.arange(1, scores.shape[1] + 1, dtype=torch.float32)
    total = rel.sum(dim=1)
    ap = (hits / ranks * rel).sum(dim=1) / total.clamp(min=1)
    return torch.where(total > 0, ap, torch.full_like(ap, float("nan")))


def mean_average_precision(scores: torch.Tensor, relevant: torch.Tensor) -> float:
    """mAP over the queries that have at least one relevant item (see :func:`average_precisions`; example in the
    module docstring)."""
    ap = average_precisions(scores, relevant)
    kept = ap[~torch.isnan(ap)]
    if len(kept) == 0:
        raise DataError("no query has a relevant item in the gallery; mAP is undefined")
    return round(float(kept.mean()), 6)


def _row(name: str, queries: torch.Tensor, gallery: torch.Tensor, relevant: torch.Tensor) -> dict[str, Any]:
    scores = F.normalize(queries.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T
    top1 = torch.gather(relevant.float(), 1, scores.argmax(dim=1, keepdim=True)).mean()
    return {"mode": name, "mAP": mean_average_precision(scores, relevant), "P@1": round(float(top1), 6)}


def relevance(query_labels: torch.Tensor, gallery_labels: torch.Tensor) -> torch.Tensor:
    """``[Q, G]`` boolean: same label."""
    return torch.as_tensor(query_labels).view(-1, 1) == torch.as_tensor(gallery_labels).view(1, -1)


def retrieval_comparison(
    backbone: Any,
    query_images: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_images: torch.Tensor,
    gallery_labels: torch.Tensor,
    config: InversionConfig | None = None,
) -> dict[str, Any]:
    """Image→image (plain cosine) vs OTI inverted-text→image, and a random pseudo-token as the floor.

    Returns ``{"rows": [{"mode", "mAP", "P@1"}, ...], "inversion": {...}, "relevance": "same label", ...}``.

    Example (toy world: a few seconds):
        >>> import torch
        >>> from clip_adapter.backbones import create_backbone
        >>> from clip_adapter.toyworld import task_images
        >>> bb = create_backbone("toy", precision="fp32")
        >>> images, labels = task_images("shape", "photo", 3)
        >>> pixels = torch.tensor(images).permute(0, 3, 1, 2).float() / 255
        >>> mean = torch.tensor(bb.preprocess.mean).view(1, 3, 1, 1)
        >>> std = torch.tensor(bb.preprocess.std).view(1, 3, 1, 1)
        >>> feats = bb.encode_images((pixels - mean) / std)
        >>> out = retrieval_comparison(bb, feats[::3], torch.tensor(labels[::3]), feats, torch.tensor(labels),
        ...                            InversionConfig(steps=20))
        >>> [row["mode"] for row in out["rows"]]
        ['image→image', 'OTI text→image', 'random pseudo-token→image']
    """
    config = config or InversionConfig()
    relevant = relevance(query_labels, gallery_labels)
    inverted = textual_inversion(backbone, query_images, config)
    prompt = pseudo_prompt(backbone, config.template)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(config.seed + 1)
        noise = torch.randn(len(query_images), prompt.base.shape[-1], generator=gen) * config.init_std
        random_text = (
            torch.cat(
                [
                    encode_pseudo_tokens(backbone, prompt, chunk.to(backbone.device)).cpu()
                    for chunk in noise.split(config.batch_size)
                ]
            )
            if len(noise)
            else noise
        )
    rows = [
        _row("image→image", query_images, gallery_images, relevant),
        _row("OTI text→image", inverted.features, gallery_images, relevant),
        _row("random pseudo-token→image", random_text, gallery_images, relevant),
    ]
    return {
        "relevance": "same label",
        "n_queries": len(query_images),
        "n_gallery": len(gallery_images),
        "rows": rows,
        "inversion": {**inverted.summary(), "config": config.to_dict()},
    }


def text_retrieval_comparison(
    backbone: Any,
    query_texts: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_texts: torch.Tensor,
    gallery_labels: torch.Tensor,
    config: InversionConfig | None = None,
) -> dict[str, Any]:
    """The mirror image: text→text (plain cosine) vs OVI inverted-image→text (the pixel variant of OVI).

    Needs a backbone whose image encoder is differentiable (see :func:`~.inversion.visual_inversion`).
    """
    config = config or InversionConfig(steps=300, lr=0.05)
    relevant = relevance(query_labels, gallery_labels)
    inverted = visual_inversion(backbone, query_texts, config)
    rows = [
        _row("text→text", query_texts, gallery_texts, relevant),
        _row("OVI image→text", inverted.features, gallery_texts, relevant),
    ]
    return {
        "relevance": "same label",
        "n_queries": len(query_texts),
        "n_gallery": len(gallery_texts),
        "rows": rows,
        "inversion": {**inverted.summary(), "config": config.to_dict()},
    }


def format_table(result: dict[str, Any], title: str = "") -> str:
    """A Markdown table of a comparison's rows.

    Example:
        >>> print(format_table({"rows": [{"mode": "image→image", "mAP": 0.5, "P@1": 0.75}]}))
        | mode | mAP | P@1 |
        |---|---|---|
        | image→image | 50.00 | 75.00 |
    """
    lines = [f"**{title}**", ""] if title else []
    lines += ["| mode | mAP | P@1 |", "|---|---|---|"]
    lines += [f"| {r['mode']} | {100 * r['mAP']:.2f} | {100 * r['P@1']:.2f} |" for r in result["rows"]]
    return "\n".join(lines)
