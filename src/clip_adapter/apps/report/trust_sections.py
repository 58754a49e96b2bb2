"""The artifact page's calibration and trust sections.

*Calibration* shows how far the head's confidence is from its accuracy on the test
split, for the adapted model and for zero-shot CLIP side by side: ECE, MCE, NLL,
Brier score and AURC in a small table, and each model's reliability diagram above
its confidence histogram. Everything comes from ``result.json`` (``test.calibration``
and ``zero_shot_test_calibration``, as :func:`clip_adapter.trust.calibration.calibration_report`
writes them): no image is read. A ``result.json`` written before calibration was
recorded has neither; the section then uses the re-evaluation (``--data``) if there
is one, or says what is missing.

*Trust* appears when ``config.json`` has a ``trust`` section (what ``clip-adapter
calibrate``, ``conformal`` and ``ood`` fit, see :class:`clip_adapter.trust.record.TrustRecord`):
what was fitted, on how many images, and the guarantee each part gives, in words.
With a re-evaluation, the record is also applied to the test images and the promised
numbers (coverage, accepted share) are set against what they measure.

As everywhere in the report, every field is type-checked (:mod:`.fields`); a
malformed one shows as "malformed" and is named in the page's one warning.
"""

from __future__ import annotations

import math
from typing import Any

from . import figures
from .evaluation import Evaluation
from .fields import (
    MALFORMED,
    Fields,
    brier,
    count,
    counts,
    flag,
    fraction,
    mapping,
    nonnegative,
    number,
    positive,
    records,
    reliability,
    scalar,
    shown,
    text,
)
from .html import esc, figure, key_values, note, pct, table
from .run_files import RunFiles

CALIBRATION_FIELDS = {
    "accuracy": fraction,
    "mean_confidence": fraction,
    "ece": fraction,
    "mce": fraction,
    "nll": nonnegative,
    "brier": brier,
    "aurc": fraction,
    "num_samples": count,
    "n_bins": count,
}
MAX_PROVENANCE_ROWS = 40
SCORE_WORDS = {
    "lac": "LAC (1 − the class's probability)",
    "aps": "APS (the probability mass of the classes ranked down to and including the class)",
    "raps": "RAPS (APS plus a penalty on classes ranked low)",
}
OOD_WORDS = {
    "mcm": "MCM (the top softmax probability of the cosine similarities)",
    "msp": "MSP (the top softmax probability of the logits)",
    "energy": "energy (T · logsumexp of the logits / T)",
}
STEP_WORDS = {
    "zs-norm": (
        "ZS-Norm: each image's logits rescaled to the range of its zero-shot logits (Murugesan et al., ECCV 2024)"
    ),
    "temperature": "temperature scaling: logits divided by T",
}


# ---------------------------------------------------------------------------------------------- calibration


def _calibration_record(fields: Fields, dotted: str) -> dict[str, Any] | None | object:
    """The checked record at ``dotted``: ``None`` when absent, :data:`MALFORMED` when not an object."""
    if not fields.has(dotted):
        return None
    if fields.get(dotted, mapping) is MALFORMED:
        return MALFORMED
    sub = fields.sub(dotted)
    record = {key: sub.get(key, check) for key, check in CALIBRATION_FIELDS.items()}
    record["reliability"] = sub.get("reliability", reliability)
    return record


def _value(record: Any, key: str) -> Any:
    if record is MALFORMED:
        return MALFORMED
    return record.get(key) if isinstance(record, dict) else None


def _decimals(value: Any, digits: int = 3) -> str:
    if value is MALFORMED:
        return "malformed"
    return f"{value:.{digits}f}" if number(value) else "n/a"


def _gap_text(record: Any) -> str:
    """Mean confidence minus accuracy, in points, with what it means."""
    acc, conf = _value(record, "accuracy"), _value(record, "mean_confidence")
    if not (number(acc) and number(conf)):
        return "n/a"
    gap = 100 * (conf - acc)
    word = "over-confident" if gap > 0.005 else "under-confident" if gap < -0.005 else "matched"
    return f"{gap:+.2f} ({word})"


