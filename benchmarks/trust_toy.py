"""Calibration, conformal prediction and OOD detection of few-shot adapters on the toy world, in one command.

Reproduces, on the toy world and the shipped toy CLIP, the findings of the CLIP-calibration papers
(Murugesan et al., ECCV 2024, "Robust calibration of large vision-language adapters"; split conformal
prediction under shift; MCM for out-of-class images):

    python benchmarks/trust_toy.py [--out trust-toy-results] [--work trust-toy-work] [--tasks color,shape]
                                   [--seeds 1,2,3] [--penalty 1.0] [--overwrite]

Protocol (the library directly, features through the feature cache in ``--work``):

* Tasks rendered at dataset seed 5101 (the project's defaults use 0 and its benchmarks ≥ 1000; 5101 is used
  by nothing else), 16 shots per class drawn from a 32-image training pool of the ``photo`` rendering, the
  few-shot validation split (4 per class) choosing α / the epoch as every method does by default; few-shot
  seeds 1–3.
* Test sets: 50 images per class in ``photo`` (in-domain), ``night`` and ``sketch`` (shifted; the same scenes
  drawn in another style). Held-out sets of 16 images per class (another dataset seed, 5102): in-domain, the
  conformal calibration set for the shift rows (128 images for 8 classes); in each shifted style, only for the
  oracle row "temperature (target)", which needs labelled target-domain images. An in-domain pool of 100 held-out
  images per class (seed 5102; it holds the 16) plus the 50 test images: the re-split protocol below.
* Methods: zero-shot, CLIP-Adapter (visual; both), Tip-Adapter-F, CLAP, GDA, each as trained (raw), with
  temperature scaling fitted on the in-domain few-shot validation split, with ZS-Norm (no fitting: the
  zero-shot logits of the same image), and ZS-Norm then temperature; CLIP-Adapter also trained with the
  logit-range penalty (``range_penalty``, ``--penalty``; fixed in advance, not tuned), and, to see the penalty on
  an adapter that validation keeps, visual CLIP-Adapter at a fixed α = 0.8 without and with it. An oracle row,
  "temperature (target)", fits the temperature on labelled held-out images of each test domain.
* Metrics: accuracy, top-label ECE (15 bins), NLL; split conformal at α = 0.1 with LAC, LAC randomised (exact ties
  broken by a per-image U, drawn from the image's logits) and APS randomised (Romano et al.): (i) calibrated once on
  the 128 held-out photo images, coverage and mean set size in-domain and under shift; (ii) in-domain, the conformal
  papers' protocol: 100 random calibration/test re-splits of the pool (150 per class), the same splits for every
  head, marginal (128 calibration images at random) and class-conditional (Mondrian, 75 per class): mean coverage,
  its SD and the share of re-splits in [0.89, 0.93], set size, the class-coverage gap per re-split (mean and max over
  classes of |coverage_c − 0.9|, Conf-OT's CovGap) and of each class's coverage averaged over re-splits. OOD
  detection with MCM (τ = 1) on a ``holdout_task`` (two classes held out of training; images of them are the OOD
  set), in-domain: AUROC and FPR at 95 % TPR.

Prints markdown tables and the findings checked, and writes ``table.md``, ``results.json`` and
``trust_toy.png`` (ECE per method in-domain and under each shift, before and after each remedy) to ``--out``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")

import torch  # noqa: E402

from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.core import outputs  # noqa: E402
from clip_adapter.core.errors import ClipAdapterError  # noqa: E402
from clip_adapter.core.files import atomic_write_bytes, atomic_write_json  # noqa: E402
from clip_adapter.core.threads import torch_threads  # noqa: E402
from clip_adapter.data import load_dataset  # noqa: E402
from clip_adapter.features import extract_images, image_store  # noqa: E402
from clip_adapter.methods import get_method  # noqa: E402
from clip_adapter.methods.base import for_dataset  # noqa: E402
from clip_adapter.pipeline import FeatureConfig, RunConfig, few_shot_data, fit, prepare  # noqa: E402
from clip_adapter.toyworld.tasks import holdout_task, write_ood_images, write_task_dataset  # noqa: E402
from clip_adapter.trust.calibration import Calibration, calibration_report  # noqa: E402
from clip_adapter.trust.conformal import calibrate, conformal_report  # noqa: E402
from clip_adapter.trust.ood import auroc, fpr_at_tpr, mcm_score  # noqa: E402

BENCH_KIND = "trust-toy-bench"  # the marker this benchmark leaves in its --out folder
DATA_SEED, HELDOUT_SEED, OOD_SEED = 5101, 5102, 5103  # no default, test or other benchmark of the project uses these
SOURCE, SHIFTS = "photo", ("night", "sketch")
DOMAINS = (SOURCE, *SHIFTS)
SHOTS = 16
POOL, VAL, TEST, HELDOUT = 32, 4, 50, 16  # per class: training pool, validation (= the few-shot val), test, held-out
CAL_POOL = 100  # per class: in-domain held-out images (HELDOUT_SEED, so it contains the HELDOUT ones)
SPLITS = 100  # random calibration/test re-splits of the in-domain pool (CAL_POOL + TEST per class) per head
CC_PER_CLASS = 75  # class-conditional re-splits: calibration images per class (the other 75 of 150 are test)
CALIBRATIONS = ("marginal", "class-conditional")  # one conformal threshold for all classes, or one per class (Mondrian)
OOD_IMAGES = 400
HOLDOUT = {"color": ("orange", "purple"), "shape": ("star", "heart")}  # fixed before any run
ALPHA = 0.1
# name → (score, randomised). APS as Romano et al. define it (randomised: exact coverage, not ≥); LAC plain and with
# the U tie-break (exact even when saturated probabilities tie); randomised U from each image's logits.
SCORES_RUN = {"lac": ("lac", False), "lac-r": ("lac", True), "aps": ("aps", True)}
SCORE_NAMES = {"lac": "LAC", "lac-r": "LAC (randomised)", "aps": "APS (randomised)"}
METHODS: dict[str, tuple[str, dict[str, Any]]] = {  # label → (method, config overrides)
    "zero-shot": ("zero-shot", {}),
    "CLIP-Adapter (visual)": ("clip-adapter", {"variant": "visual"}),
    "CLIP-Adapter (both)": ("clip-adapter", {"variant": "both"}),
    "Tip-Adapter-F": ("tip-adapter-f", {}),
    "CLAP": ("clap", {}),
    "GDA": ("gda", {}),
}
PENALISED = ("CLIP-Adapter (visual)", "CLIP-Adapter (both)")
# With the penalty, validation (accuracy, then loss) can fall back to α = 0, i.e. zero-shot exactly. To see what the
# penalty does to an adapter that is kept, one more pair of rows fixes α at 0.8: what validation chose for the
# unpenalised CLIP-Adapter on colour, seed 1 (the first run made). On shape validation keeps α = 0 (zero-shot) in every
# run, so there these rows show an adapter that validation would have rejected.
FIXED_ALPHA = 0.8
FIXED = {
    f"CLIP-Adapter (visual, α = {FIXED_ALPHA} fixed)": (
        "clip-adapter",
        {"variant": "visual", "alpha": FIXED_ALPHA, "alpha_grid": ()},
    )
}
REMEDIES = ("raw", "temperature", "zs-norm", "zs-norm + temperature", "temperature (target)")
PENALTY_ROW = "range penalty"


# --------------------------------------------------------------------------------------------- output folder


def claim_out(path: Path, overwrite: bool) -> Path:
    """The project's rule for output folders: new, empty, or this benchmark's own (every file proven by its ledger)."""
    out = outputs.claim_output_dir(path, BENCH_KIND, overwrite=overwrite)
    outputs.mark_output_dir(out, BENCH_KIND)
    return out


# --------------------------------------------------------------------------------------------- data


def task_dataset(work: Path, name: str, task: Any, domain: str, counts: tuple[int, int, int], seed: int):
    root = work / "data" / name
    if not (root / "split.json").is_file():  # written atomically by the library: present means complete
        write_task_dataset(task, domain, root, *counts, seed=seed)
    return load_dataset(root, name=name)


def encode(backbone, paths: list[Path], features: FeatureConfig, desc: str) -> torch.Tensor:
    """Centre-view features through the feature cache."""
    store = image_store(backbone, features.cache_path())
    feats, kept, _ = extract_images(backbone, paths, store, None, 0, features.batch_size, False, desc)
    if len(kept) != len(paths):
        raise SystemExit(f"error: {len(paths) - len(kept)} unreadable image(s) in {desc}")
    return feats


def split_features(backbone, dataset, split: str, features: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    samples = dataset.split(split)
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    return encode(backbone, [s.path for s in samples], features, f"{dataset.name} {split}"), labels


# --------------------------------------------------------------------------------------------- one task


def run_specs(penalty: float) -> list[tuple[str, str, dict[str, Any], str]]:
    """``(label, method, overrides, variant)`` of every head trained; variant "" = the method as it is
    (with the post-hoc remedies).
    """
    specs = [(label, method, overrides, "") for label, (method, overrides) in METHODS.items()]
    specs += [
        (label, "clip-adapter", {**METHODS[label][1], "range_penalty": penalty}, PENALTY_ROW) for label in PENALISED
    ]
    for label, (method, overrides) in FIXED.items():
        specs += [
            (label, method, overrides, "raw"),
            (label, method, {**overrides, "range_penalty": penalty}, PENALTY_ROW),
        ]
    return specs


def method_config(method: str, overrides: dict[str, Any], dataset_name: str):
    return for_dataset(method, get_method(method).make_config(**overrides), dataset_name)


def calibration_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    report = calibration_report(logits, labels)
    return {"accuracy": report["accuracy"], "ece": report["ece"], "nll": report["nll"]}


def evaluate_task(
    backbone, task_name: str, seeds: tuple[int, ...], penalty: float, work: Path, features: FeatureConfig, log
) -> dict[str, Any]:
    """Every measure of one task: ``{"calibration": rows, "conformal": rows, "ood": rows}``, one entry per seed."""
    source = task_dataset(work, f"{task_name}-{SOURCE}-{DATA_SEED}", task_name, SOURCE, (POOL, VAL, TEST), DATA_SEED)
    tests = {SOURCE: split_features(backbone, source, "test", features)}
    heldout = {}
    for domain in DOMAINS:
        if domain != SOURCE:
            shifted = task_dataset(
                work, f"{task_name}-{domain}-{DATA_SEED}", task_name, domain, (0, 0, TEST), DATA_SEED
            )
            tests[domain] = split_features(backbone, shifted, "test", features)
        held = task_dataset(
            work, f"{task_name}-{domain}-{HELDOUT_SEED}", task_name, domain, (0, 0, HELDOUT), HELDOUT_SEED
        )
        heldout[domain] = split_features(backbone, held, "test", features)
    pool_set = task_dataset(
        work, f"{task_name}-{SOURCE}-{HELDOUT_SEED}-{CAL_POOL}", task_name, SOURCE, (0, 0, CAL_POOL), HELDOUT_SEED
    )
    assert pool_set.classnames == source.classnames, "the in-domain pool's classes differ from the source's"
    pool_x, pool_y = split_features(backbone, pool_set, "test", features)
    # In-domain images exchangeable with the test images: the re-split protocol's pool (CAL_POOL + TEST per class).
    pool = (torch.cat([pool_x, tests[SOURCE][0]]), torch.cat([pool_y, tests[SOURCE][1]]))
    for domain, (_, labels) in tests.items():
        assert labels.tolist() == tests[SOURCE][1].tolist(), f"{domain}: test labels differ from the source's"

    rows: dict[str, Any] = {"calibration": [], "conformal": [], "resplit": [], "ood": []}
    specs = run_specs(penalty)
    for seed in seeds:
        run = RunConfig(method="zero-shot", shots=SHOTS, seed=seed, protocol="val")
        prepared = prepare(backbone, source, run, features)
        data = few_shot_data(prepared.features, backbone, source.classnames, prepared.templates, run)
        zero_shot, _ = fit(run, get_method("zero-shot").Config(), data, backbone)
        zs = {d: zero_shot.logits(x) for d, (x, _) in tests.items()}
        zs_val = zero_shot.logits(data.val)
        for label, method, overrides, variant in specs:
            start = time.perf_counter()
            clf, record = fit(run.replace(method=method), method_config(method, overrides, source.name), data, backbone)
            seconds = time.perf_counter() - start
            logits = {d: clf.logits(x) for d, (x, _) in tests.items()}
            held_logits = {d: clf.logits(x) for d, (x, _) in heldout.items()}
            remedies = (
                {"raw": None}
                if variant
                else {
                    "raw": None,
                    "temperature": Calibration.fit(clf.logits(data.val), data.val_labels, ("temperature",)),
                    "zs-norm": Calibration.fit(clf.logits(data.val), data.val_labels, ("zs-norm",), zs_val),
                    "zs-norm + temperature": Calibration.fit(
                        clf.logits(data.val), data.val_labels, ("zs-norm", "temperature"), zs_val
                    ),
                }
            )
            for remedy, cal in remedies.items():
                row = {
                    "task": task_name,
                    "seed": seed,
                    "method": label,
                    "remedy": variant or remedy,
                    "fit_seconds": seconds,
                    "chosen": record["selection"].get("chosen", {}),
                }
                if cal is not None:
                    row["temperature"] = next((s.temperature for s in cal.steps if hasattr(s, "temperature")), None)
                for domain, (_, labels) in tests.items():
                    out = logits[domain] if cal is None else cal.apply(logits[domain], zs[domain])
                    row[domain] = calibration_metrics(out, labels)
                rows["calibration"].append(row)
            if not variant:  # the oracle: a temperature fitted on labelled held-out images of each domain
                row = {
                    "task": task_name,
                    "seed": seed,
                    "method": label,
                    "remedy": "temperature (target)",
                    "fit_seconds": seconds,
                }
                for domain in DOMAINS:  # each domain's temperature fitted on that domain's labelled held-out images
                    cal = Calibration.fit(held_logits[domain], heldout[domain][1], ("temperature",))
                    row[domain] = calibration_metrics(cal.apply(logits[domain]), tests[domain][1])
                rows["calibration"].append(row)
            base = {"task": task_name, "seed": seed, "method": label, "remedy": variant or "raw"}
            rows["conformal"] += conformal_rows(
                logits, tests, (clf.logits(heldout[SOURCE][0]), heldout[SOURCE][1]), base
            )
            rows["resplit"] += resplit_rows(clf.logits(pool[0]), pool[1], base)
            raw = rows["calibration"][-1 if variant else -5]
            log(
                f"{task_name} seed {seed} {label}{' + ' + variant if variant else ''}: "
                + ", ".join(f"{d} acc {100 * raw[d]['accuracy']:.1f} ECE {100 * raw[d]['ece']:.1f}" for d in DOMAINS)
                + f" ({seconds:.1f} s)"
            )
    rows["ood"] = ood_rows(backbone, task_name, seeds, penalty, work, features, log)
    return rows


def conformal_rows(logits: dict[str, torch.Tensor], tests: dict, cal: tuple, base: dict) -> list[dict]:
    """Split conformal at ``ALPHA``, marginal, calibrated once on the held-out in-domain set, tested in every domain
    (in-domain and under shift).
    """
    probs = {d: torch.softmax(x.double(), 1) for d, x in logits.items()}
    cal_logits, cal_y = cal
    cal_probs = torch.softmax(cal_logits.double(), 1)
    rows = []
    for name, (score, randomized) in SCORES_RUN.items():
        keys = (lambda x: x) if randomized else (lambda x: None)  # randomised: U from each image's logits
        predictor = calibrate(
            cal_probs, cal_y, ALPHA, score=score, randomized=randomized, seed=base["seed"], logits=keys(cal_logits)
        )
        covered = predictor.predict_sets(cal_probs, logits=keys(cal_logits))[torch.arange(len(cal_y)), cal_y]
        row = {
            **base,
            "score": name,
            "n_calibration": predictor.n_calibration,
            "q_hat": predictor.q_hat,
            "calibration_coverage": covered.double().mean().item(),  # k/n for tie-free or randomised scores
            "calibration_saturated": saturated(cal_probs),
        }
        for domain, (_, labels) in tests.items():
            report = conformal_report(predictor.predict_sets(probs[domain], logits=keys(logits[domain])), labels, ALPHA)
            row[domain] = {
                "coverage": report["coverage"],
                "mean_set_size": report["mean_set_size"],
                "empty_set_fraction": report["empty_set_fraction"],
                "saturated": saturated(probs[domain]),
            }
        rows.append(row)
    return rows


def split_indices(labels: torch.Tensor, split: int, calibration: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-split ``split`` of the pool: ``(calibration, test)`` indices, the same for every head (paired).

    Marginal: ``HELDOUT`` × classes images drawn at random (not stratified: exchangeable with the test images).
    Class-conditional: ``CC_PER_CLASS`` images of each class.
    """
    g = torch.Generator().manual_seed(7_000 + split)
    n_classes = int(labels.max()) + 1
    if calibration == "marginal":
        order = torch.randperm(len(labels), generator=g)
        return order[: HELDOUT * n_classes], order[HELDOUT * n_classes :]
    cal, test = [], []
    for c in range(n_classes):
        members = (labels == c).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=g)]
        cal.append(members[:CC_PER_CLASS])
        test.append(members[CC_PER_CLASS:])
    return torch.cat(cal), torch.cat(test)


