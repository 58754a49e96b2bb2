"""Modality-gap statistics of a set of image and text embeddings.

The *modality gap* (Liang et al., NeurIPS 2022; Mistretta et al., "Cross the Gap", ICLR 2025) is the
distance between the centroids of the L2-normalised image and text embeddings: CLIP's contrastive
loss aligns image–text *pairs* but leaves the two modalities in separate cones of the sphere. The
intra-modal similarity distributions (image–image, text–text) and the cross-modal one show the
other side of it: CLIP is never trained to make intra-modal cosines meaningful.

Every function takes raw or normalised embeddings (they are normalised here) and returns plain
numbers, so the statistics go straight into JSON.

Example (two clouds offset by a known vector):
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> base = torch.nn.functional.normalize(torch.randn(200, 16, generator=g), dim=1) * 0.1
    >>> shift = torch.zeros(16); shift[0] = 1.0
    >>> stats = gap_statistics(base + shift, base - shift)
    >>> round(stats["gap"]["centroid_distance"], 1)
    2.0
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..core.errors import DataError

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
MAX_PAIRS_ROWS = 2000  # pairwise cosines of at most this many rows per modality (N² grows fast)
HIST_RANGE = (-1.0, 1.0)


def _unit(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() != 2 or x.shape[0] == 0:
        raise DataError(f"{what} embeddings must be a non-empty [N, D] matrix, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise DataError(f"{what} embeddings hold NaN or infinite values")
    return F.normalize(x.float(), dim=-1)


def _subsample(x: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """At most ``limit`` rows, chosen with a fixed seed so the statistics are reproducible."""
    if len(x) <= limit:
        return x
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:limit]
    return x[order.sort().values]


def pairwise_cosines(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Cosines of every pair: ``a`` with itself (upper triangle, no diagonal) or every ``a`` × ``b`` pair (flat).

    Example:
        >>> import torch
        >>> pairwise_cosines(torch.eye(3)).tolist()
        [0.0, 0.0, 0.0]
    """
    a = F.normalize(a.float(), dim=-1)
    if b is None:
        rows, cols = torch.triu_indices(len(a), len(a), offset=1)
        return (a @ a.T)[rows, cols]
    return (a @ F.normalize(b.float(), dim=-1).T).flatten()


def summarise(values: torch.Tensor, bins: int = 50) -> dict[str, Any]:
    """Count, mean, std, quantiles and a histogram on [-1, 1] of a flat tensor of cosines.

    Example:
        >>> import torch
        >>> s = summarise(torch.tensor([0.0, 0.5, 1.0]), bins=2)
        >>> s["mean"], s["histogram"]["counts"]
        (0.5, [0, 3])
    """
    values = values.float().flatten()
    if values.numel() == 0:
        return {"count": 0}
    quantiles = torch.quantile(values, torch.tensor(QUANTILES)) if values.numel() <= 2**24 else None
    counts = torch.histc(values.clamp(*HIST_RANGE), bins=bins, min=HIST_RANGE[0], max=HIST_RANGE[1])
    return {
        "count": int(values.numel()),
        "mean": round(float(values.mean()), 6),
        "std": round(float(values.std()), 6) if values.numel() > 1 else 0.0,
        "quantiles": {str(q): round(float(v), 6) for q, v in zip(QUANTILES, quantiles)}
        if quantiles is not None
        else {},
        "histogram": {"range": list(HIST_RANGE), "counts": [int(c) for c in counts.tolist()]},
    }


