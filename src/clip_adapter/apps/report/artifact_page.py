"""The page for one artifact directory (a ``clip-adapter train`` run)."""

from __future__ import annotations

import os
from typing import Any

from ...core.files import quoted
from . import figures
from .adapter import adapter_effect, is_clip_adapter
from .evaluation import Evaluation, cache_dir_for, evaluate, flips, worst
from .fields import (
    MALFORMED,
    Fields,
    count,
    fraction,
    fraction_map,
    grid,
    mapping,
    records,
    scalar,
    scalar_map,
    seconds,
    shown,
    square_counts,
    text,
    texts,
)
from .history import history_section, log_section
from .html import data_uri, esc, figure, key_values, note, page, pct, signed_points, table
from .run_files import RunFiles, TestImages, find_test_images, read_run_files
from .trust_sections import calibration_section, trust_section

Section = tuple[str, str, str]


def artifact_report(
    directory: str | os.PathLike,
    data: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    worst_count: int = 12,
    device: str = "auto",
) -> str:
    """The HTML page of an artifact: configuration, results, calibration, trust (when fitted), per-class, confusion,
    worst images, training, adapter.

    Example:
        >>> html = artifact_report("runs/photos")  # doctest: +SKIP
    """
    run = read_run_files(directory)
    images = find_test_images(run, data)
    evaluation: Evaluation | str = (
        images if isinstance(images, str) else evaluate(run, images, cache_dir_for(run, cache_dir), device)
    )
    where = "" if isinstance(images, str) else images.root
    sections = [
        ("configuration", "Configuration and protocol", _configuration(run)),
        ("results", "Results", _results(run, evaluation, where, images)),
        ("calibration", "Calibration: confidence vs accuracy", calibration_section(run, evaluation)),
        *(
            [("trust", "Trust: calibration, prediction sets, out-of-distribution", trust_section(run, evaluation))]
            if run.config_fields.has("trust")
            else []
        ),
        ("per-class", "Per-class accuracy vs zero-shot", _per_class(run, evaluation)),
        ("confusion", "Confusion matrix", _confusion(run, evaluation)),
        ("worst", "Worst-classified test images", _worst(run, evaluation, worst_count)),
        ("training", "Training history", _training(run)),
    ]
    if run.method == "clip-adapter" or (isinstance(evaluation, Evaluation) and is_clip_adapter(evaluation.head)):
        sections.append(("adapter", "What the adapter did", _adapter(run, evaluation)))
    if run.problems:  # every section has read its fields by now; say once which were malformed
        sections[0] = (*sections[0][:2], _malformed_note(run.problems) + sections[0][2])
    result = run.result_fields
    subtitle = (
        f"{run.method} on {shown(result.get('data.dataset', scalar, '?'))} — "
        f"{shown(result.get('run.shots', scalar, '?'))} shots, "
        f"seed {shown(result.get('run.seed', scalar, '?'))} — {run.directory}"
    )
    return page(f"clip-adapter run report: {run.method}", subtitle, sections)


def _malformed_note(problems: list[str]) -> str:
    listed = ", ".join(problems[:12]) + (f" and {len(problems) - 12} more" if len(problems) > 12 else "")
    return note(
        f'Malformed fields (of a type or range this report cannot use), shown as "malformed": {listed}.', warn=True
    )


def _selection(run: RunFiles) -> Fields:
    """The run's selection record: result.json's, else the one the artifact's config keeps."""
    return (
        run.result_fields.sub("selection") if run.result_fields.has("selection") else run.config_fields.sub("selection")
    )