def resplit_rows(pool_logits: torch.Tensor, pool_y: torch.Tensor, base: dict) -> list[dict]:
    """In-domain conformal over ``SPLITS`` random calibration/test re-splits of the pool (the conformal papers'
    protocol: one split's coverage is a draw from a Beta law; its mean over splits estimates the expected coverage).
    """
    probs = torch.softmax(pool_logits.double(), 1)
    n_classes = probs.shape[1]
    rows = []
    for calibration in CALIBRATIONS:
        for name, (score, randomized) in SCORES_RUN.items():
            per_split, class_cov = [], torch.zeros(n_classes, dtype=torch.float64)
            for split in range(SPLITS):
                cal, test = split_indices(pool_y, split, calibration)
                keys = (lambda idx: pool_logits[idx]) if randomized else (lambda idx: None)
                predictor = calibrate(
                    probs[cal],
                    pool_y[cal],
                    ALPHA,
                    score=score,
                    randomized=randomized,
                    seed=split,
                    class_conditional=calibration == "class-conditional",
                    logits=keys(cal),
                )
                report = conformal_report(predictor.predict_sets(probs[test], logits=keys(test)), pool_y[test], ALPHA)
                per_split.append(report)
                class_cov += torch.tensor(report["class_coverage"], dtype=torch.float64)
            expected = class_cov / SPLITS  # each class's coverage averaged over splits: what the guarantee is about
            coverages = [r["coverage"] for r in per_split]
            rows.append(
                {
                    **base,
                    "score": name,
                    "calibration": calibration,
                    "n_calibration": len(cal),
                    "n_test": len(test),
                    "splits": SPLITS,
                    "coverage": mean(coverages),
                    "coverage_sd": statistics.stdev(coverages),
                    "in_band": mean(0.89 <= c <= 0.93 for c in coverages),
                    "mean_set_size": mean(r["mean_set_size"] for r in per_split),
                    "empty_set_fraction": mean(r["empty_set_fraction"] for r in per_split),
                    "class_coverage_gap_mean": mean(r["class_coverage_gap_mean"] for r in per_split),
                    "class_coverage_gap_max": mean(r["class_coverage_gap_max"] for r in per_split),
                    "expected_class_coverage": expected.tolist(),
                    "expected_class_gap_max": (expected - (1 - ALPHA)).abs().max().item(),
                }
            )
    return rows


