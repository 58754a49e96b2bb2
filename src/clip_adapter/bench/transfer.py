"""Domain generalisation: train on a source dataset, test the same classifier on shifted targets.

The protocol of CoOp and CLIP-Adapter (ImageNet → ImageNet-V2/-Sketch/-A/-R): a target
holds images of the source's classes, or of a named subset of them (ImageNet-A and -R
use 200 of ImageNet's 1,000). A target's images are labelled in the *source's* label
space, and its subset restricts the classifier's columns, which is what building the
classifier from the subset's class names gives for every method here (each class's
logit depends only on that class's prompts, prototype or cache column).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..backbones import Backbone
from ..core.errors import DataError
from ..core.files import atomic_write_json
from ..data import Dataset, Sample, clean_classname
from ..features import extract_images, image_store
from ..pipeline import RunConfig, fit_and_evaluate, prepare
from .runner import BenchPlan, BenchReport, pending_runs, run_spec, spec_hash


@dataclass
class TransferTarget:
    """Test images of a target domain, labelled with source labels, and the source classes it covers."""

    name: str
    samples: list[Sample]
    subset: list[int]  # source labels the target's classes are; the classifier is restricted to them

    def __post_init__(self) -> None:
        if not self.samples:
            raise DataError(f"target {self.name} has no images")


def _key(name: str) -> str:
    return clean_classname(name).casefold()


def align_target(source: Dataset, name: str, target: Dataset) -> TransferTarget:
    """Map ``target``'s classes onto ``source``'s by (cleaned, case-folded) class name.

    The target's test split is used (all its images when it has none: ImageNet-V2/-A/-R
    are test sets). A target class that the source does not have is an error naming it.

    Example:
        >>> from pathlib import Path
        >>> src = Dataset("photo", ["cat", "dog"], Path("."), {})
        >>> tgt = Dataset("sketch", ["Dog"], Path("."), {"test": [Sample(Path("d.png"), 0)]})
        >>> align_target(src, "sketch", tgt).subset
        [1]
    """
    samples = target.split("test") or [s for split in ("train", "val") for s in target.split(split)]
    if target.classnames == source.classnames:  # the same label space (ImageNet and its variants)
        to_source = list(range(source.num_classes))
    else:
        index = {_key(c): i for i, c in enumerate(source.classnames)}
        missing = [c for c in target.classnames if _key(c) not in index]
        if missing:
            raise DataError(
                f"target {name}: class {missing[0]!r} is not a class of the source {source.name}"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; rename it with a class-name map"
            )
        to_source = [index[_key(c)] for c in target.classnames]
    relabelled = [Sample(s.path, to_source[s.label]) for s in samples]
    return TransferTarget(name, relabelled, sorted({s.label for s in relabelled}))


def subset_accuracy(logits: torch.Tensor, labels: torch.Tensor, subset: list[int]) -> float:
    """Top-1 accuracy when only the ``subset`` columns (source labels) are candidates."""
    if len(labels) == 0:
        return 0.0
    columns = torch.tensor(subset)
    predicted = columns[logits[:, columns].argmax(dim=1)]
    return (predicted == labels).float().mean().item()


def target_features(backbone: Backbone, target: TransferTarget, plan: BenchPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre-view features of a target's images (through the feature cache) and their source labels."""
    store = image_store(backbone, plan.features.cache_path())
    feats, kept, _ = extract_images(
        backbone,
        [s.path for s in target.samples],
        store,
        None,
        0,
        plan.features.batch_size,
        plan.features.skip_bad,
        f"target {target.name}",
    )
    return feats, torch.tensor([target.samples[i].label for i in kept], dtype=torch.long)


def dg_result_path(out: Path, protocol: str, source: str, label: str, shots: int, seed: int) -> Path:
    return out / "runs" / f"dg-{protocol}" / source / label / f"shots{shots}_seed{seed}.json"


def run_domain_generalization(
    backbone: Backbone,
    plan: BenchPlan,
    targets: list[TransferTarget],
    out: str | Path,
    log: Callable[[str], None] = print,
) -> BenchReport:
    """Train every method of ``plan`` on its one source dataset and test on the source and each target.

    One result JSON per (method, shots, seed) with the source accuracy, each target's
    accuracy and zero-shot's on the same images; finished runs are skipped.

    Example:
        >>> # run_domain_generalization(bb, BenchPlan({"imagenet": ds}, methods), [align_target(ds, "v2", v2)], "out")
    """
    if len(plan.datasets) != 1:
        raise DataError(f"domain generalisation trains on one source dataset; got {len(plan.datasets)}")
    ((source_name, source),) = plan.datasets.items()
    out, report = Path(out), BenchReport()
    encoded = {t.name: target_features(backbone, t, plan) for t in targets}
    for shots in plan.shots:
        for seed in plan.seeds:
            _dg_cell(backbone, plan, source_name, source, targets, encoded, shots, seed, out, report, log)
    return report


def _dg_cell(backbone, plan, source_name, source, targets, encoded, shots, seed, out, report, log) -> None:
    described = [(t.name, len(t.samples)) for t in targets]
    todo = pending_runs(
        plan,
        report,
        lambda spec: {**run_spec(backbone, plan, spec, source_name, shots, seed), "targets": described},
        lambda spec: dg_result_path(out, plan.protocol, source_name, spec.label, shots, seed),
    )
    if not todo:
        return
    run = RunConfig(method=todo[0][0].method, shots=shots, seed=seed, protocol=plan.protocol, templates=plan.templates)
    prepared = prepare(backbone, source, run, plan.features)
    zero_shot, _ = fit_and_evaluate(backbone, prepared, run.replace(method="zero-shot"))
    for spec, key, path in todo:
        clf, result = fit_and_evaluate(backbone, prepared, run.replace(method=spec.method), spec.config())
        result.pop("history", None)
        result["transfer"] = {
            "setting": "domain-generalization",
            "source": source_name,
            "targets": {t.name: _target_record(clf, zero_shot, encoded[t.name], t) for t in targets},
        }
        result["bench"] = {"label": spec.label, "spec": key, "spec_hash": spec_hash(key)}
        atomic_write_json(path, result)
        report.ran += 1
        shown = ", ".join(f"{n} {100 * r['accuracy']:.2f}%" for n, r in result["transfer"]["targets"].items())
        log(
            f"{source_name} → targets, {spec.label} {shots}-shot seed {seed}: "
            f"source {100 * result['test']['accuracy']:.2f}%; {shown}"
        )


def _target_record(clf, zero_shot, encoded: tuple[torch.Tensor, torch.Tensor], target: TransferTarget) -> dict:
    feats, labels = encoded
    return {
        "accuracy": subset_accuracy(clf.logits(feats), labels, target.subset),
        "zero_shot_accuracy": subset_accuracy(zero_shot.logits(feats), labels, target.subset),
        "num_images": len(labels),
        "num_classes": len(target.subset),
    }
