"""Image–text retrieval over a folder of images, with or without an adapter's feature adaptation.

An index is a folder: ``features.safetensors`` (the images' L2-normalised features, ``[N, D]``
float32, read from and written to the feature cache, and ``adapted`` ones when built with an
artifact), ``index.json`` (image paths relative to the indexed folder, the backbone's record,
the artifact's fingerprint) and, with ``approximate``, FAISS index files (FAISS's own binary
format, no pickle). A query is a text (encoded raw, or averaged over prompt templates) or an
image; search is exact cosine top-k by default, FAISS HNSW/IVF on request.

Every part of an index is bound to ``index.json``: it records the SHA-256 of each file
(``files``) and a ``digest`` over all its own fields, so a swapped or edited file or field is
refused (one line naming it) rather than searched: a FAISS file copied in from another index
would otherwise return its own scores as cosines. The digest is an integrity check against
mix-ups and damage, not a signature. An index built with an artifact is searched only with
that artifact (its query must be adapted as its images were); the index's width must be its
backbone's. Indexes of format 1 (before these checks) are refused with a "re-run index" message.

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
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .._version import __version__
from ..backbones import Backbone, create_backbone
from ..core.errors import ArtifactError, ConfigError
from ..core.files import atomic_dir, parse_tensors, quoted, read_json, save_tensors, sha256_bytes, sha256_file, to_json
from ..core.outputs import claim_output_dir, is_own_output, mark_output_dir, register_kind
from ..data.images import find_images
from ..features import extract_images, image_store
from ..features.adaptation import Adaptation, adapts_features, head_space, identity_space, normalised
from ..features.transforms import eval_transform_id
from ..metrics import top_k as ranked

# 2: index.json records every file's sha256 and a digest of its own fields (1 had neither: rebuild).
FORMAT, FORMAT_VERSION = "clip-adapter-index", 2
INDEX_FILE, FEATURES_FILE = "index.json", "features.safetensors"
FAISS_FILES = {"features": "faiss-raw.index", "adapted": "faiss-adapted.index"}
APPROXIMATE_KINDS = ("hnsw", "ivf")
FAISS_HINT = "install the 'faiss' extra: pip install 'clip-adapter[faiss]' (faiss-cpu)"
NORM_TOLERANCE = 1e-3  # float32 unit vectors are within ~1e-6 of norm 1; anything far off was not written by us
REBUILD = "re-run clip-adapter index to rebuild it"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
KIND = register_kind("index", r"^(index\.json|features\.safetensors|faiss-(raw|adapted)\.index)$")


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
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256, as recorded in index.json

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def image_path(self, i: int) -> str:
        return str(self.root / self.paths[i])


def adaptation_for(classifier: Any, artifact_dir: str | os.PathLike) -> Adaptation:
    """The artifact's feature adaptation for retrieval (identity for zero-shot); other methods are refused."""
    fingerprint = artifact_fingerprint(artifact_dir, classifier.method)
    if classifier.method == "zero-shot":
        return identity_space(fingerprint)
    if classifier.method != "clip-adapter" or not adapts_features(classifier.head):
        raise ConfigError(
            f"artifact {quoted(artifact_dir)} is a {classifier.method} model, which has no adapted features to search "
            "with; use a clip-adapter (or zero-shot) artifact, or search without --artifact"
        )
    return head_space(classifier.head, fingerprint)


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

    folder = Path(folder)
    out = claim_output_dir(out, KIND, overwrite=overwrite, inputs=[folder])
    if approximate is not None:
        _faiss(approximate)  # refused before any encoding when FAISS is missing or the kind unknown
    paths = find_images([folder])
    feats, kept, stats = extract_images(
        backbone, paths, image_store(backbone, cache_dir), None, 0, batch_size, skip_bad, "index"
    )
    if feats.shape[-1] != backbone.embed_dim:  # the feature cache checks widths; an index never records a wrong one
        raise ArtifactError(
            f"the features of {quoted(folder)} are {feats.shape[-1]} wide "
            f"but {backbone.id} embeds in {backbone.embed_dim}"
        )
    tensors = {"features": normalised(feats)}
    if adaptation is not None:
        tensors["adapted"] = adaptation.image(tensors["features"])
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "backbone": backbone.describe(),
        "transform": eval_transform_id(backbone.preprocess),
        "root": str(folder.resolve()),
        "paths": [paths[i].relative_to(folder).as_posix() for i in kept],
        "embed_dim": int(tensors["features"].shape[1]),
        "skipped": [{"path": p, "reason": r} for p, r in stats.skipped],
        "artifact": adaptation.fingerprint if adaptation else None,
        "approximate": approximate,
    }
    with atomic_dir(out, may_replace=lambda p: overwrite and is_own_output(p, KIND)) as tmp:
        save_tensors(tmp / FEATURES_FILE, tensors, metadata={"format": FORMAT})
        for name, matrix in tensors.items():
            if approximate is not None:
                _write_faiss(matrix, approximate, tmp / FAISS_FILES[name])
        (tmp / INDEX_FILE).write_text(to_json(seal_record(record, tmp)))
        mark_output_dir(tmp, KIND)
    return out