def calibration_section(run: RunFiles, evaluation: Evaluation | str) -> str:
    """The Calibration section: the measures of both models, then their reliability diagrams."""
    result = run.result_fields
    labels = (f"{run.method} (adapted)", "zero-shot CLIP")
    models = [
        _calibration_record(result, "test.calibration"),
        _calibration_record(result, "zero_shot_test_calibration"),
    ]
    source = note(
        "From result.json (test.calibration and zero_shot_test_calibration): the test split as the run "
        "evaluated it, before any calibration of the artifact's trust record."
    )
    if all(m is None for m in models):
        if not isinstance(evaluation, Evaluation):
            return note(
                "result.json records no calibration (it was written before calibration was recorded). "
                "Pass --data DATASET to compute it from a re-evaluation of the test images."
            )
        scratch: list[str] = []  # the re-evaluation is this program's own output: nothing to name
        models = [
            _calibration_record(Fields(evaluation.report, "re-evaluation", scratch), "calibration"),
            _calibration_record(Fields(evaluation.zero_shot_report, "re-evaluation", scratch), "calibration"),
        ]
        source = note(
            f"result.json records no calibration (written before it was recorded); computed here from the "
            f"re-evaluation of {evaluation.report['num_images']} test images, before any calibration of the "
            "artifact's trust record."
        )
    bins = {_value(m, "n_bins") for m in models if number(_value(m, "n_bins"))}
    ece_heading = f"ECE ({next(iter(bins))} bins)" if len(bins) == 1 else "ECE"
    rows = []
    for label, record in zip(labels, models):
        if record is None:
            rows.append((label, *(["not recorded"] * 9)))
            continue
        rows.append(
            (
                label,
                pct(_value(record, "accuracy")),
                pct(_value(record, "mean_confidence")),
                _gap_text(record),
                pct(_value(record, "ece")),
                pct(_value(record, "mce")),
                _decimals(_value(record, "nll")),
                _decimals(_value(record, "brier")),
                pct(_value(record, "aurc")),
                shown(_value(record, "num_samples")),
            )
        )
    header = [
        "model",
        "accuracy",
        "mean confidence",
        "confidence − accuracy (points)",
        ece_heading,
        "MCE",
        "NLL (nats)",
        "Brier",
        "AURC",
        "test images",
    ]
    body = source + table(header, rows, numeric=list(range(1, 10)), cls="calibration")
    body += note(
        "Lower is better for every measure. ECE: |accuracy − mean confidence| per equal-width confidence bin, "
        "averaged with the bins' shares of images; MCE: the worst bin. NLL: mean negative log-probability of the "
        "true class. Brier: Σ over classes of (probability − 1 for the true class, else 0)², from 0 to 2. AURC: "
        "area under the risk–coverage curve, the mean error rate when answering only the most confident "
        "images, over every share of images answered."
    )
    return body + _diagrams(labels, models)


def _diagrams(labels: tuple[str, ...], models: list[Any]) -> str:
    panels, problems = [], []
    for label, record in zip(labels, models):
        diagram = _value(record, "reliability")
        if diagram is MALFORMED:
            problems.append(label)
        elif isinstance(diagram, dict) and sum(diagram["count"]):
            ece, acc, conf = (_value(record, k) for k in ("ece", "accuracy", "mean_confidence"))
            panels.append(
                {
                    "title": label,
                    "bin_edges": diagram["bin_edges"],
                    "count": diagram["count"],
                    "accuracy": diagram["accuracy"],
                    "mean_confidence": diagram["mean_confidence"],
                    "ece": ece if number(ece) else None,
                    "overall_accuracy": acc if number(acc) else None,
                    "overall_confidence": conf if number(conf) else None,
                }
            )
    out = note(f"The reliability diagram of {' and '.join(problems)} is malformed and not drawn.") if problems else ""
    if not panels:
        return out + ("" if problems else note("No reliability diagram recorded."))
    caption = (
        "reliability diagram (top: accuracy per confidence bin, its gap to the bin's mean confidence hatched; the "
        "dashed diagonal is perfect calibration, bars below it are over-confident) and confidence histogram "
        "(bottom: share of test images per bin)"
    )
    return out + figure(figures.reliability_png(panels), caption, "reliability diagram")