def saturated(probs: torch.Tensor) -> float:
    """Share of images whose top softmax probability is exactly 1 in float64 (LAC score 0: such images tie)."""
    return (probs.max(dim=1).values == 1).double().mean().item()


def ood_rows(
    backbone, task_name: str, seeds: tuple[int, ...], penalty: float, work: Path, features: FeatureConfig, log
) -> list[dict]:
    """MCM on a task with two classes held out: ID = test images of the kept classes, OOD = images of the
    held-out ones.
    """
    task = holdout_task(task_name, HOLDOUT[task_name])
    name = f"{task_name}-holdout-{SOURCE}-{DATA_SEED}"
    source = task_dataset(work, name, task, SOURCE, (POOL, VAL, TEST), DATA_SEED)
    ood_root = work / "data" / f"{name}-ood"
    if not (ood_root / "ood.json").is_file():
        write_ood_images(task, SOURCE, ood_root, n=OOD_IMAGES, seed=OOD_SEED, source="novel")
    ood_paths = sorted((ood_root / "images").rglob("*.png"))
    ood_x = encode(backbone, ood_paths, features, "OOD images")
    id_x, _ = split_features(backbone, source, "test", features)
    rows = []
    specs = run_specs(penalty)
    for seed in seeds:
        run = RunConfig(method="zero-shot", shots=SHOTS, seed=seed, protocol="val")
        prepared = prepare(backbone, source, run, features)
        data = few_shot_data(prepared.features, backbone, source.classnames, prepared.templates, run)
        for label, method, overrides, variant in specs:
            clf, _ = fit(run.replace(method=method), method_config(method, overrides, source.name), data, backbone)
            id_scores = mcm_score(clf.logits(id_x), backbone.logit_scale)
            ood_scores = mcm_score(clf.logits(ood_x), backbone.logit_scale)
            rows.append(
                {
                    "task": task_name,
                    "seed": seed,
                    "method": label,
                    "remedy": variant or "raw",
                    "held_out": list(HOLDOUT[task_name]),
                    "n_id": len(id_scores),
                    "n_ood": len(ood_scores),
                    "auroc": auroc(id_scores, ood_scores),
                    "fpr95": fpr_at_tpr(id_scores, ood_scores, 0.95),
                }
            )
        log(f"{task_name} seed {seed}: OOD done ({len(specs)} heads)")
    return rows


