"""The report's figures, drawn with matplotlib (Agg: no display) straight into PNG bytes.

Every label, title, tick and legend entry is plain text: class names and log
columns come from the files being reported on, and matplotlib would otherwise
read ``$…$`` in them as mathtext (an unbalanced ``$`` or a bad command is an
exception, a valid pair renders as math). Each figure is drawn and saved with
mathtext and TeX off (:func:`clip_adapter.core.plotting.plain_text`).
"""

from __future__ import annotations

import io
from typing import Any, Sequence

from ...core.plotting import plain_text, png_bytes, pyplot

MAX_LABELLED_CLASSES = 40  # beyond this, tick labels and cell counts would be unreadable
MAX_BARS = 50  # per-class bars shown: the most helped and the most hurt


@plain_text
def confusion_png(matrix: Sequence[Sequence[int]], classnames: Sequence[str]) -> bytes:
    """Row-normalised confusion matrix (colour) with counts written in the cells for small tasks.

    Example:
        >>> confusion_png([[3, 1], [0, 4]], ["cat", "dog"])[:4]
        b'\\x89PNG'
    """
    import numpy as np

    plt = pyplot()
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(classnames)
    side = min(11.0, max(4.5, 0.42 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=100)
    shown = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= MAX_LABELLED_CLASSES:
        ax.set_xticks(range(n), classnames, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), classnames, fontsize=8)
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        int(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black",
                    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.tight_layout()
    return png_bytes(fig)


@plain_text
def per_class_png(rows: Sequence[tuple[str, float, float]]) -> bytes:
    """Horizontal bars of (adapted − zero-shot) accuracy per class, in points; ``rows`` sorted by difference."""
    plt = pyplot()
    if len(rows) > MAX_BARS:  # the two ends are the story: most helped, most hurt
        rows = [*rows[: MAX_BARS // 2], *rows[-MAX_BARS // 2 :]]
    names = [r[0] for r in rows][::-1]
    deltas = [100 * (r[1] - r[2]) for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.26 * len(rows) + 1.2)), dpi=100)
    ax.barh(range(len(rows)), deltas, color=["#2e8b57" if d > 0 else "#c0392b" if d < 0 else "#999" for d in deltas])
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("accuracy change vs zero-shot (percentage points)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig)


@plain_text
def curves_png(series: dict[str, dict[str, list[tuple[float, float]]]], xlabel: str) -> bytes:
    """One panel per metric group (``{panel: {line label: [(x, y), …]}}``), lines per label."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(5.2 * len(series), 3.6), dpi=100, squeeze=False)
    for ax, (panel, lines) in zip(axes[0], series.items()):
        for label, points in lines.items():
            xs, ys = zip(*sorted(points)) if points else ((), ())
            ax.plot(xs, ys, marker="o" if len(points) <= 30 else None, markersize=3, label=label)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if 1 < len(lines) <= 12:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


@plain_text
def shots_png(curves: dict[str, dict[int, float]], title: str, reference: float | None) -> bytes:
    """Accuracy (%) against shots, drawn exactly as the bench plots are."""
    from ...bench.plots import draw_curves

    return png_bytes(draw_curves(curves, title, reference))


@plain_text
def histogram_png(values: Sequence[float], xlabel: str, title: str) -> bytes:
    """A histogram of ``values`` (e.g. per-image cosine between adapted and original features)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.hist(list(values), bins=30, color="#4a78b0")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig)


@plain_text
def reliability_png(panels: Sequence[dict[str, Any]]) -> bytes:
    """Reliability diagrams side by side, each above its confidence histogram.

    Each panel is ``{"title", "bin_edges", "count", "accuracy", "mean_confidence"}`` (as
    ``calibration_report``'s ``reliability`` records them, already checked) plus
    optional ``"ece"``, ``"overall_accuracy"`` and ``"overall_confidence"`` fractions.
    Top: per bin (its real width), the accuracy as a bar and the gap to the bin's mean
    confidence hatched; the diagonal is perfect calibration. Bottom: the share of test
    images per confidence bin, with the overall accuracy and mean confidence marked.

    Example:
        >>> panel = {"title": "adapted", "bin_edges": [0, 0.5, 1], "count": [1, 3], "accuracy": [0.0, 1.0],
        ...          "mean_confidence": [0.4, 0.8], "ece": 0.2}
        >>> reliability_png([panel])[:4]
        b'\\x89PNG'
    """
    plt = pyplot()
    fig, axes = plt.subplots(
        2,
        len(panels),
        figsize=(4.6 * len(panels), 5.6),
        dpi=100,
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1.3]},
        sharex="col",
    )
    for column, panel in enumerate(panels):
        top, bottom = axes[0][column], axes[1][column]
        edges, sizes = [float(e) for e in panel["bin_edges"]], [int(n) for n in panel["count"]]
        left, width = edges[:-1], [b - a for a, b in zip(edges, edges[1:])]
        filled = [
            i
            for i, n in enumerate(sizes)
            if n and panel["accuracy"][i] is not None and panel["mean_confidence"][i] is not None
        ]
        accuracy = [float(panel["accuracy"][i]) for i in filled]
        confidence = [float(panel["mean_confidence"][i]) for i in filled]
        top.bar(
            [left[i] for i in filled],
            accuracy,
            [width[i] for i in filled],
            align="edge",
            color="#4a78b0",
            edgecolor="#1f3a5f",
            linewidth=0.6,
            label="accuracy in the bin",
        )
        top.bar(
            [left[i] for i in filled],
            [abs(c - a) for a, c in zip(accuracy, confidence)],
            [width[i] for i in filled],
            bottom=[min(a, c) for a, c in zip(accuracy, confidence)],
            align="edge",
            facecolor="none",
            hatch="///",
            edgecolor="#c0392b",
            linewidth=0.8,
            label="gap to its mean confidence",
        )
        top.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        title = str(panel.get("title", ""))
        ece = panel.get("ece")
        top.set_title(title + (f" — ECE {100 * ece:.2f}%" if isinstance(ece, (int, float)) else ""), fontsize=10)
        top.grid(alpha=0.3)
        top.legend(fontsize=7, loc="upper left")
        total = sum(sizes)
        bottom.bar(
            left,
            [n / total if total else 0.0 for n in sizes],
            width,
            align="edge",
            color="#7f8c8d",
            edgecolor="#555",
            linewidth=0.5,
        )
        for key, colour, label in (
            ("overall_accuracy", "#1f3a5f", "accuracy"),
            ("overall_confidence", "#c0392b", "mean confidence"),
        ):
            value = panel.get(key)
            if isinstance(value, (int, float)):
                bottom.axvline(float(value), color=colour, linestyle="--", linewidth=1.2, label=label)
        if bottom.get_legend_handles_labels()[0]:
            bottom.legend(fontsize=7, loc="upper left")
        bottom.set_xlim(0, 1)
        bottom.set_xlabel("confidence (top-class probability)")
        bottom.set_ylabel("share of images")
        bottom.grid(alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig)


def thumbnail_png(image: Any, size: int = 128) -> bytes:
    """A PIL image shrunk to fit ``size``×``size`` (aspect kept), as PNG bytes."""
    image = image.copy()
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
