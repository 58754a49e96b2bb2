"""Hugging Face CLIP/SigLIP backbones (``--backbone hf:…``) on tiny random models written at test time.

The CLIP folder is the tiny open_clip test model converted into the HF layout
by a key mapping written here, so its features must agree with open_clip's.
Tokenizers are built locally (CLIP's BPE from the vocabulary inside open_clip,
a tiny sentencepiece model for SigLIP): nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install 'clip-adapter[hf]')"
)

import clip_adapter  # noqa: E402
from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.core.errors import ArtifactError, ClipAdapterError, ConfigError  # noqa: E402
from clip_adapter.core.files import save_tensors  # noqa: E402
from conftest import TINY, write_image_folder  # noqa: E402

TEXTS = [
    "a photo of a red square.",
    "",
    "Hello,  World! a much longer caption that runs past the context length of the tiny model",
]


# ---------------------------------------------------------------------------------------------
# Building the folders


def write_clip_tokenizer(folder: Path) -> None:
    """vocab.json + merges.txt of CLIP's BPE, from the vocabulary file inside open_clip (HF's special-token names)."""
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(k, k): v for k, v in bpe.encoder.items()}
    merges = [" ".join(pair) for pair in sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "pad_token": "<|endoftext|>"})
    )


def openclip_to_hf(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """open_clip ViT CLIP state dict → transformers CLIPModel keys (in_proj split into q/k/v, projections
    transposed).
    """
    out = {
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "visual_projection.weight": state["visual.proj"].t(),
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_projection.weight": state["text_projection"].t(),
        "logit_scale": state["logit_scale"],
    }
    norms = (
        ("visual.ln_pre", "vision_model.pre_layrnorm"),
        ("visual.ln_post", "vision_model.post_layernorm"),
        ("ln_final", "text_model.final_layer_norm"),
    )
    for src, dst in norms:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = state[f"{src}.weight"], state[f"{src}.bias"]
    for src, dst in (("visual.transformer", "vision_model.encoder"), ("transformer", "text_model.encoder")):
        for i in range(layers):
            out.update(_block(state, f"{src}.resblocks.{i}", f"{dst}.layers.{i}"))
    return {k: v.contiguous().clone() for k, v in out.items()}


BLOCK_KEYS = (
    ("attn.out_proj", "self_attn.out_proj"),
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
)


def _block(state: dict[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    out = {}
    for kind in ("weight", "bias"):
        q, k, v = state[f"{src}.attn.in_proj_{kind}"].chunk(3)
        out.update(
            {
                f"{dst}.self_attn.q_proj.{kind}": q,
                f"{dst}.self_attn.k_proj.{kind}": k,
                f"{dst}.self_attn.v_proj.{kind}": v,
            }
        )
        for a, b in BLOCK_KEYS:
            out[f"{dst}.{b}.{kind}"] = state[f"{src}.{a}.{kind}"]
    return out


def clip_config() -> transformers.CLIPConfig:
    """The HF twin of tests/assets/test-tiny-vit.json (open_clip: GELU, 64-wide heads in vision, 2 text heads)."""
    tiny = json.loads((Path(__file__).parent / "assets" / f"{TINY}.json").read_text())
    v, t = tiny["vision_cfg"], tiny["text_cfg"]
    return transformers.CLIPConfig(
        projection_dim=tiny["embed_dim"],
        text_config=dict(
            vocab_size=t["vocab_size"],
            hidden_size=t["width"],
            intermediate_size=4 * t["width"],
            num_hidden_layers=t["layers"],
            num_attention_heads=t["heads"],
            max_position_embeddings=t["context_length"],
            hidden_act="gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=v["width"],
            intermediate_size=4 * v["width"],
            num_hidden_layers=v["layers"],
            num_attention_heads=v["width"] // 64,
            image_size=v["image_size"],
            patch_size=v["patch_size"],
            hidden_act="gelu",
        ),
    )


def write_clip_folder(folder: Path, openclip_backbone) -> Path:
    """The tiny open_clip model's weights as an HF CLIP folder (config, safetensors, tokenizer, preprocessor)."""
    folder.mkdir(parents=True)
    config = clip_config()
    model = transformers.CLIPModel(config)
    state = openclip_to_hf(openclip_backbone.model.state_dict(), config.text_config.num_hidden_layers)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not [k for k in missing if not k.endswith("position_ids")] and not unexpected, (missing, unexpected)
    model.save_pretrained(folder)
    write_clip_tokenizer(folder)
    pre = openclip_backbone.preprocess
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_resize": True,
                "size": {"shortest_edge": pre.image_size},
                "do_center_crop": True,
                "crop_size": {"height": pre.image_size, "width": pre.image_size},
                "resample": 3,
                "image_mean": list(pre.mean),
                "image_std": list(pre.std),
                "image_processor_type": "CLIPImageProcessor",
            }
        )
    )
    return folder