def _configuration(run: RunFiles) -> str:
    result, config, selection = run.result_fields, run.config_fields, _selection(run)
    backbone = config.sub("backbone")
    protocol = result.get("protocol", text) or selection.get("protocol", text, "?")
    counts = result.sub("data.counts")
    versions = result.get("versions", scalar_map, {})
    pairs = [
        ("method", run.method),
        (
            "backbone",
            f"{shown(backbone.get('name', scalar, '?'))} ({shown(backbone.get('pretrained', scalar, '?'))}, "
            f"{shown(backbone.get('precision', scalar, '?'))})",
        ),
        ("backbone id", shown(backbone.get("id", scalar, "?"))),
        ("dataset", f"{shown(result.get('data.dataset', scalar, '?'))}: {len(run.classnames)} classes"),
        ("images (train / val / test)", " / ".join(shown(counts.get(k, count, "?")) for k in ("train", "val", "test"))),
        ("shots, seed", f"{shown(result.get('run.shots', scalar, '?'))}, {shown(result.get('run.seed', scalar, '?'))}"),
        ("protocol", f"{shown(protocol)}: hyper-parameters chosen on {shown(selection.get('chosen_on', scalar, '?'))}"),
        ("chosen hyper-parameters", _chosen_text(selection.get("chosen", scalar_map, {}))),
        ("searched", _grid_text(selection.get("grid", grid, {}))),
        ("prompt templates", _templates_text(config.get("templates", texts, []))),
        ("templates from", shown(result.get("templates_source", scalar, "?"))),
        ("fit seconds", shown(result.get("timings.fit_seconds", seconds, "?"))),
        ("versions", _versions_text(versions, config.get("library_version", scalar, "?"))),
    ]
    body = key_values(pairs)
    if protocol == "oracle":
        body = (
            note(
                "ORACLE protocol: hyper-parameters were chosen on the TEST split; "
                "these numbers are not a fair comparison.",
                warn=True,
            )
            + body
        )
    method_config = config.get("method_config", mapping, {})
    rows = (
        [(k, shown(v)) for k, v in sorted(method_config.items())]
        if method_config is not MALFORMED
        else [("(all)", "malformed")]
    )
    details = (
        f"<details><summary>full method configuration ({len(rows)} options)</summary>"
        f"{table(['option', 'value'], rows)}</details>"
    )
    return (
        body
        + details
        + (
            ""
            if run.result
            else note("No result.json: the run's record is missing; only the artifact's config is shown.")
        )
    )


def _templates_text(templates: list[str] | object) -> str:
    return " | ".join(templates) if isinstance(templates, list) else shown(templates)


def _versions_text(versions: dict[str, object] | object, library: object) -> str:
    if not isinstance(versions, dict):
        return shown(versions)
    return ", ".join(f"{k} {shown(v)}" for k, v in versions.items()) or shown(library)


def _grid_text(searched: dict[str, list[object]] | object) -> str:
    if not isinstance(searched, dict):
        return shown(searched)
    return "; ".join(f"{k} ∈ {shown(v)}" for k, v in searched.items()) or "nothing"


def _chosen_text(chosen: dict[str, object] | object) -> str:
    if not isinstance(chosen, dict):
        return shown(chosen)
    return ", ".join(f"{k} = {shown(v)}" for k, v in chosen.items()) or "defaults (nothing chosen)"


def _results(run: RunFiles, evaluation: Evaluation | str, root: str, images: TestImages | str) -> str:
    result = run.result_fields
    acc, zs = result.get("test.accuracy", fraction), result.get("zero_shot_test_accuracy", fraction)
    delta = acc - zs if isinstance(acc, (int, float)) and isinstance(zs, (int, float)) else None
    head = (
        f'<p><span class="big" id="test-accuracy">{pct(acc)}</span> test accuracy &nbsp; '
        f'<span class="big">{pct(zs)}</span> zero-shot &nbsp; '
        f'<span class="big">{signed_points(delta)}</span> points</p>'
    )
    rows = [
        ("test accuracy", pct(acc)),
        ("zero-shot test accuracy", pct(zs)),
        ("mean per-class accuracy", pct(result.get("test.mean_per_class_accuracy", fraction))),
        ("validation accuracy (selection)", pct(result.get("val_accuracy", fraction))),
        ("test images", shown(result.get("test.num_images", count, "?"))),
    ]
    body = head + key_values(rows)
    if isinstance(evaluation, str):
        return body + note(f"Not re-evaluated: {evaluation}.")
    outside = images.outside if isinstance(images, TestImages) else []
    if outside:
        body += note(
            f"{len(outside)} test image(s) of --data lie outside it (symlinks resolved) and were skipped, "
            f"e.g. {outside[0]}.",
            warn=True,
        )
    return body + _recheck(acc, zs, evaluation, root)


def _recheck(acc: Any, zs: Any, evaluation: Evaluation, root: str) -> str:
    again, zs_again = evaluation.report["accuracy"], evaluation.zero_shot_report["accuracy"]
    text = (
        f"Re-evaluated here on {evaluation.report['num_images']} test images from {quoted(root)}: "
        f"{pct(again)} (zero-shot {pct(zs_again)})."
    )
    same = isinstance(acc, float) and isinstance(zs, float) and abs(again - acc) < 1e-9 and abs(zs_again - zs) < 1e-9
    out = note(text + (" Identical to the recorded result." if same else ""))
    if not same and isinstance(acc, (int, float)):
        out += note(
            "The re-evaluation differs from the recorded result: the images, the feature cache or the "
            "test split changed since the run (the sections below use the re-evaluation).",
            warn=True,
        )
    if evaluation.skipped:
        out += note(
            f"{len(evaluation.skipped)} test image(s) could not be read and were left out, e.g. "
            f"{evaluation.skipped[0][0]} ({evaluation.skipped[0][1]}).",
            warn=True,
        )
    f = flips(evaluation)
    out += note(
        f"Against zero-shot, the adapted model changed {f['changed']} of {f['total']} test predictions: "
        f"{f['fixed']} fixed (zero-shot wrong, now right), {f['broken']} broken (zero-shot right, now wrong)."
    )
    return out


