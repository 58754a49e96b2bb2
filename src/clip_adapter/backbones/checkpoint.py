"""Load a state dict from a checkpoint file without running any pickled code."""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from ..core.errors import ArtifactError
from ..core.files import parse_tensors, sha256_bytes


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """Read ``.safetensors``, or a ``.pt``/``.pth``/``.bin`` state dict with ``weights_only=True``.

    Returns ``(state_dict, sha256_hex)``: the file is read once and hashed
    from the same bytes (a ViT-L checkpoint is 1.7 GB; reading it twice to name
    it would double the load time). Common wrappers are unwrapped
    (``{"state_dict": ...}``, ``{"model": ...}``, a ``module.`` prefix from
    DistributedDataParallel).

    Example:
        >>> import tempfile, pathlib
        >>> from clip_adapter.core.files import save_tensors
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
        >>> save_tensors(p, {"module.w": torch.zeros(1)})
        >>> list(load_state_dict(p)[0])
        ['w']
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        state = parse_tensors(data, f"checkpoint {path}")
    else:
        state = _load_torch_bytes(data, path)
    return _strip_prefix(state, "module."), sha256_bytes(data)


def _load_torch_bytes(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for hostile or foreign files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ArtifactError(
            f"checkpoint {path} cannot be loaded safely (weights_only=True refused it: {first_line[:200]}); "
            "convert it to .safetensors"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArtifactError(f"checkpoint {path} does not hold a state dict of tensors")
    return obj


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ArtifactError(f"checkpoint {source} does not fit this architecture: {what} keys")
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ArtifactError(
                f"checkpoint {source} does not fit this architecture: {key} is "
                f"{list(state[key].shape)}, the model wants {list(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)
