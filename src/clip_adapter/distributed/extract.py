"""``extract --ray``: chunks encoded by Ray actors, shards committed here exactly as a local run commits them.

The driver plans the chunks (:mod:`clip_adapter.features.extract`), sends each
chunk's image paths to an actor that holds the backbone once, and commits the
features it gets back through the same ``FeatureStore.put`` as a local run:
same keys, shard names, checksums and atomic writes, so local and Ray runs
mix, and a second run after a killed worker or driver encodes only what is
missing. A dead actor is restarted and its chunks retried (``retries``).
Features travel as safetensors bytes; workers read the images from their
paths, so on a cluster the data must be on a shared file system.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator

import torch

from ..core.errors import ClipAdapterError, DataError, TrainingError
from ..features.extract import ChunkJob, ChunkPlan, ChunkResult, ImageRef, decode_chunk, encode_decoded, encoding_with
from ..features.transforms import AugmentConfig
from .cluster import BackboneSpec, RayOptions, check_fingerprint, fitting_workers, maybe_crash

IN_FLIGHT = 2  # chunks queued per actor: it decodes the next while it encodes this one


class ChunkEncoder:
    """A Ray actor's body: one backbone, chunks in, safetensors bytes out.

    Two calls run at once (``max_concurrency=2``): decoding overlaps encoding,
    and a lock keeps one encode at a time, as the local loop does.
    """

    def __init__(self, spec: dict[str, Any], threads: int, faults: list[dict[str, Any]] | None = None) -> None:
        torch.set_num_threads(threads)
        self.backbone = BackboneSpec(**spec).build()
        self.faults = faults
        self.lock = threading.Lock()

    def fingerprint(self) -> dict[str, str]:
        return self.backbone.encoder_fingerprint

    def encode(self, plan: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        from safetensors.torch import save

        maybe_crash(self.faults, f"chunk-{job['images'][0][2][:16]}")
        chunk_plan, chunk_job = _plan_from(plan), _job_from(job)
        pixels, ok, failures = decode_chunk(chunk_job.images, self.backbone, chunk_plan)
        with self.lock:
            result = encode_decoded(self.backbone, chunk_plan, chunk_job, pixels, ok, failures)
        return {
            "ok": [img.content for img in ok],
            "failures": [[img.content, str(exc)] for img, exc in failures],
            "features": None if result.features is None else save({"features": result.features.contiguous()}),
        }


class RayChunkRunner:
    """Encodes :func:`~clip_adapter.features.extract.extract_images`' chunks on Ray actors (started on first use).

    Example:
        >>> # with ray_session(opts) as ray, RayChunkRunner(ray, spec, opts, bb.encoder_fingerprint) as runner:
        >>> #     with encoding_with(runner): encode_split(bb, split, templates, features)
    """

    def __init__(self, ray, spec: BackboneSpec, options: RayOptions, fingerprint: dict[str, str]) -> None:
        self.ray, self.spec, self.options, self.fingerprint = ray, spec, options, fingerprint
        self.actors: list[Any] = []

    def __enter__(self) -> "RayChunkRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the actors (their in-flight chunks are dropped: committed shards stay, the rest is redone next time)."""
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []

    def start(self) -> None:
        if self.actors:
            return
        opts = self.options
        actor_cls = self.ray.remote(ChunkEncoder).options(
            num_cpus=opts.cpus_per_worker,
            num_gpus=opts.gpus_per_worker,
            max_concurrency=IN_FLIGHT,
            max_restarts=opts.retries,
            max_task_retries=opts.retries,
        )
        self.actors = [
            actor_cls.remote(self.spec.to_dict(), opts.threads, list(opts.faults))
            for _ in range(fitting_workers(self.ray, opts))
        ]
        for fingerprint in self._get([a.fingerprint.remote() for a in self.actors]):
            check_fingerprint(fingerprint, self.fingerprint)

    def __call__(self, backbone, plan: ChunkPlan, jobs: list[ChunkJob]) -> Iterator[ChunkResult]:
        self.start()
        plan_dict, queue, pending = _plan_to(plan), list(jobs), {}

        def submit(actor: int) -> None:
            if queue:
                job = queue.pop(0)
                pending[self.actors[actor].encode.remote(plan_dict, _job_to(job))] = (actor, job)

        for actor in range(len(self.actors)):
            for _ in range(IN_FLIGHT):
                submit(actor)
        last = time.perf_counter()
        while pending:
            (ref,), _ = self.ray.wait(list(pending), num_returns=1)
            actor, job = pending.pop(ref)
            payload = self._get(ref)
            submit(actor)
            now = time.perf_counter()
            yield _result_from(job, payload, now - last)  # wall time: the encoders work side by side
            last = now

    def _get(self, refs):
        """``ray.get``, with a remote project error re-raised as itself and a worker lost for good as one line."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ClipAdapterError):
                raise type(cause)(str(cause)) from None
            raise TrainingError(
                f"a Ray worker failed: {cause.__class__.__name__ if cause else 'error'}: {cause}"
            ) from None
        except self.ray.exceptions.RayError as exc:
            raise TrainingError(
                f"a Ray worker died {self.options.retries + 1} times ({exc.__class__.__name__}); "
                "finished shards are kept: re-run to resume"
            ) from None


@contextlib.contextmanager
def ray_extraction(
    ray, spec: BackboneSpec, options: RayOptions, fingerprint: dict[str, str]
) -> Iterator[RayChunkRunner]:
    """Every :func:`~clip_adapter.features.extract_images` call in the block encodes on Ray actors.

    Example:
        >>> # with ray_session(opts) as ray, ray_extraction(ray, spec, opts, bb.encoder_fingerprint):
        >>> #     encode_split(bb, split, templates, features)
    """
    fitting_workers(ray, options)  # a worker that can never start is one line now, not a hang later
    with RayChunkRunner(ray, spec, options, fingerprint) as runner, encoding_with(runner):
        yield runner


def _plan_to(plan: ChunkPlan) -> dict[str, Any]:
    return {
        "views": plan.views,
        "augment": plan.augment.to_dict() if plan.augment else None,
        "seed": plan.seed,
        "batch_size": plan.batch_size,
    }


def _plan_from(data: dict[str, Any]) -> ChunkPlan:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in (data["augment"] or {}).items()}
    augment = AugmentConfig.from_dict(fields) if data["augment"] else None
    return ChunkPlan(data["views"], augment, data["seed"], data["batch_size"])


def _job_to(job: ChunkJob) -> dict[str, Any]:
    return {"images": [[img.index, str(img.path), img.content] for img in job.images], "needed": sorted(job.needed)}


def _job_from(data: dict[str, Any]) -> ChunkJob:
    from pathlib import Path

    return ChunkJob(
        [ImageRef(index, Path(path), content) for index, path, content in data["images"]], set(data["needed"])
    )


def _result_from(job: ChunkJob, payload: dict[str, Any], seconds: float) -> ChunkResult:
    from safetensors.torch import load

    by_content = {img.content: img for img in job.images}
    ok = [by_content[c] for c in payload["ok"]]
    failures = [(by_content[c], DataError(message)) for c, message in payload["failures"]]
    features = load(payload["features"])["features"] if payload["features"] is not None else None
    return ChunkResult(job, ok, failures, features, seconds)