def gap_statistics(
    image: torch.Tensor,
    text: torch.Tensor,
    image_labels: Sequence[int] | torch.Tensor | None = None,
    text_labels: Sequence[int] | torch.Tensor | None = None,
    bins: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """The modality gap and the intra-/cross-modal cosine distributions of ``image`` ``[N, D]`` and ``text`` ``[M, D]``.

    ``gap.centroid_distance`` is ‖mean(x̂) − mean(t̂)‖ over L2-normalised rows (0 when the modalities
    share a centroid, at most 2); ``gap.centroid_cosine`` the cosine between the two centroids.
    ``intra_image``, ``intra_text`` and ``cross_modal`` summarise every pair (at most
    :data:`MAX_PAIRS_ROWS` rows per modality, a seeded subsample beyond). With labels, ``matched``
    summarises the cross-modal cosines of images with the texts of their own class, the pairs CLIP
    was trained to align. See the module docstring for an example.
    """
    x, t = _unit(image, "image"), _unit(text, "text")
    if x.shape[1] != t.shape[1]:
        raise DataError(f"image embeddings are {x.shape[1]}-d but text embeddings {t.shape[1]}-d")
    cx, ct = x.mean(0), t.mean(0)
    xs, ts = _subsample(x, MAX_PAIRS_ROWS, seed), _subsample(t, MAX_PAIRS_ROWS, seed)
    out: dict[str, Any] = {
        "n_images": len(x),
        "n_texts": len(t),
        "dim": int(x.shape[1]),
        "gap": {
            "centroid_distance": round(float((cx - ct).norm()), 6),
            "centroid_cosine": round(float(F.cosine_similarity(cx, ct, dim=0)), 6),
            "image_centroid_norm": round(
                float(cx.norm()), 6
            ),  # 1 = all images identical; near 0 = spread over the sphere
            "text_centroid_norm": round(float(ct.norm()), 6),
        },
        "intra_image": summarise(pairwise_cosines(xs), bins) if len(xs) > 1 else {"count": 0},
        "intra_text": summarise(pairwise_cosines(ts), bins) if len(ts) > 1 else {"count": 0},
        "cross_modal": summarise(pairwise_cosines(xs, ts), bins),
    }
    if image_labels is not None and text_labels is not None:
        out["matched"] = summarise(_matched(x, t, torch.as_tensor(image_labels), torch.as_tensor(text_labels)), bins)
    return out


MATCH_CHUNK = 4096  # image rows per block of the own-class similarities


def _matched(x: torch.Tensor, t: torch.Tensor, xl: torch.Tensor, tl: torch.Tensor) -> torch.Tensor:
    if len(xl) != len(x) or len(tl) != len(t):
        raise DataError(
            f"labels do not match the embeddings ({len(xl)} image labels for {len(x)} images, "
            f"{len(tl)} text labels for {len(t)} texts)"
        )
    # Each image against its own class's texts, a row block at a time: never the full N × T matrix
    # (ImageNet's 1.3 M images × 1,000 prompts would be gigabytes).
    parts = []
    for start in range(0, len(x), MATCH_CHUNK):
        rows, labels = x[start : start + MATCH_CHUNK], xl[start : start + MATCH_CHUNK]
        same = labels.view(-1, 1) == tl.view(1, -1)
        parts.append((rows @ t.T)[same])
    return torch.cat(parts) if parts else x.new_zeros(0)


def joint_pca(image: torch.Tensor, text: torch.Tensor, dims: int = 2) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Project both modalities onto the top principal axes of their *joint* (pooled, centred) normalised embeddings.

    Joint PCA keeps the gap visible: with the modalities pooled, the direction separating their
    centroids carries much of the variance. Returns ``(image_2d, text_2d, explained_variance_ratio)``.

    Example:
        >>> import torch
        >>> xi, xt, ratio = joint_pca(torch.randn(10, 8) + 3, torch.randn(6, 8) - 3)
        >>> xi.shape, xt.shape, len(ratio)
        (torch.Size([10, 2]), torch.Size([6, 2]), 2)
    """
    x, t = _unit(image, "image"), _unit(text, "text")
    pooled = torch.cat([x, t])
    centred = pooled - pooled.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    axes = v[:dims].T
    signs = torch.sign(axes.sum(0) + 1e-12)  # a fixed orientation, so plots of the same data agree
    axes = axes * signs
    total = float((s**2).sum()) or 1.0
    ratio = [round(float(val**2) / total, 6) for val in s[:dims]]
    projected = centred @ axes
    return projected[: len(x)], projected[len(x) :], ratio


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """How an adaptation changed the statistics: after − before for the gap and each distribution's mean.

    Example:
        >>> compare({"gap": {"centroid_distance": 0.8}, "cross_modal": {"mean": 0.2}},
        ...         {"gap": {"centroid_distance": 0.5}, "cross_modal": {"mean": 0.3}})
        {'centroid_distance': -0.3, 'cross_modal_mean': 0.1}
    """
    out = {"centroid_distance": round(after["gap"]["centroid_distance"] - before["gap"]["centroid_distance"], 6)}
    for name in ("intra_image", "intra_text", "cross_modal", "matched"):
        if "mean" in before.get(name, {}) and "mean" in after.get(name, {}):
            out[f"{name}_mean"] = round(after[name]["mean"] - before[name]["mean"], 6)
    return out
