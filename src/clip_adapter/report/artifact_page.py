"""The page for one artifact directory (a ``clip-adapter train`` run)."""

from __future__ import annotations

import os
from typing import Any

from ..io import quoted
from . import figures
from .adapter import adapter_effect, is_clip_adapter
from .evaluation import Evaluation, cache_dir_for, evaluate, flips, worst
from .history import history_section
from .html import data_uri, esc, figure, key_values, note, page, pct, signed_points, table
from .run_files import RunFiles, find_test_images, read_run_files

Section = tuple[str, str, str]


def artifact_report(directory: str | os.PathLike, data: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None, worst_count: int = 12, device: str = "auto") -> str:
    """The HTML page of an artifact: configuration, results, per-class, confusion, worst images, training, adapter.

    Example:
        >>> html = artifact_report("runs/photos")  # doctest: +SKIP
    """
    run = read_run_files(directory)
    images = find_test_images(run, data)
    evaluation: Evaluation | str = images if isinstance(images, str) else evaluate(run, images, cache_dir_for(run, cache_dir), device)
    where = "" if isinstance(images, str) else images.root
    sections = [
        ("configuration", "Configuration and protocol", _configuration(run)),
        ("results", "Results", _results(run, evaluation, where)),
        ("per-class", "Per-class accuracy vs zero-shot", _per_class(run, evaluation)),
        ("confusion", "Confusion matrix", _confusion(run, evaluation)),
        ("worst", "Worst-classified test images", _worst(run, evaluation, worst_count)),
        ("training", "Training history", _training(run)),
    ]
    if run.method == "clip-adapter" or (isinstance(evaluation, Evaluation) and is_clip_adapter(evaluation.head)):
        sections.append(("adapter", "What the adapter did", _adapter(run, evaluation)))
    result = run.result or {}
    subtitle = (f"{run.method} on {(result.get('data') or {}).get('dataset', '?')} — "
                f"{(result.get('run') or {}).get('shots', '?')} shots, seed {(result.get('run') or {}).get('seed', '?')} — {run.directory}")
    return page(f"clip-adapter run report: {run.method}", subtitle, sections)


def _configuration(run: RunFiles) -> str:
    result, config = run.result or {}, run.config
    backbone, selection = config.get("backbone") or {}, result.get("selection") or config.get("selection") or {}
    protocol = result.get("protocol") or selection.get("protocol", "?")
    data, run_cfg = result.get("data") or {}, result.get("run") or {}
    pairs = [
        ("method", run.method),
        ("backbone", f"{backbone.get('name', '?')} ({backbone.get('pretrained', '?')}, {backbone.get('precision', '?')})"),
        ("backbone id", backbone.get("id", "?")),
        ("dataset", f"{data.get('dataset', '?')}: {len(run.classnames)} classes"),
        ("images (train / val / test)", " / ".join(str((data.get("counts") or {}).get(k, "?")) for k in ("train", "val", "test"))),
        ("shots, seed", f"{run_cfg.get('shots', '?')}, {run_cfg.get('seed', '?')}"),
        ("protocol", f"{protocol}: hyper-parameters chosen on {selection.get('chosen_on', '?')}"),
        ("chosen hyper-parameters", _chosen_text(selection.get("chosen") or {})),
        ("searched", "; ".join(f"{k} ∈ {v}" for k, v in (selection.get("grid") or {}).items()) or "nothing"),
        ("prompt templates", " | ".join(config.get("templates") or [])),
        ("templates from", result.get("templates_source", "?")),
        ("fit seconds", (result.get("timings") or {}).get("fit_seconds", "?")),
        ("versions", ", ".join(f"{k} {v}" for k, v in (result.get("versions") or {}).items()) or config.get("library_version", "?")),
    ]
    body = key_values(pairs)
    if protocol == "oracle":
        body = note("ORACLE protocol: hyper-parameters were chosen on the TEST split; these numbers are not a fair comparison.", warn=True) + body
    method_config = config.get("method_config") or {}
    rows = [(k, v) for k, v in sorted(method_config.items())]
    details = f"<details><summary>full method configuration ({len(rows)} options)</summary>{table(['option', 'value'], rows)}</details>"
    return body + details + ("" if run.result else note("No result.json: the run's record is missing; only the artifact's config is shown."))


def _chosen_text(chosen: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in chosen.items()) or "defaults (nothing chosen)"


