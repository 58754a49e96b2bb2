"""Every bad-input kind through the real command line, tabulated.

For each kind: the exit status, whether the message is one line naming the
thing at fault, whether a traceback leaked, and whether anything half-written
was left behind. Usage: python benchmarks/bad_inputs.py
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import open_clip  # noqa: E402
import torch  # noqa: E402

open_clip.add_model_config(str(ROOT / "tests" / "assets" / "test-tiny-vit.json"))

from clip_adapter.cli import main  # noqa: E402
from corpus import BAD_DATASETS, TRAINABLE, _extra_class, good_folder  # noqa: E402

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--precision", "fp32"]


def run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse rejects some options itself
            code = int(exc.code or 0)
        except Exception as exc:  # noqa: BLE001 — an uncaught exception is exactly what we count
            return -1, f"UNCAUGHT {exc.__class__.__name__}: {exc}"
    return code, err.getvalue()


def verdict(code: int, err: str, tmp: Path, expect_ok: bool, lost: int) -> dict:
    lines = [
        line
        for line in err.strip().splitlines()
        if not line.startswith(("warning:", "clip-adapter ", "artifact written", "usage:"))
    ]
    leftovers = [
        str(p) for p in tmp.rglob("*") if ".tmp-" in p.name and "/user-" not in str(p)
    ]  # a user's look-alikes are not ours
    clear = expect_ok and code == 0 or (code != 0 and len(lines) == 1 and lines[0].startswith("error:"))
    return {
        "exit": code,
        "clear": bool(clear) and code != -1,
        "traceback": "Traceback" in err or code == -1,
        "leftovers": len(leftovers),
        "lost": lost,
        "message": (lines[0] if lines else "")[:110],
    }


def user_files(tmp: Path) -> dict[str, bytes]:
    """Every file a user put there (the guarded folders): none may change or vanish."""
    return {str(p): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file() and "/user-" in str(p)}


def lost_files(before: dict[str, bytes]) -> int:
    return sum(1 for path, data in before.items() if not os.path.isfile(path) or Path(path).read_bytes() != data)


def dataset_cases(tmp: Path) -> list[tuple[str, list[str], bool]]:
    cases = []
    for kind, make in sorted(BAD_DATASETS.items()):
        data = make(tmp / kind / "ds")
        cases.append(
            (
                f"data/{kind} (train)",
                [
                    "train",
                    "--data",
                    str(data),
                    *TINY,
                    "--shots",
                    "2",
                    "--views",
                    "1",
                    "--epochs",
                    "2",
                    "--out",
                    str(tmp / kind / "art"),
                ],
                kind in TRAINABLE,
            )
        )
    return cases


def _text_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def option_cases(tmp: Path, good: Path) -> list[tuple[str, list[str], bool]]:
    base = ["train", "--data", str(good), *TINY, "--out", str(tmp / "opt-art")]
    return [
        ("option/unknown method", base + ["--method", "magic"], False),
        ("option/unknown variant", base + ["--variant", "sideways"], False),
        ("option/alpha out of range", base + ["--alpha", "1.5"], False),
        ("option/negative shots", base + ["--shots", "-2"], False),
        ("option/unknown --set key", base + ["--set", "colour=red"], False),
        ("option/bad --set value", base + ["--set", "epochs=many"], False),
        ("option/race_at out of range", base + ["--set", "race_at=1.5"], False),
        ("option/negative race_keep", base + ["--set", "race_keep=-1"], False),
        ("option/alpha_refine not a number", base + ["--set", "alpha_refine=lots"], False),
        ("option/auto held_out_view unknown", base + ["--method", "auto", "--set", "held_out_view=side"], False),
        ("option/auto repeated candidate", base + ["--method", "auto", "--set", "candidates=gda,gda"], False),
        ("option/linear-probe unknown search", base + ["--method", "linear-probe", "--set", "search=quick"], False),
        ("option/linear-probe tol 0", base + ["--method", "linear-probe", "--set", "tol=0"], False),
        ("option/linear-probe path_above -1", base + ["--method", "linear-probe", "--set", "path_above=-1"], False),
        ("option/clap unknown solver", base + ["--method", "clap", "--set", "solver=adam"], False),
        (
            "option/clap lbfgs with the adaptive constraint",
            base + ["--method", "clap", "--set", "solver=lbfgs", "--set", "constraint=adaptive"],
            False,
        ),
        ("option/tip-adapter-f unknown recipe", base + ["--method", "tip-adapter-f", "--set", "recipe=fast"], False),
        ("option/tip-adapter-f matmul fp8", base + ["--method", "tip-adapter-f", "--set", "matmul=fp8"], False),
        (
            "option/tip-adapter-f search_stride 0",
            base + ["--method", "tip-adapter-f", "--set", "search_stride=0"],
            False,
        ),
        (
            "option/tip-adapter-f large_lr_factor 0",
            base + ["--method", "tip-adapter-f", "--set", "large_lr_factor=0"],
            False,
        ),
        ("option/auto single_fold_above -1", base + ["--method", "auto", "--set", "single_fold_above=-1"], False),
        ("option/train --config missing", base + ["--config", str(tmp / "no-such-run")], False),
        ("option/train --config not JSON", base + ["--config", str(_text_file(tmp / "bad-config.json", "{no"))], False),
        ("option/train --config a JSON list", base + ["--config", str(_text_file(tmp / "list.json", "[1]"))], False),
        (
            "option/unknown backbone",
            ["train", "--data", str(good), "--backbone", "ViT-Q-9", "--out", str(tmp / "x")],
            False,
        ),
        (
            "option/unknown pretrained tag",
            ["train", "--data", str(good), "--backbone", "ViT-B-32", "--pretrained", "nope", "--out", str(tmp / "x")],
            False,
        ),
        ("option/bad precision", base + ["--precision", "fp8"], False),
        ("option/bad template", base + ["--template", "no placeholder"], False),
        ("option/template with {x}", base + ["--template", "a photo of a {x} {}."], False),
        ("option/template with a stray {", base + ["--template", "a { photo of a {}."], False),
        ("option/--seed 10^20", base + ["--seed", str(10**20)], False),
        ("option/--init-seed 10^20", base + ["--init-seed", str(10**20)], False),
        ("option/--aug-seed -1", base + ["--aug-seed", "-1"], False),
        ("option/--epochs 0", base + ["--epochs", "0"], False),
        ("option/--epochs 0 via --set", base + ["--set", "epochs=0"], False),
        ("option/--batch-size 0", base + ["--batch-size", "0"], False),
        ("option/--device cuda without a GPU", base + ["--device", "cuda"], False),
        ("option/--device nonsense", base + ["--device", "tpu:9"], False),
        (
            "option/offline open_clip tag (openai)",
            ["train", "--data", str(good), "--backbone", "ViT-B-32", "--pretrained", "openai", "--out", str(tmp / "x")],
            False,
        ),
        (
            "option/offline open_clip tag (laion)",
            [
                "train",
                "--data",
                str(good),
                "--backbone",
                "ViT-B-32",
                "--pretrained",
                "laion2b_s34b_b79k",
                "--out",
                str(tmp / "x"),
            ],
            False,
        ),
        ("option/--device cuda:7", base + ["--device", "cuda:7"], False),
        (
            "option/bench --seeds 10^20",
            ["bench", "--dataset", f"g={good}", *TINY, "--seeds", str(10**20), "--out", str(tmp / "b")],
            False,
        ),
        ("option/--cache-dir is a file", base + ["--cache-dir", str(_user_file(tmp, "cachefile"))], False),
        ("option/--cache-dir inside the dataset", base + ["--cache-dir", str(good / "cache")], False),
        ("option/--classnames map missing", base + ["--classnames", str(tmp / "nope.json")], False),
        ("option/--crop-scale out of range", base + ["--crop-scale", "2,1"], False),
        ("option/--crop-scale not numbers", base + ["--crop-scale", "big"], False),
        (
            "option/bench domain-generalization without targets",
            ["bench", "--setting", "domain-generalization", "--dataset", f"g={good}", *TINY, "--out", str(tmp / "b")],
            False,
        ),
        ("option/cache prune without a rule", ["cache", "prune", "--cache-dir", str(tmp / "cache")], False),
        ("option/--set schedule_unit=batch", base + ["--set", "schedule_unit=batch"], False),
        ("option/--set view_order=sorted", base + ["--set", "view_order=sorted"], False),
        ("option/auto --set race_margin=-1", base + ["--method", "auto", "--set", "race_margin=-1"], False),
        ("option/auto --set min_held_out=0", base + ["--method", "auto", "--set", "min_held_out=0"], False),
        (
            "option/tip-adapter --set settings=magic",
            base + ["--method", "tip-adapter", "--set", "settings=magic"],
            False,
        ),
    ]


def _user_file(tmp: Path, name: str, text: str = "the user's own file") -> Path:
    path = tmp / f"user-{name}"
    path.write_text(text)
    return path


def _user_folder(tmp: Path, name: str) -> Path:
    folder = tmp / f"user-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("years of work")
    return folder


def output_cases(tmp: Path, good: Path, art: Path) -> list[tuple[str, list[str], bool]]:
    """Output paths that held the user's files: each refused before any work, nothing lost."""

    def train_to(out) -> list[str]:
        return ["train", "--data", str(good), *TINY, "--shots", "2", "--views", "1", "--epochs", "2", "--out", str(out)]

    folder, file = _user_folder(tmp, "work"), _user_file(tmp, "notes.txt")
    return [
        ("output/--out holds a user's files", train_to(folder), False),
        ("output/--out holds a user's files, --overwrite", train_to(folder) + ["--overwrite"], False),
        ("output/--out is the dataset", train_to(good), False),
        ("output/--out inside the dataset", train_to(good / "cat" / "run"), False),
        ("output/--out is a regular file", train_to(file), False),
        ("output/--out is an existing artifact", train_to(art), False),
        (
            "output/toy dataset --out holds a user's files",
            ["toy", "dataset", "--out", str(folder), "--train", "1", "--val", "1", "--test", "1"],
            False,
        ),
        (
            "output/bench --out holds a user's files",
            ["bench", "--dataset", f"g={good}", *TINY, "--out", str(folder)],
            False,
        ),
        ("output/predict --out is a folder", ["predict", str(art), str(good), "--out", str(folder)], False),
        ("output/predict --out exists", ["predict", str(art), str(good), "--out", str(file)], False),
        ("output/eval --out is a folder", ["eval", str(art), "--data", str(good), "--out", str(folder)], False),
        ("output/predict image name with a newline", ["predict", str(art), str(tmp / "no\nsuch.jpg")], False),
        *ownership_cases(tmp, good, train_to),
    ]


