"""Backbones from Hugging Face ``transformers``: CLIP and SigLIP model folders (``--backbone hf:<path-or-repo-id>``).

A model folder holds ``config.json``, ``model.safetensors`` (or shards with
``model.safetensors.index.json``), the tokenizer files and
``preprocessor_config.json``, as ``save_pretrained`` writes them. A hub repo
id (``org/name``) is looked up in the local Hugging Face cache first and only
downloaded when that can work (see :mod:`.hub`): offline, an uncached repo is
one line, never a network wait.

Everything is checked before it is trusted: the model type (``clip`` or
``siglip``), the weights file(s), and the tokenizer — its files up front, then
the size of the loaded vocabulary against the model's embedding table, because
recent ``transformers`` builds a 2-token tokenizer without complaint when its
files are missing or unreadable, and every prompt then encodes to the same
features.

The text path mirrors transformers' own forward (tested against it): CLIP adds
position embeddings, runs the encoder under a causal mask and reads the final
layer norm at the end-of-text token before ``text_projection``; SigLIP runs
without a causal mask and reads the *last* position through its ``head``, so
it needs full ``max_length`` rows (``accepts_truncated_tokens`` is False).
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..core.errors import ArtifactError, ConfigError
from ..core.files import read_json
from .base import Backbone, PreprocessConfig
from .hub import _check_reachable, _one_line, offline_variable, quiet_hub
from .precision import parameter_count, resolve_device, resolve_precision

PREFIX = "hf:"
INSTALL_HINT = "pip install 'clip-adapter[hf]' (or: pip install transformers sentencepiece protobuf)"
MODEL_CLASSES = {"clip": "CLIPModel", "siglip": "SiglipModel"}
# Either group of files makes a tokenizer; the first group is the model's native format.
TOKENIZER_FILES = {
    "clip": (("vocab.json", "merges.txt"), ("tokenizer.json",)),
    "siglip": (("spiece.model",), ("tokenizer.json",)),
}
WEIGHTS_FILE, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
HUB_PATTERNS = ["*.json", "*.safetensors", "merges.txt", "spiece.model"]
# Embedding tables are often padded past the tokenizer (to a multiple of 64–256 rows, for speed).
VOCAB_SLACK = 256
RESAMPLE = {
    0: "nearest",
    2: "bilinear",
    3: "bicubic",
    "nearest": "nearest",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
}
# What each model type's image processor does when preprocessor_config.json is absent.
DEFAULT_PREPROCESS = {
    "clip": {"mean": PreprocessConfig().mean, "std": PreprocessConfig().std, "interpolation": "bicubic"},
    "siglip": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear"},
}


def import_transformers() -> Any:
    """The ``transformers`` module, or a one-line ConfigError saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            f"--backbone hf:... needs the transformers package, which is not installed: {INSTALL_HINT}"
        ) from None
    return transformers


# ---------------------------------------------------------------------------------------------
# The folder: where it is and what it holds


