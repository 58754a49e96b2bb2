"""Golden-output regression tests: today's numbers, pinned, so refactors that should not change results are checked.

What is pinned (one JSON file each under ``tests/golden/``):

- ``methods.json``: every registered method (except ``auto``, which only picks
  among the others) fitted on a tiny seeded synthetic :class:`FewShotData`
  (6 classes × 4 shots × 3 views, D = 32; CoOp and CoCoOp on 128-d features
  with the shipped toy CLIP's text encoder), with every config field given
  explicitly: the logits on 8 fixed probe rows and the chosen hyper-parameters.
- ``stacked.json``: CLIP-Adapter's fixed-α search (α ∈ {0, 0.3, 0.7}) through
  the public ``fit`` (each candidate's selection score, the chosen head's
  logits) and per candidate through both training loops (the stacked one and
  the one-at-a-time one) against the same numbers.
- ``pretrain.json``: a 3-step toy pretraining run: its losses and, per group
  of tensors, the sum and norm of the saved weights and the norm of what the
  3 steps changed.
- ``distill.json``: a 2-step CLIP-KD run (all three KD losses) of the toy-tiny
  student from the shipped toy teacher: every logged loss and the student's
  weight change.
- ``toy_embeddings.json``: the shipped toy CLIP's embeddings of rendered
  scenes (each domain) and of a few prompts.
- ``bench.json``: the Markdown accuracy and calibration tables of a tiny bench
  grid (2 toy tasks × 3 methods × 2 shots × 2 seeds): the text with every
  number blanked must match exactly, the numbers within print rounding.

Values are compared with tolerances, never bit for bit: CI runs on CPUs whose
float rounding differs (AVX2, AVX-512, AMX kernels). Everything runs in fp32
on one thread. Logits: absolute 1e-4 × the logit scale (30).

After an INTENDED change of results, rewrite the files and review the diff::

    HF_HUB_OFFLINE=1 python tests/golden/regenerate.py            # all
    HF_HUB_OFFLINE=1 python tests/golden/regenerate.py methods    # some

``regenerate.py`` calls the ``compute_*`` functions below, so the test and the
files always describe the same runs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = "HF_HUB_OFFLINE=1 python tests/golden/regenerate.py"
LOGIT_SCALE = 30.0
LOGIT_ATOL = 1e-4 * LOGIT_SCALE
SIG = 7  # significant digits stored

# ---------------------------------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def one_thread():
    """Every golden run on one torch thread (GEMM splitting, and so rounding, depends on the thread count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def r(x: float) -> float:
    """``x`` to ``SIG`` significant digits (what is stored)."""
    x = float(x)
    return float(f"{x:.{SIG}g}") if math.isfinite(x) else x


def rows(t: torch.Tensor) -> list[list[float]]:
    return [[r(v) for v in row] for row in t.detach().double().tolist()]


def stats(t: torch.Tensor) -> dict[str, float]:
    t = t.detach().double()
    return {"sum": r(t.sum()), "norm": r(t.norm())}


def compare(actual: Any, expected: Any, atol: float, rtol: float, path: str = "") -> list[str]:
    """Mismatches between ``actual`` and ``expected`` (floats within ``atol + rtol·|expected|``; all else exact)."""
    where = path or "<root>"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected a mapping, got {type(actual).__name__}"]
        out = (
            [
                f"{where}: keys differ: missing {sorted(set(expected) - set(actual))}, "
                f"new {sorted(set(actual) - set(expected))}"
            ]
            if set(actual) != set(expected)
            else []
        )
        for key in expected:
            if key in actual:
                out += compare(actual[key], expected[key], atol, rtol, f"{path}.{key}" if path else str(key))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, (list, tuple)) or len(actual) != len(expected):
            return [f"{where}: expected a list of {len(expected)}, got {actual!r:.200}"]
        out = []
        for i, (a, e) in enumerate(zip(actual, expected)):
            out += compare(a, e, atol, rtol, f"{path}[{i}]")
        return out
    if isinstance(expected, float) and not isinstance(actual, bool) and isinstance(actual, (int, float)):
        if math.isnan(expected) and math.isnan(actual):
            return []
        if abs(actual - expected) <= atol + rtol * abs(expected):
            return []
        return [
            f"{where}: {actual!r} != golden {expected!r} "
            f"(|diff| {abs(actual - expected):.3g} > {atol:g} + {rtol:g}·|golden|)"
        ]
    if actual != expected or type(actual) is not type(expected):
        return [f"{where}: {actual!r} != golden {expected!r}"]
    return []