# ---------------------------------------------------------------------------------------------- trust


def trust_section(run: RunFiles, evaluation: Evaluation | str) -> str:
    """The Trust section: each fitted part, what it was fitted on and what it guarantees."""
    config = run.config_fields
    if config.get("trust", mapping) is MALFORMED:
        return note("config.json trust is malformed (not an object): nothing about it can be shown.", warn=True)
    trust = config.sub("trust")
    provenance = trust.get("provenance", mapping, {})
    provenance = provenance if isinstance(provenance, dict) else {}
    parts = [
        ("Calibration", "calibration", _calibration_part),
        ("Conformal prediction sets", "conformal", _conformal_part),
        ("Out-of-distribution detection", "ood", _ood_part),
    ]
    body = _loader_check(run)
    fitted = 0
    for title, key, describe in parts:
        if not trust.has(key):
            body += f"<h3>{esc(title)}</h3>" + note("Not fitted.")
            continue
        fitted += 1
        if trust.get(key, mapping) is MALFORMED:
            body += f"<h3>{esc(title)}</h3>" + note(f"config.json trust.{key} is malformed (not an object).", warn=True)
            continue
        part = trust.sub(key)
        body += f"<h3>{esc(title)}</h3>" + describe(part) + _provenance(trust, key, provenance.get(key))
    if not fitted:
        body += note("The trust record holds no fitted part.")
    return body + _measured(evaluation)


def _loader_check(run: RunFiles) -> str:
    """A warning when the artifact loader would refuse this trust record (then nothing uses it)."""
    from ...artifacts import TRUST_FORMAT_VERSION
    from ...core.errors import ClipAdapterError
    from ...trust.record import TrustRecord

    version = run.config.get("format_version")
    if version != TRUST_FORMAT_VERSION or isinstance(version, bool):
        return note(
            f"config.json format_version is {shown(version) or 'missing'}; an artifact with a trust section is "
            "version 2, so the loader refuses this one.",
            warn=True,
        )
    try:
        TrustRecord.from_dict(run.config.get("trust"), len(run.classnames), "config.json trust")
    except ClipAdapterError as exc:
        return note(
            f"The artifact loader refuses this trust record ({' '.join(str(exc).split())}): predictions with it "
            "would stop, so the parts below are what the file says, not what is applied.",
            warn=True,
        )
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError):
        return note("The artifact loader refuses this trust record (a malformed field).", warn=True)
    return ""


def _calibration_part(part: Fields) -> str:
    steps = part.get("steps", records, [])
    if steps is MALFORMED:
        return note("config.json trust.calibration.steps is malformed (not a list of steps).", warn=True)
    described = []
    for i, raw in enumerate(steps):
        step = Fields(
            raw, part.file, part.problems, f"{part.prefix}steps.{i}."
        )  # a list item: no dotted path reaches it
        kind = step.get("kind", text, "?")
        words = STEP_WORDS.get(kind, f"unknown step {shown(kind)}") if isinstance(kind, str) else "malformed step"
        if kind == "temperature":
            t = step.get("temperature", positive)
            words += f", T = {shown(t)}" + (
                " (above 1: the head was over-confident, its probabilities are softened)"
                if number(t) and t > 1
                else " (below 1: the head was under-confident, its probabilities are sharpened)"
                if number(t) and t < 1
                else ""
            )
        described.append(words)
    if not described:
        return note("No calibration step.")
    lines = "".join(f"<li>{esc(w)}</li>" for w in described)
    return f"<ol>{lines}</ol>" + note(
        "Applied in this order to the head's logits before the softmax. A calibration never "
        "changes a prediction, only its confidence; the steps were fitted by likelihood on "
        "held-out labelled images, and their effect holds on images like those."
    )