def _per_class(run: RunFiles, evaluation: Evaluation | str) -> str:
    if isinstance(evaluation, str):
        recorded = run.result_fields.get("test.per_class_accuracy", fraction_map, {})
        if recorded is MALFORMED:
            return note(
                "Zero-shot per-class accuracy needs the re-evaluation, which did not run (see Results). "
                "The recorded per-class accuracy (result.json test.per_class_accuracy) is malformed."
            )
        rows = sorted(recorded.items(), key=lambda kv: (kv[1] is None, kv[1] or 0.0, kv[0]))
        return note(
            "Zero-shot per-class accuracy needs the re-evaluation, which did not run (see Results). "
            "The adapted model's recorded per-class accuracy, lowest first:"
        ) + table(["class", "accuracy"], [(k, pct(v)) for k, v in rows], numeric=[1])
    adapted, zero = evaluation.report["per_class_accuracy"], evaluation.zero_shot_report["per_class_accuracy"]
    support = [int(n) for n in _support(evaluation)]
    rows = [
        (name, adapted[name], zero[name], support[i])
        for i, name in enumerate(run.classnames)
        if adapted.get(name) is not None
    ]
    rows.sort(key=lambda r: (-(r[1] - r[2]), r[0]))
    helped = sum(r[1] > r[2] for r in rows)
    hurt = sum(r[1] < r[2] for r in rows)
    summary = (
        f'<p><span class="good">{helped} helped</span>, <span class="bad">{hurt} hurt</span>, '
        f"{len(rows) - helped - hurt} unchanged (of {len(rows)} classes with test images); sorted by the change.</p>"
    )
    caption = "accuracy change per class (adapted − zero-shot), percentage points"
    chart = (
        figure(figures.per_class_png([(r[0], r[1], r[2]) for r in rows]), caption, "per-class change")
        if helped + hurt
        else ""
    )
    cells = [(esc(n), pct(a), pct(z), signed_points(a - z), s) for n, a, z, s in rows]
    return (
        summary
        + chart
        + table(
            ["class", "adapted", "zero-shot", "change (points)", "test images"],
            cells,
            numeric=[1, 2, 3, 4],
            raw=True,
            cls="per-class",
        )
    )


def _support(evaluation: Evaluation) -> list[int]:
    return [sum(row) for row in evaluation.report["confusion_matrix"]]


def _confusion(run: RunFiles, evaluation: Evaluation | str) -> str:
    if isinstance(evaluation, Evaluation):
        matrix = evaluation.report["confusion_matrix"]
    else:
        matrix = run.result_fields.get("test.confusion_matrix", square_counts(len(run.classnames)))
    if matrix is MALFORMED:
        return note(
            f"The recorded confusion matrix (result.json test.confusion_matrix) is malformed: not a "
            f"{len(run.classnames)} × {len(run.classnames)} table of image counts, one row and column per class."
        )
    if not matrix:
        return note("No confusion matrix: the run recorded none and the test images were not available.")
    pairs = [
        (run.classnames[i], run.classnames[j], n)
        for i, row in enumerate(matrix)
        for j, n in enumerate(row)
        if i != j and n
    ]
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    top = table(["true class", "predicted as", "images"], pairs[:10], numeric=[2]) if pairs else note("No confusions.")
    return (
        figure(
            figures.confusion_png(matrix, run.classnames),
            "rows: true class; columns: predicted class; colour: share of the row",
            "confusion matrix",
        )
        + "<h3>Most frequent confusions</h3>"
        + top
    )


def _worst(run: RunFiles, evaluation: Evaluation | str, how_many: int) -> str:
    if isinstance(evaluation, str):
        return note("Skipped: the run was not re-evaluated (see Results).")
    from ...core.errors import DataError
    from ...data.images import load_rgb

    cards, names = [], run.classnames
    for item in worst(evaluation, how_many):
        try:
            thumb = figures.thumbnail_png(load_rgb(item["path"])[0])
        except DataError as exc:
            cards.append(f'<div class="card">{esc(item["path"].name)}: {esc(exc)}</div>')
            continue
        verdict = "wrong" if item["pred"] != item["true"] else "right"
        name = f"{item['path'].parent.name}/{item['path'].name}"  # file names repeat across class folders
        cards.append(
            f'<div class="card"><img src="{data_uri(thumb)}" alt="{esc(name)}">'
            f"<b>{esc(name)}</b><br>true: {esc(names[item['true']])}<br>"
            f'<span class="{"bad" if verdict == "wrong" else "good"}">predicted: {esc(names[item["pred"]])}</span> '
            f"({pct(item['p_pred'], 1)})<br>p(true) {pct(item['p_true'], 1)}<br>"
            f"zero-shot: {esc(names[item['zero_shot_pred']])}</div>"
        )
    intro = note(f"The {len(cards)} test images with the lowest probability on their true class, lowest first.")
    return intro + f'<div class="cards">{"".join(cards)}</div>'