def resolve_model_dir(spec: str) -> tuple[Path, str]:
    """``(folder, short name)`` for a local model folder or a hub repo id (local cache first).

    Example:
        >>> resolve_model_dir("/no/such/folder")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ArtifactError: HF model folder not found: /no/such/folder
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return path, path.resolve().name
    if path.exists():
        raise ArtifactError(
            f"HF model {spec} is a file; --backbone hf: takes a model folder "
            "(config.json, model.safetensors, tokenizer)"
        )
    if not _looks_like_repo_id(spec):
        raise ArtifactError(f"HF model folder not found: {spec}")
    return _hub_snapshot(spec), spec


def _looks_like_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not spec.startswith((".", "~")) and " " not in spec


def _hub_snapshot(repo: str) -> Path:
    """The cached snapshot of ``repo``, else a download of the files a backbone needs."""
    from huggingface_hub import constants, snapshot_download

    what = f"HF model {repo!r}"
    hint = "download it on a connected machine and pass the folder with --backbone hf:/path/to/folder"
    try:
        return Path(snapshot_download(repo, cache_dir=constants.HF_HUB_CACHE, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or an unreadable cache entry: try the hub
        pass
    variable = offline_variable()
    if variable:
        raise ArtifactError(
            f"{what} is not a local folder nor in the local Hugging Face cache, and {variable} is set, "
            f"so no download was tried; {hint}"
        )
    _check_reachable(what, hint)
    try:
        with quiet_hub():
            return Path(snapshot_download(repo, cache_dir=constants.HF_HUB_CACHE, allow_patterns=HUB_PATTERNS))
    except Exception as exc:
        raise ArtifactError(
            f"{what} is not a local folder and could not be downloaded: {_one_line(exc)}; {hint}"
        ) from None


def read_model_type(folder: Path) -> str:
    """``clip`` or ``siglip`` from ``config.json``; anything else is a one-line error naming the file."""
    path = folder / "config.json"
    if not path.is_file():
        raise ArtifactError(f"HF model folder {folder} has no config.json")
    config = read_json(path, "HF model config", error=ArtifactError)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in MODEL_CLASSES:
        kinds = ", ".join(MODEL_CLASSES)
        raise ConfigError(
            f"{path} describes a {model_type!r} model; --backbone hf: takes CLIP or SigLIP models ({kinds})"
        )
    return str(model_type)


def weights_files(folder: Path) -> list[Path]:
    """The safetensors file(s) of the model: ``model.safetensors`` or the shards its index names."""
    single, index = folder / WEIGHTS_FILE, folder / WEIGHTS_INDEX
    if single.is_file():
        return [single]
    if not index.is_file():
        found = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pth"))
        extra = f" (it has {', '.join(found)}: convert to safetensors, pickled weights are not read)" if found else ""
        raise ArtifactError(f"HF model folder {folder} has no {WEIGHTS_FILE}{extra}")
    entries = read_json(index, "HF weights index", error=ArtifactError)
    weight_map = entries.get("weight_map") if isinstance(entries, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ArtifactError(f"{index} has no weight_map")
    shards = [folder / name for name in sorted(set(map(str, weight_map.values())))]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise ArtifactError(
            f"HF model folder {folder} is missing weight shard(s) {', '.join(missing)} named in {WEIGHTS_INDEX}"
        )
    return shards


def weights_digest(files: Sequence[Path]) -> str:
    """SHA-256 of one weights file; for shards, of their names and digests (order-independent of listing)."""
    digests = {p.name: _file_sha256(p) for p in files}
    if len(digests) == 1:
        return next(iter(digests.values()))
    return hashlib.sha256("".join(f"{n}:{d}\n" for n, d in sorted(digests.items())).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def check_tokenizer_files(folder: Path, model_type: str) -> list[Path]:
    """The tokenizer files present, or a one-line error naming the ones missing.

    Example:
        >>> import tempfile
        >>> try:  # doctest: +ELLIPSIS
        ...     check_tokenizer_files(Path(tempfile.mkdtemp(prefix="m")), "clip")
        ... except ArtifactError as e:
        ...     print(type(e).__name__, e)
        ArtifactError HF model folder /.../m... has no tokenizer: missing vocab.json, merges.txt (or tokenizer.json)
    """
    groups = TOKENIZER_FILES[model_type]
    for group in groups:
        if all((folder / name).is_file() for name in group):
            return [folder / name for name in group]
    native = groups[0]
    missing = [name for name in native if not (folder / name).is_file()]
    others = " or ".join(", ".join(g) for g in groups[1:])
    raise ArtifactError(f"HF model folder {folder} has no tokenizer: missing {', '.join(missing)} (or {others})")


def load_tokenizer(transformers: Any, folder: Path, model_type: str, vocab_size: int) -> tuple[Any, str]:
    """The folder's tokenizer and a digest of its files, checked against the model's vocabulary size."""
    files = check_tokenizer_files(folder, model_type)
    try:
        with _quiet(transformers):
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        names = ", ".join(p.name for p in files)
        raise ArtifactError(
            f"HF model folder {folder}: the tokenizer ({names}) cannot be loaded: {_one_line(exc)}"
        ) from None
    size = len(tokenizer)
    if not vocab_size - VOCAB_SLACK <= size <= vocab_size:
        raise ArtifactError(
            f"HF model folder {folder}: the tokenizer loaded from {', '.join(p.name for p in files)} "
            f"has {size} tokens but the model has {vocab_size}; "
            "its tokenizer files are incomplete or belong to another model"
        )
    digest = hashlib.sha256(
        "".join(f"{p.name}:{_file_sha256(p)}\n" for p in sorted(folder.glob("tokenizer*.json")) + files).encode()
    )
    return tokenizer, digest.hexdigest()


def preprocess_config(folder: Path, model_type: str, image_size: int) -> PreprocessConfig:
    """The project's preprocessing from ``preprocessor_config.json`` (mean/std, size, crop, resample)."""
    path = folder / "preprocessor_config.json"
    defaults = DEFAULT_PREPROCESS[model_type]
    if not path.is_file():
        return PreprocessConfig(image_size=image_size, **defaults)
    cfg = read_json(path, "HF preprocessor config", error=ArtifactError)
    if not isinstance(cfg, dict):
        raise ArtifactError(f"{path} is not a JSON object")
    size = _side(cfg.get("crop_size") if cfg.get("do_center_crop") else cfg.get("size"), image_size, path)
    if size != image_size:
        raise ArtifactError(f"{path}: images are prepared at {size} px but the model takes {image_size} px")
    resample = cfg.get("resample", defaults["interpolation"])
    if resample not in RESAMPLE:
        raise ArtifactError(f"{path}: resample {resample!r} is not supported (nearest 0, bilinear 2, bicubic 3)")
    try:
        return PreprocessConfig(
            image_size=size,
            mean=_channels(cfg.get("image_mean", defaults["mean"])),
            std=_channels(cfg.get("image_std", defaults["std"])),
            interpolation=RESAMPLE[resample],
        )
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: {exc}") from None


