"""A bounded load test of `clip-adapter serve` on loopback: requests/s and p50/p95 latency.

Usage: python benchmarks/serve_load.py [--requests 200] [--clients 8] [--seconds 60] [--threads 1]

Fits a small CLIP-Adapter on the toy world (offline, seconds), serves it in this process on
127.0.0.1 (an ephemeral port; no other address is ever contacted) and sends batch-1 requests
(one PNG each, from a separate client process): first sequentially, then from ``--clients``
concurrent clients. Each phase
stops after ``--requests`` requests or ``--seconds`` seconds, whichever comes first, so the
run is bounded. Printed per phase: requests, seconds, requests/s, p50/p95 latency, encoder calls
(fewer calls than requests = concurrent requests were batched), errors.
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")

import httpx  # noqa: E402  (the client process needs nothing heavier)

LOOPBACK = "127.0.0.1"  # the only address this benchmark ever talks to


class CountingBackbone:
    """The server's backbone, counting encoder calls."""

    def __init__(self, inner) -> None:
        self.inner, self.calls, self.lock = inner, 0, threading.Lock()

    def encode_images(self, pixels):
        with self.lock:
            self.calls += 1
        return self.inner.encode_images(pixels)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def phase(url: str, images: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """Send up to ``requests`` one-image requests from ``clients`` threads, stopping at ``seconds``."""
    assert url.startswith(f"http://{LOOPBACK}:"), url
    deadline = time.perf_counter() + seconds
    counter, lock, latencies, errors = iter(range(requests)), threading.Lock(), [], []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.perf_counter() < deadline:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                start = time.perf_counter()
                response = http.post(
                    "/predict?top_k=1", files=[("images", (f"{n}.png", images[n % len(images)], "image/png"))]
                )
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors.append(response.status_code)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[max(0, int(0.95 * len(ordered)) - 1)],
        "errors": len(errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per phase (at most)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the second phase")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit per phase")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine may be shared)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="server batching wait")
    args = parser.parse_args()
    import multiprocessing

    import torch

    import clip_adapter
    from clip_adapter.api import AdaptedCLIP
    from clip_adapter.apps.serve import ServeLimits, create_app, serve_in_background
    from clip_adapter.backbones import create_backbone
    from clip_adapter.pipeline import FeatureConfig
    from clip_adapter.toyworld import write_task_dataset

    torch.set_num_threads(args.threads)
    # The clients run in their own process, so they do not compete with the server for the GIL.
    clients_process = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    with clients_process, tempfile.TemporaryDirectory(prefix="serve-load-") as work:
        photos = write_task_dataset("color", "photo", Path(work) / "photos", 1, 1, 4, seed=0)
        backbone = create_backbone("toy")
        model = clip_adapter.fit(photos, backbone=backbone, shots=1, cache_dir=Path(work) / "cache", epochs=2)
        images = [p.read_bytes() for p in sorted((photos / "images").rglob("test_*.png"))]
        counting = CountingBackbone(backbone)
        limits = ServeLimits(
            max_batch=32,
            max_wait_ms=args.max_wait_ms,
            max_concurrency=max(8, args.clients),
            max_uploads=max(32, args.clients),
        )
        app = create_app(AdaptedCLIP(model.classifier, counting, FeatureConfig()), limits)
        print(
            f"toy CLIP ({backbone.precision}, {args.threads} torch thread(s)), {len(images)} distinct 64x64 PNGs, "
            f"batch-1 requests, max_wait_ms={args.max_wait_ms}, on {LOOPBACK}"
        )
        print(
            f"{'phase':<22}{'requests':>9}{'seconds':>9}{'req/s':>9}"
            f"{'p50 ms':>9}{'p95 ms':>9}{'enc calls':>11}{'errors':>8}"
        )
        with serve_in_background(app, LOOPBACK) as url:
            clients_process.submit(phase, url, images, 1, 10, args.seconds).result()  # warm-up, not reported
            for name, clients in (("sequential (1 client)", 1), (f"concurrent ({args.clients} clients)", args.clients)):
                before = counting.calls
                r = clients_process.submit(phase, url, images, clients, args.requests, args.seconds).result()
                print(
                    f"{name:<22}{r['requests']:>9}{r['seconds']:>9.1f}{r['rps']:>9.1f}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}"
                    f"{counting.calls - before:>11}{r['errors']:>8}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