def _conformal_part(part: Fields) -> str:
    alpha, score = part.get("alpha", fraction), part.get("score", text, "?")
    n, n_classes = part.get("n_calibration", count), part.get("n_classes", count)
    randomized, conditional = part.get("randomized", flag, False), part.get("class_conditional", flag, False)
    per_class = part.get("n_calibration_per_class", counts)
    q_hat = part.get("q_hat", lambda v: number(v) or (isinstance(v, list) and all(x is None or number(x) for x in v)))
    pairs = [
        ("score", SCORE_WORDS.get(score, shown(score)) if isinstance(score, str) else shown(score)),
        ("miscoverage α", shown(alpha)),
        ("calibration images", shown(n)),
        ("classes", shown(n_classes)),
        ("randomized", shown(randomized)),
        ("class-conditional (one threshold per class)", shown(conditional)),
        ("threshold q̂", _q_text(q_hat)),
    ]
    if isinstance(per_class, list) and per_class:
        pairs.append(("calibration images per class", f"{min(per_class)} to {max(per_class)}"))
    raps = part.sub("raps") if part.has("raps") else None
    if raps is not None and score == "raps":
        pairs.append(("RAPS λ, k_reg", f"{shown(raps.get('lambda', number))}, {shown(raps.get('k_reg', count))}"))
    return key_values(pairs) + _guarantee(alpha, n, randomized, conditional, score)


def _q_text(q_hat: Any) -> str:
    if isinstance(q_hat, list):
        finite = [q for q in q_hat if q is not None]
        always = len(q_hat) - len(finite)
        span = f"{min(finite):.4g} to {max(finite):.4g}" if finite else "none finite"
        return f"per class, {span}" + (f"; {always} class(es) with too few images are in every set" if always else "")
    return shown(q_hat)


def _guarantee(alpha: Any, n: Any, randomized: Any, conditional: Any, score: Any) -> str:
    if not (number(alpha) and 0 < alpha < 1 and count(n) and n > 0):
        return note(
            "The miscoverage or the number of calibration images is missing or malformed: the guarantee "
            "cannot be stated.",
            warn=True,
        )
    target = 1 - alpha
    if conditional is True:
        from ...trust.conformal import min_calibration_size

        text_ = (
            f"Guarantee: within every class, the prediction set holds the true class for at least {target:.1%} of "
            f"test images, on average over draws of the calibration images (Mondrian split-conformal). A class "
            f"with fewer than {min_calibration_size(alpha)} calibration images gets no threshold and is in every set."
        )
    else:
        upper = target + 1 / (n + 1)
        exact = "exactly" if randomized is True else "at least"
        text_ = (
            f"Guarantee: the prediction set holds the true class for {exact} {target:.1%} of test images, on average "
            f"over draws of the {n} calibration images (split-conformal)"
            + ("" if randomized is True else f", and for at most {min(upper, 1.0):.1%} when scores have no ties")
            + "."
        )
    if randomized is True or score == "lac":
        text_ += " A set may be empty (no class is likely enough)."
    text_ += (
        " It holds only for test images exchangeable with the calibration images: from the same distribution, "
        "and not the training shots; it says nothing of one image's set, only of the share over many."
    )
    return note(text_)


def _ood_part(part: Fields) -> str:
    score, threshold, tpr = part.get("score", text, "?"), part.get("threshold", number), part.get("tpr", fraction)
    n, temperature = part.get("n_validation", count), part.get("temperature", positive)
    scale = part.get("logit_scale", positive)
    pairs = [
        ("score", OOD_WORDS.get(score, shown(score)) if isinstance(score, str) else shown(score)),
        ("temperature", shown(temperature)),
        ("logit scale", shown(scale) or "not used"),
        ("threshold", shown(threshold)),
        ("target share of in-distribution images accepted", pct(tpr)),
        ("validation images", shown(n)),
        ("classes", shown(part.get("num_classes", count))),
    ]
    body = key_values(pairs)
    if not (number(tpr) and count(n) and n > 0 and number(threshold)):
        return body + note(
            "The threshold, its target share or the number of validation images is missing or malformed: "
            "what the detector promises cannot be stated.",
            warn=True,
        )
    from ...trust.ood import MIN_VALIDATION

    error = math.sqrt(tpr * (1 - tpr) / n)
    body += note(
        f"An image is flagged out-of-distribution when its score is below {threshold:.6g} (higher = more like the "
        f"training classes). The threshold accepts at least {tpr:.1%} of the {n} in-distribution validation "
        f"images, so about {tpr:.1%} ± {error:.1%} (one standard error) of new in-distribution images are "
        "accepted. Nothing is promised about how many out-of-distribution images are caught: that depends on "
        "what they are."
    )
    if n < MIN_VALIDATION:
        body += note(
            f"Only {n} validation images: the threshold is the lowest of their scores, and the accepted share on "
            "new images is uncertain by more than 5 points.",
            warn=True,
        )
    return body