def load_golden(name: str) -> dict[str, Any]:
    path = GOLDEN / f"{name}.json"
    if not path.is_file():
        pytest.fail(f"golden file {path} is missing; write it with: {REGENERATE} {name}")
    return json.loads(path.read_text())


def assert_matches(name: str, actual: Any, atol: float, rtol: float = 0.0, at: tuple[str, ...] = ()) -> None:
    """``actual`` (computed now) against ``tests/golden/<name>.json``'s values (at key path ``at``)."""
    golden = load_golden(name)["values"]
    for key in at:
        if key not in golden:
            pytest.fail(f"{name}.json has no {'.'.join(at)}: write it with `{REGENERATE} {name}`")
        golden = golden[key]
    actual = json.loads(json.dumps(actual))  # tuples become lists, as in the file
    problems = compare(actual, golden, atol, rtol, ".".join(at))
    if problems:
        shown = "\n  ".join(problems[:15]) + (f"\n  … and {len(problems) - 15} more" if len(problems) > 15 else "")
        pytest.fail(
            f"{name}.json: {len(problems)} value(s) differ from the golden run:\n  {shown}\n"
            f"If the change is intended, rewrite the goldens with `{REGENERATE} {name}` and review the diff."
        )


# ---------------------------------------------------------------------------------------------------------------------
# data


def few_shot_data(
    dim: int = 32,
    classes: int = 6,
    shots: int = 4,
    views: int = 3,
    val_shots: int = 2,
    seed: int = 0,
    noise: float = 0.8,
    text: torch.Tensor | None = None,
    classnames: list[str] | None = None,
    templates: tuple[str, ...] = ("a photo of a {}.",),
    backbone: Any = None,
):
    """A tiny seeded few-shot problem: separable clusters, loosely aligned text. Returns ``(data, probe)``."""
    from clip_adapter.methods import FewShotData

    gen = torch.Generator().manual_seed(seed)
    means = F.normalize(torch.randn(classes, dim, generator=gen), dim=1) * 3
    train_y = torch.arange(classes).repeat_interleave(shots)
    train = means[train_y][:, None, :] + noise * torch.randn(len(train_y), views, dim, generator=gen)
    val_y = torch.arange(classes).repeat_interleave(val_shots)
    val = means[val_y] + noise * torch.randn(len(val_y), dim, generator=gen)
    # 6 rows near a class each (some far out), 2 between two classes: logits that are neither saturated nor flat
    probe_centres = torch.cat([means, 0.5 * (means[:2] + means[2:4])])
    probe = probe_centres + noise * torch.randn(len(probe_centres), dim, generator=gen)
    text_raw = means + 2.0 * torch.randn(classes, dim, generator=gen) if text is None else text
    names = classnames or [f"class {i}" for i in range(classes)]
    data = FewShotData(
        train,
        train_y,
        val,
        val_y,
        F.normalize(text_raw, dim=-1),
        LOGIT_SCALE,
        names,
        templates,
        seed,
        "val",
        backbone,
        text_raw=text_raw,
    )
    return data, probe


def toy_backbone():
    from clip_adapter.backbones import create_backbone

    return create_backbone("toy", precision="fp32", device="cpu")


