"""Reported defects of the Python API and the artifact/eval/validate/train commands, each pinned by a test.

1. PIL images get the same guards as files; ``predict([])`` is ``[]``.
2. Every config.json field read on load is checked: fuzzed configs give ArtifactError, never a crash (exit 5).
3. The API's errors name the API's keywords (``skip_bad=True``), not command-line options.
4. ``eval`` matches classes by name: a held-out folder may hold a subset; unknown classes are refused.
5. ``validate`` checks class names against train's backbone as train does.
6. A run records (and prints) the shots it used, not only those asked for.
"""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import clip_adapter
import clip_adapter.backbones
from clip_adapter.cli import main
from clip_adapter.core.errors import ArtifactError, ClipAdapterError, ConfigError, DataError
from clip_adapter.data import images as images_module
from clip_adapter.toyworld import write_task_dataset


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A toy-world CLIP-Adapter (8 colours, 4 training images per class), saved as an artifact."""
    work = tmp_path_factory.mktemp("hardening")
    photos = write_task_dataset("color", "night", work / "photos", 4, 2, 4, seed=0)
    clf = clip_adapter.fit(photos, shots=2, cache_dir=work / "cache", epochs=2, precision="fp32")
    return clf, photos, clf.save_pretrained(work / "artifact"), work


def red_file(photos):
    return photos / "images" / "red" / "test_0000.png"


def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and isinstance(excinfo.value, ClipAdapterError)
    return text


# --- 1. PIL images pass the same guards as files ------------------------------------------------


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: Image.new("RGB", (100000, 1)), r"100000x1, an aspect ratio beyond 100:1"),
        (
            lambda: Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32), "F"),
            r"64 non-finite \(NaN or infinite\) pixel values",
        ),
        (lambda: Image.new("RGB", (0, 0)), r"0x0: it has no pixels"),
        (lambda: Image.new("RGB", (0, 5)), r"0x5: it has no pixels"),
    ],
    ids=["wide", "all-nan-float", "zero-size", "zero-width"],
)
def test_a_bad_pil_image_is_refused_as_a_bad_file_is(fitted, make, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        fitted[0].predict([red_file(fitted[1]), make()])
    assert "input[1] (a PIL image)" in one_line_error(info)


def test_a_pil_image_over_the_pixel_limit_is_refused(fitted, monkeypatch):
    monkeypatch.setattr(images_module, "MAX_PIXELS", 50 * 50)  # the limit files get, without allocating 90 Mpx here
    with pytest.raises(DataError, match="60x60, a possible decompression bomb"):
        fitted[0].predict(Image.new("RGB", (60, 60)))


def test_a_16_bit_pil_image_is_converted_as_the_same_file_is(fitted, tmp_path):
    """``convert("RGB")`` clips 16-bit values to white; files are rescaled, and PIL images now are too."""
    ramp = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    as_file, as_pil = fitted[0].predict([path, Image.open(path)], top_k=8)
    assert as_pil["top_k"] == as_file["top_k"]


def test_predict_of_nothing_is_an_empty_list(fitted):
    clf = fitted[0]
    assert clf.predict([]) == []
    assert tuple(clf.logits([]).shape) == (0, len(clf.classnames))


def test_skip_bad_keeps_one_record_per_input_in_order(fitted, tmp_path):
    clf, photos = fitted[0], fitted[1]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    records = clf.predict(
        [red_file(photos), broken, Image.new("RGB", (0, 0)), tmp_path / "gone.png", Image.open(red_file(photos))],
        skip_bad=True,
    )
    assert [r["path"] for r in records] == [str(red_file(photos)), str(broken), None, str(tmp_path / "gone.png"), None]
    assert [r["label"] is None for r in records] == [False, True, True, True, False]
    assert "no pixels" in records[2]["error"] and "not found" in records[3]["error"]
    # The same image (a path, then an open image) at two batch positions: same labels, probabilities equal
    # up to float rounding (a GEMM's row blocking may move the 6th printed decimal).
    assert [label for label, _ in records[0]["top_k"]] == [label for label, _ in records[4]["top_k"]]
    assert [p for _, p in records[0]["top_k"]] == pytest.approx([p for _, p in records[4]["top_k"]], abs=2e-6)


def test_an_input_that_is_no_image_is_a_clear_error(fitted):
    with pytest.raises(ConfigError, match=r"input\[0\] is a ndarray"):
        fitted[0].predict([np.zeros((4, 4, 3))])


# --- 3. The API's errors name what the API offers -------------------------------------------------


def test_api_errors_suggest_keywords_not_command_line_options(fitted, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as info:
        fitted[0].predict([broken])
    message = one_line_error(info)
    assert "skip_bad=True" in message and "--skip-bad" not in message
    assert fitted[0].predict([broken], skip_bad=True)[0]["error"].startswith(f"image {broken}")


def test_fit_errors_suggest_keywords_too(tmp_path):
    odd = tmp_path / "odd"
    for name in ("dark red", "blue"):
        (odd / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(odd / name / f"{i}.png")
    with pytest.raises(DataError) as info:
        clip_adapter.fit(odd, shots=1, cache_dir=tmp_path / "cache")
    message = one_line_error(info)
    assert "allow_unknown_words=True" in message and "classnames=" in message and "--" not in message


# --- 2. Every config field read on load is checked ------------------------------------------------

BIG = "9" * 5000  # more digits than Python will parse into an int (4,300)
WRONG = {
    "int": "7",
    "negative": "-1",
    "str": '"x"',
    "float": "1.5",
    "list": "[1]",
    "dict": '{"a": 1}',
    "null": "null",
    "bool": "true",
    "nan": "NaN",
    "huge-int": BIG,
    "nested": '[[{"a": [null, {"b": []}]}], {"c": "d"}]',
}


def config_paths(obj, prefix=()):
    """Every key path of a JSON object (and the first element of each list), depth first."""
    if prefix:
        yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from config_paths(value, prefix + (key,))
    elif isinstance(obj, list) and obj:
        yield from config_paths(obj[0], prefix + (0,))


def mutated(config: dict, path: tuple, raw: str) -> str:
    """``config`` as JSON text with the value at ``path`` replaced by the raw JSON ``raw`` (which json.dumps
    cannot write).
    """
    copy = json.loads(json.dumps(config))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "@@MUTATED@@"
    return json.dumps(copy).replace('"@@MUTATED@@"', raw)


@pytest.fixture
def fast_backbones(monkeypatch):
    """create_backbone, memoised: the fuzz rebuilds the same toy backbone hundreds of times (unhashable arguments
    pass through).
    """
    real = clip_adapter.backbones.create_backbone
    cached = functools.lru_cache(maxsize=None)(real)
    active = [True]

    def create(*args, **kwargs):
        if not active[0]:  # a module first imported during this test may keep this function: uncached from now on
            return real(*args, **kwargs)
        try:
            return cached(*args, **kwargs)
        except TypeError as exc:
            if "unhashable" not in str(exc):
                raise
            return real(*args, **kwargs)

    monkeypatch.setattr(clip_adapter.backbones, "create_backbone", create)
    yield
    active[0] = False  # a shared, mutable backbone must never reach another test
    cached.cache_clear()


def fuzz_cases(artifact):
    config = json.loads((artifact / "config.json").read_text())
    cases = [
        (".".join(map(str, path)), name, mutated(config, path, raw))
        for path in config_paths(config)
        for name, raw in WRONG.items()
    ]
    info = config["backbone"]
    for seed in (
        BIG,
        "-1",
        "4294967296",
        "1e3",
        "٣",
    ):  # 5,000 digits, negative, past 2**32, not digits, a non-ASCII digit
        cases.append(
            (
                "backbone.id",
                f"seed {seed[:12]}",
                json.dumps({**config, "backbone": {**info, "id": f"toy/toy-cnn/random-init:{seed}"}}),
            )
        )
    return cases


@pytest.mark.filterwarnings(
    "ignore:.*ignoring unknown key"
)  # a dict where a value belongs adds keys: warned, then refused
def test_fuzzed_config_fields_give_only_artifact_errors(fitted, tmp_path, fast_backbones):
    artifact = fitted[2]
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    cases = fuzz_cases(artifact)
    assert len(cases) > 300
    crashes, loaded = [], 0
    for field, kind, text in cases:
        (copy / "config.json").write_text(text)
        try:
            clip_adapter.load(copy, cache_dir=fitted[3] / "cache")
            loaded += 1  # a value that is as good as the original (selection details, library_version, ...)
        except ArtifactError as exc:
            if "\n" in str(exc):
                crashes.append((field, kind, "multi-line message"))
        except Exception as exc:  # noqa: BLE001 - the point of the test: nothing but ArtifactError gets out
            crashes.append((field, kind, f"{type(exc).__name__}: {str(exc)[:120]}"))
    assert not crashes, crashes
    assert loaded < len(cases) / 2


@pytest.mark.slow
def test_fuzzed_configs_never_make_eval_or_predict_exit_5(fitted, tmp_path, capsys, fast_backbones):
    clf, photos, artifact, work = fitted
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    image = str(red_file(photos))
    statuses = {}
    for field, kind, text in fuzz_cases(artifact)[::3]:  # a third of the cases per command: every field, varied types
        (copy / "config.json").write_text(text)
        for argv in (
            ["predict", str(copy), image, "--cache-dir", str(work / "cache")],
            ["eval", str(copy), "--data", str(photos), "--cache-dir", str(work / "cache")],
        ):
            code = main(argv)
            err = capsys.readouterr().err
            statuses[(argv[0], field, kind)] = code
            assert code in (0, 2), (argv[0], field, kind, err[-400:])
            assert "Traceback" not in err
    assert 2 in statuses.values()


def test_a_backbone_name_that_is_not_a_string_is_named(fitted, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(fitted[2], copy)
    config = json.loads((copy / "config.json").read_text())
    config["backbone"]["name"] = 7
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"backbone.name must be a non-empty string, got 7"):
        clip_adapter.load(copy)
    config["backbone"]["name"] = "no-such-architecture"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"recorded backbone 'no-such-architecture' cannot be rebuilt"):
        clip_adapter.load(copy)


# --- 4. eval matches classes by name ---------------------------------------------------------------


def held_out(photos, root, classes):
    """A plain ImageFolder of the test images of ``classes`` (a held-out folder as users make them)."""
    for name in classes:
        (root / name).mkdir(parents=True)
        source = photos / "images" / name if (photos / "images" / name).is_dir() else photos / "images" / "red"
        for path in sorted(source.glob("test_*.png")):
            shutil.copy(path, root / name / path.name)
    return root


def test_eval_on_a_subset_of_the_classes_matches_them_by_name(fitted, tmp_path, capsys):
    clf, photos, artifact, work = fitted
    held = held_out(photos, tmp_path / "held3", ["red", "yellow"])
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "eval",
                str(artifact),
                "--data",
                str(held),
                "--split",
                "all",
                "--cache-dir",
                str(work / "cache"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "6 of the artifact's 8 classes have no images here" in err and "'blue'" in err
    report = json.loads(out.read_text())
    assert set(report["per_class_accuracy"]) == {"red", "yellow"}
    assert set(report["absent_classes"]) == set(clf.classnames) - {"red", "yellow"}
    assert len(report["confusion_matrix"]["counts"][0]) == len(clf.classnames)  # predictions over every class
    files = sorted(held.rglob("*.png"))
    predicted = clf.predict(files)
    truth = [p.parent.name for p in files]
    expected = sum(r["label"] == t for r, t in zip(predicted, truth)) / len(files)
    assert report["num_images"] == len(files) and report["accuracy"] == pytest.approx(expected)
    assert clf.evaluate(held, split="all")["accuracy"] == pytest.approx(expected)


def test_eval_refuses_classes_the_artifact_never_saw(fitted, tmp_path, capsys):
    clf, photos, artifact, work = fitted
    held = held_out(photos, tmp_path / "held4", ["red", "yellow", "mauve"])
    assert main(["eval", str(artifact), "--data", str(held), "--split", "all", "--cache-dir", str(work / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 class the artifact was not trained on: 'mauve'" in err[0] and "label" not in err[0]
    with pytest.raises(DataError, match="'mauve'") as info:
        clf.evaluate(held, split="all")
    assert "classnames={...}" in one_line_error(info)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"mauve": "purple"}))
    assert (
        main(
            [
                "eval",
                str(artifact),
                "--data",
                str(held),
                "--split",
                "all",
                "--classnames",
                str(mapping),
                "--cache-dir",
                str(work / "cache"),
            ]
        )
        == 0
    )


# --- 5. validate checks the prompts train checks -----------------------------------------------------


def odd_folder(root):
    for name in ("dark red", "grün", "gelb", "rosa", "blue"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (60 * i, 30, 200)).save(root / name / f"{i}.png")
    return root


def test_validate_refuses_the_class_names_train_refuses(tmp_path, capsys):
    odd = odd_folder(tmp_path / "odd")
    assert main(["validate", "--data", str(odd), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    errors = {(i["kind"], i["message"].split(":")[0]) for i in report["issues"] if i["severity"] == "error"}
    assert errors == {
        ("unreadable-classname", "class 'dark red'"),
        ("unreadable-classname", "class 'grün'"),
        ("unreadable-classname", "class 'gelb'"),
        ("unreadable-classname", "class 'rosa'"),
        ("identical-prompts", "classes 'gelb' and 'rosa' get identical prompts on toy-cnn; train refuses it"),
    }
    assert main(["train", "--data", str(odd), "--shots", "1", "--out", str(tmp_path / "run")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["validate", "--data", str(odd), "--allow-unknown-words"]) == 0  # train would go on: a warning
    assert "train warns and goes on" in capsys.readouterr().out
    assert main(["validate", "--data", str(odd), "--method", "linear-probe"]) == 0  # it never reads the prompts
    assert (
        main(["validate", "--data", str(odd), "--backbone", "test-tiny-vit", "--pretrained", "none"]) == 0
    )  # an open vocabulary


# --- 6. the shots a run used -------------------------------------------------------------------------


def test_a_run_records_and_prints_the_shots_it_used(fitted, tmp_path, capsys):
    photos, work = fitted[1], fitted[3]
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(photos),
                "--shots",
                "64",
                "--epochs",
                "1",
                "--views",
                "1",
                "--precision",
                "fp32",
                "--cache-dir",
                str(work / "cache"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "clip-adapter 4-shot (64 requested) seed 1" in err and "64-shot" not in err
    result = json.loads((out / "result.json").read_text())
    assert result["shots_requested"] == 64 and result["run"]["shots"] == 64  # the bench groups runs by what was asked
    assert result["shots_used"] == {"min": 4, "max": 4, "classes_below_max": {}}


def test_the_bench_tables_still_read_results_with_shots_used(fitted, tmp_path):
    from clip_adapter.bench.aggregate import load_results

    result = dict(fitted[0].result)
    path = tmp_path / "runs" / "val" / "d" / "m" / "shots2_seed1.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**result, "bench": {"label": "m"}}))
    rows = clip_adapter.bench_results(tmp_path)
    assert rows == load_results([path]) and rows[0]["shots"] == 2
