"""Image–text retrieval over a folder of images, with or without an adapter's feature adaptation.

An index is a folder: ``features.safetensors`` (the images' L2-normalised features, ``[N, D]``
float32, read from and written to the feature cache, and ``adapted`` ones when built with an
artifact), ``index.json`` (image paths relative to the indexed folder, the backbone's record,
the artifact's fingerprint) and, with ``approximate``, FAISS index files (FAISS's own binary
format, no pickle). A query is a text (encoded raw, or averaged over prompt templates) or an
image; search is exact cosine top-k by default, FAISS HNSW/IVF on request.

Adaptation (CLIP-Adapter artifacts): the image side is the head's adapted visual feature
``α·A_v(f) + (1−α)·f``, the text side ``β·A_t(t) + (1−β)·t`` where the artifact has a text
adapter. Both adapters are bias-free MLPs ending in ReLU, hence positively homogeneous, so
adapting an L2-normalised feature gives the same direction as adapting the raw one. With
``ratio=network`` the per-image ratio ``Q(f, W)`` is evaluated on each image; a text query,
which lives in the same embedding space, takes its β from ``Q(query, W)``. A zero-shot
artifact adapts nothing; other methods have no adapted features and are refused.

Example (toy world: offline, seconds):
    >>> import tempfile, pathlib
    >>> from clip_adapter.backbones import create_backbone
    >>> from clip_adapter.toyworld import write_task_dataset
    >>> work = pathlib.Path(tempfile.mkdtemp())
    >>> photos = write_task_dataset("color", "photo", work / "photos", 1, 1, 1, seed=0)
    >>> bb = create_backbone("toy", precision="fp32")
    >>> index_dir = build_index(bb, photos / "images", work / "cache", work / "index")
    >>> index = load_index(index_dir)
    >>> hits = search(index, encode_text_query(bb, "a red object"), top_k=2)
    >>> [pathlib.Path(path).parent.name for path, _ in hits]
    ['red', 'red']
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from . import __version__
from .backbones import Backbone, create_backbone
from .data.images import find_images
from .errors import ArtifactError, ConfigError
from .features import extract_images, image_store
from .features.transforms import eval_transform_id
from .io import atomic_dir, load_tensors, quoted, read_json, save_tensors, sha256_file, to_json
from .metrics import top_k as ranked

FORMAT, FORMAT_VERSION = "clip-adapter-index", 1
INDEX_FILE, FEATURES_FILE = "index.json", "features.safetensors"
FAISS_FILES = {"features": "faiss-raw.index", "adapted": "faiss-adapted.index"}
APPROXIMATE_KINDS = ("hnsw", "ivf")
FAISS_HINT = "install the 'faiss' extra: pip install 'clip-adapter[faiss]' (faiss-cpu)"
NORM_TOLERANCE = 1e-3  # float32 unit vectors are within ~1e-6 of norm 1; anything far off was not written by us


@dataclass
class Adaptation:
    """Maps normalised features into an artifact's adapted space (``image`` and ``text``: ``[N, D] → [N, D]``, normalised)."""

    image: Callable[[torch.Tensor], torch.Tensor]
    text: Callable[[torch.Tensor], torch.Tensor]
    fingerprint: dict[str, Any]


@dataclass
class ImageIndex:
    """A loaded index: image paths, normalised features (and adapted ones), the records it was built with."""

    directory: Path
    root: Path
    paths: list[str]
    features: torch.Tensor
    backbone: dict[str, Any]
    artifact: dict[str, Any] | None = None
    adapted: torch.Tensor | None = None
    approximate: str | None = None

    def image_path(self, i: int) -> str:
        return str(self.root / self.paths[i])


