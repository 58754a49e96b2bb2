"""Fine-tuning the encoders: trainable view, trainer, checkpoints, the three remedies, the CLI's errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from clip_adapter.backbones import create_backbone
from clip_adapter.cli import main
from clip_adapter.core.errors import ConfigError, OutputError
from clip_adapter.finetune import RECIPES, TrainableClip, TrainerConfig, finetune, recipe_config, train
from clip_adapter.finetune.checkpoint import write_backbone_checkpoint
from clip_adapter.finetune.losses import hard_negative_infonce
from clip_adapter.finetune.recipes.labclip import fold_into_projection
from clip_adapter.finetune.recipes.negclip import nearest_neighbours
from clip_adapter.finetune.toydata import make_items, pixels
from clip_adapter.finetune.vocab import extend_toy_vocab
from conftest import TINY

# Small enough for seconds per run on 2 cores.
TINY_RUN = {
    "steps": 4,
    "train_items": 16,
    "plain_items": 16,
    "plain_batch": 8,
    "batch_size": 8,
    "val_items": 8,
    "zero_shot_per_class": 2,
    "val_every": 2,
}
TEXTS = ["a red circle and no blue square", "a blue square left of a red circle", "a photo of a star."]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(backbone, n: int = 3) -> torch.Tensor:
    return pixels([it.image for it in make_items("attribution", 5, n)], backbone.preprocess)


@pytest.mark.parametrize("recipe", ["negclip", "labclip", "negation"])
@pytest.mark.parametrize("name", ["toy", TINY])
def test_checkpoint_loads_with_the_trained_weights(tmp_path, name, recipe):
    """Train a few steps, write the checkpoint, load it through create_backbone: same embeddings as the trained
    module.
    """
    runner = RECIPES.get(recipe)()
    cfg = recipe_config(recipe, {**TINY_RUN, "lr": 1e-2 if recipe != "labclip" else 1e-1, "val_every": 100})
    trained = create_backbone(name, "shipped" if name == "toy" else "none", precision="fp32")
    before = trained.encode_texts(TEXTS).clone()
    result, _ = runner.train(trained, cfg, None, "toy-world", tmp_path / "log.csv")
    # Validation runs only at steps 0 and 4: the last step is kept when it scores higher, else step 0.
    weights = write_backbone_checkpoint(trained, tmp_path / "out", {"recipe": recipe})
    loaded = create_backbone(name, str(weights.parent if name == "toy" else weights), precision="fp32")
    assert loaded.weights_id.startswith("sha256:")
    torch.testing.assert_close(loaded.encode_texts(TEXTS), trained.encode_texts(TEXTS), rtol=0, atol=1e-5)
    torch.testing.assert_close(
        loaded.encode_images(_images(loaded)), trained.encode_images(_images(trained)), rtol=0, atol=1e-5
    )
    if result.selected_step:
        assert not torch.allclose(before, loaded.encode_texts(TEXTS), atol=1e-4), "the kept step changed nothing"
    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert {"step", "loss", "lr", "grad_norm", "val_score"} <= set(header)


def test_finetune_writes_a_checkpoint_other_commands_accept(tmp_path):
    out = tmp_path / "neg"
    result = finetune("negation", out=out, config=TINY_RUN)
    meta = json.loads((out / "toy_clip.json").read_text())
    assert meta["recipe"] == "negation" and meta["steps"] == 4 and meta["base_weights"].startswith("toy/")
    assert {"no", "not", "without"} <= set(meta["vocab"]) and meta["wall_time_s"] >= 0
    bb = create_backbone("toy", pretrained=str(out), precision="fp32")
    assert bb.unknown_words(["a red circle and no blue square"]) == {}
    assert result.usage == f"--backbone toy --pretrained {out}"
    with pytest.raises(OutputError, match="already holds"):
        finetune("negation", out=out, config=TINY_RUN)
    finetune("negation", out=out, config=TINY_RUN, overwrite=True)  # our own output: replaced when asked


def test_open_clip_checkpoint_has_a_json_beside_it(tmp_path):
    result = finetune("negclip", backbone=TINY, out=tmp_path / "o", config={**TINY_RUN, "unfreeze": "last-1"})
    meta = json.loads((tmp_path / "o" / "finetuned.json").read_text())
    assert meta["architecture"] == TINY and meta["recipe"] == "negclip" and "--pretrained" in meta["usage"]
    assert result.usage == f"--backbone {TINY} --pretrained {tmp_path / 'o' / 'finetuned.safetensors'}"


def test_labclip_fold_equals_the_transform():
    """Folding A into the text projection gives exactly A(t), for the toy Linear and open_clip's parameter."""
    for name in ("toy", TINY):
        bb = create_backbone(name, "none", precision="fp32")
        gen = torch.Generator().manual_seed(0)
        a = torch.eye(bb.embed_dim) + 0.3 * torch.randn(bb.embed_dim, bb.embed_dim, generator=gen)
        expected = bb.encode_texts(TEXTS) @ a.T
        fold_into_projection(bb.model.text_projection, a)
        torch.testing.assert_close(bb.encode_texts(TEXTS), expected, rtol=1e-4, atol=1e-4)


