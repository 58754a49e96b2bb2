"""Scaling out on Ray (``pip install 'clip-adapter[ray]'``): feature extraction on actors, benchmark runs as tasks.

Nothing here imports Ray until it is used, so the toolkit works without it.

Example:
    >>> from clip_adapter.distributed import RayOptions
    >>> RayOptions(workers=2).cpus_per_worker
    1.0
"""

from .cluster import BackboneSpec, RayOptions, import_ray, ray_session

__all__ = ["BackboneSpec", "RayOptions", "import_ray", "ray_extraction", "ray_session", "run_bench_ray"]


def __getattr__(name: str):
    # The extraction and bench halves import torch and the pipeline: only when asked for.
    if name == "ray_extraction":
        from .extract import ray_extraction

        return ray_extraction
    if name == "run_bench_ray":
        from .bench import run_bench_ray

        return run_bench_ray
    raise AttributeError(name)
