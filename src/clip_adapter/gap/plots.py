"""Figures of the modality gap, drawn with matplotlib (Agg: no display) into PNG bytes."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..core.plotting import png_bytes, pyplot

PANELS = (
    ("intra_image", "image–image"),
    ("intra_text", "text–text"),
    ("cross_modal", "image–text (all pairs)"),
    ("matched", "image–text (own class)"),
)


def histograms_png(stats: dict[str, dict[str, Any]]) -> bytes:
    """One panel per similarity distribution, each set of statistics (``{"raw": ..., "adapted": ...}``) overlaid.

    Example:
        >>> import torch
        >>> from clip_adapter.gap.stats import gap_statistics
        >>> histograms_png({"raw": gap_statistics(torch.randn(20, 8), torch.randn(5, 8))})[:4]
        b'\\x89PNG'
    """
    import numpy as np

    plt = pyplot()
    panels = [(key, title) for key, title in PANELS if any(s.get(key, {}).get("count") for s in stats.values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), dpi=100, squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for label, s in stats.items():
            hist = s.get(key, {}).get("histogram")
            if not hist:
                continue
            counts = np.asarray(hist["counts"], dtype=float)
            edges = np.linspace(*hist["range"], len(counts) + 1)
            share = counts / max(counts.sum(), 1.0)
            ax.stairs(
                share,
                edges,
                label=f"{label} (mean {s[key]['mean']:.2f})",
                fill=label == "raw",
                alpha=0.45 if label == "raw" else 1.0,
            )
        ax.set_title(title)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("share of pairs")
    gaps = ", ".join(f"{label}: {s['gap']['centroid_distance']:.3f}" for label, s in stats.items())
    fig.suptitle(f"similarity distributions — modality gap (centroid distance) {gaps}", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def projection_png(
    projections: dict[str, tuple[torch.Tensor, torch.Tensor, list[float]]],
    image_labels: Sequence[int],
    text_labels: Sequence[int],
) -> bytes:
    """Joint-PCA scatter of both modalities (circles: images, triangles: texts; colour: class), one panel per set.

    ``projections`` maps a name (``raw``, ``adapted``) to :func:`~.stats.joint_pca`'s output. The
    line joins the two centroids: its length in the plane is the gap's projection.

    Example:
        >>> import torch
        >>> from clip_adapter.gap.stats import joint_pca
        >>> projection_png({"raw": joint_pca(torch.randn(6, 8), torch.randn(2, 8))}, [0, 0, 0, 1, 1, 1], [0, 1])[:4]
        b'\\x89PNG'
    """
    plt = pyplot()
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, len(projections), figsize=(5.2 * len(projections), 4.6), dpi=100, squeeze=False)
    il, tl = list(image_labels), list(text_labels)
    for ax, (name, (xi, xt, ratio)) in zip(axes[0], projections.items()):
        ax.scatter(
            xi[:, 0], xi[:, 1], s=10, marker="o", c=[cmap(label % 20) for label in il], alpha=0.6, label="images"
        )
        ax.scatter(
            xt[:, 0],
            xt[:, 1],
            s=40,
            marker="^",
            c=[cmap(label % 20) for label in tl],
            edgecolors="black",
            linewidths=0.6,
            label="texts",
        )
        ci, ct = xi.mean(0), xt.mean(0)
        ax.plot([ci[0], ct[0]], [ci[1], ct[1]], "k--", linewidth=1.2, label="centroids")
        ax.set_title(f"{name}: joint PCA ({100 * sum(ratio):.0f}% of variance)", fontsize=10)
        ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}%)")
        ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}%)" if len(ratio) > 1 else "")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)
