"""Base-to-new generalisation (CoCoOp's protocol): train on half the classes, test on both halves.

Each dataset's classes are split by label order: the first ``ceil(C/2)`` are *base*, the
rest *new* (CoCoOp's ``subsample_classes``). A method trains on base-class shots and is
tested on the base classes' test images (among base classes) and on the new classes'
test images (among new classes, the new classes' prompts given at test time); the
harmonic mean of the two is the headline number. A method whose classifier cannot be
built for classes it never saw (a linear probe's weights, Tip-Adapter's cache, GDA's
class means) is reported as such, not run.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..artifacts import Classifier
from ..backbones import Backbone
from ..core.errors import DataError
from ..core.files import atomic_write_json
from ..data import Dataset, Sample
from ..metrics import accuracy
from ..pipeline import RunConfig, fit_and_evaluate, prepare
from .runner import BenchPlan, BenchReport, pending_runs, run_spec, spec_hash


def split_base_new(dataset: Dataset) -> tuple[Dataset, Dataset]:
    """The base half (first ``ceil(C/2)`` labels) and the new half, each relabelled from 0.

    Example:
        >>> from pathlib import Path
        >>> ds = Dataset("d", ["a", "b", "c"], Path("."), {"test": [Sample(Path("x"), 2)]})
        >>> base, new = split_base_new(ds)
        >>> base.classnames, new.classnames, new.split("test")[0].label
        (['a', 'b'], ['c'], 0)
    """
    if dataset.num_classes < 2:
        raise DataError(f"dataset {dataset.name}: base-to-new needs at least 2 classes")
    m = math.ceil(dataset.num_classes / 2)
    return _subset(dataset, range(m), "base"), _subset(dataset, range(m, dataset.num_classes), "new")


def _subset(dataset: Dataset, labels: range, part: str) -> Dataset:
    relabel = {old: new for new, old in enumerate(labels)}
    splits = {
        split: [Sample(s.path, relabel[s.label]) for s in samples if s.label in relabel]
        for split, samples in dataset.splits.items()
    }
    return replace(
        dataset, name=f"{dataset.name}:{part}", classnames=[dataset.classnames[i] for i in labels], splits=splits
    )


def harmonic_mean(base: float, new: float) -> float:
    """``2·b·n / (b + n)`` (0 when both are 0)."""
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


def for_new_classes(
    clf: Classifier, text: Any, text_raw: Any, classnames: list[str], backbone: Backbone
) -> Classifier | None:
    """The same trained classifier rebuilt for ``classnames`` it never saw, or None if the method cannot."""
    head = clf.head.for_classes(text, text_raw, list(classnames), backbone)
    if head is None:
        return None
    return Classifier(clf.method, head, list(classnames), clf.templates, clf.backbone, clf.selection)


def b2n_result_path(out: Path, protocol: str, dataset: str, label: str, shots: int, seed: int) -> Path:
    return out / "runs" / f"b2n-{protocol}" / dataset / label / f"shots{shots}_seed{seed}.json"


def run_base_to_new(
    backbone: Backbone, plan: BenchPlan, out: str | Path, log: Callable[[str], None] = print
) -> BenchReport:
    """Run the base-to-new protocol for every dataset × method × shots × seed of ``plan``.

    Example:
        >>> # run_base_to_new(create_backbone("toy"), BenchPlan({"pets": ds}, methods, shots=(16,)), "out")
    """
    out, report = Path(out), BenchReport()
    for name, dataset in plan.datasets.items():
        base, new = split_base_new(dataset)
        for shots in plan.shots:
            for seed in plan.seeds:
                _b2n_cell(backbone, plan, name, base, new, shots, seed, out, report, log)
    return report


def _b2n_cell(backbone, plan, name, base, new, shots, seed, out, report, log) -> None:
    todo = pending_runs(
        plan,
        report,
        lambda spec: {**run_spec(backbone, plan, spec, name, shots, seed), "setting": "base-to-new"},
        lambda spec: b2n_result_path(out, plan.protocol, name, spec.label, shots, seed),
    )
    if not todo:
        return
    run = RunConfig(method=todo[0][0].method, shots=shots, seed=seed, protocol=plan.protocol, templates=plan.templates)
    prepared = prepare(backbone, base, run, plan.features)
    # The new classes only need their test images and prompts: never their validation split.
    new_feats = prepare(backbone, new, run.replace(shots=0, protocol="val"), plan.features).features
    for spec, key, path in todo:
        clf, result = fit_and_evaluate(backbone, prepared, run.replace(method=spec.method), spec.config())
        result.pop("history", None)
        transferred = for_new_classes(clf, new_feats.text, new_feats.text_raw, new.classnames, backbone)
        base_acc = result["test"]["accuracy"]
        new_acc = accuracy(transferred.logits(new_feats.test), new_feats.test_labels) if transferred else None
        result["transfer"] = {
            "setting": "base-to-new",
            "base_classes": len(base.classnames),
            "new_classes": len(new.classnames),
            "base_accuracy": base_acc,
            "new_accuracy": new_acc,
            "harmonic_mean": harmonic_mean(base_acc, new_acc) if new_acc is not None else None,
            "new_supported": transferred is not None,
        }
        result["bench"] = {"label": spec.label, "spec": key, "spec_hash": spec_hash(key)}
        atomic_write_json(path, result)
        report.ran += 1
        shown = (
            f"new {100 * new_acc:.2f}%, HM {100 * result['transfer']['harmonic_mean']:.2f}%"
            if new_acc is not None
            else "new n/a"
        )
        log(f"{name} base-to-new {spec.label} {shots}-shot seed {seed}: base {100 * base_acc:.2f}%, {shown}")