PROMPT_CLASSES = ["red circle", "blue square", "green triangle", "yellow star", "purple heart", "orange cross"]
PROMPT_TEMPLATE = "a photo of a {}."


def prompt_data(backbone):
    """``few_shot_data`` in the toy CLIP's space, its text the toy text encoder's prompts (CoOp and CoCoOp train
    on these).
    """
    text = backbone.encode_texts([PROMPT_TEMPLATE.format(c) for c in PROMPT_CLASSES])
    return few_shot_data(
        dim=backbone.embed_dim,
        text=text,
        classnames=list(PROMPT_CLASSES),
        templates=(PROMPT_TEMPLATE,),
        backbone=backbone,
    )


# ---------------------------------------------------------------------------------------------------------------------
# 1. every method's logits. Every config field is given: retuned defaults must not move these numbers.

TRAIN = dict(
    optimizer="adamw",
    lr=1e-2,
    weight_decay=1e-4,
    momentum=0.9,
    epochs=5,
    batch_size=8,
    warmup_epochs=1.0,
    warmup_type="linear",
    warmup_lr=1e-5,
    select_epoch=True,
    lr_grid=(),
    adam_eps=1e-8,
    drop_last=False,
    schedule_unit="step",
    view_order="random",
)
ADAPTER = dict(
    TRAIN,
    variant="visual",
    reduction=4,
    final_relu=True,
    ratio="fixed",
    alpha=0.2,
    beta=0.2,
    alpha_grid=(),
    max_passes=0,
    range_penalty=0.0,
    alpha_refine=0,
    race_keep=0,
)
# the official preset's loop: SGD, constant warm-up, per-epoch schedule, last partial batch dropped, distinct views,
# last epoch
DASSL = dict(
    optimizer="sgd",
    lr=2e-2,
    weight_decay=5e-4,
    warmup_type="constant",
    warmup_lr=1e-5,
    drop_last=True,
    schedule_unit="epoch",
    view_order="distinct",
    select_epoch=False,
)
TIP = dict(
    settings="generic",
    alpha=1.0,
    beta=1.0,
    alpha_max=10.0,
    beta_max=10.0,
    alpha_steps=10,
    beta_steps=20,
    tie_break="loss",
)
CLAP = dict(
    TRAIN,
    optimizer="sgd",
    lr=0.1,
    weight_decay=0.0,
    epochs=8,
    batch_size=16,
    warmup_epochs=1.0,
    warmup_type="constant",
    drop_last=True,
    select_epoch=False,
)
PROMPT = dict(TRAIN, n_ctx=4, ctx_init="", class_position="end", epochs_by_shots=(), prompt_batch=128)