# --------------------------------------------------------------------------------------------- tables


def mean(values) -> float:
    return statistics.fmean(values)


def row_keys(rows: list[dict]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["method"], r["remedy"]) for r in rows))


def calibration_table(task: str, rows: list[dict]) -> tuple[str, dict]:
    rows = [r for r in rows if r["task"] == task]
    head = (
        "| method | remedy | " + " | ".join(f"{d} acc | {d} ECE | {d} NLL" for d in DOMAINS) + " | shifted ECE (mean) |"
    )
    lines = [
        f"**{task}**: accuracy and ECE in %, NLL in nats; "
        f"mean of seeds {', '.join(str(s) for s in sorted({r['seed'] for r in rows}))}",
        "",
        head,
        "|---|---|" + "---|---|---|" * len(DOMAINS) + "---|",
    ]
    summary: dict = {}
    for method, remedy in row_keys(rows):
        group = [r for r in rows if r["method"] == method and r["remedy"] == remedy]
        cell = {d: {k: mean(r[d][k] for r in group) for k in ("accuracy", "ece", "nll")} for d in DOMAINS}
        cell["shifted_ece"] = mean(cell[d]["ece"] for d in SHIFTS)
        cell["shifted_accuracy"] = mean(cell[d]["accuracy"] for d in SHIFTS)
        summary[(method, remedy)] = cell
        values = " | ".join(
            f"{100 * cell[d]['accuracy']:.1f} | {100 * cell[d]['ece']:.1f} | {cell[d]['nll']:.3f}" for d in DOMAINS
        )
        lines.append(f"| {method} | {remedy} | {values} | {100 * cell['shifted_ece']:.1f} |")
    return "\n".join(lines) + "\n", summary


