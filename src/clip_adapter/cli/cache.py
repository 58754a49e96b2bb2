"""``clip-adapter cache``: what the feature cache holds, and pruning it.

``clip-adapter cache`` lists each encoder's folder (backbone, precision, kind, shards,
rows, size, last used); ``clip-adapter cache prune --older-than 30`` removes shards not
written or read for 30 days, ``--encoder KEY`` one encoder's features, ``--all`` all of
them. Only the cache's own files (shard manifests, shards, ``encoder.json``) are removed,
manifest first, so a concurrent run sees a shard either whole or gone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..core.errors import ConfigError
from ..core.files import quoted
from ..features import default_cache_dir

SHARD_GLOB = "shard-*.json"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="inspect or prune the feature cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", default="list", choices=("list", "prune"), help="list (default) or prune")
    p.add_argument(
        "--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)"
    )
    p.add_argument(
        "--older-than", type=float, default=None, metavar="DAYS", help="prune: shards unused for this many days"
    )
    p.add_argument(
        "--encoder", default=None, metavar="KEY", help="prune: every shard of this encoder (see the listing)"
    )
    p.add_argument("--all", action="store_true", help="prune: everything in the cache")
    p.set_defaults(func=main)


def _shards(encoder_dir: Path) -> list[Path]:
    return sorted(encoder_dir.glob(f"*/{SHARD_GLOB}"))


def _last_used(manifest: Path) -> float:
    tensor = manifest.with_suffix(".safetensors")
    stats = [p.stat() for p in (manifest, tensor) if p.exists()]
    return max(max(s.st_mtime, s.st_atime) for s in stats) if stats else 0.0


def describe(root: Path) -> list[dict]:
    """One record per encoder folder: what it is and what it holds."""
    rows = []
    for encoder_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        try:
            encoder = json.loads((encoder_dir / "encoder.json").read_text())
        except (OSError, ValueError):
            continue  # not one of ours
        shards = _shards(encoder_dir)
        size = sum(p.stat().st_size for s in shards for p in (s, s.with_suffix(".safetensors")) if p.exists())
        rows.append(
            {
                "key": encoder_dir.name,
                "encoder": encoder,
                "shards": len(shards),
                "bytes": size,
                "last_used": max((_last_used(s) for s in shards), default=0.0),
                "kinds": sorted({s.parent.name for s in shards}),
            }
        )
    return rows


def prune(root: Path, older_than_days: float | None, encoder: str | None, everything: bool) -> tuple[int, int]:
    """Remove matching shards (manifest first); return ``(shards removed, bytes freed)``."""
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    removed = freed = 0
    for row in describe(root):
        if encoder is not None and row["key"] != encoder:
            continue
        for manifest in _shards(root / row["key"]):
            if cutoff is not None and _last_used(manifest) >= cutoff:
                continue
            for path in (manifest, manifest.with_suffix(".safetensors")):
                if path.exists():
                    freed += path.stat().st_size
                    path.unlink()
            removed += 1
    return removed, freed


def main(args: argparse.Namespace) -> int:
    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.action == "prune":
        if sum(x is not None and x is not False for x in (args.older_than, args.encoder, args.all or None)) != 1:
            raise ConfigError("cache prune needs exactly one of --older-than DAYS, --encoder KEY, --all")
        if args.older_than is not None and not args.older_than >= 0:
            raise ConfigError(f"--older-than must be a number of days >= 0, got {args.older_than}")
        if args.encoder is not None and args.encoder not in {r["key"] for r in describe(root)}:
            raise ConfigError(
                f"--encoder {quoted(args.encoder)} is not in the cache {quoted(root)}; "
                "run `clip-adapter cache` to list them"
            )
        removed, freed = prune(root, args.older_than, args.encoder, args.all)
        print(f"removed {removed} shard(s), {freed / 2**20:.1f} MiB, from {quoted(root)}")
        return 0
    rows = describe(root)
    print(f"feature cache {quoted(root)}: {len(rows)} encoder(s), {sum(r['bytes'] for r in rows) / 2**20:.1f} MiB")
    for r in rows:
        enc = r["encoder"]
        used = time.strftime("%Y-%m-%d", time.localtime(r["last_used"])) if r["last_used"] else "never"
        print(
            f"  {r['key']}  {enc.get('backbone', '?')} {enc.get('precision', '')} {enc.get('device', '')}  "
            f"{'/'.join(r['kinds']) or '-'}  {r['shards']} shards  {r['bytes'] / 2**20:.1f} MiB  last used {used}"
        )
    return 0