# label: (method, every config field, the inputs: "base" = few_shot_data(), "noisy" = a noisier draw,
# "toy" = prompt_data())
METHOD_CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "zero-shot": ("zero-shot", {}, "base"),
    "clip-adapter-visual": ("clip-adapter", ADAPTER, "base"),
    "clip-adapter-text": ("clip-adapter", dict(ADAPTER, variant="text"), "base"),
    "clip-adapter-both": ("clip-adapter", dict(ADAPTER, variant="both"), "base"),
    "clip-adapter-paper-formula": ("clip-adapter", dict(ADAPTER, final_relu=False, reduction=2), "base"),
    "clip-adapter-learned": (
        "clip-adapter",
        dict(ADAPTER, variant="both", ratio="learned", alpha=0.3, beta=0.4),
        "base",
    ),
    "clip-adapter-network": ("clip-adapter", dict(ADAPTER, variant="both", ratio="network"), "base"),
    "clip-adapter-range-penalty": ("clip-adapter", dict(ADAPTER, range_penalty=0.5), "base"),
    "clip-adapter-dassl-loop": ("clip-adapter", dict(ADAPTER, **DASSL), "base"),
    "clip-adapter-lr-grid": ("clip-adapter", dict(ADAPTER, lr=1e-2, lr_grid=(3e-3,), alpha_grid=(0.2, 0.5)), "base"),
    # The linear probe runs on a noisier draw: on the base one (24 points in 32-d, always separable, perfect validation)
    # the search picks C ≥ 1e5, where L-BFGS's answer moves by ~1e-2 with 1e-6 input noise; here C ≤ 1 is chosen,
    # a well-conditioned fit (measured: < 2e-4 under the same noise).
    "linear-probe": ("linear-probe", dict(c=1.0, bisection_steps=2, max_iter=300, c_rule="best"), "noisy"),
    "linear-probe-lpclip": ("linear-probe", dict(c=1.0, bisection_steps=2, max_iter=300, c_rule="lpclip"), "noisy"),
    "tip-adapter": ("tip-adapter", TIP, "base"),
    "tip-adapter-f": (
        "tip-adapter-f",
        dict(TRAIN, **TIP, lr=1e-2, epochs=8, weight_decay=0.01, adam_eps=1e-4, batch_size=16),
        "base",
    ),
    "clap-l2": ("clap", dict(CLAP, constraint="l2"), "base"),
    "clap-adaptive": ("clap", dict(CLAP, constraint="adaptive"), "base"),
    "clap-none": ("clap", dict(CLAP, constraint="none"), "base"),
    "gda": ("gda", dict(alpha=1.0, alpha_grid=(0.01, 0.1, 1.0, 10.0)), "base"),
    # on the shipped toy CLIP's text encoder (128-d data)
    "coop": ("coop", dict(PROMPT, csc=False, epochs=3), "toy"),
    "coop-csc-middle": (
        "coop",
        dict(PROMPT, csc=True, class_position="middle", epochs=2, view_order="distinct"),
        "toy",
    ),
    "cocoop": (
        "cocoop",
        dict(PROMPT, ctx_init="a photo of a", meta_reduction=16, epochs=1, lr=5e-3, warmup_epochs=0.5),
        "toy",
    ),
}
NOT_PINNED = {"auto"}  # picks among the pinned methods; its own tests are in test_auto.py


def inputs(kind: str, backbone=None):
    """``(data, probe)`` of a case's inputs (built afresh: a method may not, but could, touch them)."""
    if kind == "toy":
        return prompt_data(backbone or toy_backbone())
    return few_shot_data(noise=2.0) if kind == "noisy" else few_shot_data()


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return r(value)
    if torch.is_tensor(value) and value.numel() == 1:
        return r(value.item())
    return repr(value)


def fit_case(label: str, backbone=None) -> dict[str, Any]:
    """Fit case ``label`` on its inputs: the logits on the probe rows, the chosen hyper-parameters, the selection
    score.
    """
    from clip_adapter.methods import get_method

    name, overrides, kind = METHOD_CASES[label]
    cls = get_method(name)
    data, probe = inputs(kind, backbone)
    with one_thread():
        result = cls(cls.make_config(**overrides)).fit(data)
        logits = result.head.predict_logits(probe)
    assert logits.shape == (len(probe), data.num_classes)
    return {
        "method": name,
        "logits": rows(logits),
        "chosen": jsonable(result.selected.get("chosen", {})),
        "selection_accuracy": None if result.val_accuracy is None else r(result.val_accuracy),
    }


def data_fingerprint(data, probe) -> dict[str, Any]:
    """A few numbers of the seeded inputs: when they move, every golden moves (a changed torch generator, not a
    method).
    """
    return {
        "train": stats(data.train),
        "val": stats(data.val),
        "probe": stats(probe),
        "text": stats(data.text),
        "train_first": rows(data.train[0, 0, None, :4])[0],
    }


def compute_methods(backbone=None) -> dict[str, Any]:
    backbone = backbone or toy_backbone()
    return {
        "inputs": {kind: data_fingerprint(*inputs(kind, backbone)) for kind in ("base", "noisy", "toy")},
        "cases": {label: fit_case(label, backbone) for label in METHOD_CASES},
    }


