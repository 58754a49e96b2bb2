"""Choose the encoder precision: bf16 where the hardware does it fast, fp32 otherwise."""

from __future__ import annotations

import functools

import torch

from ..core.config import check_choice
from .base import PRECISIONS


@functools.lru_cache(maxsize=None)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AVX512-BF16 or AMX).

    Without them bf16 is emulated and slower than fp32. torch's own CPU probes come first: oneDNN's
    ``_is_mkldnn_bf16_supported`` is also true on AVX-512 CPUs *without* bf16 units (it can emulate).
    """
    cpu = getattr(torch, "cpu", None)
    probes = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(probe) for probe in probes):
        return any(bool(probe()) for probe in probes)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        try:
            flags = open("/proc/cpuinfo").read()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


# Below this size a CLIP's matmuls are too small for bf16 units to pay for the casts, and bf16
# would move the figures the README quotes for the toy models (3 M parameters) by a point or more
# on machines that have the units; so ``auto`` keeps them fp32 on every machine kind. Real CLIPs
# (ViT-B-32 is 151 M) are far above it. Chosen from the toy models' size, not measured in between.
BF16_MIN_PARAMETERS = 50_000_000


def resolve_precision(precision: str, device: torch.device, parameters: int | None = None) -> str:
    """Turn ``auto`` into ``bf16`` or ``fp32`` for ``device`` (and a model of ``parameters``).

    ``auto`` is fp32 for a model smaller than :data:`BF16_MIN_PARAMETERS`, so the
    toy world's figures are the same on every CPU.

    Example:
        >>> resolve_precision("auto", torch.device("cpu"), parameters=3_000_000)
        'fp32'
        >>> resolve_precision("bf16", torch.device("cpu"), parameters=3_000_000)
        'bf16'
    """
    check_choice("precision", precision, PRECISIONS)
    if precision != "auto":
        return precision
    if parameters is not None and parameters < BF16_MIN_PARAMETERS:
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def parameter_count(model: torch.nn.Module) -> int:
    """How many parameters ``model`` holds (what ``auto`` precision is sized by)."""
    return sum(p.numel() for p in model.parameters())


def use_bf16(precision: str, model: torch.nn.Module | None = None) -> bool:
    """Whether a CPU training loop autocasts to bf16: when asked, or on ``auto`` where the CPU is fast at it
    and the model large.

    Example:
        >>> use_bf16("auto", torch.nn.Linear(4, 4)), use_bf16("bf16")
        (False, True)
    """
    parameters = None if model is None else parameter_count(model)
    return resolve_precision(precision, torch.device("cpu"), parameters) == "bf16"


# Accelerators a frozen CLIP can run on, each with how torch says one is present.
_ACCELERATORS = {"cuda": "CUDA", "mps": "MPS", "xpu": "XPU"}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else must exist on this machine.

    A device that is not here (``cuda`` without a GPU, ``cuda:7`` on a 2-GPU
    machine) or a string torch does not know is a one-line ConfigError now,
    not a RuntimeError deep inside the first forward pass.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("gpu")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: --device 'gpu' is not a device name: use auto, cpu, cuda or cuda:N
    """
    from ..core.errors import ConfigError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(str(device))
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"--device {str(device)!r} is not a device name: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cpu":
        return torch.device("cpu")  # "cpu:3" is still the one CPU; keep one spelling for cache keys
    if resolved.type not in _ACCELERATORS:
        raise ConfigError(f"--device {str(device)!r} is not supported: use auto, cpu, cuda or cuda:N")
    _check_present(resolved, str(device))
    return resolved


def _check_present(device: torch.device, given: str) -> None:
    from ..core.errors import ConfigError

    label = _ACCELERATORS[device.type]
    module = getattr(torch, device.type, None)
    available = bool(module is not None and module.is_available())
    if not available:
        raise ConfigError(f"--device {given!r}: no {label} device is available on this machine; use --device cpu")
    count = int(module.device_count()) if hasattr(module, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"--device {given!r}: this machine has {count} {label} device(s), numbered 0..{count - 1}; "
            f"use --device {device.type}:0 or --device cpu"
        )