def index_files(record: dict[str, Any]) -> list[str]:
    """The files an index with this record consists of (besides ``index.json``)."""
    names = [FEATURES_FILE]
    if record.get("approximate") is not None:
        names += [FAISS_FILES["features"], *([FAISS_FILES["adapted"]] if record.get("artifact") else [])]
    return names


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of every field of an index record but ``digest`` itself (canonical JSON: sorted keys, no NaN)."""
    return sha256_bytes(to_json({k: v for k, v in record.items() if k != "digest"}).encode("utf-8"))


def seal_record(record: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``record`` with the sha256 of each of its files in ``folder`` and the digest over all its fields.

    From here on a change to any file or any field of the record (paths order,
    backbone, artifact, widths ...) is refused by :func:`load_index`.
    """
    sealed = {**record, "files": {name: sha256_file(folder / name) for name in index_files(record)}}
    return {**sealed, "digest": record_digest(sealed)}


def load_index(directory: str | os.PathLike) -> ImageIndex:
    """Read and check an index folder; every problem is a one-line ArtifactError naming the file.

    Example:
        >>> load_index("/no/such/index")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ArtifactError: index not found: /no/such/index
        (build one with clip-adapter index FOLDER --out DIR)
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(
            f"index not found: {quoted(directory)} (build one with clip-adapter index FOLDER --out DIR)"
        )
    where = quoted(directory / INDEX_FILE)
    record = _read_record(directory / INDEX_FILE)
    paths, dim, backbone, artifact, approximate = _record_fields(record, where)
    files = _record_files(record, where)
    expected = {"features": (len(paths), dim), **({"adapted": (len(paths), dim)} if artifact else {})}
    data = verified_bytes(directory / FEATURES_FILE, files, "index features")
    tensors = parse_tensors(data, f"index features {directory / FEATURES_FILE}", expected)
    for name, matrix in tensors.items():
        _check_unit_rows(matrix, name, directory / FEATURES_FILE)
    return ImageIndex(
        directory,
        Path(record["root"]),
        paths,
        tensors["features"].float(),
        backbone,
        artifact,
        tensors.get("adapted"),
        approximate,
        files,
    )


def _read_record(path: Path) -> dict[str, Any]:
    """index.json, once it is ours, of this format, and unchanged since it was sealed."""
    where = quoted(path)
    record = read_json(path, "index record", ArtifactError)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ArtifactError(f"{where} is not a clip-adapter index record")
    version = record.get("format_version")
    if version == 1:
        raise ArtifactError(
            f"{where} was written by an earlier clip-adapter (index format 1, files not checksummed); {REBUILD}"
        )
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{where}: index format version {version!r} is not supported; {REBUILD}")
    try:
        intact = isinstance(record.get("digest"), str) and record_digest(record) == record["digest"]
    except ValueError:  # NaN or Infinity in a field: never written by us
        intact = False
    if not intact:
        raise ArtifactError(f"{where} does not match its digest (edited or damaged after indexing); {REBUILD}")
    return record


def _record_fields(record: dict[str, Any], where: str) -> tuple[list[str], int, dict, dict | None, str | None]:
    """The record's paths, width, backbone, artifact and approximate kind, each type-checked."""
    paths, dim, backbone = record.get("paths"), record.get("embed_dim"), record.get("backbone")
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ArtifactError(f"{where}: paths must be a list of non-empty strings")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= 1_000_000:
        raise ArtifactError(f"{where}: embed_dim must be a positive integer, got {dim!r}")
    if (
        not isinstance(backbone, dict)
        or not isinstance(backbone.get("id"), str)
        or not isinstance(backbone.get("name"), str)
    ):
        raise ArtifactError(f"{where}: backbone must be an object with a name and an id")
    if backbone.get("embed_dim", dim) != dim:
        raise ArtifactError(
            f"{where}: embed_dim {dim} is not the width of its backbone ({backbone.get('embed_dim')!r}); {REBUILD}"
        )
    artifact, approximate = record.get("artifact"), record.get("approximate")
    if artifact is not None and not (isinstance(artifact, dict) and isinstance(artifact.get("sha256"), str)):
        raise ArtifactError(f"{where}: artifact must be null or an object with a sha256")
    if approximate is not None and approximate not in APPROXIMATE_KINDS:
        raise ArtifactError(
            f"{where}: approximate must be null or one of {', '.join(APPROXIMATE_KINDS)}, got {approximate!r}"
        )
    if not isinstance(record.get("root"), str) or not record["root"]:
        raise ArtifactError(f"{where}: root must be the indexed folder's path")
    return paths, dim, backbone, artifact, approximate