# ---------------------------------------------------------------------------------------------------------------------
# 2. CLIP-Adapter's α search: stacked loop vs one at a time, and the public fit

STACKED = dict(ADAPTER, epochs=6, alpha=0.3, alpha_grid=(0.0, 0.3, 0.7))


def candidate_record(head, info: dict[str, Any], probe: torch.Tensor) -> dict[str, Any]:
    return {
        "best_epoch": info["best_epoch"],
        "steps": info["steps"],
        "logits": rows(head.predict_logits(probe)[:4]),
        "first": stats(head.visual[0].weight),
        "second": stats(head.visual[2].weight),
    }


def loop_candidates(stacked: bool) -> dict[str, Any]:
    """Each α's trained head through one of CLIP-Adapter's two loops (α = 0 is zero-shot: its logits only).

    Calls the loops' current entry points, ``ClipAdapter._fit_stacked`` and ``_fit_each``: a refactor that moves
    them updates these two lines, and the numbers must stay.
    """
    from clip_adapter.methods.clip_adapter import ClipAdapter, sized_recipe, stackable

    data, probe = few_shot_data()
    method = ClipAdapter(ClipAdapter.make_config(**STACKED))
    cfg = sized_recipe(method.config, data.train.shape[0])
    assert stackable(cfg)
    grid = {"lr": (cfg.lr,), "alpha": (0.0, 0.3, 0.7)}
    with one_thread():
        fits = list(method._fit_stacked(data, cfg, grid) if stacked else method._fit_each(data, cfg, grid))
    out = {}
    for point, head, info in fits:
        record = candidate_record(head, info, probe)
        if (
            point["alpha"] == 0
        ):  # untrained when stacked, trained (and ignored) one at a time: only its logits are defined
            record = {"logits": record["logits"]}
        out[f"alpha={point['alpha']}"] = record
    return out


def compute_stacked() -> dict[str, Any]:
    from clip_adapter.methods import get_method

    data, probe = few_shot_data()
    cls = get_method("clip-adapter")
    with one_thread():
        result = cls(cls.make_config(**STACKED)).fit(data)
        logits = result.head.predict_logits(probe)
    history = [
        {
            "alpha": r(h["alpha"]),
            "lr": r(h["lr"]),
            "best_epoch": h["best_epoch"],
            "selection_accuracy": r(h["selection_accuracy"]),
            "selection_loss": r(h["selection_loss"]),
        }
        for h in result.history
    ]
    return {
        "fit": {"chosen": jsonable(result.selected["chosen"]), "history": history, "logits": rows(logits)},
        "candidates": loop_candidates(stacked=True),
    }


# ---------------------------------------------------------------------------------------------------------------------
# 3. 3 steps of toy pretraining

PRETRAIN = dict(
    seed=0,
    steps=3,
    batch_size=8,
    lr=5e-4,
    warmup_steps=1,
    weight_decay=0.05,
    precision="fp32",
    threads=1,
    workers=0,
    widths=(32, 64, 128, 256),
    depths=(1, 1, 2, 1),
    embed_dim=128,
    text_layers=3,
)


def tensor_group(name: str) -> str:
    """Summary group of a state-dict entry: visual.trunk, visual.pool, blocks, token_embedding, …
    (BatchNorm statistics apart).
    """
    parts = name.split(".")
    if parts[-1] in ("running_mean", "running_var", "num_batches_tracked"):
        return "batchnorm_buffers"
    return ".".join(parts[:2]) if parts[0] == "visual" else parts[0]