def conformal_table(task: str, rows: list[dict]) -> tuple[str, dict]:
    """The marginal thresholds calibrated once on the held-out in-domain set, in every domain."""
    rows = [r for r in rows if r["task"] == task]
    title = (
        f"**{task}**: split conformal, α = {ALPHA} (target coverage {1 - ALPHA:.2f}), calibrated once on "
        f"{rows[0]['n_calibration']} held-out {SOURCE} images, tested in-domain and under shift; coverage / mean set "
        "size (means over seeds)"
    )
    lines = [title, "", "| method | score | " + " | ".join(DOMAINS) + " |", "|---|---|" + "---|" * len(DOMAINS)]
    summary: dict = {}
    for method, remedy in row_keys(rows):
        for score in SCORES_RUN:
            group = [r for r in rows if r["method"] == method and r["remedy"] == remedy and r["score"] == score]
            cell = {d: {k: mean(r[d][k] for r in group) for k in ("coverage", "mean_set_size")} for d in DOMAINS}
            summary[(method, remedy, score)] = cell
            name = method + (f" + {remedy}" if remedy != "raw" else "")
            lines.append(
                f"| {name} | {SCORE_NAMES[score]} | "
                + " | ".join(f"{cell[d]['coverage']:.3f} / {cell[d]['mean_set_size']:.2f}" for d in DOMAINS)
                + " |"
            )
    return "\n".join(lines) + "\n", summary