def _side(size: Any, default: int, path: Path) -> int:
    """One square side from an HF ``size``/``crop_size`` (int, ``{height, width}`` or ``{shortest_edge}``)."""
    if size is None:
        return default
    if isinstance(size, dict):
        sides = {int(size[k]) for k in ("height", "width", "shortest_edge") if k in size}
        if len(sides) != 1:
            raise ArtifactError(f"{path}: image size {size} is not square")
        return sides.pop()
    return int(size)


def _channels(values: Any) -> tuple[float, ...]:
    values = [values] if isinstance(values, (int, float)) else list(values)
    return tuple(float(v) for v in (values * 3 if len(values) == 1 else values))


# ---------------------------------------------------------------------------------------------
# The backbone


class HFClipBackbone(Backbone):
    """A frozen ``CLIPModel`` or ``SiglipModel`` from a model folder or hub repo id.

    Example:
        >>> bb = HFClipBackbone("openai/clip-vit-base-patch32", precision="fp32")  # doctest: +SKIP
        >>> bb.id  # doctest: +SKIP
        'hf/openai/clip-vit-base-patch32/sha256:…'
        >>> bb.logit_bias  # 0.0 for CLIP; SigLIP's learned bias of its sigmoid logits  # doctest: +SKIP
        0.0
    """

    provider = "hf"

    def __init__(self, spec: str, pretrained: str | None = None, precision: str = "auto", device: str = "auto") -> None:
        transformers = import_transformers()
        spec = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
        if not spec.strip():
            raise ConfigError(
                "--backbone hf: needs a model folder or hub repo id, e.g. hf:/models/clip-vit-base-patch32"
            )
        if pretrained not in (None, "", spec):
            raise ConfigError(
                f"--backbone hf:{spec} takes its weights from the model folder; "
                f"--pretrained {pretrained!r} is not used with it (leave it out)"
            )
        self.name, self.pretrained = f"{PREFIX}{spec}", spec
        self.device = resolve_device(device)
        resolve_precision(precision, self.device)  # a bad value is refused before the model is read
        folder, self.short_name = resolve_model_dir(spec)
        self.model_type = read_model_type(folder)
        files = weights_files(folder)
        self.weights_id = f"sha256:{weights_digest(files)}"
        model = _load_model(transformers, folder, self.model_type, files)
        if not getattr(
            model.config.vision_config, "vision_use_head", True
        ):  # SigLIP without its pooling head has no image embedding
            raise ConfigError(
                f"HF model folder {folder}: vision_use_head is false, so the model gives no image embeddings"
            )
        text_cfg = model.config.text_config
        self._tokenizer, self._tokenizer_digest = load_tokenizer(
            transformers, folder, self.model_type, int(text_cfg.vocab_size)
        )
        self.context_length = int(text_cfg.max_position_embeddings)
        self.eos_token_id = getattr(text_cfg, "eos_token_id", None)
        # Read in fp32, before any bf16 cast (SigLIP keeps them as 1-element tensors).
        self.logit_scale = float(model.logit_scale.detach().float().reshape(-1)[0].exp())
        self.logit_bias = (
            float(model.logit_bias.detach().float().reshape(-1)[0]) if hasattr(model, "logit_bias") else 0.0
        )
        self.accepts_truncated_tokens = self.model_type == "clip"  # causal + EOS pooling; SigLIP reads the last slot
        self.precision = resolve_precision(precision, self.device, parameter_count(model))
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        head = model.text_model.head if self.model_type == "siglip" else model.text_projection
        self.embed_dim = int(head.out_features)
        self.preprocess = preprocess_config(folder, self.model_type, int(model.config.vision_config.image_size))

    @property
    def id(self) -> str:
        """``hf/<folder or repo name>/sha256:<digest of the weights file(s)>``."""
        return f"{self.provider}/{self.short_name}/{self.weights_id}"

    @property
    def encoder_fingerprint(self) -> dict[str, str]:
        # The tokenizer is data in the folder, not fixed by the weights: a different one changes text features.
        return {**super().encoder_fingerprint, "tokenizer": self._tokenizer_digest}

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "model_type": self.model_type, "logit_bias": self.logit_bias}

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))).float()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Raw text embeddings through transformers' own ``get_text_features`` (the token path must agree)."""
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[start : start + batch_size]).to(self.device)
            out.append(_pooled(self.model.get_text_features(input_ids=tokens)).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        # Full-length rows: SigLIP was trained on max_length padding and pools the last position.
        batch = self._tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        return batch["input_ids"].long()

    def unknown_words(self, texts: Sequence[str]) -> dict[str, list[str]]:
        """Words the tokenizer maps to its unknown token (never for byte-level BPE such as CLIP's)."""
        unk = self._tokenizer.unk_token_id
        if unk is None or unk == self._tokenizer.eos_token_id:  # CLIP's "unk" is its end-of-text: nothing maps there
            return {}
        found = {
            t: [w for w in t.split() if unk in self._tokenizer(w, add_special_tokens=False)["input_ids"]] for t in texts
        }
        return {t: words for t, words in found.items() if words}

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.text_model.embeddings.token_embedding(tokens.to(self.device))

    def encode_token_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        text = self.model.text_model
        n = embeddings.shape[1]
        x = embeddings.to(self.device, self.dtype) + text.embeddings.position_embedding.weight[:n].to(self.dtype)
        x = text.final_layer_norm(text.encoder(inputs_embeds=x, **self._attention(x)).last_hidden_state)
        if self.model_type == "siglip":
            return text.head(x[:, -1, :]).float()
        rows = torch.arange(x.shape[0], device=x.device)
        return self.model.text_projection(x[rows, self._eos_positions(tokens.to(x.device))]).float()

    def _attention(self, x: torch.Tensor) -> dict[str, Any]:
        """The mask arguments transformers' own text forward passes to the encoder."""
        from transformers import masking_utils

        config = self.model.text_model.config
        if self.model_type == "siglip":  # no causal mask, and no padding mask: SigLIP attends to its padding
            return {
                "attention_mask": masking_utils.create_bidirectional_mask(
                    config=config, inputs_embeds=x, attention_mask=None
                )
            }
        mask = masking_utils.create_causal_mask(config=config, inputs_embeds=x, attention_mask=None, cache=None)
        return {"attention_mask": mask, "is_causal": True}

    def _eos_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        # As CLIPTextModel: configs from before transformers PR #24773 say eos_token_id=2 and
        # pool at the highest id (the end-of-text token); newer ones at the first eos_token_id.
        if self.eos_token_id == 2:
            return tokens.int().argmax(dim=-1)
        return (tokens.int() == self.eos_token_id).int().argmax(dim=-1)


def _load_model(transformers: Any, folder: Path, model_type: str, files: Sequence[Path]) -> torch.nn.Module:
    cls = getattr(transformers, MODEL_CLASSES[model_type])
    names = ", ".join(p.name for p in files)
    try:
        with _quiet(transformers):
            model, info = cls.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True, dtype=torch.float32, output_loading_info=True
            )
    except Exception as exc:  # transformers raises many types for a torn file, a wrong shape, a foreign config
        raise ArtifactError(
            f"HF model folder {folder}: {names} cannot be loaded as a {cls.__name__}: {_one_line(exc)}"
        ) from None
    # transformers fills missing or mis-shaped tensors with random values and only logs it.
    bad = sorted(info.get("missing_keys") or []) or sorted(str(k) for k in info.get("mismatched_keys") or [])
    if bad:
        what = "lacks" if info.get("missing_keys") else "has mis-shaped"
        raise ArtifactError(
            f"HF model folder {folder}: {names} {what} {len(bad)} tensor(s) of this {cls.__name__}, e.g. {bad[0]}"
        )
    return model


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """No progress bars or log lines from transformers while loading: what matters is checked and raised here."""
    log = transformers.utils.logging
    verbosity, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()


def _pooled(output: Any) -> torch.Tensor:
    """transformers ≥ 5 returns an output object from ``get_*_features``; older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