def weight_summary(final: dict[str, torch.Tensor], initial: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per group of tensors: sum and norm of the final values, norm of the change."""
    groups: dict[str, list[str]] = {}
    for name in sorted(final):
        if final[name].is_floating_point():
            groups.setdefault(tensor_group(name), []).append(name)
    out = {}
    for group, names in sorted(groups.items()):
        flat = torch.cat([final[n].detach().double().flatten() for n in names])
        delta = torch.cat([(final[n].detach().double() - initial[n].detach().double()).flatten() for n in names])
        out[group] = {
            "tensors": len(names),
            "sum": r(flat.sum()),
            "norm": r(flat.norm()),
            "change_norm": r(delta.norm()),
        }
    return out


def compute_pretrain() -> dict[str, Any]:
    from safetensors.torch import load_file

    from clip_adapter.toyworld import PretrainConfig, ToyClip, pretrain

    with tempfile.TemporaryDirectory() as tmp, one_thread():
        cfg = PretrainConfig(out_dir=tmp, **PRETRAIN)
        weights = pretrain(cfg)
        final = load_file(str(weights))
        with open(Path(tmp) / "pretrain_log.csv", newline="") as handle:
            log = list(csv.DictReader(handle))
    torch.manual_seed(cfg.seed)  # what pretrain starts from
    initial = ToyClip(cfg.model_config()).state_dict()
    assert set(initial) == set(final), sorted(set(initial) ^ set(final))
    return {
        "log": [
            {
                "step": int(row["step"]),
                "loss": r(float(row["loss"])),
                "lr": r(float(row["lr"])),
                "logit_scale": r(float(row["logit_scale"])),
            }
            for row in log
        ],
        "weights": weight_summary(final, initial),
    }


# ---------------------------------------------------------------------------------------------------------------------
# 4. 2 steps of distillation

DISTILL = dict(
    losses=("fd", "icl", "crd"),
    clip_weight=1.0,
    fd_weight=2000.0,
    icl_weight=1.0,
    crd_weight=1.0,
    icl_scale="code",
    steps=2,
    batch_size=4,
    lr=5e-4,
    warmup_steps=1,
    weight_decay=0.05,
    seed=0,
    threads=1,
    workers=0,
)
LOGGED = ("total", "clip", "fd", "icl", "crd", "lr", "logit_scale")


def compute_distill(teacher_backbone=None) -> dict[str, Any]:
    from clip_adapter.distill import DistillConfig, Student, Teacher, distill
    from clip_adapter.distill.data import toy_batches

    cfg = DistillConfig(**DISTILL)
    student = Student("toy-tiny", seed=0)
    initial = {k: v.detach().clone() for k, v in student.model.state_dict().items()}
    with one_thread():
        run = distill(
            Teacher(teacher_backbone or toy_backbone()),
            student,
            cfg,
            toy_batches(cfg.seed, cfg.steps, cfg.batch_size, 0),
        )
    log = [{"step": int(row["step"]), **{k: r(row[k]) for k in LOGGED}} for row in run.log]
    return {"log": log, "student": weight_summary(student.model.state_dict(), initial)}


# ---------------------------------------------------------------------------------------------------------------------
# 5. the shipped toy CLIP's embeddings of rendered images and of prompts

TEXTS = [
    "a photo of a red circle.",
    "a photo of a blue square.",
    "a sketch of a green star on the left",
    "a photo of a shape.",
]
SHOWN = 8  # embedding values stored per row (and its norm)


def compute_toy_embeddings(backbone=None) -> dict[str, Any]:
    from clip_adapter.features.transforms import eval_view
    from clip_adapter.toyworld import DOMAINS, render_image, sample_scene

    backbone = backbone or toy_backbone()
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(2)]
    names, images = [], []
    for i, scene in enumerate(scenes):
        for domain in DOMAINS:
            names.append(f"scene{i}-{domain}")
            images.append(render_image(scene, domain, rng=i))
    pixels = torch.stack([eval_view(img, backbone.preprocess) for img in images])
    with one_thread():
        image_emb = backbone.encode_images(pixels)
        text_emb = backbone.encode_texts(TEXTS)
    out: dict[str, Any] = {
        "embed_dim": backbone.embed_dim,
        "logit_scale": r(backbone.logit_scale),
        "images": {},
        "texts": {},
    }
    for name, img, emb in zip(names, images, image_emb):
        out["images"][name] = {
            "pixel_mean": r(np.asarray(img, dtype=np.float64).mean()),
            "head": rows(emb[None, :SHOWN])[0],
            "norm": r(emb.norm()),
        }
    for text, emb in zip(TEXTS, text_emb):
        out["texts"][text] = {"head": rows(emb[None, :SHOWN])[0], "norm": r(emb.norm())}
    out["image_text_cosine"] = rows(F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).t())
    return out


# ---------------------------------------------------------------------------------------------------------------------
# 6. the bench tables of a tiny grid

NUMBER = re.compile(r"-?\d+\.\d+")
BENCH_FEATURES = dict(views=2, aug_seed=0, flip=True, crop_scale=(0.5, 1.0), batch_size=64, skip_bad=False)
BENCH_METHODS = [
    ("zero-shot", "zero-shot", {}),
    ("tip", "tip-adapter", TIP),
    ("ca", "clip-adapter", dict(ADAPTER, epochs=4)),
]


def split_numbers(text: str) -> tuple[str, list[float], list[int]]:
    """``text`` with each decimal number replaced by ``{}``, the numbers, and each one's decimals."""
    found = NUMBER.findall(text)
    return NUMBER.sub("{}", text), [float(v) for v in found], [len(v.split(".")[1]) for v in found]


def compute_bench(backbone=None) -> dict[str, Any]:
    from clip_adapter.bench import BenchPlan, MethodSpec, run_bench, write_reports
    from clip_adapter.data import load_dataset
    from clip_adapter.pipeline import FeatureConfig
    from clip_adapter.toyworld import write_task_dataset

    backbone = backbone or toy_backbone()
    with tempfile.TemporaryDirectory() as tmp, one_thread():
        root = Path(tmp)
        datasets = {
            task: load_dataset(write_task_dataset(task, "night", root / task, 3, 2, 3, seed=5), name=task)
            for task in ("shape", "color")
        }
        methods = [MethodSpec(label, method, tuple(config.items())) for label, method, config in BENCH_METHODS]
        plan = BenchPlan(
            datasets,
            methods,
            shots=(1, 2),
            seeds=(1, 2),
            protocol="val",
            templates=(),
            features=FeatureConfig(cache_dir=str(root / "cache"), **BENCH_FEATURES),
        )
        report = run_bench(backbone, plan, root / "out", log=lambda _: None)
        assert report.ran == 2 * 3 * 2 * 2 and not report.failed, report
        paths = write_reports(root / "out", "val", report.results)
        tables = {name: Path(paths[name]).read_text() for name in ("table", "calibration_table")}
    out = {}
    for name, text in tables.items():
        layout, numbers, decimals = split_numbers(text)
        out[name] = {"layout": layout.splitlines(), "numbers": numbers, "decimals": decimals}
    return out


# ---------------------------------------------------------------------------------------------------------------------
# what regenerate.py writes

COMPUTE: dict[str, Callable[[], dict[str, Any]]] = {
    "methods": compute_methods,
    "stacked": compute_stacked,
    "pretrain": compute_pretrain,
    "distill": compute_distill,
    "toy_embeddings": compute_toy_embeddings,
    "bench": compute_bench,
}


def golden_record(name: str, values: dict[str, Any]) -> dict[str, Any]:
    import clip_adapter

    return {
        "about": (__doc__ or "").split("\n")[0],
        "golden": name,
        "regenerate": f"{REGENERATE} {name}",
        "written_with": {
            "clip_adapter": clip_adapter.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(),
        },
        "values": values,
    }


# ---------------------------------------------------------------------------------------------------------------------
# the tests


@pytest.fixture(scope="module")
def shipped_toy():
    return toy_backbone()


def test_every_registered_method_has_a_golden():
    from clip_adapter.methods import list_methods

    pinned = {method for method, _, _ in METHOD_CASES.values()}
    assert set(list_methods()) - NOT_PINNED <= pinned, (
        f"methods with no golden case: {set(list_methods()) - NOT_PINNED - pinned}"
    )
    golden = load_golden("methods")["values"]["cases"]
    assert set(golden) == set(METHOD_CASES), f"golden cases differ from METHOD_CASES: run {REGENERATE} methods"


@pytest.mark.parametrize("kind", ["base", "noisy", "toy"])
def test_inputs_are_what_the_goldens_were_made_from(kind, shipped_toy):
    # A changed random stream (torch's generator) or toy text encoder would move every golden at once:
    # this says so first.
    assert_matches("methods", data_fingerprint(*inputs(kind, shipped_toy)), atol=1e-4, rtol=1e-4, at=("inputs", kind))


@pytest.mark.parametrize("label", list(METHOD_CASES))
def test_method_logits_match_golden(label, shipped_toy):
    assert_matches("methods", fit_case(label, shipped_toy), atol=LOGIT_ATOL, at=("cases", label))


def test_clip_adapter_alpha_search_matches_golden():
    assert_matches("stacked", compute_stacked(), atol=LOGIT_ATOL, rtol=1e-4)


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked-loop", "one-at-a-time"])
def test_both_clip_adapter_loops_give_the_golden_candidates(stacked):
    # The stacked loop and one-at-a-time training must give the same candidates (within float rounding):
    # both are checked against the same stored numbers.
    assert_matches("stacked", loop_candidates(stacked), atol=LOGIT_ATOL, rtol=1e-4, at=("candidates",))


def test_three_step_pretraining_matches_golden():
    # Weight sums/norms are dominated by the seeded init; change_norm is what the 3 steps did (≈ lr·√n per group).
    assert_matches("pretrain", compute_pretrain(), atol=1e-4, rtol=1e-3)


def test_two_step_distillation_matches_golden(shipped_toy):
    assert_matches("distill", compute_distill(shipped_toy), atol=1e-4, rtol=1e-3)


def test_toy_backbone_embeddings_match_golden(shipped_toy):
    assert_matches("toy_embeddings", compute_toy_embeddings(shipped_toy), atol=1e-4, rtol=1e-4)


def test_bench_tables_match_golden(shipped_toy):
    actual, golden = compute_bench(shipped_toy), load_golden("bench")["values"]
    assert set(actual) == set(golden)
    for name, table in golden.items():
        got = actual[name]
        changed = [f"  golden: {e!r}\n  now:    {a!r}" for a, e in zip(got["layout"], table["layout"]) if a != e]
        assert got["layout"] == table["layout"], (
            f"{name}: the table's text (numbers blanked as {{}}) changed"
            f" ({len(got['layout'])} lines, golden {len(table['layout'])}):\n" + "\n".join(changed[:5])
        )
        assert got["decimals"] == table["decimals"], f"{name}: numbers are printed with other decimals"
        lines = [line for line in table["layout"] for _ in range(line.count("{}"))]  # each number's line
        wrong = [
            f"  {lines[i]!r}: number {i} is {a}, golden {e}"
            # within one unit of the last printed digit: a value on a rounding edge may print either way on another CPU
            for i, (a, e, d) in enumerate(zip(got["numbers"], table["numbers"], table["decimals"]))
            if abs(a - e) > 1.01 * 10.0**-d
        ]
        assert not wrong, (
            f"{name}: {len(wrong)} number(s) differ from the golden run:\n"
            + "\n".join(wrong[:10])
            + f"\nIf the change is intended, rewrite the goldens with `{REGENERATE} bench` and review the diff."
        )