def write_siglip_folder(folder: Path, seed: int = 0) -> Path:
    """A tiny random SiglipModel with a tiny sentencepiece tokenizer trained on a few captions."""
    import sentencepiece as spm

    folder.mkdir(parents=True)
    corpus = [f"a photo of a {c} {s}." for c in ("red", "green", "blue") for s in ("square", "circle")] * 10
    model_file = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model_file,
        vocab_size=40,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(model_file.getvalue())
    tokenizer = transformers.SiglipTokenizer(vocab_file=str(folder / "spiece.model"))
    tokenizer.save_pretrained(folder)
    config = transformers.SiglipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            pad_token_id=1,
            eos_token_id=1,
            bos_token_id=None,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
    )
    torch.manual_seed(seed)
    model = transformers.SiglipModel(config)
    with torch.no_grad():
        model.logit_bias.fill_(-3.5)  # a recognisable value
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_resize": True,
                "size": {"height": 32, "width": 32},
                "resample": 2,
                "image_mean": [0.5] * 3,
                "image_std": [0.5] * 3,
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from clip_adapter.backbones import create_backbone as make

    root = tmp_path_factory.mktemp("hf")
    reference = make(TINY, "none", precision="fp32", seed=3)
    clip, siglip = write_clip_folder(root / "tiny-clip", reference), write_siglip_folder(root / "tiny-siglip")
    return {"clip": clip, "siglip": siglip, "reference": reference}


@pytest.fixture(scope="module")
def clip_bb(folders):
    return create_backbone(f"hf:{folders['clip']}", precision="fp32")


