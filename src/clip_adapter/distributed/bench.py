"""``bench --ray``: every pending run of the few-shot grid is one Ray task.

The driver walks the grid as a local sweep does: finished runs are skipped
(same skip keys), each cell's split is sampled, encoded into the feature cache
and recorded here first, so its tasks only read features. A task rebuilds the
cell from plain data (the dataset's sample lists, the configs), fits and
evaluates one run with the same functions as a local sweep and returns the
record; the driver writes it with the same atomic writes. A task whose worker
dies, or that raises anything but a project error, is retried ``retries``
times; then the run is reported in ``BenchReport.failed`` and the sweep goes on.
On a cluster, the data and ``--cache-dir`` must be on a shared file system.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..backbones import Backbone
from ..bench.runner import BenchPlan, BenchReport, MethodSpec, cell_runs, commit_result, prepare_cell, run_one
from ..core.errors import ClipAdapterError
from ..core.files import one_line
from ..data import Dataset, Sample
from ..pipeline import FeatureConfig, RunConfig, epoch_log_csv, prepare
from .cluster import BackboneSpec, RayOptions, check_fingerprint, maybe_crash


def run_bench_ray(
    ray,
    backbone: Backbone,
    spec: BackboneSpec,
    plan: BenchPlan,
    out: str | Path,
    options: RayOptions,
    log: Callable[[str], None] = print,
) -> BenchReport:
    """:func:`~clip_adapter.bench.run_bench` with one Ray task per pending run; failures are listed, not raised.

    Example:
        >>> # with ray_session(RayOptions()) as ray:
        >>> #     report = run_bench_ray(ray, bb, spec, plan, "bench-out", RayOptions())
    """
    out, report, start = Path(out), BenchReport(), time.perf_counter()
    task = ray.remote(bench_task).options(
        num_cpus=options.cpus_per_worker,
        num_gpus=options.gpus_per_worker,
        max_retries=options.retries,
        retry_exceptions=True,
    )
    pending: dict[Any, tuple[str, Path]] = {}
    cache = str(plan.features.cache_path())
    for name, dataset in plan.datasets.items():
        data = ray.put(dataset_to_dict(dataset))  # stored once; every task of the dataset gets a reference
        for shots in plan.shots:
            for seed in plan.seeds:
                todo = cell_runs(backbone, plan, out, name, shots, seed, report)
                if not todo:
                    continue
                run, _ = prepare_cell(backbone, plan, out, name, dataset, shots, seed, todo)
                for method, key, path in todo:
                    payload = {
                        "backbone": spec.to_dict(),
                        "fingerprint": backbone.encoder_fingerprint,
                        "features": plan.features.to_dict(),
                        "cache": cache,
                        "run": run.to_dict(),
                        "method": [method.label, method.method, list(method.overrides)],
                        "key": key,
                        "threads": options.threads,
                        "faults": list(options.faults),
                    }
                    pending[task.remote(payload, data)] = (f"{name} {method.label} {shots}-shot seed {seed}", path)
                _collect(ray, pending, report, log, wait=False)
    _collect(ray, pending, report, log, wait=True)
    report.seconds = time.perf_counter() - start
    return report


def _collect(ray, pending: dict, report: BenchReport, log: Callable[[str], None], wait: bool) -> None:
    """Commit finished runs (all of them with ``wait``); a run that failed for good is reported and skipped."""
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=None if wait else 0)
        if not done:
            return
        name, path = pending.pop(done[0])
        try:
            answer = ray.get(done[0])
        except ray.exceptions.RayError as exc:  # still failing after the retries, or its worker kept dying
            cause = getattr(exc, "cause", None)
            answer = {"error": f"{cause.__class__.__name__}: {cause}" if cause else exc.__class__.__name__}
        if "error" in answer:
            report.failed.append(f"{name}: {one_line(answer['error'])}")
            log(f"{name}: FAILED ({one_line(answer['error'])})")
            continue
        commit_result(path, answer["result"], answer["history"], report, log)


def bench_task(payload: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
    """One run on a worker: ``{"result", "history"}``, or ``{"error"}`` for a project error
    (not retried: it would recur).

    ``dataset`` (:func:`dataset_to_dict`) arrives as a separate argument: the driver puts it in
    Ray's object store once per dataset, not once per run.
    """
    label = payload["method"][0]
    maybe_crash(payload["faults"], f"{dataset['name']}/{label}/{payload['run']['shots']}/{payload['run']['seed']}")
    try:
        backbone = _backbone(json.dumps(payload["backbone"], sort_keys=True), payload["threads"])
        check_fingerprint(backbone.encoder_fingerprint, payload["fingerprint"])
        features = FeatureConfig.from_dict(payload["features"])
        if not features.cache_dir:  # the driver's default cache, not this worker's environment's
            os.environ["CLIP_ADAPTER_CACHE"] = payload["cache"]
        run = RunConfig.from_dict(payload["run"])
        prepared = prepare(backbone, dataset_from_dict(dataset), run, features)
        _, method, overrides = payload["method"]
        spec = MethodSpec(label, method, tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in overrides))
        result, history = run_one(backbone, prepared, run, spec, payload["key"])
        epoch_log_csv(history)  # fail here, not on the driver, if a record cannot be written
        return {"result": result, "history": history}
    except ClipAdapterError as exc:
        return {"error": str(exc)}


@functools.lru_cache(maxsize=2)
def _backbone(spec_json: str, threads: int) -> Backbone:
    """One backbone per worker process, built once for all the runs it is given."""
    import torch

    torch.set_num_threads(threads)
    return BackboneSpec(**json.loads(spec_json)).build()


def dataset_to_dict(dataset: Dataset) -> dict[str, Any]:
    """A dataset as plain data (what a task receives instead of the object)."""
    return {
        "name": dataset.name,
        "classnames": list(dataset.classnames),
        "root": str(dataset.root),
        "templates": list(dataset.templates),
        "splits": {split: [[str(s.path), s.label] for s in samples] for split, samples in dataset.splits.items()},
    }


def dataset_from_dict(data: dict[str, Any]) -> Dataset:
    splits = {
        split: [Sample(Path(path), label) for path, label in samples] for split, samples in data["splits"].items()
    }
    return Dataset(data["name"], list(data["classnames"]), Path(data["root"]), splits, tuple(data["templates"]))
