"""A content-addressed, crash-safe feature store on disk.

Layout: ``<root>/<encoder-key>/<kind>/shard-<id>.safetensors`` plus
``shard-<id>.json``. The encoder key hashes the backbone id, precision and
device; each row's key hashes everything else that changes its numbers
(image content, transform, view index, seed, or the prompt text). A shard is
committed when its JSON manifest exists.

The manifest's ``sha256`` covers the manifest's own fields (row keys in order,
shape, dtype, sources) *and* the tensor bytes, so a torn or corrupted shard, a
manifest whose keys were reordered or swapped, and a manifest of the wrong
shape are all detected the same way: the shard is dropped and recomputed. A
manifest that is not the expected structure (wrong field types, bad JSON) is
dropped too, never trusted and never a crash. Rows are also checked against
the width of the encoder they are cached for (its ``embed_dim``): a checksum-
consistent shard of another width was not written for this encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..core.errors import ConfigError, DataError
from ..core.files import atomic_write_bytes, atomic_write_json, clean_stale_temporaries, parse_tensors, to_json
from .transforms import fingerprint

log = logging.getLogger(__name__)
# 2: the checksum covers the manifest's fields as well as the tensor bytes (1 covered the bytes only,
# so its keys could be swapped unnoticed: version-1 shards are dropped and recomputed).
MANIFEST_VERSION = 2
DTYPE = "float32"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class _BadShard(Exception):
    """Internal: a shard that must be dropped (the message says why, for the log)."""


def default_cache_dir() -> Path:
    """``$CLIP_ADAPTER_CACHE``, else ``$XDG_CACHE_HOME/clip-adapter``, else ``~/.cache/clip-adapter``."""
    if os.environ.get("CLIP_ADAPTER_CACHE"):
        return Path(os.environ["CLIP_ADAPTER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip-adapter"


def shard_digest(fields: dict[str, Any], data: bytes) -> str:
    """SHA-256 binding a manifest's fields (everything but ``sha256``) to the shard's bytes.

    The fields go in as canonical JSON (sorted keys), which a read-back manifest
    reproduces exactly, so reordering ``keys`` or editing any field changes it.

    Example:
        >>> a = shard_digest({"keys": ["x", "y"]}, b"data")
        >>> a == shard_digest({"keys": ["x", "y"]}, b"data") != shard_digest({"keys": ["y", "x"]}, b"data")
        True
    """
    digest = hashlib.sha256(to_json(fields).encode("utf-8"))
    digest.update(data)
    return digest.hexdigest()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def manifest_problem(manifest: Any, dim: int | None = None) -> str | None:
    """Why ``manifest`` (parsed JSON) cannot describe a shard of width ``dim``; None when it can.

    Every field is type-checked here, so nothing read from disk reaches the
    store's index (a dict keyed by row key) unchecked.

    Example:
        >>> manifest_problem(
        ...     {"version": MANIFEST_VERSION, "keys": [1], "shape": [1, 4], "dtype": "float32", "sha256": "0" * 64}
        ... )
        'keys must be a list of strings'
    """
    if not isinstance(manifest, dict):
        return "not a JSON object"
    version = manifest.get("version")
    if not _is_int(version) or version != MANIFEST_VERSION:
        return f"manifest version {version!r}, expected {MANIFEST_VERSION}"
    keys, shape, sources = manifest.get("keys"), manifest.get("shape"), manifest.get("sources")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return "keys must be a list of strings"
    if not isinstance(manifest.get("sha256"), str) or not _HEX64.match(manifest["sha256"]):
        return "sha256 must be 64 hex digits"
    if manifest.get("dtype") != DTYPE:
        return f"dtype must be {DTYPE!r}"
    if not isinstance(shape, list) or len(shape) < 2 or not all(_is_int(s) and s >= 0 for s in shape):
        return "shape must be a list of at least two non-negative integers"
    if shape[0] != len(keys):
        return f"shape {shape} does not have one row per key ({len(keys)})"
    if dim is not None and shape[-1] != dim:
        return f"rows are {shape[-1]} wide but the encoder's features are {dim} wide"
    if sources is not None and (
        not isinstance(sources, list) or len(sources) != len(keys) or not all(isinstance(s, str) for s in sources)
    ):
        return "sources must be a list of strings, one per key"
    return None


class FeatureStore:
    """Feature rows by key for one encoder and one kind (``image``, ``text``, ...).

    ``dim`` is the encoder's embedding width (``Backbone.embed_dim``): rows of
    any other width, or not float32, are never served (their shard is dropped
    and recomputed). ``None`` skips the width check.

    Example:
        >>> import tempfile
        >>> store = FeatureStore(tempfile.mkdtemp(), {"backbone": "demo"}, "text", dim=3)
        >>> store.put(["k1", "k2"], torch.ones(2, 3), {"k1": "a", "k2": "b"})
        >>> store.get(["k2"]).tolist(), store.missing(["k1", "k3"])
        ([[1.0, 1.0, 1.0]], ['k3'])
    """

    def __init__(self, root: str | os.PathLike, encoder: dict[str, str], kind: str, dim: int | None = None) -> None:
        if not os.fspath(root):  # Path("") is the working directory: a missing default, never a choice
            raise ConfigError("the feature cache directory is empty (give --cache-dir or set CLIP_ADAPTER_CACHE)")
        self.encoder_key = fingerprint(encoder)
        self.dim = dim
        self.dir = Path(root) / self.encoder_key / kind
        self.dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(self.dir)
        encoder_file = self.dir.parent / "encoder.json"
        if not encoder_file.exists():
            atomic_write_json(encoder_file, encoder)  # for people browsing the cache
        self._index: dict[str, tuple[str, int]] = {}
        self._loaded: dict[str, torch.Tensor] = {}
        self.writes = 0  # shards written by this instance (tests count cache hits with it)
        self._scan()

    def _scan(self) -> None:
        self._outdated = 0
        for manifest_path in sorted(self.dir.glob("shard-*.json")):
            manifest = self._read_manifest(manifest_path)
            if manifest is None:
                continue
            for row, key in enumerate(manifest["keys"]):
                self._index.setdefault(key, (manifest_path.stem, row))
        if self._outdated:  # one line for a whole cache written by an earlier version, not one per shard
            log.warning(
                "feature cache: %d shard(s) in %s were written by an earlier clip-adapter; they will be recomputed",
                self._outdated,
                self.dir,
            )

    def _read_manifest(self, path: Path) -> dict | None:
        """The manifest at ``path`` if it is well-formed for this store; otherwise its shard is dropped.

        A manifest of a *newer* format is left alone (a newer clip-adapter sharing
        the cache wrote it) but not used; anything else unusable is deleted.
        """
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            manifest, problem = None, f"unreadable ({exc.__class__.__name__})"
        else:
            problem = manifest_problem(manifest, self.dim)
        if problem is None and not path.with_suffix(".safetensors").is_file():
            problem = "its tensor file is missing"
        if problem is None:
            return manifest
        version = manifest.get("version") if isinstance(manifest, dict) else None
        if _is_int(version) and version > MANIFEST_VERSION:
            log.debug("feature cache: %s is a newer manifest format (%s); not used", path, version)
            return None
        if _is_int(version) and 0 < version < MANIFEST_VERSION:
            self._outdated += 1
            self._drop(path.stem)
            return None
        log.warning("feature cache: dropping shard manifest %s (%s); its rows will be recomputed", path, problem)
        self._drop(path.stem)
        return None

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys not (validly) in the store; shards holding the others are checksum-verified."""
        keys = list(keys)
        for shard in sorted({self._index[k][0] for k in keys if k in self._index}):
            self._load_shard(shard)  # drops the shard (and its keys) if corrupt
        return [k for k in keys if k not in self._index]

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        """Rows for ``keys`` in order. Raises KeyError for a key not in the store.

        A shard whose bytes or manifest no longer match its checksum is dropped
        and its keys forgotten; the KeyError then tells the caller to recompute them.
        """
        rows = []
        for key in keys:
            shard, row = self._index[key]
            tensor = self._load_shard(shard)
            if tensor is None:
                raise KeyError(key)
            rows.append(tensor[row])
        return torch.stack(rows) if rows else torch.empty(0)

    def _load_shard(self, shard: str) -> torch.Tensor | None:
        if shard in self._loaded:
            return self._loaded[shard]
        try:
            tensor = self._verified_rows(shard)
        except (OSError, _BadShard) as exc:
            log.warning("feature cache: shard %s is corrupt (%s); it will be recomputed", shard, exc)
            self._drop(shard)
            return None
        self._loaded[shard] = tensor
        return tensor

    def _verified_rows(self, shard: str) -> torch.Tensor:
        """The shard's rows, once its manifest, checksum, dtype, shape and width all agree."""
        try:
            manifest = json.loads((self.dir / f"{shard}.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise _BadShard(f"manifest unreadable: {exc.__class__.__name__}") from None
        problem = manifest_problem(manifest, self.dim)
        if problem is not None:
            raise _BadShard(problem)
        data = (self.dir / f"{shard}.safetensors").read_bytes()
        fields = {k: v for k, v in manifest.items() if k != "sha256"}
        try:
            digest = shard_digest(fields, data)
        except (ValueError, TypeError, RecursionError):  # NaN/Infinity or other values JSON cannot write back
            raise _BadShard("the manifest holds values that cannot be checksummed") from None
        if digest != manifest["sha256"]:
            raise _BadShard("checksum mismatch: the tensor bytes or the manifest's fields changed")
        tensors = parse_tensors(data, f"shard {shard}", {"features": tuple(manifest["shape"])}, _BadShard)
        tensor = tensors["features"]
        if tensor.dtype != torch.float32:
            raise _BadShard(f"features are {tensor.dtype}, expected float32")
        return tensor

    def _drop(self, shard: str) -> None:
        self._index = {k: v for k, v in self._index.items() if v[0] != shard}
        self._loaded.pop(shard, None)
        for suffix in (".json", ".safetensors"):  # manifest first: it is what commits a shard
            (self.dir / f"{shard}{suffix}").unlink(missing_ok=True)

    def put(self, keys: Sequence[str], features: torch.Tensor, sources: dict[str, str] | None = None) -> None:
        """Commit one shard: rows of ``features`` under ``keys`` (atomic; finite values of the store's width only)."""
        from safetensors.torch import save

        features = features.detach().float().cpu().contiguous()
        if features.dim() < 2 or features.shape[0] != len(keys):
            raise ValueError("one key per feature row")
        if self.dim is not None and features.shape[-1] != self.dim:
            raise ValueError(f"the encoder produced {features.shape[-1]}-wide features for a store of width {self.dim}")
        bad = (~torch.isfinite(features.flatten(1)).all(dim=1)).nonzero().flatten().tolist()
        if bad:
            source = (sources or {}).get(keys[bad[0]], keys[bad[0]])
            raise DataError(f"the encoder produced NaN/inf features for {source}; nothing was cached for it")
        data = save({"features": features})
        fields: dict[str, Any] = {
            "version": MANIFEST_VERSION,
            "keys": list(keys),
            "shape": list(features.shape),
            "dtype": DTYPE,
        }
        if sources:
            fields["sources"] = [sources.get(k, "") for k in keys]
        digest = shard_digest(fields, data)
        shard = f"shard-{fingerprint(list(keys))[:16]}-{digest[:8]}"
        atomic_write_bytes(self.dir / f"{shard}.safetensors", data)
        atomic_write_json(self.dir / f"{shard}.json", {**fields, "sha256": digest})
        self.writes += 1
        self._loaded[shard] = features
        for row, key in enumerate(keys):
            self._index.setdefault(key, (shard, row))