@pytest.fixture(scope="module")
def siglip_bb(folders):
    return create_backbone(f"hf:{folders['siglip']}", precision="fp32")


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def one_line_error(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------------------------------------
# Agreement with open_clip and with transformers' own forward


def test_clip_features_agree_with_open_clip(folders, clip_bb):
    reference = folders["reference"]
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cos_img = torch.cosine_similarity(clip_bb.encode_images(pixels), reference.encode_images(pixels))
    assert cos_img.min() >= 0.9999, cos_img
    cos_txt = torch.cosine_similarity(clip_bb.encode_texts(TEXTS), reference.encode_texts(TEXTS))
    assert cos_txt.min() >= 0.9999, cos_txt
    # Same token ids up to the padding (open_clip pads with 0, this tokenizer with <|endoftext|>).
    ours, theirs = clip_bb.tokenize(TEXTS), reference.tokenize(TEXTS)
    for a, b in zip(ours.tolist(), theirs.tolist()):
        end = b.index(49407) + 1
        assert a[:end] == b[:end]
    assert clip_bb.logit_scale == pytest.approx(reference.logit_scale) and clip_bb.logit_bias == 0.0
    assert clip_bb.preprocess == reference.preprocess and clip_bb.embed_dim == reference.embed_dim


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_token_path_reproduces_encode_texts(kind, clip_bb, siglip_bb):
    bb = clip_bb if kind == "clip" else siglip_bb
    tokens = bb.tokenize(TEXTS)
    via_tokens = bb.encode_token_embeddings(bb.embed_tokens(tokens), tokens)
    reference = bb.encode_texts(TEXTS)  # transformers' own get_text_features
    assert via_tokens.shape == reference.shape == (len(TEXTS), bb.embed_dim)
    assert torch.equal(via_tokens, reference)  # the same operations as transformers' forward, bit for bit
    assert not torch.allclose(reference[0], reference[1])  # different prompts, different features


def test_clip_token_path_accepts_rows_cut_after_eos(clip_bb):
    tokens = clip_bb.tokenize(TEXTS[:2])
    cut = int((tokens == 49407).int().argmax(dim=1).max()) + 1
    full = clip_bb.encode_token_embeddings(clip_bb.embed_tokens(tokens), tokens)
    short = clip_bb.encode_token_embeddings(clip_bb.embed_tokens(tokens[:, :cut]), tokens[:, :cut])
    torch.testing.assert_close(short, full, rtol=0, atol=1e-5)
    assert clip_bb.accepts_truncated_tokens


def test_legacy_clip_configs_pool_at_the_highest_token_id(folders, clip_bb, tmp_path):
    folder = copy_folder(folders["clip"], tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["eos_token_id"] = 2  # as configs converted before transformers PR #24773 say
    (folder / "config.json").write_text(json.dumps(config))
    legacy = create_backbone(f"hf:{folder}", precision="fp32")
    tokens = legacy.tokenize(TEXTS)
    assert torch.equal(legacy.encode_token_embeddings(legacy.embed_tokens(tokens), tokens), legacy.encode_texts(TEXTS))
    torch.testing.assert_close(legacy.encode_texts(TEXTS), clip_bb.encode_texts(TEXTS), rtol=0, atol=1e-6)


def test_token_path_passes_gradients_to_embeddings(siglip_bb):
    tokens = siglip_bb.tokenize(["a photo of a red square."])
    emb = siglip_bb.embed_tokens(tokens).detach().requires_grad_(True)
    siglip_bb.encode_token_embeddings(emb, tokens).sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in siglip_bb.model.parameters())


def test_siglip_reads_its_preprocessing_bias_and_last_position(siglip_bb):
    assert siglip_bb.logit_bias == pytest.approx(-3.5)
    assert siglip_bb.describe()["logit_bias"] == pytest.approx(-3.5)
    assert (siglip_bb.preprocess.mean, siglip_bb.preprocess.std, siglip_bb.preprocess.interpolation) == (
        (0.5,) * 3,
        (0.5,) * 3,
        "bilinear",
    )
    assert siglip_bb.tokenize(["a red square"]).shape == (1, 16)
    assert not siglip_bb.accepts_truncated_tokens  # it pools the last position: cut rows would change it
    pixels = torch.rand(2, 3, 32, 32)
    assert siglip_bb.encode_images(pixels).shape == (2, siglip_bb.embed_dim)


def test_siglip_reports_words_its_vocabulary_cannot_spell(siglip_bb, clip_bb):
    unknown = siglip_bb.unknown_words(["red square", "zebra Ωmega"])
    assert list(unknown) == ["zebra Ωmega"] and "Ωmega" in unknown["zebra Ωmega"]
    assert clip_bb.unknown_words(["zebra Ωmega"]) == {}  # byte-level BPE spells anything


def test_bf16_runs_close_to_fp32(folders, clip_bb):
    bf16 = create_backbone(f"hf:{folders['clip']}", precision="bf16")
    assert bf16.precision == "bf16" and bf16.encoder_fingerprint != clip_bb.encoder_fingerprint
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for ours, ref in (
        (bf16.encode_images(pixels), clip_bb.encode_images(pixels)),
        (bf16.encode_texts(TEXTS), clip_bb.encode_texts(TEXTS)),
    ):
        assert ours.dtype == torch.float32
        assert torch.cosine_similarity(ours, ref).min() > 0.99
    tokens = bf16.tokenize(TEXTS)
    assert torch.equal(bf16.encode_token_embeddings(bf16.embed_tokens(tokens), tokens), bf16.encode_texts(TEXTS))


# ---------------------------------------------------------------------------------------------
# Identity


def test_id_names_the_folder_and_the_weights_hash(folders, clip_bb, tmp_path):
    import hashlib

    digest = hashlib.sha256((folders["clip"] / "model.safetensors").read_bytes()).hexdigest()
    assert clip_bb.id == f"hf/tiny-clip/sha256:{digest}"
    assert clip_bb.describe()["name"] == f"hf:{folders['clip']}"
    again = create_backbone(
        clip_bb.describe()["name"], clip_bb.describe()["pretrained"], precision="fp32"
    )  # how an artifact rebuilds it
    assert again.id == clip_bb.id


def test_id_changes_when_the_weights_change(folders, clip_bb, tmp_path):
    from safetensors.torch import load_file

    folder = copy_folder(folders["clip"], tmp_path / "tiny-clip")
    state = load_file(folder / "model.safetensors")
    state["logit_scale"] = state["logit_scale"] + 1.0
    save_tensors(folder / "model.safetensors", state)
    changed = create_backbone(f"hf:{folder}", precision="fp32")
    assert changed.id != clip_bb.id and changed.id.startswith("hf/tiny-clip/sha256:")
    assert changed.logit_scale == pytest.approx(clip_bb.logit_scale * torch.e, rel=1e-5)


def test_a_different_tokenizer_changes_the_text_cache_key(folders, clip_bb, tmp_path):
    folder = copy_folder(folders["clip"], tmp_path / "tiny-clip")
    merges = (folder / "merges.txt").read_text().splitlines()
    (folder / "merges.txt").write_text("\n".join(merges[:-1]) + "\n")  # one merge fewer: same vocabulary size
    other = create_backbone(f"hf:{folder}", precision="fp32")
    assert other.id == clip_bb.id and other.encoder_fingerprint != clip_bb.encoder_fingerprint


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the thing at fault


@pytest.mark.parametrize(
    "kind, remove, named",
    [
        ("clip", ["merges.txt"], "merges.txt"),
        ("clip", ["vocab.json", "merges.txt"], "vocab.json, merges.txt"),
        ("siglip", ["spiece.model"], "spiece.model"),
    ],
)
def test_missing_tokenizer_file_is_one_line_naming_it(folders, tmp_path, kind, remove, named):
    folder = copy_folder(folders[kind], tmp_path / "m")
    for name in remove:
        (folder / name).unlink()
    with pytest.raises(ArtifactError) as exc:
        create_backbone(f"hf:{folder}", precision="fp32")
    message = one_line_error(exc)
    assert f"missing {named}" in message and str(folder) in message and "tokenizer.json" in message


def test_a_tokenizer_json_alone_is_enough(folders, clip_bb, tmp_path):
    folder = copy_folder(folders["clip"], tmp_path / "m")
    clip_bb._tokenizer.save_pretrained(folder)  # writes tokenizer.json
    (folder / "vocab.json").unlink()
    (folder / "merges.txt").unlink()
    bb = create_backbone(f"hf:{folder}", precision="fp32")
    assert torch.equal(bb.tokenize(TEXTS), clip_bb.tokenize(TEXTS))


def test_a_tokenizer_that_loads_too_few_tokens_is_refused(folders, tmp_path):
    folder = copy_folder(folders["clip"], tmp_path / "m")
    (folder / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ArtifactError) as exc:
        create_backbone(f"hf:{folder}", precision="fp32")
    message = one_line_error(exc)
    assert str(folder) in message and "vocab.json" in message and "49408" in message


@pytest.mark.parametrize(
    "breakage, named",
    [
        ("no-folder", "not found"),
        ("no-config", "config.json"),
        ("bert", "'bert'"),
        ("no-weights", "model.safetensors"),
        ("torn-weights", "model.safetensors"),
        ("foreign-weights", "lacks"),
    ],
)
def test_bad_folders_are_one_line_errors(folders, tmp_path, breakage, named):
    folder = tmp_path / "nothing-here"
    if breakage != "no-folder":
        folder = copy_folder(folders["clip"], tmp_path / "m")
    if breakage == "no-config":
        (folder / "config.json").unlink()
    elif breakage == "bert":
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    elif breakage == "no-weights":
        (folder / "model.safetensors").unlink()
    elif breakage == "torn-weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif breakage == "foreign-weights":
        save_tensors(folder / "model.safetensors", {"something.else": torch.zeros(2)})
    with pytest.raises(ClipAdapterError) as exc:
        create_backbone(f"hf:{folder}", precision="fp32")
    message = one_line_error(exc)
    assert named in message
    assert str(folder) in message or breakage == "bert"  # the bert case names folder/config.json
    if breakage == "bert":
        assert str(folder / "config.json") in message and isinstance(exc.value, ConfigError)


def test_pickled_weights_are_not_read(folders, tmp_path):
    folder = copy_folder(folders["clip"], tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ArtifactError, match="pytorch_model.bin: convert to safetensors"):
        create_backbone(f"hf:{folder}", precision="fp32")


def test_pretrained_is_not_taken_with_an_hf_backbone(folders):
    with pytest.raises(ConfigError, match="--pretrained 'openai' is not used"):
        create_backbone(f"hf:{folders['clip']}", "openai", precision="fp32")
    with pytest.raises(ConfigError, match="needs a model folder"):
        create_backbone("hf:", precision="fp32")


def test_docstring_examples_hold():
    import doctest

    from clip_adapter.backbones import hf

    result = doctest.testmod(hf, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 2


def test_hf_without_transformers_says_how_to_install(folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    with pytest.raises(ConfigError) as exc:
        create_backbone(f"hf:{folders['clip']}", precision="fp32")
    assert "pip install 'clip-adapter[hf]'" in one_line_error(exc)


# ---------------------------------------------------------------------------------------------
# Hub repo ids: the local cache first, offline never a request


def test_repo_id_offline_and_uncached_is_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("socket.create_connection", _no_network)
    with pytest.raises(ArtifactError) as exc:
        create_backbone("hf:someone/tiny-clip", precision="fp32")
    message = one_line_error(exc)
    assert (
        "'someone/tiny-clip'" in message and "HF_HUB_OFFLINE" in message and "--backbone hf:/path/to/folder" in message
    )


def test_repo_id_is_read_from_the_local_cache(folders, tmp_path, monkeypatch, clip_bb):
    from huggingface_hub import constants

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--someone--tiny-clip"
    shutil.copytree(folders["clip"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("socket.create_connection", _no_network)
    bb = create_backbone("hf:someone/tiny-clip", precision="fp32")
    assert bb.id == clip_bb.id.replace("hf/tiny-clip/", "hf/someone/tiny-clip/")
    torch.testing.assert_close(bb.encode_texts(TEXTS[:1]), clip_bb.encode_texts(TEXTS[:1]))


def _no_network(*args, **kwargs):
    raise AssertionError(f"a network connection was attempted: {args}")


# ---------------------------------------------------------------------------------------------
# End to end through the public API


def test_zero_shot_clip_adapter_and_coop_run_end_to_end(clip_bb, tmp_path):
    photos = write_image_folder(tmp_path / "photos", per_class=10, size=32)
    image = next((photos / "red_square").iterdir())
    for method, options in (("zero-shot", {}), ("clip-adapter", {"epochs": 3}), ("coop", {"epochs": 2, "n_ctx": 2})):
        clf = clip_adapter.fit(
            photos, backbone=clip_bb, shots=2, method=method, cache_dir=tmp_path / "cache", **options
        )
        assert 0.0 <= clf.result["test"]["accuracy"] <= 1.0
        assert clf.predict([image], top_k=1)[0]["label"] in {"red square", "green square", "blue square"}
    clf.save_pretrained(tmp_path / "run")  # the CoOp artifact: its prompts need the text encoder again
    loaded = clip_adapter.load(tmp_path / "run")  # rebuilds hf:<folder> from the artifact's record
    assert loaded.backbone.id == clip_bb.id
    assert loaded.predict([image], top_k=3) == clf.predict([image], top_k=3)