def _results(run: RunFiles, evaluation: Evaluation | str, root: str) -> str:
    test = (run.result or {}).get("test") or {}
    acc, zs = test.get("accuracy"), (run.result or {}).get("zero_shot_test_accuracy")
    delta = acc - zs if isinstance(acc, (int, float)) and isinstance(zs, (int, float)) else None
    head = (f'<p><span class="big" id="test-accuracy">{pct(acc)}</span> test accuracy &nbsp; '
            f'<span class="big">{pct(zs)}</span> zero-shot &nbsp; <span class="big">{signed_points(delta)}</span> points</p>')
    rows = [("test accuracy", pct(acc)), ("zero-shot test accuracy", pct(zs)),
            ("mean per-class accuracy", pct(test.get("mean_per_class_accuracy"))),
            ("validation accuracy (selection)", pct((run.result or {}).get("val_accuracy"))), ("test images", test.get("num_images", "?"))]
    body = head + key_values(rows)
    if isinstance(evaluation, str):
        return body + note(f"Not re-evaluated: {evaluation}.")
    return body + _recheck(acc, zs, evaluation, root)


def _recheck(acc: Any, zs: Any, evaluation: Evaluation, root: str) -> str:
    again, zs_again = evaluation.report["accuracy"], evaluation.zero_shot_report["accuracy"]
    text = (f"Re-evaluated here on {evaluation.report['num_images']} test images from {quoted(root)}: "
            f"{pct(again)} (zero-shot {pct(zs_again)}).")
    same = isinstance(acc, float) and isinstance(zs, float) and abs(again - acc) < 1e-9 and abs(zs_again - zs) < 1e-9
    out = note(text + (" Identical to the recorded result." if same else ""))
    if not same and acc is not None:
        out += note("The re-evaluation differs from the recorded result: the images, the feature cache or the "
                    "test split changed since the run (the sections below use the re-evaluation).", warn=True)
    if evaluation.skipped:
        out += note(f"{len(evaluation.skipped)} test image(s) could not be read and were left out, e.g. "
                    f"{evaluation.skipped[0][0]} ({evaluation.skipped[0][1]}).", warn=True)
    f = flips(evaluation)
    out += note(f"Against zero-shot, the adapted model changed {f['changed']} of {f['total']} test predictions: "
                f"{f['fixed']} fixed (zero-shot wrong, now right), {f['broken']} broken (zero-shot right, now wrong).")
    return out


def _per_class(run: RunFiles, evaluation: Evaluation | str) -> str:
    if isinstance(evaluation, str):
        recorded = ((run.result or {}).get("test") or {}).get("per_class_accuracy") or {}
        rows = sorted(recorded.items(), key=lambda kv: (kv[1] is None, kv[1] or 0.0))
        return (note(f"Zero-shot per-class accuracy needs the test images: {evaluation}. "
                     "The adapted model's recorded per-class accuracy, lowest first:")
                + table(["class", "accuracy"], [(k, pct(v)) for k, v in rows], numeric=[1]))
    adapted, zero = evaluation.report["per_class_accuracy"], evaluation.zero_shot_report["per_class_accuracy"]
    support = [int(n) for n in _support(evaluation)]
    rows = [(name, adapted[name], zero[name], support[i]) for i, name in enumerate(run.classnames) if adapted.get(name) is not None]
    rows.sort(key=lambda r: (-(r[1] - r[2]), r[0]))
    helped = sum(r[1] > r[2] for r in rows)
    hurt = sum(r[1] < r[2] for r in rows)
    summary = (f'<p><span class="good">{helped} helped</span>, <span class="bad">{hurt} hurt</span>, '
               f"{len(rows) - helped - hurt} unchanged (of {len(rows)} classes with test images); sorted by the change.</p>")
    caption = "accuracy change per class (adapted − zero-shot), percentage points"
    chart = figure(figures.per_class_png([(r[0], r[1], r[2]) for r in rows]), caption, "per-class change") if helped + hurt else ""
    cells = [(esc(n), pct(a), pct(z), signed_points(a - z), s) for n, a, z, s in rows]
    return summary + chart + table(
        ["class", "adapted", "zero-shot", "change (points)", "test images"], cells, numeric=[1, 2, 3, 4], raw=True, cls="per-class")


def _support(evaluation: Evaluation) -> list[int]:
    return [sum(row) for row in evaluation.report["confusion_matrix"]]


def _confusion(run: RunFiles, evaluation: Evaluation | str) -> str:
    matrix = evaluation.report["confusion_matrix"] if isinstance(evaluation, Evaluation) else ((run.result or {}).get("test") or {}).get("confusion_matrix")
    if not matrix:
        return note("No confusion matrix: the run recorded none and the test images were not available.")
    pairs = [(run.classnames[i], run.classnames[j], n) for i, row in enumerate(matrix) for j, n in enumerate(row) if i != j and n]
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    top = table(["true class", "predicted as", "images"], pairs[:10], numeric=[2]) if pairs else note("No confusions.")
    return (figure(figures.confusion_png(matrix, run.classnames), "rows: true class; columns: predicted class; colour: share of the row",
                   "confusion matrix") + "<h3>Most frequent confusions</h3>" + top)