RESPLIT_KEYS = ("coverage", "coverage_sd", "in_band", "mean_set_size", "empty_set_fraction")
CC_KEYS = ("coverage", "mean_set_size", "class_coverage_gap_mean", "class_coverage_gap_max", "expected_class_gap_max")


def resplit_table(task: str, rows: list[dict]) -> tuple[str, dict]:
    """In-domain, over the re-splits: marginal coverage and its spread; class-conditional coverage gaps."""
    rows = [r for r in rows if r["task"] == task]
    first = {c: next(r for r in rows if r["calibration"] == c) for c in CALIBRATIONS}
    title = (
        f"**{task}**: {SOURCE} (in-domain), α = {ALPHA}, {SPLITS} random calibration/test re-splits of "
        f"{CAL_POOL + TEST} images per class (means over re-splits, then seeds). Marginal: "
        f"{first['marginal']['n_calibration']} calibration images at random, {first['marginal']['n_test']} test; "
        "coverage / its SD over re-splits / share of re-splits in [0.89, 0.93] / mean set size / empty sets. "
        f"Class-conditional (Mondrian): {CC_PER_CLASS} calibration images per class, the rest test; coverage / mean "
        "set size / class-coverage gap mean / max over classes (per re-split, Conf-OT's CovGap) / max over classes of "
        "|expected coverage − 0.9| (each class's coverage averaged over re-splits: what the guarantee is about)"
    )
    lines = [title, "", "| method | score | marginal | class-conditional |", "|---|---|---|---|"]
    summary: dict = {}
    for method, remedy in row_keys(rows):
        for score in SCORES_RUN:
            cells = []
            for calibration, keys in (("marginal", RESPLIT_KEYS), ("class-conditional", CC_KEYS)):
                group = [
                    r
                    for r in rows
                    if (r["method"], r["remedy"], r["score"], r["calibration"]) == (method, remedy, score, calibration)
                ]
                cell = {k: mean(r[k] for r in group) for k in keys}
                summary[(method, remedy, score, calibration)] = cell
                cells.append(" / ".join(f"{cell[k]:.{2 if k == 'mean_set_size' else 3}f}" for k in keys))
            name = method + (f" + {remedy}" if remedy != "raw" else "")
            lines.append(f"| {name} | {SCORE_NAMES[score]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", summary


def ood_table(task: str, rows: list[dict]) -> str:
    rows = [r for r in rows if r["task"] == task]
    first = rows[0]
    title = (
        f"**{task}**: MCM (τ = 1), {first['n_id']} ID test images of the kept classes "
        f"vs {first['n_ood']} images of the "
        f"held-out classes ({', '.join(first['held_out'])}), {SOURCE}"
    )
    lines = [title, "", "| method | AUROC (%) | FPR95 (%) |", "|---|---|---|"]
    for method, remedy in row_keys(rows):
        group = [r for r in rows if r["method"] == method and r["remedy"] == remedy]
        name = method + (f" + {remedy}" if remedy != "raw" else "")
        lines.append(
            f"| {name} | {100 * mean(r['auroc'] for r in group):.1f} | {100 * mean(r['fpr95'] for r in group):.1f} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- findings


def findings(task: str, cal: dict, conf: dict, resplit: dict) -> list[str]:
    adapters = [m for m in METHODS if m != "zero-shot"]
    zs = cal[("zero-shot", "raw")]
    out = [f"**{task}**"]
    # (a) adapters' ECE rises under shift
    raw = {m: cal[(m, "raw")] for m in adapters}
    above_zs = [m for m in adapters if raw[m]["shifted_ece"] > zs["shifted_ece"]]
    pattern = [m for m in above_zs if raw[m][SOURCE]["ece"] <= zs[SOURCE]["ece"]]
    moves = ", ".join(
        f"{m} {100 * raw[m][SOURCE]['ece']:.1f} → {100 * raw[m]['shifted_ece']:.1f} "
        f"({100 * (raw[m]['shifted_ece'] - zs['shifted_ece']):+.1f})"
        for m in adapters
    )
    out.append(
        f"- (a) ECE {SOURCE} → shifted mean (shifted, against zero-shot's): zero-shot {100 * zs[SOURCE]['ece']:.1f} → "
        f"{100 * zs['shifted_ece']:.1f}; {moves}. Above zero-shot under shift: {len(above_zs)} of {len(adapters)}; "
        "of them at or below zero-shot's ECE in-domain (calibrated-looking in-domain, worse under shift): "
        f"{len(pattern)}"
    )
    # (b) the best remedy per adapter (the oracle target temperature excluded: it needs labelled target images)
    met = []
    for m in adapters:
        options = [
            (r, cal[(m, r)]) for r in ("raw", "temperature", "zs-norm", "zs-norm + temperature") if (m, r) in cal
        ]
        if (m, PENALTY_ROW) in cal:
            options.append((PENALTY_ROW, cal[(m, PENALTY_ROW)]))
        allowed = [(r, c) for r, c in options if c["shifted_accuracy"] >= cal[(m, "raw")]["shifted_accuracy"] - 0.005]
        remedy, best = min(allowed, key=lambda rc: rc[1]["shifted_ece"])
        ok = all(best[d]["ece"] <= zs[d]["ece"] + 0.02 for d in SHIFTS)  # in each shifted domain, not only on average
        met.append(ok)
        change = 100 * (best["shifted_accuracy"] - cal[(m, "raw")]["shifted_accuracy"]) + 0.0  # + 0.0: no "-0.00"
        per_domain = ", ".join(
            f"{d} {100 * cal[(m, 'raw')][d]['ece']:.1f} → {100 * best[d]['ece']:.1f} "
            f"(zero-shot {100 * zs[d]['ece']:.1f})"
            for d in SHIFTS
        )
        out.append(
            f"- (b) {m}: best remedy {remedy}: ECE {per_domain}; "
            f"shifted accuracy change {change:+.2f} points: {'MET' if ok else 'MISSED'}"
        )
    out.append(
        "- (b) target (ECE ≤ zero-shot's + 2 points in each shifted domain, ≤ 0.5 points of accuracy lost) "
        f"met by {sum(met)} "
        f"of {len(met)} adapters (best remedy chosen on these test results: an upper bound on choosing one in advance)"
    )
    # (c) conformal coverage, calibrated once in-domain, in every domain
    for score in SCORES_RUN:
        cov = {d: [conf[(m, "raw", score)][d]["coverage"] for m in METHODS] for d in DOMAINS}
        out.append(
            f"- (c) {SCORE_NAMES[score]}, calibrated once on {SOURCE}, coverage over the {len(METHODS)} methods: "
            + "; ".join(f"{d} {min(v):.3f}–{max(v):.3f}" for d, v in cov.items())
        )
    # (c) the in-domain targets over the re-splits, every row of the table (all methods and variants, all scores)
    for calibration, test in (("marginal", "coverage"), ("class-conditional", "class_coverage_gap_mean")):
        cells = {k: v for k, v in resplit.items() if k[3] == calibration}
        if calibration == "marginal":
            missed = [k for k, v in cells.items() if not 0.89 <= v["coverage"] <= 0.93]
            what = "mean coverage in [0.89, 0.93]"
        else:
            missed = [k for k, v in cells.items() if v["class_coverage_gap_mean"] > 0.05]
            what = "class-coverage gap (per re-split, mean over classes) ≤ 0.05"
        values = [v[test] for v in cells.values()]
        names = ", ".join(
            f"{m}{'' if r == 'raw' else ' + ' + r} {SCORE_NAMES[sc]} {cells[(m, r, sc, c)][test]:.3f}"
            for m, r, sc, c in missed
        )
        out.append(
            f"- (c) target, {calibration}, {SOURCE}: {what} in {len(cells) - len(missed)} of {len(cells)} cells "
            f"(range {min(values):.3f}–{max(values):.3f})" + (f"; missed: {names}" if missed else "")
        )
    expected = [v["expected_class_gap_max"] for k, v in resplit.items() if k[3] == "class-conditional"]
    out.append(
        f"- (c) class-conditional, every class's expected coverage within 0.05 of 0.9 in "
        f"{sum(e <= 0.05 for e in expected)} of {len(expected)} cells (max gap {min(expected):.3f}–{max(expected):.3f})"
    )
    # (d) zero-shot's own ECE under shift
    zs_options = {r: cal[("zero-shot", r)]["shifted_ece"] for r in ("temperature", "temperature (target)")}
    out.append(
        f"- (d) zero-shot shifted ECE {100 * zs['shifted_ece']:.1f}: with the in-domain temperature "
        f"{100 * zs_options['temperature']:.1f} (no target images), "
        "with a temperature fitted on labelled target images "
        f"{100 * zs_options['temperature (target)']:.1f}"
    )
    return out


# --------------------------------------------------------------------------------------------- figure


def plot(summaries: dict[str, dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summaries)
    variants = [
        ("raw", "raw"),
        ("temperature", "temperature (in-domain val)"),
        ("zs-norm", "ZS-Norm"),
        (PENALTY_ROW, "range penalty (training)"),
        ("temperature (target)", "temperature (target images: oracle)"),
    ]
    colours = ["#888888", "#6a9fd4", "#d46a6a", "#e0b040", "#9fd49f"]
    fig, axes = plt.subplots(
        len(tasks), len(DOMAINS), figsize=(4.6 * len(DOMAINS), 3.8 * len(tasks)), dpi=100, squeeze=False
    )
    methods = [*METHODS, *FIXED]
    for row, task in enumerate(tasks):
        cal = summaries[task]
        for col, domain in enumerate(DOMAINS):
            ax = axes[row][col]
            width = 0.8 / len(variants)
            for k, ((remedy, name), colour) in enumerate(zip(variants, colours)):
                xs = [i + (k - (len(variants) - 1) / 2) * width for i, m in enumerate(methods) if (m, remedy) in cal]
                ys = [100 * cal[(m, remedy)][domain]["ece"] for m in methods if (m, remedy) in cal]
                ax.bar(xs, ys, width, label=name, color=colour)
            ax.axhline(
                100 * cal[("zero-shot", "raw")][domain]["ece"], color="black", lw=0.8, ls="--", label="zero-shot (raw)"
            )
            names = [m.replace("CLIP-Adapter ", "CA ").replace(" fixed)", ")") for m in methods]
            ax.set_xticks(range(len(methods)), names, rotation=25, fontsize=8, ha="right")
            ax.set_title(f"{task}: {domain}{' (in-domain)' if domain == SOURCE else ' (shifted)'}", fontsize=10)
            if col == 0:
                ax.set_ylabel("ECE (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("Toy world, trained on photo (16 shots): ECE before and after each remedy", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default="trust-toy-results", help="folder for table.md, results.json and trust_toy.png"
    )
    parser.add_argument(
        "--work", default="trust-toy-work", help="folder for the rendered tasks and the feature cache (reused)"
    )
    parser.add_argument("--tasks", default="color", help="comma-separated toy tasks: color, shape")
    parser.add_argument("--seeds", default="1,2,3", help="few-shot seeds")
    parser.add_argument(
        "--penalty", type=float, default=1.0, help="CLIP-Adapter's range_penalty for the penalised rows"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this benchmark in --out")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in HOLDOUT]
    if unknown:
        parser.error(f"unknown task {unknown[0]!r}; choose from {', '.join(HOLDOUT)}")
    seeds = tuple(int(s) for s in args.seeds.split(","))
    try:
        out = claim_out(Path(args.out), args.overwrite)
    except ClipAdapterError as exc:
        parser.exit(2, f"error: {exc}\n")
    torch.set_num_threads(1)  # tiny heads on cached features: one thread is fastest on a shared CPU
    backbone = create_backbone("toy", precision="fp32")
    work = Path(args.work)
    features = FeatureConfig(cache_dir=str(work / "cache"))
    start = time.perf_counter()
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    all_rows: dict[str, list] = {"calibration": [], "conformal": [], "resplit": [], "ood": []}
    with torch_threads(1):
        for task in tasks:
            rows = evaluate_task(backbone, task, seeds, args.penalty, work, features, log)
            for key in all_rows:
                all_rows[key] += rows[key]
    elapsed = time.perf_counter() - start
    text, summaries, lines = [], {}, []
    for task in tasks:
        cal_md, cal = calibration_table(task, all_rows["calibration"])
        conf_md, conf = conformal_table(task, all_rows["conformal"])
        resplit_md, resplit = resplit_table(task, all_rows["resplit"])
        summaries[task] = cal
        text += [cal_md, conf_md, resplit_md, ood_table(task, all_rows["ood"])]
        lines += findings(task, cal, conf, resplit)
    header = (
        f"Toy world ({backbone.id[:40]}…, {backbone.precision}), trained on {SOURCE}, {SHOTS} shots, seeds "
        f"{', '.join(map(str, seeds))}, dataset seed {DATA_SEED}; range_penalty = {args.penalty}; {elapsed:.0f} s\n"
    )
    report = header + "\n" + "\n".join(text) + "\nFindings\n\n" + "\n".join(lines) + "\n"
    print(report)
    atomic_write_bytes(out / "table.md", report.encode())
    atomic_write_json(
        out / "results.json",
        {
            "rows": all_rows,
            "seconds": elapsed,
            "penalty": args.penalty,
            "seeds": list(seeds),
            "tasks": tasks,
            "data_seed": DATA_SEED,
            "backbone": backbone.id,
        },
    )
    atomic_write_bytes(out / "trust_toy.png", plot(summaries))
    print(f"wrote {out / 'table.md'}, results.json, trust_toy.png ({elapsed:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
