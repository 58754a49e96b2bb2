"""The machine a benchmark ran on, and its measured matmul rates (printed with every figure).

Example:
    >>> "CPU" in describe_machine()
    True
"""

from __future__ import annotations

import os
import platform
import subprocess
import time

import torch


def describe_machine() -> str:
    """CPU model, cores, threads, torch version and thread count, and the load at the start."""
    model, flags = platform.processor() or "unknown", ""
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        flags = fields.get("Flags", "")
    except (OSError, subprocess.CalledProcessError):
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags.split()]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"CPU: {model}, {os.cpu_count()} logical CPUs ({', '.join(isa) or 'no AVX2'}); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load:.2f} at start"
    )


def matmul_rate(dtype: torch.dtype, threads: int, n: int = 2048, seconds: float = 1.0) -> float:
    """TFLOP/s of an ``n × n`` matmul in ``dtype`` on ``threads`` threads (best of a timed loop)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        best, start = float("inf"), time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        return 2 * n**3 / best / 1e12
    finally:
        torch.set_num_threads(before)


def matmul_rates() -> dict[str, float]:
    """fp32 and bf16 matmul rates on one thread and on all of them."""
    out = {}
    for threads in sorted({1, torch.get_num_threads()}):
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            out[f"{name} {threads}t"] = matmul_rate(dtype, threads, n=2048 if name == "fp32" else 512, seconds=0.5)
    return out