def adaptation_for(classifier: Any, artifact_dir: str | os.PathLike) -> Adaptation:
    """The artifact's feature adaptation for retrieval (identity for zero-shot); other methods are refused."""
    head = classifier.head
    fingerprint = artifact_fingerprint(artifact_dir, classifier.method)
    if classifier.method == "zero-shot":
        return Adaptation(_normalised, _normalised, fingerprint)
    if classifier.method != "clip-adapter":
        raise ConfigError(
            f"artifact {quoted(artifact_dir)} is a {classifier.method} model, which has no adapted features to search "
            "with; use a clip-adapter (or zero-shot) artifact, or search without --artifact"
        )

    @torch.no_grad()
    def image(features: torch.Tensor) -> torch.Tensor:
        if head.visual is None:
            return _normalised(features)
        alpha, _ = head.ratios(features)
        return _normalised(alpha * head.visual(features) + (1 - alpha) * features)

    @torch.no_grad()
    def text(features: torch.Tensor) -> torch.Tensor:
        if head.textual is None:
            return _normalised(features)
        _, beta = head.ratios(features)  # network ratios: Q evaluated on the query (same embedding space)
        return _normalised(beta * head.textual(features) + (1 - beta) * features)

    head.eval()
    return Adaptation(image, text, fingerprint)


def _normalised(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features.float(), dim=-1)


def artifact_fingerprint(directory: str | os.PathLike, method: str) -> dict[str, Any]:
    """What identifies an artifact's numbers: its method and the SHA-256 of its config and weights."""
    directory = Path(directory)
    digest = "+".join(sha256_file(directory / name) for name in ("config.json", "model.safetensors"))
    return {"path": str(directory.resolve()), "method": method, "sha256": digest}


def build_index(
    backbone: Backbone,
    folder: str | os.PathLike,
    cache_dir: str | os.PathLike,
    out: str | os.PathLike,
    adaptation: Adaptation | None = None,
    approximate: str | None = None,
    batch_size: int = 64,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> Path:
    """Encode every image under ``folder`` (through the feature cache) and write an index folder at ``out``.

    ``adaptation`` also stores the adapted features (and records the artifact); ``approximate``
    (``hnsw`` or ``ivf``) also writes FAISS indexes. ``out`` follows the output-path policy
    (``outputs.claim_output_dir``, kind ``index``). See the module docstring for an example.
    """
    from .outputs import claim_output_dir, is_own_output, mark_output_dir

    folder = Path(folder)
    out = claim_output_dir(out, "index", overwrite=overwrite, inputs=[folder])
    if approximate is not None:
        _faiss(approximate)  # refused before any encoding when FAISS is missing or the kind unknown
    paths = find_images([folder])
    feats, kept, stats = extract_images(backbone, paths, image_store(backbone, cache_dir), None, 0, batch_size, skip_bad, "index")
    tensors = {"features": _normalised(feats)}
    if adaptation is not None:
        tensors["adapted"] = adaptation.image(tensors["features"])
    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
        "backbone": backbone.describe(), "transform": eval_transform_id(backbone.preprocess),
        "root": str(folder.resolve()), "paths": [paths[i].relative_to(folder).as_posix() for i in kept],
        "embed_dim": int(tensors["features"].shape[1]), "skipped": [{"path": p, "reason": r} for p, r in stats.skipped],
        "artifact": adaptation.fingerprint if adaptation else None, "approximate": approximate,
    }
    with atomic_dir(out, may_replace=lambda p: overwrite and is_own_output(p, "index")) as tmp:
        save_tensors(tmp / FEATURES_FILE, tensors, metadata={"format": FORMAT})
        for name, matrix in tensors.items():
            if approximate is not None:
                _write_faiss(matrix, approximate, tmp / FAISS_FILES[name])
        (tmp / INDEX_FILE).write_text(to_json(record))
        mark_output_dir(tmp, "index")
    return out