def ownership_cases(tmp: Path, good: Path, train_to) -> list[tuple[str, list[str], bool]]:
    """A user's files beside or deep inside an earlier output: never moved, replaced or deleted."""
    beside = tmp / "user-beside"
    beside.mkdir()
    (beside / "photos.tmp-2023-backup").write_text("the user's backup")
    (beside / "photos.tmp-2024-old").mkdir()
    (beside / "photos.tmp-2024-old" / "thesis.tex").write_text("years of work")
    inside = tmp / "user-inside" / "run"
    assert main(train_to(inside)) == 0
    (inside / "user-analysis.tmp-v2.ipynb").write_text("{}")
    toy = tmp / "user-toy" / "t"
    toy_argv = ["toy", "dataset", "--task", "color", "--train", "1", "--val", "1", "--test", "1", "--out", str(toy)]
    assert main(toy_argv) == 0
    red = next(p for p in (toy / "images").rglob("*") if p.is_dir() and any(p.glob("*.png")))
    (red / "user-MY_OWN_PHOTO.png").write_bytes(b"precious")
    return [
        ("output/look-alike temporaries beside --out", train_to(beside / "photos"), True),
        ("output/--overwrite, a user's file beside config.json", train_to(inside) + ["--overwrite"], False),
        ("output/toy dataset --overwrite, a user's photo in images/", [*toy_argv, "--overwrite"], False),
        (
            "output/report --out inside the dataset",
            ["report", str(inside), "--data", str(good), "--out", str(good / "cat" / "r.html")],
            False,
        ),
    ]


