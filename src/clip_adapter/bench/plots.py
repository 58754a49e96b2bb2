"""Accuracy-vs-shots plots (log2 axis), per dataset and averaged, zero-shot as a reference line."""

from __future__ import annotations

from pathlib import Path

from ..core.files import atomic_path
from ..core.plotting import pyplot
from .aggregate import PROTOCOL_TITLES, ZERO_SHOT, dataset_average


def draw_curves(curves: dict[str, dict[int, float]], title: str, reference: float | None = None):
    """The accuracy-vs-shots figure (log2 axis, zero-shot dashed); the caller saves and closes it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for method, points in sorted(curves.items()):
        shots = sorted(points)
        ax.plot(shots, [100 * points[s] for s in shots], marker="o", label=method)
    if reference is not None:
        ax.axhline(100 * reference, color="gray", linestyle="--", label="zero-shot")
    all_shots = sorted({s for points in curves.values() for s in points})
    if all_shots and min(all_shots) > 0:  # a log axis cannot show 0 shots
        ax.set_xscale("log", base=2)
    ax.set_xticks(all_shots, [str(s) for s in all_shots])
    ax.set_xlabel("training images per class (shots)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_curves(curves: dict[str, dict[int, float]], title: str, path: Path, reference: float | None = None) -> Path:
    """One line per method (accuracy in % against shots on a log2 axis), saved atomically as PNG.

    Example:
        >>> import tempfile, pathlib
        >>> p = plot_curves({"a": {1: 0.5, 4: 0.7}}, "demo", pathlib.Path(tempfile.mkdtemp()) / "x.png", 0.4)
        >>> p.stat().st_size > 0
        True
    """
    plt = pyplot()
    fig = draw_curves(curves, title, reference)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def plot_summary(summary: dict, protocol: str, out_dir: Path) -> list[Path]:
    """A plot per dataset and one averaged over datasets."""
    paths = []
    suffix = f" [{protocol}: {PROTOCOL_TITLES[protocol]}]"
    for dataset in sorted({d for d, _, _ in summary}):
        curves = {m: {} for d, m, _ in summary if d == dataset and m != ZERO_SHOT}
        for (d, m, s), (mean, _, _) in summary.items():
            if d == dataset and m != ZERO_SHOT:
                curves[m][s] = mean
        zs = [v[0] for (d, m, _), v in summary.items() if d == dataset and m == ZERO_SHOT]
        paths.append(
            plot_curves(
                curves, dataset + suffix, out_dir / f"{protocol}_{dataset}.png", sum(zs) / len(zs) if zs else None
            )
        )
    average = dataset_average(summary)
    curves = {}
    for (m, s), mean in average.items():
        if m != ZERO_SHOT:
            curves.setdefault(m, {})[s] = mean
    zs = [v for (m, _), v in average.items() if m == ZERO_SHOT]
    paths.append(
        plot_curves(
            curves,
            "average over datasets" + suffix,
            out_dir / f"{protocol}_average.png",
            sum(zs) / len(zs) if zs else None,
        )
    )
    return paths