def _record_files(record: dict[str, Any], where: str) -> dict[str, str]:
    """The recorded ``{file name: sha256}``: exactly the files this record's index consists of."""
    files = record.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) and _HEX64.match(v) for v in files.values()):
        raise ArtifactError(f"{where}: files must map each file of the index to its sha256")
    if sorted(files) != sorted(index_files(record)):
        raise ArtifactError(
            f"{where}: files lists {', '.join(sorted(files)) or 'nothing'}, expected {', '.join(index_files(record))}"
        )
    return files


def verified_bytes(path: Path, files: dict[str, str], what: str) -> bytes:
    """The bytes of an index file, once they match the sha256 that ``index.json`` records for it."""
    if path.name not in files:
        raise ArtifactError(f"{quoted(path)} is not recorded in the index's {INDEX_FILE}; {REBUILD}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{what} not found: {quoted(path)}") from None
    except OSError as exc:
        raise ArtifactError(f"{what} {quoted(path)} cannot be read: {exc.strerror or exc.__class__.__name__}") from None
    if sha256_bytes(data) != files[path.name]:
        raise ArtifactError(
            f"{quoted(path)} does not match the sha256 recorded in {INDEX_FILE} "
            f"(replaced or changed after indexing); {REBUILD}"
        )
    return data


def _check_unit_rows(matrix: torch.Tensor, name: str, path: Path) -> None:
    if matrix.dtype != torch.float32:
        raise ArtifactError(f"{quoted(path)}: tensor {name!r} is {matrix.dtype}, expected float32")
    if len(matrix) and float((matrix.norm(dim=1) - 1).abs().max()) > NORM_TOLERANCE:
        raise ArtifactError(f"{quoted(path)}: tensor {name!r} has rows that are not L2-normalised")


def backbone_for_index(
    index: ImageIndex, name: str | None = None, pretrained: str | None = None, device: str = "auto"
) -> Backbone:
    """Rebuild the backbone the index was built with (or the one named); a different one is refused by id."""
    info = index.backbone
    weights = info["id"].rsplit("/", 1)[-1]
    seed = (
        int(weights.split(":", 1)[1])
        if weights.startswith("random-init:") and weights.split(":", 1)[1].isdigit()
        else 0
    )
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
    if backbone.embed_dim != index.dim:
        raise ArtifactError(
            f"index {quoted(index.directory)} holds {index.dim}-wide features but backbone {backbone.id} embeds in "
            f"{backbone.embed_dim} dimensions; {REBUILD}"
        )