def trust_cases(tmp: Path, good: Path, art: Path) -> list[tuple[str, list[str], bool]]:
    """The trust commands and options: each bad input one line, nothing written, the artifact untouched."""
    calibrated = tmp / "trust-calibrated"
    assert main(["calibrate", str(art), "--data", str(good), "--split", "all", "--out", str(calibrated)]) == 0
    odd = _extra_class(good_folder(tmp / "trust-odd"), "hexagon")
    out = str(tmp / "trust-out")
    return [
        (
            "trust/conformal --alpha 1.5",
            ["conformal", str(art), "--data", str(good), "--split", "all", "--alpha", "1.5", "--out", out],
            False,
        ),
        (
            "trust/conformal --alpha 0.001 (too few images)",
            ["conformal", str(art), "--data", str(good), "--split", "all", "--alpha", "0.001", "--out", out],
            False,
        ),
        (
            "trust/calibrate on a folder with an unknown class",
            ["calibrate", str(art), "--data", str(odd), "--split", "all", "--out", out],
            False,
        ),
        (
            "trust/calibrate an artifact twice",
            ["calibrate", str(calibrated), "--data", str(good), "--split", "all", "--out", out],
            False,
        ),
        (
            "trust/calibrate --method magic",
            ["calibrate", str(art), "--data", str(good), "--method", "magic", "--out", out],
            False,
        ),
        (
            "trust/ood --tpr 1",
            ["ood", str(art), "--data", str(good), "--split", "all", "--tpr", "1", "--out", out],
            False,
        ),
        ("trust/predict --reject without an OOD threshold", ["predict", str(art), str(good), "--reject"], False),
        (
            "trust/eval --ood-data missing",
            ["eval", str(art), "--data", str(good), "--ood-data", str(tmp / "no-such")],
            False,
        ),
        (
            "trust/calibrate --out is the artifact",
            ["calibrate", str(art), "--data", str(good), "--split", "all", "--out", str(art)],
            False,
        ),
    ]


