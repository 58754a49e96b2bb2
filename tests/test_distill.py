"""CLIP-KD: the losses, the trainer, students as backbone checkpoints (toy and open_clip), the CLI, adapter
distillation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clip_adapter.backbones import create_backbone
from clip_adapter.cli import main as cli
from clip_adapter.core.errors import ArtifactError, ConfigError, DataError
from clip_adapter.distill import (
    DistillConfig,
    KDLoss,
    Student,
    Teacher,
    crd_loss,
    distill,
    fd_loss,
    icl_loss,
    save_student,
)
from clip_adapter.distill.data import CaptionFile, toy_batches
from conftest import TINY


@pytest.fixture(scope="module")
def teacher_bb():
    return create_backbone("toy", precision="fp32")


def test_fd_is_mse_of_normalised_embeddings_and_ignores_scale():
    torch.manual_seed(0)
    s, t = torch.randn(6, 8), torch.randn(6, 8)
    assert float(fd_loss(s, s, 3 * s, 0.5 * s)) < 1e-12
    expected = ((F.normalize(s, dim=-1) - F.normalize(t, dim=-1)) ** 2).mean() * 2  # image + text, mean per element
    assert torch.allclose(fd_loss(s, s, t, t), expected)


def test_icl_anchors_the_student_against_teacher_embeddings():
    torch.manual_seed(0)
    s_img, s_txt, t_img, t_txt = (torch.randn(5, 8, requires_grad=i < 2) for i in range(4))
    loss = icl_loss(s_img, s_txt, t_img, t_txt, torch.tensor(10.0), torch.arange(5))
    labels = torch.arange(5)
    n = lambda x: F.normalize(x, dim=-1)  # noqa: E731
    expected = (
        F.cross_entropy(10 * n(s_img) @ n(t_txt).T, labels) + F.cross_entropy(10 * n(s_txt) @ n(t_img).T, labels)
    ) / 2
    assert torch.allclose(loss, expected)
    loss.backward()
    assert s_img.grad is not None and s_txt.grad is not None  # the student learns; the teacher is a constant


def test_crd_is_zero_only_when_the_student_reproduces_the_teacher_relations():
    torch.manual_seed(0)
    t_img, t_txt = torch.randn(6, 16), torch.randn(6, 16)
    s_img = torch.randn(6, 8, requires_grad=True)
    assert float(crd_loss(t_img, t_txt, 20.0, t_img, t_txt, 20.0)) < 1e-6
    loss = crd_loss(
        s_img, torch.randn(6, 8), 20.0, t_img, t_txt, 20.0
    )  # different widths: only B x B relations compared
    assert float(loss.detach()) > 0.1
    loss.backward()
    assert s_img.grad.abs().sum() > 0


def test_kd_loss_projects_only_when_dimensions_differ_and_refuses_unknown_losses():
    assert isinstance(KDLoss(("fd",), 8, 8).proj_img, torch.nn.Identity)
    assert isinstance(KDLoss(("fd",), 8, 16).proj_img, torch.nn.Linear)
    with pytest.raises(ConfigError, match="unknown distillation loss 'kd'"):
        KDLoss(("kd",), 8, 8)
    with pytest.raises(ConfigError, match="losses"):
        DistillConfig(losses=("fd", "mse"))
    s, t, g = torch.randn(4, 8), torch.randn(4, 16), torch.arange(4)
    total, parts = KDLoss(("fd", "icl", "crd"), 8, 16)(s, s, torch.tensor(14.0), t, t, 14.0, g)
    assert set(parts) == {"clip", "fd", "icl", "crd"}
    assert (
        abs(float(total.detach()) - (parts["clip"] + 2000 * parts["fd"] + parts["icl"] + parts["crd"])) < 1e-3
    )  # the paper's λ


def test_fd_distillation_pulls_the_student_towards_the_teacher(teacher_bb, tmp_path):
    cfg = DistillConfig(losses=("fd",), steps=10, batch_size=8, lr=3e-3, warmup_steps=0, workers=0)
    _, images, texts = next(toy_batches(0, 1, 8, 0))
    batches = [(step, images, texts) for step in range(cfg.steps)]  # one batch again and again: FD must fall fast
    run = distill(Teacher(teacher_bb, memo=True), Student("toy-tiny"), cfg, batches, tmp_path)
    first, last = run.log[0]["fd"], run.log[-1]["fd"]
    assert last < 0.6 * first, (first, last)  # measured: 0.0307 -> 0.0135
    rows = (tmp_path / "distill_log.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["step", "total", "clip", "fd"] and len(rows) == 11


def test_teacher_memo_gives_identical_embeddings(teacher_bb):
    teacher = Teacher(teacher_bb, memo=True)
    _, images, texts = next(toy_batches(0, 1, 4, 0))
    a = teacher.embed(0, images, texts)
    assert teacher.embed(0, images, texts) is a  # served from the memo
    assert torch.equal(Teacher(teacher_bb).embed(0, images, texts)[0], a[0])


def test_toy_student_is_a_backbone_checkpoint(teacher_bb, tmp_path):
    cfg = DistillConfig(losses=("crd",), steps=2, batch_size=4, workers=0)
    run = distill(Teacher(teacher_bb), Student("toy-tiny", seed=3), cfg, toy_batches(0, 2, 4, 0))
    name, pretrained = save_student(tmp_path, run, cfg, teacher_bb, {})
    loaded = create_backbone(name, pretrained, precision="fp32")
    assert loaded.embed_dim == 32 and loaded.weights_id.startswith("sha256:")
    px = torch.randn(2, 3, 64, 64)
    run.student.model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.encode_images(px), run.student.encode_image(px), atol=1e-5)
    assert json.loads((tmp_path / "distill.json").read_text())["label"] == "clip+crd"


def test_open_clip_student_distils_from_the_toy_teacher_and_loads_back(teacher_bb, tmp_path):
    cfg = DistillConfig(losses=("fd", "icl", "crd"), steps=2, batch_size=4, workers=0)
    student = Student(TINY, seed=0)  # 32-d embeddings from a 128-d teacher: the projections are used
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    run = distill(Teacher(teacher_bb), student, cfg, toy_batches(0, 2, 4, 0))
    assert all(np.isfinite(row["total"]) for row in run.log)
    changed = [k for k, v in student.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("visual.") for k in changed) and any(k.startswith("transformer.") for k in changed)
    name, pretrained = save_student(tmp_path, run, cfg, teacher_bb, {})
    loaded = create_backbone(name, pretrained, precision="fp32")
    assert name == TINY and loaded.preprocess.image_size == 32
    with torch.no_grad():
        expected = student.encode_text(student.tokenize(["a red circle."]))
    assert torch.allclose(loaded.encode_texts(["a red circle."]), expected, atol=1e-5)


def test_caption_file_source_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        entries.append({"image": f"{i}.png", "caption": f"a photo number {i}"})
    (tmp_path / "pairs.json").write_text(json.dumps(entries))
    source = CaptionFile(tmp_path / "pairs.json", 48)
    batches = list(source.batches(seed=0, steps=4, batch_size=2))
    assert [b[1].shape for b in batches] == [(2, 48, 48, 3)] * 4  # centre-cropped to a square, resized
    for epoch in (batches[:2], batches[2:]):  # each epoch shows every pair exactly once
        assert sorted(t for _, _, texts in epoch for t in texts) == [e["caption"] for e in entries]
    assert [b[2] for b in source.batches(0, 4, 2)] == [b[2] for b in batches]  # a function of the seed
    (tmp_path / "bad.json").write_text(json.dumps([entries[0], {"image": "0.png"}]))
    with pytest.raises(DataError, match="entry 1"):
        CaptionFile(tmp_path / "bad.json", 48)
    (tmp_path / "missing.json").write_text(json.dumps([entries[0], {"image": "nope.png", "caption": "x"}]))
    with pytest.raises(DataError, match="nope.png"):
        CaptionFile(tmp_path / "missing.json", 48)


def test_cli_distils_a_toy_student_that_train_accepts(tmp_path, capsys):
    out = tmp_path / "kd"
    code = cli(
        [
            "distill",
            "--student",
            "toy-tiny",
            "--loss",
            "fd,crd",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} >= {
        "toy_clip.safetensors",
        "toy_clip.json",
        "distill.json",
        "distill_log.csv",
    }
    data = tmp_path / "colours"
    from clip_adapter.toyworld import write_task_dataset

    write_task_dataset("color", "photo", data, 2, 1, 1)
    code = cli(
        [
            "train",
            "--data",
            str(data),
            "--backbone",
            "toy",
            "--pretrained",
            str(out),
            "--shots",
            "1",
            "--method",
            "zero-shot",
            "--out",
            str(tmp_path / "art"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    # the same output again: refused without --overwrite, replaced with it
    args = [
        "distill",
        "--student",
        "toy-tiny",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--out",
        str(out),
    ]
    assert cli(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert cli([*args, "--overwrite"]) == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--loss", "kd"], "losses"),
        (["--teacher-artifact", "x"], "--data"),
        (["--data", "x"], "--captions"),
        (["--steps", "0"], "steps"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    code = cli(["distill", "--student", "toy-tiny", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err and err.startswith("error:")


def _teacher_adapter(backbone, classnames, templates):
    """A CLIP-Adapter classifier on ``backbone`` with random adapter weights (no few-shot fit needed here)."""
    from clip_adapter.artifacts import Classifier
    from clip_adapter.distill.adapted import class_embeddings
    from clip_adapter.features import default_cache_dir
    from clip_adapter.methods.clip_adapter import ClipAdapter, ClipAdapterHead

    torch.manual_seed(0)
    meta = {"num_classes": len(classnames), "embed_dim": backbone.embed_dim, "logit_scale": backbone.logit_scale}
    head = ClipAdapterHead(ClipAdapter.make_config(alpha=0.6), meta)
    with torch.no_grad():
        head.text.copy_(class_embeddings(backbone, classnames, templates, default_cache_dir()))
    return Classifier("clip-adapter", head.eval(), classnames, templates, backbone.describe())


def test_adapted_teacher_distils_into_a_student_adapter_artifact(teacher_bb, tmp_path):
    import clip_adapter
    from clip_adapter.data import load_dataset
    from clip_adapter.distill.adapted import AdapterDistillConfig, distill_adapter
    from clip_adapter.toyworld import write_task_dataset

    data = write_task_dataset("color", "photo", tmp_path / "data", 4, 0, 2)
    dataset = load_dataset(data)
    teacher = _teacher_adapter(teacher_bb, dataset.classnames, dataset.templates)
    cfg = DistillConfig(losses=("fd",), steps=2, batch_size=4, workers=0)
    run = distill(Teacher(teacher_bb), Student("toy-tiny"), cfg, toy_batches(0, 2, 4, 0))
    (tmp_path / "s").mkdir()
    student_bb = create_backbone(*save_student(tmp_path / "s", run, cfg, teacher_bb, {}), precision="fp32")
    clf, info = distill_adapter(teacher, teacher_bb, student_bb, data, AdapterDistillConfig(epochs=30))
    assert info["train_images"] == 32 and info["final_loss"] < info["first_loss"]
    assert clf.backbone["id"] == student_bb.id and clf.head.config.alpha == 0.6
    saved = clf.save_pretrained(tmp_path / "art")
    again = clip_adapter.load(saved)  # rebuilt from the record: the student checkpoint
    assert again.backbone.id == student_bb.id
    assert 0.0 <= again.evaluate(data, split="test")["accuracy"] <= 1.0
    zero_shot = clf.__class__("zero-shot", clf.head, clf.classnames, clf.templates, teacher_bb.describe())
    with pytest.raises(ArtifactError, match="needs a clip-adapter one"):
        distill_adapter(zero_shot, teacher_bb, student_bb, data)