def load_index(directory: str | os.PathLike) -> ImageIndex:
    """Read and check an index folder; every problem is a one-line ArtifactError naming the file.

    Example:
        >>> load_index("/no/such/index")
        Traceback (most recent call last):
        ...
        clip_adapter.errors.ArtifactError: index not found: /no/such/index (build one with clip-adapter index FOLDER --out DIR)
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"index not found: {quoted(directory)} (build one with clip-adapter index FOLDER --out DIR)")
    where = f"{quoted(directory / INDEX_FILE)}"
    record = read_json(directory / INDEX_FILE, "index record", ArtifactError)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ArtifactError(f"{where} is not a clip-adapter index record")
    if record.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{where}: index format version {record.get('format_version')!r} is not supported; rebuild the index")
    paths, dim, backbone = record.get("paths"), record.get("embed_dim"), record.get("backbone")
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ArtifactError(f"{where}: paths must be a list of non-empty strings")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= 1_000_000:
        raise ArtifactError(f"{where}: embed_dim must be a positive integer, got {dim!r}")
    if not isinstance(backbone, dict) or not isinstance(backbone.get("id"), str) or not isinstance(backbone.get("name"), str):
        raise ArtifactError(f"{where}: backbone must be an object with a name and an id")
    artifact, approximate = record.get("artifact"), record.get("approximate")
    if artifact is not None and not (isinstance(artifact, dict) and isinstance(artifact.get("sha256"), str)):
        raise ArtifactError(f"{where}: artifact must be null or an object with a sha256")
    if approximate is not None and approximate not in APPROXIMATE_KINDS:
        raise ArtifactError(f"{where}: approximate must be null or one of {', '.join(APPROXIMATE_KINDS)}, got {approximate!r}")
    expected = {"features": (len(paths), dim), **({"adapted": (len(paths), dim)} if artifact else {})}
    tensors = load_tensors(directory / FEATURES_FILE, "index features", expected)
    for name, matrix in tensors.items():
        _check_unit_rows(matrix, name, directory / FEATURES_FILE)
    root = Path(record.get("root") if isinstance(record.get("root"), str) else directory)
    return ImageIndex(directory, root, paths, tensors["features"].float(), backbone, artifact, tensors.get("adapted"), approximate)


def _check_unit_rows(matrix: torch.Tensor, name: str, path: Path) -> None:
    if matrix.dtype != torch.float32:
        raise ArtifactError(f"{quoted(path)}: tensor {name!r} is {matrix.dtype}, expected float32")
    if len(matrix) and float((matrix.norm(dim=1) - 1).abs().max()) > NORM_TOLERANCE:
        raise ArtifactError(f"{quoted(path)}: tensor {name!r} has rows that are not L2-normalised")


def backbone_for_index(index: ImageIndex, name: str | None = None, pretrained: str | None = None, device: str = "auto") -> Backbone:
    """Rebuild the backbone the index was built with (or the one named); a different one is refused by id."""
    info = index.backbone
    weights = info["id"].rsplit("/", 1)[-1]
    seed = int(weights.split(":", 1)[1]) if weights.startswith("random-init:") and weights.split(":", 1)[1].isdigit() else 0
    precision = info.get("precision") if info.get("precision") in ("bf16", "fp32") else "auto"
    backbone = create_backbone(name or info["name"], pretrained or info.get("pretrained"), precision, device, seed)
    check_index_backbone(index, backbone)
    return backbone


def check_index_backbone(index: ImageIndex, backbone: Backbone) -> None:
    """Refuse a backbone other than the one whose features the index holds."""
    if backbone.id != index.backbone["id"]:
        raise ArtifactError(
            f"index {quoted(index.directory)} was built with backbone {index.backbone['id']} but the query would be "
            f"encoded with {backbone.id}; rebuild the index with that backbone or search with the index's own"
        )


def encode_text_query(backbone: Backbone, text: str, templates: Sequence[str] = ()) -> torch.Tensor:
    """The normalised embedding ``[D]`` of ``text``: raw, or the mean over ``templates`` (each with one ``{}``)."""
    if not text.strip():
        raise ConfigError("the text query is empty")
    unknown = backbone.unknown_words([text]).get(text, [])
    if unknown and len(unknown) == len(text.split()):
        raise ConfigError(f"no word of the query {text!r} is in the backbone's vocabulary ({', '.join(unknown)})")
    if unknown:
        warnings.warn(f"the backbone's vocabulary lacks {', '.join(unknown)} (read as <unk>) in the query {text!r}")
    prompts = [t.format(text) for t in templates] or [text]
    return _normalised(_normalised(backbone.encode_texts(prompts)).mean(dim=0))


def encode_image_query(backbone: Backbone, path: str | os.PathLike, cache_dir: str | os.PathLike) -> torch.Tensor:
    """The normalised embedding ``[D]`` of one image file (through the feature cache, as the index was)."""
    feats, _, _ = extract_images(backbone, [Path(path)], image_store(backbone, cache_dir), None, 0, 1, False, "query")
    return _normalised(feats[0])


def search(
    index: ImageIndex,
    query: torch.Tensor,
    top_k: int = 10,
    adaptation: Adaptation | None = None,
    query_kind: str = "text",
    approximate: bool = False,
) -> list[tuple[str, float]]:
    """The ``top_k`` most similar images as ``(path, cosine)``; equal scores rank in index order.

    ``adaptation`` maps the gallery and the query into the artifact's adapted space first
    (``query_kind`` says which side of the adapter the query takes: ``text`` or ``image``).
    ``approximate`` searches the FAISS index written by :func:`build_index`.
    """
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    gallery, name = index.features, "features"
    if adaptation is not None:
        query = (adaptation.text if query_kind == "text" else adaptation.image)(query.view(1, -1))[0]
        gallery, name = _adapted_gallery(index, adaptation, approximate)
    k = min(top_k, len(index.paths))
    if k == 0:
        return []
    if approximate:
        scores, ids = _faiss_search(index, name, query, k)
    else:
        values, order = ranked((gallery @ query.float()).view(1, -1), k)
        scores, ids = values[0].tolist(), order[0].tolist()
    return [(index.image_path(i), round(float(s), 6)) for s, i in zip(scores, ids) if i >= 0]


def _adapted_gallery(index: ImageIndex, adaptation: Adaptation, approximate: bool) -> tuple[torch.Tensor, str]:
    """The stored adapted features when they came from this very artifact, else computed now (exact search only)."""
    if index.adapted is not None and index.artifact and index.artifact.get("sha256") == adaptation.fingerprint["sha256"]:
        return index.adapted, "adapted"
    if approximate:
        raise ConfigError(
            f"index {quoted(index.directory)} holds no approximate index for this artifact; rebuild it with "
            "clip-adapter index FOLDER --artifact ARTIFACT --faiss, or search it exactly"
        )
    return torch.cat([adaptation.image(chunk) for chunk in index.features.split(4096)]), "features"


def _faiss(kind: str | None = None) -> Any:
    if kind is not None and kind not in APPROXIMATE_KINDS:
        raise ConfigError(f"approximate index kind must be one of {', '.join(APPROXIMATE_KINDS)}, got {kind!r}")
    try:
        import faiss
    except ImportError:
        raise ConfigError(f"the approximate index needs FAISS: {FAISS_HINT}") from None
    return faiss


def _write_faiss(matrix: torch.Tensor, kind: str, path: Path) -> None:
    faiss = _faiss(kind)
    data = matrix.float().contiguous().numpy()
    n, dim = data.shape
    if kind == "hnsw":
        built = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    else:
        # ~√N lists (the FAISS guidelines), at least 39 training points each so k-means is sound.
        nlist = max(1, min(int(math.sqrt(n)), n // 39))
        built = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        built.train(data)
        built.nprobe = min(nlist, 16)
    built.add(data)
    faiss.write_index(built, str(path))


def _faiss_search(index: ImageIndex, name: str, query: torch.Tensor, k: int) -> tuple[list[float], list[int]]:
    faiss = _faiss()
    path = index.directory / FAISS_FILES[name]
    if index.approximate is None or not path.is_file():
        raise ConfigError(f"index {quoted(index.directory)} has no approximate index ({path.name}); rebuild it with --faiss")
    try:
        built = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise ArtifactError(f"{quoted(path)} is not a readable FAISS index ({str(exc).splitlines()[0][:200]})") from None
    if built.ntotal != len(index.paths) or built.d != index.features.shape[1]:
        raise ArtifactError(f"{quoted(path)} holds {built.ntotal}x{built.d} vectors but the index has {len(index.paths)}x{index.features.shape[1]}")
    scores, ids = built.search(query.float().view(1, -1).contiguous().numpy(), k)
    return scores[0].tolist(), ids[0].tolist()


__all__ = [
    "Adaptation", "ImageIndex", "adaptation_for", "artifact_fingerprint", "backbone_for_index", "build_index",
    "check_index_backbone", "encode_image_query", "encode_text_query", "load_index", "search",
]