def train_artifact(tmp: Path, good: Path) -> Path:
    art = tmp / "artifact"
    assert (
        main(["train", "--data", str(good), *TINY, "--shots", "2", "--views", "1", "--epochs", "2", "--out", str(art)])
        == 0
    )
    return art


def artifact_cases(tmp: Path, good: Path, art: Path) -> list[tuple[str, list[str], bool]]:
    cases = []

    def variant(name: str, mutate) -> None:
        target = tmp / f"art-{name}"
        target.mkdir()
        for f in art.iterdir():
            (target / f.name).write_bytes(f.read_bytes())
        mutate(target)
        cases.append((f"artifact/{name}", ["predict", str(target), str(good)], False))

    def edit(key, value):
        def apply(p):
            config = json.loads((p / "config.json").read_text())
            config[key] = value
            (p / "config.json").write_text(json.dumps(config))

        return apply

    variant("config not JSON", lambda p: (p / "config.json").write_text("{nope"))
    variant("unknown method", edit("method", "evil"))
    variant("huge declared head", edit("head_meta", {"num_classes": 10**9, "embed_dim": 10**6, "logit_scale": 1.0}))
    variant("weights are a pickle", lambda p: torch.save({"a": 1}, p / "model.safetensors"))  # torch.save pickles
    variant(
        "weights truncated",
        lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:100]),
    )
    variant(
        "huge safetensors header",
        lambda p: (p / "model.safetensors").write_bytes((2**60).to_bytes(8, "little") + b"{}"),
    )
    variant("NaN weights", _nan_weights)
    variant("wrong shapes", edit("head_meta", {"num_classes": 2, "embed_dim": 64, "logit_scale": 14.3}))
    variant("embed_dim 10^7", edit("head_meta", {"num_classes": 2, "embed_dim": 10**7, "logit_scale": 14.3}))
    variant("negative logit scale", edit("head_meta", {"num_classes": 2, "embed_dim": 32, "logit_scale": -5.0}))
    variant("class names as a string", edit("classnames", "cat,dog"))
    variant("absurdly large weights", _huge_weights)
    variant("logit scale 1e9", edit("head_meta", {"num_classes": 2, "embed_dim": 32, "logit_scale": 1e9}))
    variant(
        "backbone seed 10^20",
        edit("backbone", {"name": "test-tiny-vit", "id": f"open_clip/test-tiny-vit/random-init:{10**20}"}),
    )
    cases.append(
        (
            "artifact/wrong backbone",
            ["predict", str(art), str(good), "--backbone", "test-tiny-vit", "--pretrained", str(_other_weights(tmp))],
            False,
        )
    )
    cases.append(("artifact/missing directory", ["predict", str(tmp / "nope"), str(good)], False))
    evil = tmp / "evil.pt"
    torch.save({"w": _Boom()}, evil)  # a pickle whose loading would run a shell command
    cases.append(
        (
            "checkpoint/pickle with code",
            [
                "train",
                "--data",
                str(good),
                "--backbone",
                "test-tiny-vit",
                "--pretrained",
                str(evil),
                "--out",
                str(tmp / "x"),
            ],
            False,
        )
    )
    return cases


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/clip_adapter_pwned",))


