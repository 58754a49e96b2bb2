"""CoOp and CoCoOp: the shared method checks, on a real (tiny, random) open_clip text encoder.

The image side is synthetic: separable class clusters in the backbone's
embedding space. The text side is the tiny model's encoder, so zero-shot is
poor by construction and anything that learns from the shots must beat it.
Runs on one thread: these models are so small that OpenMP's fork/join on a
busy machine costs more than the arithmetic (see clip_adapter.core.threads).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clip_adapter.artifacts import Classifier
from clip_adapter.core.errors import ArtifactError, ConfigError
from clip_adapter.core.threads import torch_threads
from clip_adapter.methods import FewShotData, get_method
from clip_adapter.methods.prompt_learner import build_layout
from conftest import assert_improves_on_zero_shot

CLASSNAMES = ["red square", "green square", "blue square", "yellow circle", "purple star"]
TEMPLATE = "a photo of a {}."
CASES = [
    ("coop", {"n_ctx": 4, "epochs": 30, "lr": 1e-2}),
    ("coop", {"n_ctx": 4, "epochs": 30, "lr": 1e-2, "csc": True, "class_position": "middle"}),
    ("coop", {"epochs": 30, "lr": 1e-2, "ctx_init": "a photo of a", "class_position": "front"}),
    ("cocoop", {"epochs": 20, "lr": 2e-2}),
]
IDS = ["coop", "coop-csc-middle", "coop-init-front", "cocoop"]


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def prompt_data(
    backbone, seed: int = 0, protocol: str = "val", shots: int = 8, views: int = 3
) -> tuple[FewShotData, torch.Tensor, torch.Tensor]:
    """Separable clusters of dim ``backbone.embed_dim``; text = the backbone's zero-shot prompts."""
    gen = torch.Generator().manual_seed(seed)
    c, d = len(CLASSNAMES), backbone.embed_dim
    means = F.normalize(torch.randn(c, d, generator=gen), dim=1) * 3

    def draw(n_per_class: int, extra: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(c).repeat_interleave(n_per_class)
        centre = means[labels].view(len(labels), *([1] * len(extra)), d)
        return centre + 0.6 * torch.randn(len(labels), *extra, d, generator=gen), labels

    train, train_y = draw(shots, (views,))
    val, val_y = draw(4)
    test, test_y = draw(20)
    text = F.normalize(backbone.encode_texts([TEMPLATE.format(n) for n in CLASSNAMES]), dim=-1)
    data = FewShotData(train, train_y, val, val_y, text, 30.0, list(CLASSNAMES), (TEMPLATE,), seed, protocol, backbone)
    return data, test, test_y


def fit(backbone, method: str, overrides: dict, **data_kwargs):
    data, test_x, test_y = prompt_data(backbone, **data_kwargs)
    cls = get_method(method)
    return cls(cls.make_config(**overrides)).fit(data), data, test_x, test_y


def save_load(result, data, backbone, path, method, load_backbone="same"):
    Classifier(
        method, result.head, data.classnames, data.templates, backbone.describe(), result.selected
    ).save_pretrained(path)
    return Classifier.from_pretrained(path, backbone=backbone if load_backbone == "same" else load_backbone)


@pytest.mark.parametrize("method,overrides", CASES, ids=IDS)
def test_training_improves_on_zero_shot(tiny_backbone, method, overrides):
    result, data, test_x, test_y = fit(tiny_backbone, method, overrides)
    assert_improves_on_zero_shot(result.head, data, test_x, test_y)


@pytest.mark.parametrize("method,overrides", CASES, ids=IDS)
def test_logits_finite_and_save_load_identical(tiny_backbone, method, overrides, tmp_path):
    result, data, test_x, _ = fit(tiny_backbone, method, {**overrides, "epochs": 2})
    logits = result.head.predict_logits(test_x)
    assert logits.shape == (len(test_x), data.num_classes) and torch.isfinite(logits).all()
    loaded = save_load(result, data, tiny_backbone, tmp_path / "a", method)
    assert torch.equal(loaded.logits(test_x), logits)
    assert loaded.head.config == result.head.config
    state = result.head.state_dict()
    assert state["tokens"].dtype == torch.int64 and state["ctx"].dtype == torch.float32
    assert all(k in ("ctx", "tokens", "slots", "text") or k.startswith("meta_net.") for k in state), (
        "backbone weights saved"
    )
    if method == "coop":  # predicts from its stored text features: no backbone needed
        assert torch.equal(Classifier.from_pretrained(tmp_path / "a").logits(test_x), logits)


def test_cocoop_needs_its_backbone_to_load(tiny_backbone, tmp_path):
    result, data, *_ = fit(tiny_backbone, "cocoop", {"epochs": 1})
    with pytest.raises(ArtifactError, match="backbone"):
        save_load(result, data, tiny_backbone, tmp_path / "a", "cocoop", load_backbone=None)
    with pytest.raises(ArtifactError, match="backbone"):
        get_method("cocoop").build_head(result.head.config, result.head.meta, None)


def test_coop_head_builds_without_a_backbone(tiny_backbone):
    result, data, test_x, _ = fit(tiny_backbone, "coop", {"n_ctx": 4, "epochs": 1, "csc": True})
    head = get_method("coop").build_head(result.head.config, result.head.meta)
    assert head.backbone is None and head.ctx.shape == (data.num_classes, 4, result.head.meta["ctx_width"])
    head.load_state_dict(result.head.state_dict())
    assert torch.equal(head.predict_logits(test_x), result.head.predict_logits(test_x))


def test_meta_holds_every_shape(tiny_backbone):
    result, data, *_ = fit(tiny_backbone, "cocoop", {"epochs": 1})
    meta = result.head.meta
    width = tiny_backbone.embed_tokens(torch.zeros(1, 1, dtype=torch.long)).shape[-1]
    assert meta == {
        "num_classes": 5,
        "embed_dim": tiny_backbone.embed_dim,
        "ctx_width": width,
        "n_ctx": 4,
        "context_length": tiny_backbone.tokenize([""]).shape[1],
        "logit_scale": 30.0,
        "meta_hidden": max(1, tiny_backbone.embed_dim // 16),
    }
    assert result.head.config.n_ctx == 4  # "a photo of a" is four tokens


# --- prompt assembly: the learned prompt with the phrase's embeddings is the zero-shot prompt -----------------------


def _phrase_embeddings(backbone, phrase: str) -> torch.Tensor:
    tokens = backbone.tokenize([phrase])
    n = int((tokens[0] != 0).sum()) - 2
    return backbone.embed_tokens(tokens)[0, 1 : 1 + n].float()


@pytest.mark.parametrize("ctx_init", ["", "a photo of a"])
@pytest.mark.parametrize(
    "position,sentence",
    [("end", "a photo of a {}."), ("middle", "a photo {} of a."), ("front", "{} a photo of a.")],
)
@pytest.mark.parametrize("csc", [False, True])
def test_coop_prompt_with_phrase_context_is_the_zero_shot_prompt(tiny_backbone, ctx_init, position, sentence, csc):
    method = get_method("coop")
    data, *_ = prompt_data(tiny_backbone)
    cfg = method.make_config(n_ctx=4, ctx_init=ctx_init, class_position=position, csc=csc)
    layout = build_layout(tiny_backbone, CLASSNAMES, cfg.n_ctx, position, ctx_init)
    from clip_adapter.methods.prompt_learner import prompt_meta

    head = method.Head(cfg, prompt_meta(data, layout, tiny_backbone), tiny_backbone)
    head.set_layout(layout)
    phrase = _phrase_embeddings(tiny_backbone, "a photo of a")
    ctx = phrase.expand(len(CLASSNAMES), -1, -1) if csc else phrase
    with torch.no_grad():
        prompts = head.class_features(ctx)
    expected = tiny_backbone.encode_texts([sentence.format(n) for n in CLASSNAMES])
    assert torch.allclose(prompts, expected, atol=1e-5)
    if position == "end":
        assert torch.allclose(F.normalize(prompts, dim=-1), data.text, atol=1e-5)


def test_init_phrase_starts_coop_at_zero_shot(tiny_backbone):
    # Zero epochs: the head is the initial prompt, which must classify exactly as zero-shot does.
    result, data, test_x, _ = fit(tiny_backbone, "coop", {"ctx_init": "a photo of a", "epochs": 0})
    zs = get_method("zero-shot")().fit(data).head
    assert torch.allclose(result.head.predict_logits(test_x), zs.predict_logits(test_x), atol=1e-4)


def test_cocoop_with_a_silent_meta_net_is_the_zero_shot_prompt(tiny_backbone):
    result, data, test_x, _ = fit(tiny_backbone, "cocoop", {"epochs": 0})
    head = result.head
    with torch.no_grad():
        head.meta_net[2].weight.zero_()
        head.meta_net[2].bias.zero_()
        text = head.class_features(F.normalize(test_x[:3], dim=-1))
    assert text.shape == (3, data.num_classes, tiny_backbone.embed_dim)
    for per_image in text:
        assert torch.allclose(F.normalize(per_image, dim=-1), data.text, atol=1e-5)


def test_cocoop_prompts_depend_on_the_image(tiny_backbone):
    result, _, test_x, _ = fit(tiny_backbone, "cocoop", {"epochs": 1})
    with torch.no_grad():
        text = result.head.class_features(F.normalize(test_x[:2], dim=-1))
    assert not torch.allclose(text[0], text[1])


def test_cocoop_batched_prediction_matches_one_image_at_a_time(tiny_backbone):
    result, _, test_x, _ = fit(tiny_backbone, "cocoop", {"epochs": 1, "prompt_batch": 7})
    batched = result.head.predict_logits(test_x[:6])
    single = torch.cat([result.head.predict_logits(test_x[i : i + 1]) for i in range(6)])
    assert torch.allclose(batched, single, atol=1e-5)


# --- selection, determinism, schedule, presets -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["coop", "cocoop"])
def test_lr_and_epoch_are_chosen_on_validation_and_recorded(tiny_backbone, method):
    result, *_ = fit(tiny_backbone, method, {"n_ctx": 4, "epochs": 4, "lr_grid": (1e-3, 1e-2)})
    selection = result.selected
    assert selection["protocol"] == "val" and selection["chosen_on"] == "few-shot validation split"
    assert selection["chosen"]["lr"] in (2e-3, 1e-3, 1e-2) and 1 <= selection["chosen"]["best_epoch"] <= 4
    assert len(result.history) == 3 and result.head.config.lr == selection["chosen"]["lr"]
    assert result.val_accuracy is not None


def test_protocol_none_uses_the_defaults(tiny_backbone):
    result, *_ = fit(tiny_backbone, "coop", {"n_ctx": 4, "epochs": 2, "lr": 5e-3, "lr_grid": (1e-3,)}, protocol="none")
    assert result.selected["chosen"]["lr"] == 5e-3 and len(result.history) == 1


@pytest.mark.parametrize("method", ["coop", "cocoop"])
def test_deterministic_given_the_seed(tiny_backbone, method):
    runs = [fit(tiny_backbone, method, {"n_ctx": 4, "epochs": 2}) for _ in range(2)]
    (a, _, test_x, _), (b, *_) = runs
    assert torch.equal(a.head.ctx, b.head.ctx)
    assert torch.equal(a.head.predict_logits(test_x), b.head.predict_logits(test_x))
    other, *_ = fit(tiny_backbone, method, {"n_ctx": 4, "epochs": 2}, seed=1)
    assert not torch.equal(other.head.ctx, a.head.ctx)


def test_constant_warmup_runs_at_the_warmup_lr(tiny_backbone):
    data, *_ = prompt_data(tiny_backbone)
    method = get_method("coop")
    cfg = method.make_config(
        "official", n_ctx=4, ctx_init="a photo of a", epochs_by_shots=(), epochs=1, warmup_lr=0.0, weight_decay=0.0
    )
    result = method(cfg).fit(data)
    start = _phrase_embeddings(tiny_backbone, "a photo of a")
    assert torch.equal(result.head.ctx, start), "lr 0 during the warm-up epoch must leave the context alone"
    assert (
        result.history[0]["epochs_run"] == 1 and result.history[0]["steps"] == 1
    )  # 40 images, batch 32: Dassl drops the partial 8
    # After the warm-up the peak lr applies.
    moved = method(cfg.replace(epochs=2)).fit(data)
    assert not torch.equal(moved.head.ctx, start) and moved.history[0]["epochs_run"] == 2


def test_epochs_follow_the_shots_table(tiny_backbone):
    result, *_ = fit(tiny_backbone, "coop", {"n_ctx": 4, "epochs_by_shots": ("1:1", "4:2", "16:5")}, shots=8)
    assert result.head.config.epochs == 2 and result.history[0]["epochs_run"] == 2


def test_official_presets_are_the_papers_recipes():
    coop = get_method("coop").make_config("official")
    assert (coop.optimizer, coop.lr, coop.momentum, coop.weight_decay, coop.batch_size) == ("sgd", 2e-3, 0.9, 5e-4, 32)
    assert (coop.warmup_type, coop.warmup_epochs, coop.warmup_lr, coop.n_ctx, coop.class_position, coop.csc) == (
        "constant",
        1.0,
        1e-5,
        16,
        "end",
        False,
    )
    assert [coop.epochs_for(s) for s in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert coop.lr_grid == () and not coop.select_epoch  # a fixed lr and the last epoch, as the official code
    cocoop = get_method("cocoop").make_config("official")
    assert (cocoop.optimizer, cocoop.lr, cocoop.batch_size, cocoop.epochs, cocoop.n_ctx, cocoop.ctx_init) == (
        "sgd",
        2e-3,
        1,
        10,
        4,
        "a photo of a",
    )
    assert (cocoop.warmup_type, cocoop.warmup_lr, cocoop.momentum, cocoop.weight_decay) == ("constant", 1e-5, 0.9, 5e-4)
    assert cocoop.lr_grid == () and not cocoop.select_epoch


def test_bad_options_are_config_errors(tiny_backbone):
    method = get_method("coop")
    with pytest.raises(ConfigError):
        method.make_config(class_position="left")
    with pytest.raises(ConfigError):
        method.make_config(warmup_type="cosine")
    with pytest.raises(ConfigError, match="SHOTS:EPOCHS"):
        method.make_config(epochs_by_shots=("8-200",))
    with pytest.raises(ConfigError, match="tokens"):
        build_layout(tiny_backbone, ["a " * 40], 4, "end")
    data, *_ = prompt_data(tiny_backbone)
    data.backbone = None
    with pytest.raises(ConfigError, match="backbone"):
        method(method.make_config(epochs=1)).fit(data)


def test_bf16_backbone_trains_float32_parameters():
    from clip_adapter.backbones import create_backbone

    backbone = create_backbone("test-tiny-vit", "none", precision="bf16")
    for method in ("coop", "cocoop"):
        result, _, test_x, _ = fit(backbone, method, {"n_ctx": 4, "epochs": 2})
        assert all(p.dtype == torch.float32 for p in result.head.parameters())
        logits = result.head.predict_logits(test_x)
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_coop_stored_text_is_the_prompts_features_in_any_chunking(tiny_backbone):
    result, *_ = fit(tiny_backbone, "coop", {"n_ctx": 4, "epochs": 2, "csc": True, "prompt_batch": 2})
    with torch.no_grad():
        assert torch.allclose(result.head.text, result.head.class_features(), atol=1e-5)


@pytest.mark.parametrize("preset", [None, "official"])
def test_non_finite_loss_stops_training_naming_the_step(tiny_backbone, preset):
    from clip_adapter.core.errors import TrainingError

    data, *_ = prompt_data(tiny_backbone)
    data.train[0, :, 0] = float("nan")
    method = get_method("coop")
    with pytest.raises(TrainingError, match=r"non-finite .* at step \d+"):
        method(method.make_config(preset, n_ctx=4, epochs=2, epochs_by_shots=())).fit(data)


class TruncatingBackbone:
    """The tiny backbone with the proposed ``accepts_truncated_tokens`` behaviour (rows cut after the last <eot>)."""

    accepts_truncated_tokens = True

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_token_embeddings(self, embeddings, tokens):
        from open_clip.transformer import text_global_pool

        m, n = self.inner.model, embeddings.shape[1]
        x = embeddings.to(self.inner.dtype) + m.positional_embedding[:n].to(self.inner.dtype)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:n, :n]))
        return (text_global_pool(x, tokens, m.text_pool_type) @ m.text_projection).float()


