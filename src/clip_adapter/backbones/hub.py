"""Weights for an open_clip tag: the local Hugging Face cache first, a download only when it can work.

open_clip's own ``download_pretrained`` asks the hub even when the file is
cached, and on a machine without network the hub retries every candidate file
five times with back-off (about a minute) before an error that the caller
then had to cut short. Here:

1. a file already in the local Hugging Face cache is used, without a request;
2. with ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set, nothing else is
   tried: one line names the tag, the architecture and the way out (a local
   weights file);
3. otherwise one TCP connection to the hub's host tells at once whether a
   download can work (skipped behind a proxy, which may be the only way out);
4. then the real download, with the hub's retry chatter silenced and each
   warning shown once; a failure is one complete line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from typing import Iterator
from urllib.parse import urlparse

from ..core.errors import ArtifactError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
PROBE_TIMEOUT_S = 5.0
_TRUE = {"1", "on", "yes", "true"}  # what huggingface_hub itself accepts as "set"


def fetch_weights(tag_cfg: dict, tag: str, arch: str) -> str:
    """Local path of the weights of open_clip tag ``tag`` of architecture ``arch``.

    Raises a one-line ArtifactError naming tag and architecture when the file
    is not cached and cannot be downloaded.

    Example:
        >>> import open_clip
        >>> fetch_weights(open_clip.get_pretrained_cfg("RN50", "openai"), "openai", "RN50")  # doctest: +SKIP
        '/root/.cache/huggingface/hub/models--timm--resnet50_clip.openai/snapshots/…/open_clip_model.safetensors'
        >>> # offline and not cached: ArtifactError: open_clip weights 'openai' for RN50 are not in the local
        >>> # Hugging Face cache and HF_HUB_OFFLINE is set, so no download was tried; download the file … --pretrained …
    """
    if tag_cfg.get("file"):
        return str(tag_cfg["file"])
    what = f"open_clip weights {tag!r} for {arch}"
    hint = local_file_hint(tag_cfg, arch)
    hub = str(tag_cfg.get("hf_hub") or "")
    if not hub:
        return _fetch_url(str(tag_cfg.get("url") or ""), what, hint)
    repo, candidates = hub_files(hub)
    cached = cached_file(repo, candidates)
    if cached:
        return cached
    variable = offline_variable()
    if variable:
        raise ArtifactError(
            f"{what} are not in the local Hugging Face cache and {variable} is set, so no download was tried; {hint}"
        )
    _check_reachable(what, hint)
    return _download_hub(repo, candidates, what, hint)


def local_file_hint(tag_cfg: dict, arch: str) -> str:
    """How to use a local file instead (OpenAI weights need QuickGELU, i.e. a ``-quickgelu`` name)."""
    hint = (
        "download the file on a connected machine and pass it with "
        "--pretrained /path/to/weights.safetensors (or .pt/.bin)"
    )
    if tag_cfg.get("quick_gelu") and not arch.endswith("-quickgelu"):
        hint += f" and --backbone {arch}-quickgelu (these weights were trained with QuickGELU)"
    return hint


def hub_files(hub: str) -> tuple[str, list[str]]:
    """``(repo_id, file names to try)`` for an open_clip ``hf_hub`` entry, safetensors first.

    Example:
        >>> hub_files("timm/vit_base_patch32_clip_224.openai/")
        ('timm/vit_base_patch32_clip_224.openai', ['open_clip_model.safetensors', 'open_clip_pytorch_model.bin'])
    """
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(hub)  # "org/name/" means open_clip's default file name
    filename = filename or HF_WEIGHTS_NAME
    if filename == HF_WEIGHTS_NAME:
        return repo, [HF_SAFE_WEIGHTS_NAME, filename]  # open_clip prefers the safetensors twin
    if filename.endswith((".bin", ".pth")):
        return repo, [filename[:-4] + ".safetensors", filename]
    return repo, [filename]


def cached_file(repo: str, candidates: list[str]) -> str | None:
    """The first candidate present in the local Hugging Face cache (no network), else None."""
    from huggingface_hub import constants, try_to_load_from_cache

    for filename in candidates:
        try:
            found = try_to_load_from_cache(repo, filename, cache_dir=constants.HF_HUB_CACHE)
        except (OSError, ValueError):  # unreadable cache folder, odd repo name: treat as not cached
            continue
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def offline_variable() -> str | None:
    """The name of the offline switch that is set (``HF_HUB_OFFLINE=1`` …), if any."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


def hub_unreachable(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be reached (one TCP connect, ``PROBE_TIMEOUT_S``), or None when it can."""
    url = urlparse(endpoint)
    host, port = url.hostname or "", url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return _one_line(exc)


def _check_reachable(what: str, hint: str) -> None:
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return  # a direct connection may be blocked while the proxy works: let the download decide
    from huggingface_hub import constants

    reason = hub_unreachable(constants.ENDPOINT)
    if reason is not None:
        raise ArtifactError(
            f"{what} are not in the local Hugging Face cache and {constants.ENDPOINT} cannot be reached "
            f"({reason}); {hint}"
        )


def _download_hub(repo: str, candidates: list[str], what: str, hint: str) -> str:
    import open_clip
    from huggingface_hub import hf_hub_download

    missing = _remote_missing_error()
    last: Exception | None = None
    with quiet_hub():
        for filename in candidates:
            try:
                return hf_hub_download(
                    repo_id=repo, filename=filename, library_name="open_clip", library_version=open_clip.__version__
                )
            except missing as exc:  # this name is not in the repo: try the next candidate
                last = exc
            except Exception as exc:  # network, permission, disk: the next file would fail the same way
                last = exc
                break
    raise ArtifactError(f"{what} could not be downloaded from {repo}: {_one_line(last)}; {hint}")


def _fetch_url(url: str, what: str, hint: str) -> str:
    import open_clip

    if not url:
        raise ArtifactError(f"{what}: open_clip lists no download for this tag; {hint}")
    cached = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))  # open_clip's URL cache
    variable = offline_variable()
    if variable and os.path.isfile(cached):
        return cached  # offline: use the cached file (open_clip re-checks its hash when online)
    if variable:
        raise ArtifactError(
            f"{what} are not cached in ~/.cache/clip and {variable} is set, so no download was tried; {hint}"
        )
    try:
        with quiet_hub():
            return open_clip.download_pretrained_from_url(url)
    except Exception as exc:
        raise ArtifactError(f"{what} could not be downloaded from {url}: {_one_line(exc)}; {hint}") from None


def _remote_missing_error() -> type[Exception]:
    try:
        from huggingface_hub.errors import RemoteEntryNotFoundError

        return RemoteEntryNotFoundError
    except ImportError:  # older huggingface_hub
        from huggingface_hub.utils import EntryNotFoundError

        return EntryNotFoundError


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """Hide the hub's per-retry log lines and show each warning once while downloading."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("once")
            yield
    finally:
        logger.setLevel(level)


def _one_line(exc: BaseException | None) -> str:
    """The whole message of ``exc`` on one line (never cut: a cut sentence hides the cause)."""
    if exc is None:
        return "no file found"
    text = " ".join(str(exc).split())
    return text or exc.__class__.__name__