def check_index_adaptation(index: ImageIndex, adaptation: Adaptation | None, unadapted: bool = False) -> None:
    """Refuse to search an index built with an artifact without that very artifact (or with another one).

    Its images were indexed in the artifact's adapted space; searching them with
    an unadapted query, or another artifact's, gives scores that mean nothing.
    ``unadapted`` asks for the raw features on purpose (library use only).
    """
    recorded = index.artifact
    if recorded is None or unadapted:
        if unadapted and adaptation is not None:
            raise ConfigError("search: an adaptation and unadapted=True exclude each other")
        return
    where = quoted(recorded.get("path", "?"))
    if adaptation is None:
        raise ConfigError(
            f"index {quoted(index.directory)} was built with the artifact {where}; "
            f"pass --artifact {where} to search it (the query must be adapted as the images were)"
        )
    if adaptation.fingerprint.get("sha256") != recorded["sha256"]:
        raise ArtifactError(
            f"index {quoted(index.directory)} was built with the artifact {where}, not with "
            f"{quoted(adaptation.fingerprint.get('path', '?'))} (their sha256 differ); "
            "pass the recorded artifact or rebuild the index"
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
    return normalised(normalised(backbone.encode_texts(prompts)).mean(dim=0))


def encode_image_query(backbone: Backbone, path: str | os.PathLike, cache_dir: str | os.PathLike) -> torch.Tensor:
    """The normalised embedding ``[D]`` of one image file (through the feature cache, as the index was).

    A bad image is a DataError naming it, without extraction's ``--skip-bad``
    hint: there is nothing to skip in a one-image query (and search has no such option).
    """
    feats, _, _ = extract_images(
        backbone, [Path(path)], image_store(backbone, cache_dir), None, 0, 1, False, "query", bad_hint=None
    )
    return normalised(feats[0])


def search(
    index: ImageIndex,
    query: torch.Tensor,
    top_k: int = 10,
    adaptation: Adaptation | None = None,
    query_kind: str = "text",
    approximate: bool = False,
    unadapted: bool = False,
) -> list[tuple[str, float]]:
    """The ``top_k`` most similar images as ``(path, cosine)``; equal scores rank in index order.

    ``adaptation`` maps the gallery and the query into the artifact's adapted space first
    (``query_kind`` says which side of the adapter the query takes: ``text`` or ``image``).
    An index built with an artifact needs that artifact's adaptation, unless ``unadapted``
    asks for its raw features (:func:`check_index_adaptation`).
    ``approximate`` searches the FAISS index written by :func:`build_index`.
    """
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    check_index_adaptation(index, adaptation, unadapted)
    if query.numel() != index.dim:
        raise ConfigError(
            f"the query is {query.numel()}-dimensional but index {quoted(index.directory)} holds "
            f"{index.dim}-dimensional features; encode it with the index's backbone"
        )
    gallery, name = index.features, "features"
    if adaptation is not None:
        query = (adaptation.text if query_kind == "text" else adaptation.image)(query.view(1, -1))[0]
        gallery, name = _adapted_gallery(index, adaptation, approximate)
    k = min(top_k, len(index.paths))
    if k == 0:
        return []
    if approximate:
        scores, ids = _faiss_search(index, name, query, k)
        _check_faiss_scores(index, name, gallery, query, scores, ids)
    else:
        values, order = ranked((gallery @ query.float()).view(1, -1), k)
        scores, ids = values[0].tolist(), order[0].tolist()
    return [(index.image_path(i), round(float(s), 6)) for s, i in zip(scores, ids) if i >= 0]


def _adapted_gallery(index: ImageIndex, adaptation: Adaptation, approximate: bool) -> tuple[torch.Tensor, str]:
    """The stored adapted features when they came from this very artifact, else computed now (exact search only)."""
    if (
        index.adapted is not None
        and index.artifact
        and index.artifact.get("sha256") == adaptation.fingerprint["sha256"]
    ):
        return index.adapted.float(), "adapted"
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
    import numpy as np

    faiss = _faiss()
    path = index.directory / FAISS_FILES[name]
    if index.approximate is None or path.name not in index.files:
        raise ConfigError(
            f"index {quoted(index.directory)} has no approximate index ({path.name}); rebuild it with --faiss"
        )
    data = verified_bytes(path, index.files, "approximate index")  # hashed and parsed from the same bytes
    try:
        built = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise ArtifactError(
            f"{quoted(path)} is not a readable FAISS index ({str(exc).splitlines()[0][:200]})"
        ) from None
    if built.ntotal != len(index.paths) or built.d != index.features.shape[1]:
        raise ArtifactError(
            f"{quoted(path)} holds {built.ntotal}x{built.d} vectors "
            f"but the index has {len(index.paths)}x{index.features.shape[1]}"
        )
    scores, ids = built.search(query.float().view(1, -1).contiguous().numpy(), k)
    return scores[0].tolist(), ids[0].tolist()


def _check_faiss_scores(
    index: ImageIndex, name: str, gallery: torch.Tensor, query: torch.Tensor, scores: list[float], ids: list[int]
) -> None:
    """FAISS's scores must be the cosines of the index's own features: anything else is not this index's FAISS file."""
    found = [(s, i) for s, i in zip(scores, ids) if i >= 0]
    if not found:
        return
    exact = gallery[[i for _, i in found]] @ query.float().view(-1)
    if float((exact - torch.tensor([s for s, _ in found])).abs().max()) > NORM_TOLERANCE:
        raise ArtifactError(
            f"{quoted(index.directory / FAISS_FILES[name])} does not hold the index's features "
            f"(its scores are not their cosines); {REBUILD}"
        )


__all__ = [
    "Adaptation",
    "ImageIndex",
    "adaptation_for",
    "artifact_fingerprint",
    "backbone_for_index",
    "build_index",
    "check_index_adaptation",
    "check_index_backbone",
    "encode_image_query",
    "encode_text_query",
    "index_files",
    "load_index",
    "record_digest",
    "seal_record",
    "search",
    "verified_bytes",
]