@pytest.mark.parametrize("method", ["coop", "cocoop"])
def test_prompts_cut_after_the_last_eot_give_the_same_features(tiny_backbone, method):
    result, _, test_x, _ = fit(tiny_backbone, method, {"n_ctx": 4, "epochs": 1, "class_position": "middle"})
    head = result.head
    image = F.normalize(test_x[:2], dim=-1)
    with torch.no_grad():
        full = head.class_features() if method == "coop" else head.class_features(image)
        head.attach(TruncatingBackbone(tiny_backbone))
        cut = head.class_features() if method == "coop" else head.class_features(image)
    assert head.base_embeddings().shape[1] < head.tokens.shape[1]
    assert torch.allclose(cut, full, atol=1e-5)


@pytest.mark.parametrize(
    "method,overrides", [("coop", {}), ("coop", {"csc": True}), ("cocoop", {})], ids=["coop", "coop-csc", "cocoop"]
)
def test_chunked_training_gives_the_same_gradients(tiny_backbone, method, overrides):
    result, data, test_x, test_y = fit(tiny_backbone, method, {"n_ctx": 4, "epochs": 1, **overrides})
    head = result.head.train()
    grads = []
    for prompt_batch in (10_000, 3):  # one call; then 3 prompts (CoOp) or 1 image (CoCoOp) per checkpointed call
        head.config = head.config.replace(prompt_batch=prompt_batch)
        head.zero_grad()
        F.cross_entropy(head(test_x[:6]), test_y[:6]).backward()
        grads.append([p.grad.clone() for p in head.parameters()])
    for whole, chunked in zip(*grads):
        assert torch.allclose(whole, chunked, rtol=1e-4, atol=1e-5), (whole - chunked).abs().max()
