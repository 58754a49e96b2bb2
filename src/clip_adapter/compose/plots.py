"""Figures of a compositionality benchmark, drawn with matplotlib (Agg: no display) into PNG bytes.

- ``suites.png``: accuracy per suite and model, chance marked;
- ``bias.png``: image side follows the larger object, text side the first-mentioned
  one, large-first caption wins, per model (0.5 = no bias);
- ``probes.png``: image probe, text probe and cross-modal accuracy per model, chance
  and the bag-of-words ceiling marked.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..core.plotting import png_bytes, pyplot


def _grouped_bars(
    groups: Sequence[str],
    series: dict[str, list[float | None]],
    title: str,
    ylabel: str,
    lines: dict[str, float],
    per_group_lines: list[float] | None = None,
) -> bytes:
    """Bars of each series (a model) side by side in each group, horizontal reference lines,
    percentages on a 0–100 axis."""
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(groups) * max(1, len(series)) ** 0.5 + 2), 3.8), dpi=100)
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for k, (label, values) in enumerate(series.items()):
        heights = [np.nan if v is None else 100 * v for v in values]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, heights, width, label=label)
    for i, level in enumerate(per_group_lines or []):
        ax.hlines(100 * level, i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=1)
    for name, level in lines.items():
        ax.axhline(100 * level, color="grey", linestyle=":", linewidth=1, label=name)
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return png_bytes(fig)


def suites_png(result: dict[str, Any]) -> bytes:
    """Accuracy per suite and model; dashes mark each suite's chance.

    Example:
        >>> r = {"suites": ["a"], "models": {"m": {"suites": {"a": {"accuracy": 0.6, "chance": 0.5}}}}}
        >>> suites_png(r)[:4]
        b'\\x89PNG'
    """
    names, models = result["suites"], result["models"]
    series = {label: [r["suites"][n]["accuracy"] for n in names] for label, r in models.items()}
    chance = [next(iter(models.values()))["suites"][n]["chance"] for n in names]
    return _grouped_bars(names, series, "true caption ranked first (dashes: chance)", "accuracy (%)", {}, chance)


def bias_png(result: dict[str, Any]) -> bytes:
    """The three bias figures per model; 50% = no bias.

    Example:
        >>> b = {"image_follows_larger": 0.7, "text_follows_first": 0.6,
        ...      "interaction": {"large_first_caption_wins": 0.5}}
        >>> bias_png({"models": {"m": {"bias": b}}})[:4]
        b'\\x89PNG'
    """
    groups = ["image follows\nlarger object", "text follows\nfirst-mentioned", "caption with larger\nobject first wins"]
    series = {
        label: [
            r["bias"]["image_follows_larger"],
            r["bias"]["text_follows_first"],
            r["bias"]["interaction"]["large_first_caption_wins"],
        ]
        for label, r in result["models"].items()
        if "bias" in r
    }
    return _grouped_bars(
        groups, series, "multi-object biases (two-object toy scenes)", "share of decisions (%)", {"no bias": 0.5}
    )


def probes_png(result: dict[str, Any]) -> bytes:
    """Image probe, text probe, cross-modal accuracy per model; chance and the bag-of-words ceiling marked.

    Example:
        >>> p = {"image_probe": 0.8, "text_probe": 0.9, "cross_modal": 0.5, "chance": 0.125,
        ...      "bag_of_words_ceiling": 0.5}
        >>> probes_png({"models": {"m": {"probes": p}}})[:4]
        b'\\x89PNG'
    """
    rows = {label: r["probes"] for label, r in result["models"].items() if "probes" in r}
    first = next(iter(rows.values()))
    series = {label: [p["image_probe"], p["text_probe"], p["cross_modal"]] for label, p in rows.items()}
    return _grouped_bars(
        ["image probe", "text probe", "cross-modal cosine"],
        series,
        "colour of the object of a given shape (two-object scenes)",
        "accuracy (%)",
        {"chance": first["chance"], "bag-of-words ceiling": first["bag_of_words_ceiling"]},
    )


def figures(result: dict[str, Any]) -> dict[str, bytes]:
    """Every figure the result has data for, by file name."""
    pngs = {"suites.png": suites_png(result)} if result["suites"] else {}
    rows = result["models"].values()
    if any("bias" in r for r in rows):
        pngs["bias.png"] = bias_png(result)
    if any("probes" in r for r in rows):
        pngs["probes.png"] = probes_png(result)
    return pngs