def _provenance(trust: Fields, key: str, value: Any) -> str:
    """What the part was fitted on, as the record's provenance says (free-form: shown as written)."""
    if value is None:
        return note("No provenance recorded: what it was fitted on is unknown.")
    if not isinstance(value, dict):
        return key_values([("fitted on", shown(trust.get(f"provenance.{key}", scalar)))])
    pairs = [(str(k)[:80], shown(v)) for k, v in list(value.items())[:MAX_PROVENANCE_ROWS]]
    out = "<p><b>Fitted on</b></p>" + key_values(pairs) if pairs else note("Provenance recorded, but empty.")
    overlap = [k for k, v in value.items() if "overlap" in str(k).lower() and (v is True or (count(v) and v > 0))]
    if overlap:
        out += note(
            f"The provenance says these images overlap the training shots ({', '.join(map(str, overlap[:3]))}): "
            "the head has seen them, so its confidence on them is optimistic and the guarantee above does not hold.",
            warn=True,
        )
    return out


def _measured(evaluation: Evaluation | str) -> str:
    """The trust record applied to the re-evaluated test images: the promises against what they measure."""
    if not isinstance(evaluation, Evaluation):
        return note(
            "Pass --data DATASET to apply the record to the test images and compare what it promises with what "
            "they measure."
        )
    record = evaluation.trust
    if record is None or evaluation.logits is None or record.is_empty():
        return ""
    from ...core.errors import ClipAdapterError
    from ...trust.calibration import calibration_report
    from ...trust.conformal import conformal_report
    from ...trust.record import apply_trust

    labels = evaluation.labels
    try:
        scores = apply_trust(record, evaluation.logits, evaluation.zero_shot_logits)
        rows = []
        if record.calibration is not None:
            raw, calibrated = evaluation.report["calibration"], calibration_report(scores.logits, labels)
            rows += [
                ("ECE, raw → calibrated", f"{pct(raw['ece'])} → {pct(calibrated['ece'])}"),
                ("NLL, raw → calibrated", f"{raw['nll']:.3f} → {calibrated['nll']:.3f}"),
            ]
        if scores.sets is not None and record.conformal is not None:
            sets = conformal_report(scores.sets, labels, record.conformal.alpha)
            rows += [
                ("set coverage (target)", f"{pct(sets['coverage'])} ({pct(sets['target_coverage'])})"),
                ("mean set size", f"{sets['mean_set_size']:.2f}"),
                ("empty sets", pct(sets["empty_set_fraction"])),
            ]
        if scores.is_ood is not None and record.ood is not None:
            accepted = 1 - float(scores.is_ood.double().mean())
            rows.append(
                ("test images accepted as in-distribution (target)", f"{pct(accepted)} ({pct(record.ood.tpr)})")
            )
    except ClipAdapterError as exc:
        return note(
            f"The trust record could not be applied to the test images: {' '.join(str(exc).split())}", warn=True
        )
    if not rows:
        return ""
    return (
        "<h3>On the re-evaluated test images</h3>"
        + note(
            f"The record applied to the {len(labels)} test images given with --data (all in-distribution). On a "
            "small test split these numbers scatter around their targets."
        )
        + key_values(rows)
    )