def test_vocab_extension_keeps_the_base_behaviour_until_trained():
    bb = create_backbone("toy", "shipped", precision="fp32")
    before = bb.encode_texts(TEXTS)
    size = bb.model.token_embedding.num_embeddings
    assert extend_toy_vocab(bb, ["no", "not", "no", "circle"]) == ["no", "not"]
    assert bb.model.token_embedding.num_embeddings == size + 2 == bb.model.cfg.vocab_size == len(bb.tokenizer)
    assert bb.tokenizer.decode(bb.tokenize(["no circle"])[0]) == "<sot> no circle <eot>"
    torch.testing.assert_close(bb.encode_texts(TEXTS), before, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="lower-case"):
        extend_toy_vocab(bb, ["Not!"])


def test_unfreeze_chooses_the_trained_parameters():
    bb = create_backbone(TINY, "none", precision="fp32")
    view = TrainableClip(bb, "text-last-1", precision="fp32")
    names = {n for n, _ in view.trainable_parameters()}
    assert names and all(n.startswith(("transformer.resblocks.1.", "ln_final", "text_projection")) for n in names)
    view.encode_texts(["a red circle"]).sum().backward()
    assert bb.model.transformer.resblocks[1].mlp.c_fc.weight.grad is not None
    assert bb.model.transformer.resblocks[0].mlp.c_fc.weight.grad is None
    assert {n for n, _ in TrainableClip(bb, "image", "fp32").trainable_parameters()} == {
        n for n, _ in bb.model.visual.named_parameters(prefix="visual")
    }
    for bad in ("last-9", "head", "image-last-1"):
        with pytest.raises(ConfigError):
            TrainableClip(
                create_backbone("toy", "none", precision="fp32") if bad == "image-last-1" else bb, bad, "fp32"
            )


def test_hard_negative_loss_prefers_the_true_caption():
    img = torch.nn.functional.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    keys = torch.arange(4)
    right = hard_negative_infonce(img, torch.cat([img, -img]), torch.tensor(10.0), keys, keys)
    wrong = hard_negative_infonce(img, torch.cat([img, img + 0.01]), torch.tensor(10.0), keys, keys)
    assert float(right) < float(wrong)
    assert nearest_neighbours(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.2]]), 1).flatten().tolist() == [2, 2, 0]


def test_trainer_restores_the_best_validated_step():
    w = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        w.weight.fill_(0.0)
    # Loss pulls w to 3, but validation prefers w near 1: the kept weights are the validated best, not the last.
    cfg = TrainerConfig(steps=40, lr=0.1, warmup_steps=0, weight_decay=0.0, val_every=5)
    result = train(
        w, lambda step: ((w.weight - 3.0) ** 2).sum(), cfg, validate=lambda: {"score": -abs(float(w.weight) - 1.0)}
    )
    assert 0 < result.selected_step < 40 and abs(float(w.weight.detach()) - 1.0) < 0.5
    assert abs(float(w.weight.detach()) - 1.0) == pytest.approx(-result.selected["score"], abs=1e-6)


def test_trainer_without_a_validator_keeps_the_last_step(tmp_path):
    """No validator: the weights of the last step are kept (not the initial ones a constant score would choose)."""
    w = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        w.weight.fill_(0.0)
    cfg = TrainerConfig(steps=40, lr=0.1, warmup_steps=0, weight_decay=0.0, val_every=5)
    result = train(w, lambda step: ((w.weight - 3.0) ** 2).sum(), cfg, log_path=tmp_path / "log.csv")
    assert result.selected_step == 40 and result.selected == {} and result.initial == {}
    assert float(w.weight.detach()) > 2.0  # trained, not restored to 0
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,grad_norm" and len(rows) == 41  # one row a step, no validation rows


