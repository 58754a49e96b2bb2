"""A content-addressed, crash-safe feature store on disk.

Layout: ``<root>/<encoder-key>/<kind>/shard-<id>.safetensors`` plus
``shard-<id>.json``. The encoder key hashes the backbone id, precision and
device; each row's key hashes everything else that changes its numbers
(image content, transform, view index, seed, or the prompt text). A shard is
committed when its JSON manifest exists, and the manifest holds the shard's
SHA-256, so a torn or corrupted shard is detected, dropped and recomputed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..errors import ConfigError, DataError
from ..io import atomic_write_bytes, atomic_write_json, clean_stale_temporaries, sha256_bytes
from .transforms import fingerprint

log = logging.getLogger(__name__)
MANIFEST_VERSION = 1


def default_cache_dir() -> Path:
    """``$CLIP_ADAPTER_CACHE``, else ``$XDG_CACHE_HOME/clip-adapter``, else ``~/.cache/clip-adapter``."""
    if os.environ.get("CLIP_ADAPTER_CACHE"):
        return Path(os.environ["CLIP_ADAPTER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip-adapter"


class FeatureStore:
    """Feature rows by key for one encoder and one kind (``image`` or ``text``).

    Example:
        >>> import tempfile
        >>> store = FeatureStore(tempfile.mkdtemp(), {"backbone": "demo"}, "text")
        >>> store.put(["k1", "k2"], torch.ones(2, 3), {"k1": "a", "k2": "b"})
        >>> store.get(["k2"]).tolist(), store.missing(["k1", "k3"])
        ([[1.0, 1.0, 1.0]], ['k3'])
    """

    def __init__(self, root: str | os.PathLike, encoder: dict[str, str], kind: str) -> None:
        if not os.fspath(root):  # Path("") is the working directory: a missing default, never a choice
            raise ConfigError("the feature cache directory is empty (give --cache-dir or set CLIP_ADAPTER_CACHE)")
        self.encoder_key = fingerprint(encoder)
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
        for manifest_path in sorted(self.dir.glob("shard-*.json")):
            manifest = self._read_manifest(manifest_path)
            if manifest is None:
                continue
            for row, key in enumerate(manifest["keys"]):
                self._index.setdefault(key, (manifest_path.stem, row))

    def _read_manifest(self, path: Path) -> dict | None:
        try:
            manifest = json.loads(path.read_text())
            ok = (
                manifest.get("version") == MANIFEST_VERSION
                and isinstance(manifest.get("keys"), list)
                and isinstance(manifest.get("sha256"), str)
                and path.with_suffix(".safetensors").is_file()
            )
        except (OSError, ValueError, UnicodeDecodeError, AttributeError):
            ok = False
        if not ok:
            log.warning("feature cache: dropping unreadable shard manifest %s", path)
            self._drop(path.stem)
            return None
        return manifest

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

        A shard whose bytes no longer match its checksum is dropped and its keys
        forgotten; the KeyError then tells the caller to recompute them.
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
        from safetensors.torch import load

        try:
            manifest = json.loads((self.dir / f"{shard}.json").read_text())
            data = (self.dir / f"{shard}.safetensors").read_bytes()
            if sha256_bytes(data) != manifest["sha256"]:
                raise ValueError("checksum mismatch")
            tensor = load(data)["features"]
            if tensor.shape[0] != len(manifest["keys"]) or not torch.isfinite(tensor).all():
                raise ValueError("shape or values do not match the manifest")
        except (OSError, ValueError, KeyError) as exc:
            log.warning("feature cache: shard %s is corrupt (%s); it will be recomputed", shard, exc)
            self._drop(shard)
            return None
        self._loaded[shard] = tensor
        return tensor

    def _drop(self, shard: str) -> None:
        self._index = {k: v for k, v in self._index.items() if v[0] != shard}
        self._loaded.pop(shard, None)
        for suffix in (".json", ".safetensors"):  # manifest first: it is what commits a shard
            (self.dir / f"{shard}{suffix}").unlink(missing_ok=True)

    def put(self, keys: Sequence[str], features: torch.Tensor, sources: dict[str, str] | None = None) -> None:
        """Commit one shard: rows of ``features`` under ``keys`` (atomic; finite values only)."""
        from safetensors.torch import save

        features = features.detach().float().cpu().contiguous()
        if features.shape[0] != len(keys):
            raise ValueError("one key per feature row")
        bad = (~torch.isfinite(features).all(dim=1)).nonzero().flatten().tolist()
        if bad:
            source = (sources or {}).get(keys[bad[0]], keys[bad[0]])
            raise DataError(f"the encoder produced NaN/inf features for {source}; nothing was cached for it")
        data = save({"features": features})
        digest = sha256_bytes(data)
        shard = f"shard-{fingerprint(list(keys))[:16]}-{digest[:8]}"
        atomic_write_bytes(self.dir / f"{shard}.safetensors", data)
        manifest = {"version": MANIFEST_VERSION, "keys": list(keys), "sha256": digest, "dim": features.shape[1]}
        if sources:
            manifest["sources"] = [sources.get(k, "") for k in keys]
        atomic_write_json(self.dir / f"{shard}.json", manifest)
        self.writes += 1
        self._loaded[shard] = features
        for row, key in enumerate(keys):
            self._index.setdefault(key, (shard, row))