def _nan_weights(p: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(p / "model.safetensors")
    name = sorted(weights)[0]
    save_file({**weights, name: weights[name] * float("nan")}, p / "model.safetensors")


def _huge_weights(p: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(p / "model.safetensors")
    name = next(n for n in sorted(weights) if weights[n].is_floating_point())
    save_file({**weights, name: torch.full_like(weights[name], 1e30)}, p / "model.safetensors")


def _other_weights(tmp: Path) -> Path:
    from clip_adapter.backbones import create_backbone
    from clip_adapter.core.files import save_tensors

    other = create_backbone("test-tiny-vit", "none", precision="fp32", seed=5)
    path = tmp / "other.safetensors"
    save_tensors(path, {k: v.float() for k, v in other.model.state_dict().items()})
    return path


def ray_cases(tmp: Path, good: Path) -> list[tuple[str, list[str], bool]]:
    """Bad Ray options (`extract --ray`, `bench --ray`): each refused in one line before Ray starts."""
    extract = [
        "extract",
        "--data",
        str(good),
        *TINY,
        "--shots",
        "2",
        "--seeds",
        "1",
        "--views",
        "1",
        "--cache-dir",
        str(tmp / "ray-cache"),
    ]
    return [
        ("option/--ray --address nobody listens at", extract + ["--ray", "--address", "127.0.0.1:1"], False),
        ("option/--ray --address malformed", extract + ["--ray", "--address", "head-node"], False),
        ("option/--ray --address port out of range", extract + ["--ray", "--address", "10.0.0.1:99999"], False),
        ("option/--address without --ray", extract + ["--address", "auto"], False),
        ("option/--ray-workers 0", extract + ["--ray", "--ray-workers", "0"], False),
        ("option/--ray-gpus-per-worker negative", extract + ["--ray", "--ray-gpus-per-worker", "-0.5"], False),
        ("option/--ray-cpus-per-worker and gpus both 0", extract + ["--ray", "--ray-cpus-per-worker", "0"], False),
        ("option/--ray-retries -1", extract + ["--ray", "--ray-retries", "-1"], False),
        (
            "option/bench --ray --setting base-to-new",
            [
                "bench",
                "--setting",
                "base-to-new",
                "--dataset",
                f"g={good}",
                *TINY,
                "--ray",
                "--out",
                str(tmp / "ray-b"),
            ],
            False,
        ),
    ]


def gap_cases(tmp: Path, good: Path, art: Path) -> list[tuple[str, list[str], bool]]:
    """`clip-adapter gap`: data, options, artifact and output path faults."""
    gap = ["gap", "--data", str(good), *TINY]
    tip = tmp / "tip-artifact"
    assert (
        main(
            [
                "train",
                "--data",
                str(good),
                *TINY,
                "--method",
                "tip-adapter",
                "--shots",
                "2",
                "--views",
                "1",
                "--out",
                str(tip),
            ]
        )
        == 0
    )
    own = tmp / "gap-own"
    assert main([*gap, "--out", str(own)]) == 0
    return [
        ("gap/missing dataset", ["gap", "--data", str(tmp / "nope"), *TINY, "--out", str(tmp / "g1")], False),
        ("gap/--template without {}", [*gap, "--template", "a photo", "--out", str(tmp / "g2")], False),
        (
            "gap/--inversion-template without {}",
            [*gap, "--inversion", "--inversion-template", "a photo", "--out", str(tmp / "g3")],
            False,
        ),
        ("gap/--inversion-lr 0", [*gap, "--inversion", "--inversion-lr", "0", "--out", str(tmp / "g4")], False),
        ("gap/--inversion-lr nan", [*gap, "--inversion", "--inversion-lr", "nan", "--out", str(tmp / "g5")], False),
        (
            "gap/--inversion-steps 10^6",
            [*gap, "--inversion", "--inversion-steps", "1000000", "--out", str(tmp / "g6")],
            False,
        ),
        ("gap/--bins 0", [*gap, "--bins", "0", "--out", str(tmp / "g7")], False),
        (
            "gap/--inversion with too few images for queries + gallery",
            [*gap, "--inversion", "--queries-per-class", "1000", "--out", str(tmp / "g8")],
            False,
        ),
        ("gap/artifact missing", [*gap, "--artifact", str(tmp / "no-artifact"), "--out", str(tmp / "g9")], False),
        (
            "gap/artifact of another backbone",
            ["gap", "--data", str(good), "--backbone", "toy", "--artifact", str(art), "--out", str(tmp / "g10")],
            False,
        ),
        (
            "gap/artifact without adapted features (tip-adapter)",
            [*gap, "--artifact", str(tip), "--out", str(tmp / "g11")],
            False,
        ),
        ("gap/--out inside the dataset", [*gap, "--out", str(good / "gap-out")], False),
        ("gap/--out holding the user's files", [*gap, "--out", str(_user_folder(tmp, "gap-user"))], False),
        ("gap/--out our own gap output without --overwrite", [*gap, "--out", str(own)], False),
    ]


def survey_cases(tmp: Path, good: Path) -> list[tuple[str, list[str], bool]]:
    """The survey's commands: compose-bench, finetune, multilabel, distill, video."""
    videos = tmp / "videos"
    (videos / "jump").mkdir(parents=True, exist_ok=True)
    (videos / "jump" / "a.mp4").write_bytes(b"not a video at all")
    labels = _user_file(tmp, "labels.json", '{"train": {"x.png": [["nested"]]}}')
    return [
        (
            "compose/--suites missing",
            ["compose-bench", "--suites", str(tmp / "no-suites"), "--out", str(tmp / "c1")],
            False,
        ),
        (
            "compose/--out inside --write-toy-suites",
            ["compose-bench", "--write-toy-suites", str(tmp / "s"), "--out", str(tmp / "s" / "o")],
            False,
        ),
        (
            "compose/--model without LABEL=",
            ["compose-bench", "--suites", str(tmp / "no-suites"), "--model", "shipped", "--out", str(tmp / "c2")],
            False,
        ),
        ("finetune/unknown recipe", ["finetune", "--recipe", "magic", "--out", str(tmp / "f1")], False),
        (
            "finetune/--data missing",
            ["finetune", "--recipe", "negclip", "--data", str(tmp / "no.json"), "--out", str(tmp / "f2")],
            False,
        ),
        (
            "finetune/--set unfreeze=everything",
            ["finetune", "--recipe", "negation", "--set", "unfreeze=everything", "--out", str(tmp / "f3")],
            False,
        ),
        (
            "finetune/--out holding the user's files",
            ["finetune", "--recipe", "negation", "--out", str(_user_folder(tmp, "ft-user"))],
            False,
        ),
        (
            "multilabel/--data missing",
            ["multilabel", "train", "--data", str(tmp / "no-labels.json"), "--out", str(tmp / "m1")],
            False,
        ),
        (
            "multilabel/nested label list",
            ["multilabel", "train", "--data", str(labels), "--out", str(tmp / "m2")],
            False,
        ),
        ("distill/unknown student", ["distill", "--student", "toy-huge", "--out", str(tmp / "d1")], False),
        (
            "distill/--captions missing",
            ["distill", "--student", "toy-tiny", "--captions", str(tmp / "no.json"), "--out", str(tmp / "d2")],
            False,
        ),
        (
            "video/--data missing",
            ["video", "zero-shot", "--data", str(tmp / "no-videos"), "--out", str(tmp / "v1")],
            False,
        ),
        ("video/corrupt mp4", ["video", "zero-shot", "--data", str(videos), "--out", str(tmp / "v2")], False),
        (
            "video/--frames 0",
            ["video", "zero-shot", "--data", str(videos), "--frames", "0", "--out", str(tmp / "v3")],
            False,
        ),
        (
            "video/--template without {}",
            ["video", "zero-shot", "--data", str(videos), "--template", "a video", "--out", str(tmp / "v4")],
            False,
        ),
        ("video/toy-dataset --size odd", ["video", "toy-dataset", "--size", "33", "--out", str(tmp / "v5")], False),
        (
            "video/train on a dataset without validation clips",
            [
                "video",
                "train",
                "--split-dir",
                str(_toy_videos_without_val(tmp)),
                "--steps",
                "2",
                "--out",
                str(tmp / "v6"),
            ],
            False,
        ),
        (
            "video/toy-pretrain --out holding the user's files",
            ["video", "toy-pretrain", "--out", str(_user_folder(tmp, "vp-user"))],
            False,
        ),
        (
            "compose/--model checkpoint missing",
            [
                "compose-bench",
                "--write-toy-suites",
                str(tmp / "s2"),
                "--items-per-suite",
                "2",
                "--model",
                f"gone={tmp / 'no-ckpt'}",
                "--out",
                str(tmp / "c3"),
            ],
            False,
        ),
        (
            "finetune/unknown --set key",
            ["finetune", "--recipe", "labclip", "--set", "colour=red", "--out", str(tmp / "f4")],
            False,
        ),
        (
            "multilabel/evaluate a missing artifact",
            ["multilabel", "evaluate", str(tmp / "no-art"), "--data", str(_multilabel_file(tmp, good))],
            False,
        ),
        (
            "distill/--teacher-artifact missing",
            [
                "distill",
                "--teacher-artifact",
                str(tmp / "no-art"),
                "--data",
                str(good),
                "--student",
                "toy-tiny",
                "--out",
                str(tmp / "d3"),
            ],
            False,
        ),
        *cross_dataset_cases(tmp),
    ]


def cross_dataset_cases(tmp: Path) -> list[tuple[str, list[str], bool]]:
    """``video cross-dataset``: evaluation splits that are missing, empty, repeated or share classes with training."""
    from clip_adapter.video.toyclips import write_toy_videos

    tiny = dict(frames=4, size=16)
    target = str(write_toy_videos(tmp / "xd-t1", 0, 0, 1, actions="novel", **tiny))
    source = str(write_toy_videos(tmp / "xd-src", 1, 1, 0, actions="base", **tiny))
    mixed = str(write_toy_videos(tmp / "xd-mix", 0, 0, 1, actions="growing,moving up", **tiny))
    cross = ["video", "cross-dataset"]
    return [
        (
            "video/toy-dataset --actions unknown",
            ["video", "toy-dataset", "--actions", "moving up,flying", "--out", str(tmp / "v7")],
            False,
        ),
        (
            "video/toy-dataset --actions one",
            ["video", "toy-dataset", "--actions", "growing", "--out", str(tmp / "v8")],
            False,
        ),
        (
            "video/toy-dataset --classes unknown",
            ["video", "toy-dataset", "--classes", "shapes", "--out", str(tmp / "v8b")],
            False,
        ),
        (
            "video/toy-dataset --classes shape-actions with --actions",
            ["video", "toy-dataset", "--classes", "shape-actions", "--actions", "base", "--out", str(tmp / "v8c")],
            False,
        ),
        (
            "video/toy-pretrain --threads negative",
            ["video", "toy-pretrain", "--threads", "-1", "--out", str(tmp / "v8d")],
            False,
        ),
        (
            "video/cross-dataset eval folder missing",
            [*cross, "--eval-split-dir", str(tmp / "no-split"), "--out", str(tmp / "v9")],
            False,
        ),
        (
            "video/cross-dataset eval split without test clips",
            [*cross, "--eval-split-dir", source, "--split", "test", "--out", str(tmp / "v10")],
            False,
        ),
        (
            "video/cross-dataset classes shared with training",
            [*cross, "--train-split-dir", source, "--eval-split-dir", mixed, "--out", str(tmp / "v11")],
            False,
        ),
        ("video/cross-dataset no eval splits", [*cross, "--out", str(tmp / "v12")], False),
        (
            "video/cross-dataset training folder missing",
            [*cross, "--train-split-dir", str(tmp / "gone"), "--eval-split-dir", target, "--out", str(tmp / "v13")],
            False,
        ),
        (
            "video/cross-dataset same split twice",
            [*cross, "--eval-split-dir", target, str(Path(target) / "."), "--out", str(tmp / "v14")],
            False,
        ),
        (
            "video/base-to-novel unknown --base class",
            ["video", "base-to-novel", "--split-dir", source, "--base", "flying,growing", "--out", str(tmp / "v15")],
            False,
        ),
        (
            "video/base-to-novel class both base and novel",
            [
                "video",
                "base-to-novel",
                "--split-dir",
                source,
                "--base",
                "growing",
                "--novel",
                "growing,shrinking",
                "--out",
                str(tmp / "v16"),
            ],
            False,
        ),
        (
            "video/base-to-novel --unfreeze text",
            ["video", "base-to-novel", "--split-dir", source, "--unfreeze", "text", "--out", str(tmp / "v17")],
            False,
        ),
    ]


def _multilabel_file(tmp: Path, good: Path) -> Path:
    """A valid one-image multi-label file in its own folder (the feature cache stays outside it)."""
    root = tmp / "ml-data" / "data"
    root.mkdir(parents=True)
    (root / "0.png").write_bytes((good / "cat" / "0.png").read_bytes())
    (root / "labels.json").write_text('{"classes": ["cat"], "test": {"0.png": ["cat"]}}')
    return root / "labels.json"


def _toy_videos_without_val(tmp: Path) -> Path:
    from clip_adapter.video.toyclips import write_toy_videos

    return write_toy_videos(tmp / "toy-videos-noval", train=1, val=0, test=1, frames=4, size=16)


def no_ray_cases(tmp: Path, good: Path) -> list[tuple[str, list[str], bool]]:
    """`--ray` where Ray is not installed (run with `import ray` failing): one line naming the extra."""
    return [
        ("option/extract --ray without Ray installed", ["extract", "--data", str(good), *TINY, "--ray"], False),
        (
            "option/bench --ray without Ray installed",
            ["bench", "--dataset", f"g={good}", *TINY, "--ray", "--out", str(tmp / "ray-b")],
            False,
        ),
    ]


@contextlib.contextmanager
def _without_ray():
    saved = sys.modules.get("ray")
    sys.modules["ray"] = None  # type: ignore[assignment]  # `import ray` now raises ImportError
    try:
        yield
    finally:
        if saved is None:
            sys.modules.pop("ray", None)
        else:
            sys.modules["ray"] = saved


def main_table() -> int:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["CLIP_ADAPTER_CACHE"] = str(tmp / "cache")
        good = good_folder(tmp / "good")
        art = train_artifact(tmp, good)
        cases = (
            dataset_cases(tmp) + option_cases(tmp, good) + output_cases(tmp, good, art) + artifact_cases(tmp, good, art)
        )
        cases += (
            ray_cases(tmp, good) + gap_cases(tmp, good, art) + survey_cases(tmp, good) + trust_cases(tmp, good, art)
        )
        guarded = {**user_files(tmp), **{str(p): p.read_bytes() for p in good.rglob("*") if p.is_file()}}
        rows = []
        for name, argv, expect_ok in cases:
            code, err = run(argv)
            rows.append((name, verdict(code, err, tmp, expect_ok, lost_files(guarded))))
        for name, argv, expect_ok in no_ray_cases(tmp, good):
            with _without_ray():
                code, err = run(argv)
            rows.append((name, verdict(code, err, tmp, expect_ok, lost_files(guarded))))
    print(
        "| input | exit | clear one-line message | traceback | half-written files | user files lost | message |\n"
        "|---|---|---|---|---|---|---|"
    )
    for name, v in rows:
        print(
            f"| {name} | {v['exit']} | {'yes' if v['clear'] else 'NO'} | {'YES' if v['traceback'] else 'no'} | "
            f"{v['leftovers']} | {v['lost']} | {v['message']} |"
        )
    clear = sum(v["clear"] for _, v in rows)
    crashed = sum(v["traceback"] for _, v in rows)
    print(
        f"\n{len(rows)} bad-input kinds tried; {clear} handled with a clear message or handled outright; "
        f"{crashed} crashed; {sum(v['leftovers'] for _, v in rows)} half-written files left; "
        f"code execution from the pickle: {'YES' if os.path.exists('/tmp/clip_adapter_pwned') else 'no'}"
    )
    lost = max((v["lost"] for _, v in rows), default=0)
    print(f"user files lost or changed: {lost}")
    return 0 if clear == len(rows) and not crashed and not lost else 1


if __name__ == "__main__":
    sys.exit(main_table())