def test_the_optimisation_module_examples_run():
    import doctest

    from clip_adapter.core import optim

    result = doctest.testmod(optim, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow
def test_negation_training_improves_its_validation_metric(tmp_path):
    """A short run of the real recipe: negation accuracy on held-out validation items goes up."""
    cfg = {
        "steps": 60,
        "train_items": 400,
        "plain_items": 200,
        "batch_size": 32,
        "plain_batch": 16,
        "val_items": 150,
        "zero_shot_per_class": 4,
        "val_every": 20,
        "lr": 2e-4,
        "max_zero_shot_drop": 100.0,
    }
    summary = finetune("negation", out=tmp_path / "n", config=cfg).summary
    start, kept = (
        summary["validation_initial"]["negation-benchmark"],
        summary["validation_selected"]["negation-benchmark"],
    )
    assert summary["selected_step"] > 0 and kept >= start + 0.1, (start, kept)


def test_captions_file_is_training_data(tmp_path):
    from PIL import Image

    entries = []
    for i, (colour, name) in enumerate([((200, 30, 30), "red"), ((30, 30, 200), "blue")] * 3):
        Image.new("RGB", (40, 40), colour).save(tmp_path / f"{i}.png")
        other = "blue" if name == "red" else "red"
        entries.append(
            {
                "image": f"{i}.png",
                "caption": f"a {name} square next to a {other} circle",
                "negatives": [f"a {other} square next to a {name} circle"],
                "labels": [f"{name} square"],
            }
        )
    (tmp_path / "c.json").write_text(json.dumps(entries))
    for recipe in ("negclip", "negation"):
        result = finetune(recipe, backbone=TINY, out=tmp_path / recipe, data=tmp_path / "c.json", config=TINY_RUN)
        assert result.summary["data"] == str(tmp_path / "c.json") and result.weights.is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--recipe", "bogus"], "unknown recipe 'bogus'"),
        (["--recipe", "negclip", "--set", "nonsense=1"], "has no option nonsense"),
        (["--recipe", "negclip", "--set", "lr=-1"], "lr must be in"),
        (["--recipe", "labclip", "--set", "unfreeze=all"], "labclip keeps the encoders frozen"),
        (["--recipe", "negation", "--set", "unfreeze=image"], "text encoder only"),
        (["--recipe", "negclip", "--set", "seed=1000"], "not a training seed"),
        (["--recipe", "negclip", "--data", "{missing}"], "captions file not found"),
        (["--recipe", "negclip", "--data", "{corrupt}"], "is not valid JSON"),
        (["--recipe", "negclip", "--data", "{noimage}"], "entry 0: image"),
        (["--recipe", "negation", "--data", "{nolabels}"], 'needs "labels"'),
        (["--recipe", "negclip", "--backbone", "hf:nowhere"], "supports the toy and open_clip backbones"),
        (["--recipe", "negclip", "--pretrained", "{missing}"], "toy checkpoint"),
        (["--recipe", "negclip", "--out", "{foreign}"], "did not write"),
    ],
)
def test_bad_inputs_are_one_line(tmp_path, capsys, argv, message):
    from PIL import Image

    (tmp_path / "corrupt.json").write_text("[{")
    (tmp_path / "noimage.json").write_text(json.dumps([{"image": "gone.png", "caption": "a cat"}]))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "nolabels.json").write_text(json.dumps([{"image": "a.png", "caption": "a cat"}] * 4))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("mine")
    paths = {
        "missing": tmp_path / "missing.json",
        "corrupt": tmp_path / "corrupt.json",
        "noimage": tmp_path / "noimage.json",
        "nolabels": tmp_path / "nolabels.json",
        "foreign": tmp_path / "foreign",
    }
    argv = [a.format(**paths) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    code = main(["finetune", *argv, "--set", "steps=1"] if "--set" not in argv else ["finetune", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "foreign" / "thesis.tex").read_text() == "mine"


def test_cli_lists_options_and_trains(tmp_path, capsys):
    assert main(["finetune", "--recipe", "labclip", "--list-options"]) == 0
    assert "batch_size = 256" in capsys.readouterr().out
    argv = ["finetune", "--recipe", "labclip", "--out", str(tmp_path / "l")] + [
        f"--set={k}={v}" for k, v in TINY_RUN.items()
    ]
    assert main(argv) == 0
    assert "--backbone toy --pretrained" in capsys.readouterr().out
    assert create_backbone("toy", pretrained=str(tmp_path / "l"), precision="fp32").weights_id.startswith("sha256:")


def test_same_seed_same_weights(tmp_path):
    """A run is a function of its config: the batch of step k depends only on (seed, k)."""
    cfg = {**TINY_RUN, "val_every": 100, "lr": 1e-2}
    runs = {
        name: finetune("negclip", backbone=TINY, out=tmp_path / name, config={**cfg, "seed": seed})
        for name, seed in (("a", 0), ("b", 0), ("c", 1))
    }
    losses = {
        name: [row["loss"] for row in csv.DictReader((r.out / "finetune_log.csv").open())] for name, r in runs.items()
    }
    assert runs["a"].weights.read_bytes() == runs["b"].weights.read_bytes() and losses["a"] == losses["b"]
    assert losses["a"] != losses["c"]


def test_new_words_train_even_when_only_the_last_text_blocks_do():
    from clip_adapter.backbones import create_backbone
    from clip_adapter.finetune.trainable import TrainableClip

    view = TrainableClip(create_backbone("toy", pretrained="none", precision="fp32"), unfreeze="text-last-1")
    assert not view.model.token_embedding.weight.requires_grad
    assert view.extend_vocab(["no"]) == ["no"]
    assert view.model.token_embedding.weight.requires_grad  # else "no" would stay a copy of <unk> forever