def _training(run: RunFiles) -> str:
    selection = _selection(run)
    searched = selection.get("grid", grid, {})
    grid_keys = list(searched) if isinstance(searched, dict) else []
    chosen = selection.get("chosen", scalar_map, {})
    chosen = chosen if isinstance(chosen, dict) else {}
    history = run.result_fields.get("history", records)
    parts = []
    if history is MALFORMED:
        parts.append(note("result.json history is malformed (not a list of records); it is not shown."))
    elif history is not None:
        parts.append(history_section(history, grid_keys, "result.json history", chosen))
    has_epochs = isinstance(history, list) and any(isinstance(r.get("epochs"), list) and r["epochs"] for r in history)
    if run.log_rows is not None and has_epochs:
        parts.append(
            note(
                f"log.csv ({len(run.log_rows)} rows) is not shown again: result.json's history above already "
                "holds per-epoch records."
            )
        )
    elif run.log_rows is not None:
        parts.append(log_section(run.log_rows, grid_keys, "log.csv", chosen))
    return "".join(parts) or note("The run recorded no training history (no result.json history, no log.csv).")


def _adapter(run: RunFiles, evaluation: Evaluation | str) -> str:
    config = run.config_fields.sub("method_config")
    chosen = _selection(run).get("chosen", scalar_map, {})
    variant = config.get("variant", scalar, "?")
    pairs = [
        ("variant", shown(variant)),
        ("ratio mode", shown(config.get("ratio", scalar, "?"))),
        ("bottleneck reduction", shown(config.get("reduction", scalar, "?"))),
        ("chosen on validation", _chosen_text(chosen)),
    ]
    if isinstance(evaluation, str):
        head, features = _head_only(run)
        if head is None:
            return key_values(pairs) + note(
                "Adapted-feature statistics need the re-evaluation (which did not run, see Results) "
                "or at least the artifact's weights, which could not be loaded."
            )
    else:
        head, features = evaluation.head, evaluation.features
    effect = adapter_effect(head, features)
    pairs += [
        ("α (visual ratio) applied", _ratio_text(effect, "alpha", variant != "text")),
        ("β (text ratio) applied", _ratio_text(effect, "beta", variant != "visual")),
    ]
    body = key_values(pairs) + _effect_tables(effect)
    if "image_cosine_values" in effect:
        png = figures.histogram_png(
            effect["image_cosine_values"], "cos(adapted, original) per test image", "image features"
        )
        body += figure(
            png, "how far the visual adapter moved each test image's feature (1 = not at all)", "cosine histogram"
        )
    elif isinstance(evaluation, str) and variant != "text":
        body += note("Image-side statistics need the re-evaluation, which did not run (see Results).")
    return body


def _ratio_text(effect: dict[str, Any], name: str, used: bool) -> str:
    if not used:
        return "not used by this variant"
    value = effect.get(name)
    std = effect.get(f"{name}_std")
    return f"{value:.3f}" + (f" (mean over test images, std {std:.3f})" if std is not None else "")


def _effect_tables(effect: dict[str, Any]) -> str:
    rows = []
    labels = {
        "image_cosine": "test image features: cos(α·A(f) + (1−α)·f, f)",
        "adapter_output_cosine": "adapter output alone: cos(A(f), f)",
        "text_cosine": "class embeddings: cos(β·A(W) + (1−β)·W, W)",
    }
    for key, label in labels.items():
        if key in effect:
            s = effect[key]
            rows.append((label, f"{s['mean']:.4f}", f"{s['p10']:.4f}", f"{s['min']:.4f}", s["count"]))
    if not rows:
        return ""
    return "<h3>How far adapted features moved from CLIP's</h3>" + table(
        ["features", "mean cosine", "10th percentile", "min", "n"], rows, numeric=[1, 2, 3, 4]
    )


def _head_only(run: RunFiles) -> tuple[Any, None]:
    """The head without a backbone (text-side statistics need no images); ``None`` when it cannot be loaded."""
    from ...artifacts import Classifier
    from ...core.errors import ClipAdapterError

    try:
        return Classifier.from_pretrained(run.directory).head, None
    except ClipAdapterError:
        return None, None
