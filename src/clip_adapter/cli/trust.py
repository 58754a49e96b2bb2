"""``clip-adapter calibrate``, ``conformal`` and ``ood``: fit how far to trust an artifact, into a new artifact.

Each reads labelled images (``--data``, classes matched by name as ``eval``
matches them; an unknown class is refused), fits one part of the artifact's
trust record on them, and writes a NEW artifact at ``--out``: the input's
weights and run files copied byte for byte, its ``config.json`` with the trust
record (format version 2, which older readers refuse). The input artifact is
never changed. ``predict`` applies the record.

* ``calibrate``: temperature scaling and/or ZS-Norm of the logits (predictions unchanged);
* ``conformal``: prediction sets holding the true class with probability >= 1-alpha;
* ``ood``: a threshold that flags images unlike the in-distribution ones.

Fit on held-out images (the default ``--split val``), never the training shots:
a warning says when the images include them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..core.errors import ConfigError
from ..core.files import quoted
from ..core.files import to_json as json_text
from .artifact_args import add_artifact_backbone_options, load_artifact_and_backbone
from .common import add_data_options, cache_dir_from_args, dataset_from_args
from .parsing import positive_int, seed_int

DESCRIPTIONS = {
    "calibrate": "Fit a calibration of the artifact's probabilities on labelled held-out images and write it into a "
    "new artifact: temperature scaling (logits / T, T fitted by NLL) and/or ZS-Norm (each image's logit range "
    "mapped onto zero-shot CLIP's). Predictions never change; only how confident they are. A calibrated "
    "confidence of 0.8 means about 80% right on images like the calibration ones, not on any image.",
    "conformal": "Fit split-conformal prediction sets on labelled held-out images (the artifact's calibrated "
    "probabilities) and write them into a new artifact: predict then lists a set of classes per image. "
    "Guarantee: P(true class in set) >= 1-alpha on average over images exchangeable with the calibration "
    "images (same source, same class mix); not for each image, not per class (unless --class-conditional), "
    "and not under a distribution shift.",
    "ood": "Fit an out-of-distribution threshold on in-distribution held-out images (the head's raw logits) and write "
    "it into a new artifact: predict --reject then labels images below it 'unknown'. It accepts --tpr of "
    "in-distribution images like these (up to sampling error); how many out-of-distribution images it catches "
    "depends on them and is not guaranteed.",
}
COMMON = (
    "The input artifact is never changed: --out is a new artifact, its files copied byte for byte and its "
    "config.json carrying the trust record (format version 2). Classes are matched by name; fit on images the "
    "model was not trained on (a warning says when they include its training shots)."
)
COMMANDS = {
    "calibrate": (
        "calibration",
        "fit a calibration (temperature, ZS-Norm) of an artifact's probabilities, into a new artifact",
    ),
    "conformal": (
        "conformal",
        "fit conformal prediction sets (coverage >= 1-alpha) to an artifact, into a new artifact",
    ),
    "ood": ("ood", "fit an out-of-distribution threshold to an artifact, into a new artifact"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..trust.conformal import SCORES as CONFORMAL_SCORES
    from ..trust.fit import CALIBRATION_METHODS
    from ..trust.ood import DEFAULT_TPR
    from ..trust.ood import SCORES as OOD_SCORES

    for name, (part, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=f"{DESCRIPTIONS[name]} {COMMON}")
        p.add_argument(
            "artifact", help="artifact directory (written by `clip-adapter train`, or by one of these commands)"
        )
        add_data_options(p)
        p.add_argument(
            "--split",
            default=None,
            choices=("train", "val", "test", "all"),
            help="images to fit on (default: val, when the dataset has one); all: every image of --data "
            "(a separate held-out folder)",
        )
        p.add_argument(
            "--out",
            required=True,
            help="the new artifact (a new or empty folder; --overwrite replaces one this tool wrote)",
        )
        p.add_argument("--overwrite", action="store_true", help="replace an artifact this tool wrote earlier at --out")
        p.add_argument(
            "--replace",
            action="store_true",
            help=f"fit a new {part} part even though the artifact has one"
            + (
                " (and drop its conformal predictor, which a new calibration makes stale)"
                if part == "calibration"
                else ""
            ),
        )
        if name == "calibrate":
            p.add_argument(
                "--method",
                default="temperature",
                choices=tuple(CALIBRATION_METHODS),
                help="temperature: logits / T, T fitted by NLL; zs-norm: each image's logit range mapped onto "
                "zero-shot CLIP's; zs-norm+temperature: both, in that order (default: %(default)s)",
            )
        elif name == "conformal":
            p.add_argument(
                "--alpha",
                type=float,
                default=0.1,
                help="miscoverage rate in (0, 1): sets hold the true class for >= 1-alpha of images "
                "(default: %(default)s)",
            )
            p.add_argument(
                "--score",
                default="lac",
                choices=CONFORMAL_SCORES,
                help="lac: 1-p_y (smallest sets); aps/raps: adaptive sets (default: %(default)s)",
            )
            p.add_argument(
                "--randomized",
                action="store_true",
                help="randomised scores: exact coverage, ties broken by a per-image U (any score; sets may be empty)",
            )
            p.add_argument(
                "--class-conditional",
                action="store_true",
                help="one threshold per class: >= 1-alpha coverage within every class (needs more images per class)",
            )
            p.add_argument("--raps-lambda", type=float, default=None, help="RAPS penalty (default: 0.001)")
            p.add_argument(
                "--raps-k-reg", type=int, default=None, help="RAPS rank from which the penalty applies (default: 1)"
            )
            p.add_argument(
                "--seed", type=seed_int, default=0, help="seed of the randomised scores (default: %(default)s)"
            )
        else:
            p.add_argument(
                "--score",
                default="mcm",
                choices=OOD_SCORES,
                help="mcm: max softmax of the cosines (Ming et al. 2022); msp: max softmax of the logits; "
                "energy: logsumexp of the logits (default: %(default)s)",
            )
            p.add_argument(
                "--tpr",
                type=float,
                default=DEFAULT_TPR,
                help="share of in-distribution images to accept, in (0, 1) (default: %(default)s)",
            )
            p.add_argument(
                "--temperature",
                type=float,
                default=1.0,
                help="MCM's temperature on the cosines, or MSP's/energy's on the logits (default: %(default)s)",
            )
        add_artifact_backbone_options(p)
        p.add_argument("--cache-dir", default="", help="feature cache directory")
        p.add_argument("--batch-size", type=positive_int, default=64, help="encoder batch size")
        p.add_argument(
            "--skip-bad",
            action="store_true",
            help="leave unreadable images out (listed in the record) instead of stopping",
        )
        p.add_argument("--json", action="store_true", help="print what was recorded (the part's provenance) as JSON")
        p.set_defaults(func=main, trust_part=part)


def _early_checks(args: argparse.Namespace) -> None:
    """Option values refused before anything is read."""
    from ..trust.conformal import check_alpha, check_score_options
    from ..trust.fit import check_tpr

    if args.trust_part == "conformal":
        check_alpha(args.alpha)
        check_score_options(args.score, args.randomized, args.raps_lambda, args.raps_k_reg)
    elif args.trust_part == "ood":
        check_tpr(args.tpr)
        if not (args.temperature > 0 and args.temperature < float("inf")):
            raise ConfigError(f"--temperature must be a finite number > 0, got {args.temperature!r}")


def main(args: argparse.Namespace) -> int:
    from ..core.outputs import claim_output_dir
    from ..data.classnames import match_classes
    from ..pipeline import split_samples
    from ..trust import fit as trust_fit
    from ..trust.labelled import labelled_logits

    part = args.trust_part
    _early_checks(args)
    inputs = [args.data, args.split_file, args.classnames]
    claim_output_dir(args.out, "artifact", overwrite=args.overwrite, inputs=[args.artifact, *inputs])
    where_artifact = f"artifact {quoted(args.artifact)}"
    trust_fit.check_refit(trust_fit.present_parts(args.artifact), part, args.replace, where_artifact)
    cache_dir = cache_dir_from_args(args, [*inputs, args.artifact])
    clf, backbone = load_artifact_and_backbone(args.artifact, args)
    trust_fit.check_refit(clf.trust, part, args.replace, where_artifact)
    dataset = dataset_from_args(args)
    where = f"dataset {quoted(args.data)}"
    split = args.split or trust_fit.default_split(dataset, where)
    match_classes(dataset.classnames, clf.classnames, where)  # an unknown class is refused before any encoding
    trust_fit.check_enough(
        part,
        len(split_samples(dataset, split)),
        getattr(args, "alpha", None),
        getattr(args, "class_conditional", False),
        f"{where} ({split} split)",
    )
    images = labelled_logits(clf, backbone, dataset, split, cache_dir, where, args.batch_size, args.skip_bad)

    def zero_shot():
        return images.zero_shot(backbone, clf, cache_dir)

    overlap = trust_fit.training_overlap(args.artifact, dataset.root, images)
    what = {"calibration": "calibration", "conformal": "calibration", "ood": "in-distribution"}[part]
    warnings_, notes = trust_fit.overlap_messages(overlap, len(images), what)
    fitted = _fit(part, args, clf, backbone, images, zero_shot)
    record = trust_fit.provenance(
        images,
        args.data,
        overlap,
        split_file=args.split_file,
        classnames_file=args.classnames,
        command=_command(args),
        **fitted.record,
    )
    warnings_ += fitted.warnings
    if (
        part == "conformal"
        and clf.trust is not None
        and trust_fit.same_images(clf.trust.provenance.get("calibration"), record)
    ):
        warnings_.append(
            "these are the images the artifact's calibration was fitted on; the coverage guarantee assumes "
            "probabilities fixed before seeing the calibration images: use a separate folder or split"
        )
    if images.absent_classes():
        absent = images.absent_classes()
        notes.append(
            f"{len(absent)} of the artifact's {len(clf.classnames)} classes have no images here "
            f"({', '.join(repr(n) for n in absent[:10])}{', …' if len(absent) > 10 else ''}); what is fitted "
            "holds for images distributed like these"
        )
    new_record, dropped = trust_fit.updated_record(clf.trust, part, fitted.value, record, args.replace, where_artifact)
    warnings_ += dropped
    out = trust_fit.write_trusted_artifact(
        args.artifact,
        args.out,
        new_record,
        overwrite=args.overwrite,
        inputs=inputs,
        backbone=backbone,
        expected=clf,
        check_features=images.features,
    )
    for line in warnings_:
        print(f"warning: {line}", file=sys.stderr)
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    for path, reason in images.skipped:
        print(f"skipped {quoted(path)}: {reason}", file=sys.stderr)
    if args.json:
        sys.stdout.write(json_text({"part": part, "artifact": str(out), "provenance": record}))
    else:
        sys.stdout.write("\n".join(fitted.summary) + "\n")
    print(f"artifact written to {quoted(out)} (the input {quoted(args.artifact)} is unchanged)", file=sys.stderr)
    return 0


def _fit(part: str, args: argparse.Namespace, clf: Any, backbone: Any, images: Any, zero_shot: Callable) -> Any:
    from ..trust import fit as trust_fit

    if part == "calibration":
        return trust_fit.fit_calibration(images, args.method, zero_shot)
    if part == "conformal":
        calibration = clf.trust.calibration if clf.trust is not None else None
        return trust_fit.fit_conformal(
            images,
            calibration,
            args.alpha,
            score=args.score,
            randomized=args.randomized,
            class_conditional=args.class_conditional,
            lam=args.raps_lambda,
            k_reg=args.raps_k_reg,
            seed=args.seed,
            zero_shot=zero_shot,
        )
    scale = trust_fit.ood_logit_scale(clf, backbone) if args.score == "mcm" else None
    return trust_fit.fit_ood(images, args.score, args.tpr, args.temperature, scale, clf.method)


def _command(args: argparse.Namespace) -> dict[str, Any]:
    """The options that shaped the fit (paths are in the provenance already)."""
    keys = {
        "calibration": ("method",),
        "conformal": ("alpha", "score", "randomized", "class_conditional", "raps_lambda", "raps_k_reg", "seed"),
        "ood": ("score", "tpr", "temperature"),
    }[args.trust_part]
    name = {"calibration": "calibrate", "conformal": "conformal", "ood": "ood"}[args.trust_part]
    return {"name": name, **{k: getattr(args, k) for k in keys}, "replace": bool(args.replace)}