def _worst(run: RunFiles, evaluation: Evaluation | str, count: int) -> str:
    if isinstance(evaluation, str):
        return note(f"Skipped: {evaluation}.")
    from ..data.images import load_rgb
    from ..errors import DataError

    cards, names = [], run.classnames
    for item in worst(evaluation, count):
        try:
            thumb = figures.thumbnail_png(load_rgb(item["path"])[0])
        except DataError as exc:
            cards.append(f'<div class="card">{esc(item["path"].name)}: {esc(exc)}</div>')
            continue
        verdict = "wrong" if item["pred"] != item["true"] else "right"
        name = f'{item["path"].parent.name}/{item["path"].name}'  # file names repeat across class folders
        cards.append(
            f'<div class="card"><img src="{data_uri(thumb)}" alt="{esc(name)}">'
            f'<b>{esc(name)}</b><br>true: {esc(names[item["true"]])}<br>'
            f'<span class="{"bad" if verdict == "wrong" else "good"}">predicted: {esc(names[item["pred"]])}</span> '
            f'({pct(item["p_pred"], 1)})<br>p(true) {pct(item["p_true"], 1)}<br>zero-shot: {esc(names[item["zero_shot_pred"]])}</div>')
    intro = note(f"The {len(cards)} test images with the lowest probability on their true class, lowest first.")
    return intro + f'<div class="cards">{"".join(cards)}</div>'


def _training(run: RunFiles) -> str:
    result = run.result or {}
    grid_keys = list(((result.get("selection") or {}).get("grid") or {}).keys())
    parts = []
    if result.get("history") is not None:
        parts.append(history_section(result.get("history"), grid_keys, "result.json history"))
    if run.log_rows is not None:
        parts.append(history_section(run.log_rows, grid_keys, "log.csv"))
    return "".join(parts) or note("The run recorded no training history (no result.json history, no log.csv).")


def _adapter(run: RunFiles, evaluation: Evaluation | str) -> str:
    config = run.config.get("method_config") or {}
    chosen = ((run.result or {}).get("selection") or {}).get("chosen") or {}
    pairs = [("variant", config.get("variant", "?")), ("ratio mode", config.get("ratio", "?")),
             ("bottleneck reduction", config.get("reduction", "?")), ("chosen on validation", _chosen_text(chosen))]
    if isinstance(evaluation, str):
        head, features = _head_only(run)
        if head is None:
            return key_values(pairs) + note(f"Adapted-feature statistics need the test images and backbone: {evaluation}.")
    else:
        head, features = evaluation.head, evaluation.features
    effect = adapter_effect(head, features)
    pairs += [("α (visual ratio) applied", _ratio_text(effect, "alpha", config.get("variant") != "text")),
              ("β (text ratio) applied", _ratio_text(effect, "beta", config.get("variant") != "visual"))]
    body = key_values(pairs) + _effect_tables(effect)
    if "image_cosine_values" in effect:
        png = figures.histogram_png(effect["image_cosine_values"], "cos(adapted, original) per test image", "image features")
        body += figure(png, "how far the visual adapter moved each test image's feature (1 = not at all)", "cosine histogram")
    elif isinstance(evaluation, str) and config.get("variant") != "text":
        body += note(f"Image-side statistics need the test images: {evaluation}.")
    return body


def _ratio_text(effect: dict[str, Any], name: str, used: bool) -> str:
    if not used:
        return "not used by this variant"
    value = effect.get(name)
    std = effect.get(f"{name}_std")
    return f"{value:.3f}" + (f" (mean over test images, std {std:.3f})" if std is not None else "")


def _effect_tables(effect: dict[str, Any]) -> str:
    rows = []
    labels = {"image_cosine": "test image features: cos(α·A(f) + (1−α)·f, f)",
              "adapter_output_cosine": "adapter output alone: cos(A(f), f)",
              "text_cosine": "class embeddings: cos(β·A(W) + (1−β)·W, W)"}
    for key, label in labels.items():
        if key in effect:
            s = effect[key]
            rows.append((label, f"{s['mean']:.4f}", f"{s['p10']:.4f}", f"{s['min']:.4f}", s["count"]))
    if not rows:
        return ""
    return "<h3>How far adapted features moved from CLIP's</h3>" + table(["features", "mean cosine", "10th percentile", "min", "n"], rows, numeric=[1, 2, 3, 4])


def _head_only(run: RunFiles) -> tuple[Any, None]:
    """The head without a backbone (text-side statistics need no images); ``None`` when it cannot be loaded."""
    from ..artifacts import Classifier
    from ..errors import ClipAdapterError

    try:
        return Classifier.from_pretrained(run.directory).head, None
    except ClipAdapterError:
        return None, None
