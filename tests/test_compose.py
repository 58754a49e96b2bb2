"""Compositionality benchmarks: suite files, scoring, biases, probes, the compose-bench command."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from clip_adapter.backbones import create_backbone
from clip_adapter.backbones.base import Backbone, PreprocessConfig
from clip_adapter.cli import main as cli_main
from clip_adapter.compose.bench import ComposeConfig, bench_models, markdown_tables
from clip_adapter.compose.bias import BiasConfig, bias_material, measure_bias
from clip_adapter.compose.probes import ProbeConfig, measure_probes, probe_accuracy, probe_material
from clip_adapter.compose.score import item_credit, score_suite
from clip_adapter.compose.suites import read_suite
from clip_adapter.compose.toy_suites import SUITES, suite_drafts, write_toy_suites
from clip_adapter.core.errors import DataError
from clip_adapter.core.threads import torch_threads
from clip_adapter.toyworld import task_images
from clip_adapter.toyworld.tasks import TASKS

SMALL = ComposeConfig(
    bias=BiasConfig(pairs=6), probes=ProbeConfig(shapes=("circle",), train=20, test=6), zero_shot_per_class=2
)
SMALL_CLI = [
    "--bias-pairs",
    "6",
    "--probe-train",
    "20",
    "--probe-test",
    "6",
    "--zero-shot-per-class",
    "2",
    "--precision",
    "fp32",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):  # tiny encoders on a shared CPU: one thread is fastest
        yield


@pytest.fixture(scope="module")
def suites_dir(tmp_path_factory):
    return write_toy_suites(tmp_path_factory.mktemp("compose") / "suites", items_per_suite=8)


@pytest.fixture(scope="module")
def toy():
    return create_backbone("toy", precision="fp32")


class BagOfWords(Backbone):
    """A CLIP whose text embedding is the sum of its words' vectors: blind to order and binding by construction."""

    provider = "test"

    def __init__(self) -> None:
        self.name, self.pretrained, self.weights_id = "bag-of-words", "none", "test:0"
        self.embed_dim, self.logit_scale, self.precision, self.device = 16, 100.0, "fp32", torch.device("cpu")
        self.preprocess = PreprocessConfig(image_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        g = torch.Generator().manual_seed(0)
        self.words, self.image_proj = torch.randn(64, 16, generator=g), torch.randn(3 * 16 * 16, 16, generator=g)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.flatten(1) @ self.image_proj

    def tokenize(self, texts):
        rows = [[1 + zlib.crc32(w.encode()) % 63 for w in t.split()] for t in texts]
        return torch.tensor([r + [0] * (16 - len(r)) for r in rows])

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(tokens, 64).float() * (tokens > 0)[..., None]

    def encode_token_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return embeddings.sum(1) @ self.words  # word counts are exact: any order gives the same bits


class MeanColour(BagOfWords):
    """A CLIP whose image embedding is the mean colour and whose only words are "red" and "blue": reads colour,
    nothing else.
    """

    def __init__(self) -> None:
        super().__init__()
        self.words = torch.zeros(64, 16)
        self.words[1, 0] = self.words[2, 2] = 1.0  # "red" is the R axis, "blue" the B axis

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(pixels.mean(dim=(2, 3)), (0, 13))

    def tokenize(self, texts):
        return torch.tensor([[{"red": 1, "blue": 2}[t]] + [0] * 15 for t in texts])


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- suite files ------------------------------------------------------------------------------


def test_toy_suites_round_trip_and_are_deterministic(suites_dir, tmp_path):
    again = write_toy_suites(tmp_path / "again", items_per_suite=8)
    for name in SUITES:
        suite = read_suite(suites_dir / name)
        drafts = suite_drafts(name, 8)
        assert suite.name == name and len(suite.items) == 8
        assert [i.true_caption for i in suite.items] == [d[1]["true_caption"] for d in drafts]
        assert [i.false_captions for i in suite.items] == [tuple(d[1]["false_captions"]) for d in drafts]
        assert (suites_dir / name / "items.json").read_bytes() == (again / name / "items.json").read_bytes()
        for (
            item
        ) in suite.items:  # every false caption holds the true caption's words: only binding/order tells them apart
            assert all(sorted(f.split()) == sorted(item.true_caption.split()) for f in item.false_captions)
            assert np.asarray(Image.open(item.image)).shape == (64, 64, 3)
    attribution = read_suite(suites_dir / "attribution")
    assert {i.subtype for i in attribution.items} == {"color", "size", "fill"}
    order = read_suite(suites_dir / "order")
    assert all(len(i.false_captions) == len(i.false_kinds) >= 3 for i in order.items)


def _suite(root, items, images=("a.png", "b.png")):
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in images:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "images" / name)
    (root / "items.json").write_text(json.dumps(items))
    return root


GOOD = {"image": "images/a.png", "true_caption": "a red circle", "false_captions": ["a circle red"]}
BOX = {"bbox_x": 0, "bbox_y": 0, "bbox_w": 8, "bbox_h": 8}  # the whole 8x8 image


def test_reader_accepts_aro_spellings(tmp_path):
    items = [
        GOOD,
        {"image_path": "images/b.png", "true caption": "x y", "false_caption": "y x"},
        {"image": "images/b.png", "caption_options": ["p q r", "q p r", "r q p"]},
    ]
    suite = read_suite(_suite(tmp_path / "s", items))
    assert [i.false_captions for i in suite.items] == [("a circle red",), ("y x",), ("q p r", "r q p")]
    assert suite.items[2].chance == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "items, expected",
    [
        ([], "holds no items"),
        ({"image": "images/a.png"}, "JSON list"),
        ([GOOD, {**GOOD, "image": "images/missing.png"}], "item 1: image not found"),
        ([GOOD, {**GOOD, "image": "images/bad.png"}], "item 1: image"),
        ([GOOD, {**GOOD, "false_captions": []}], "item 1 has no false captions"),
        ([GOOD, {"image": "images/b.png", "true_caption": "a b"}], "item 1 has no false captions"),
        ([GOOD, {**GOOD, "false_captions": ["a red circle"]}], "item 1: a false caption is the true caption"),
        ([GOOD, {**GOOD, "false_captions": ["b a", "b a"]}], "item 1: a false caption is repeated"),
        ([GOOD, GOOD], "item 1 repeats item 0"),
        ([GOOD, "text"], "item 1 is not a JSON object"),
        ([GOOD, {**GOOD, "false_kinds": ["a", "b"]}], "item 1: 'false_kinds'"),
        ([GOOD, {**GOOD, "image": "images/b.png", "bbox_x": 0}], "item 1 has bbox_x but not bbox_y, bbox_w, bbox_h"),
        ([GOOD, {**GOOD, "image": "images/b.png", **BOX, "bbox_w": "4"}], "item 1: 'bbox_w' must be a number"),
        ([GOOD, {**GOOD, "image": "images/b.png", **BOX, "bbox_y": True}], "item 1: 'bbox_y' must be a number"),
        ([GOOD, {**GOOD, "image": "images/b.png", **BOX, "bbox_h": 0}], "item 1: the box"),
        ([GOOD, {**GOOD, "image": "images/b.png", **BOX, "bbox_x": -1}], "item 1: the box"),
        (
            [GOOD, {**GOOD, "image": "images/b.png", **BOX, "bbox_x": 8}],
            "item 1: the box (x 8, y 0, w 8, h 8) lies outside the 8x8 image",
        ),
        ([GOOD, {**GOOD, "image": "images/b.png", "attributes": "white"}], "item 1: 'attributes' must be a list"),
        (
            [GOOD, {**GOOD, "image": "images/b.png", "relation_name": 3}],
            "item 1: 'relation_name' must be a non-empty string",
        ),
    ],
)
def test_bad_suite_files_are_one_line_naming_file_and_item(tmp_path, items, expected):
    root = _suite(tmp_path / "s", items)
    (root / "images" / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError) as info:
        read_suite(root)
    message = str(info.value)
    assert expected in message and "items.json" in message and "\n" not in message


# --- scoring ----------------------------------------------------------------------------------


def test_item_credit_counts_ties_as_a_coin_toss():
    assert item_credit(torch.tensor(0.5), torch.tensor([0.1, 0.2])) == 1.0
    assert item_credit(torch.tensor(0.5), torch.tensor([0.5, 0.2])) == 0.5
    assert item_credit(torch.tensor(0.5), torch.tensor([0.5, 0.5])) == pytest.approx(1 / 3)
    assert item_credit(torch.tensor(0.5), torch.tensor([0.6, 0.5])) == 0.0


def test_a_bag_of_words_model_scores_exactly_chance_on_every_suite(suites_dir, tmp_path):
    bow = BagOfWords()
    for name in SUITES:
        result = score_suite(bow, read_suite(suites_dir / name), tmp_path / "cache")
        assert result["accuracy"] == pytest.approx(result["chance"], abs=1e-12), name
        assert all(k["accuracy"] == 0.5 for k in result["kinds"].values())


def test_a_model_that_reads_the_image_scores_above_chance(toy, tmp_path):
    # Positive control: single objects against another class's prompt, which the toy CLIP tells apart.
    images, labels = task_images("shape", "photo", 1, seed=5)
    prompts = TASKS["shape"].prompts()
    items = []
    (tmp_path / "s" / "images").mkdir(parents=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(tmp_path / "s" / "images" / f"{i}.png")
        items.append(
            {"image": f"images/{i}.png", "true_caption": prompts[label], "false_captions": [prompts[(label + 1) % 8]]}
        )
    (tmp_path / "s" / "items.json").write_text(json.dumps(items))
    result = score_suite(toy, read_suite(tmp_path / "s"), tmp_path / "cache")
    assert result["accuracy"] == 1.0 and result["chance"] == 0.5


def _halves(path):
    """A 64x64 image, red on the left half and blue on the right."""
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[:, :32, 0] = pixels[:, 32:, 2] = 255
    Image.fromarray(pixels).save(path)


def _items(root, items):
    root.mkdir(parents=True, exist_ok=True)
    (root / "items.json").write_text(json.dumps(items))
    return root


def test_aro_boxes_crop_the_image_and_subtypes_give_the_macro_accuracy(tmp_path):
    half, green = tmp_path / "half.png", tmp_path / "green.png"
    _halves(half)
    Image.new("RGB", (64, 64), (0, 255, 0)).save(green)
    model, cache = MeanColour(), tmp_path / "cache"
    # The whole image first: its features are now cached under the file's content, and must not stand in for a crop.
    whole = score_suite(
        model,
        read_suite(_items(tmp_path / "whole", [{"image": str(half), "true_caption": "red", "false_caption": "blue"}])),
        cache,
    )
    assert whole["macro_accuracy"] is None and whole["macro_chance"] is None  # no subtypes: no macro figure
    left, right = (
        {"bbox_x": 0, "bbox_y": 0, "bbox_w": 32, "bbox_h": 64},
        {"bbox_x": 32, "bbox_y": 0, "bbox_w": 32, "bbox_h": 64},
    )
    suite = read_suite(
        _items(
            tmp_path / "vg",
            [
                {
                    "image_path": str(half),
                    "true_caption": "red",
                    "false_caption": "blue",
                    "relation_name": "on",
                    **left,
                },
                {
                    "image_path": str(half),
                    "true_caption": "blue",
                    "false_caption": "red",
                    "relation_name": "on",
                    **right,
                },
                {
                    "image_path": str(green),
                    "true_caption": "red",
                    "false_caption": "blue",
                    "attributes": ["green", "plain"],
                },
            ],
        )
    )
    assert [i.box for i in suite.items] == [(0, 0, 32, 64), (32, 0, 32, 64), None]
    result = score_suite(model, suite, cache)
    # each half read as its own colour (an uncropped image is one colour for both items: they cannot both win)
    assert result["subtypes"]["on"] == {"n": 2, "accuracy": 1.0, "chance": 0.5}
    assert result["subtypes"]["green_plain"]["accuracy"] == 0.5  # green is neither: a tie
    assert (
        result["accuracy"] == pytest.approx(2.5 / 3)
        and result["macro_accuracy"] == 0.75
        and result["macro_chance"] == 0.5
    )


def test_a_box_outside_an_unchecked_image_is_refused_when_scored(tmp_path):
    _halves(tmp_path / "half.png")
    root = _items(
        tmp_path / "s",
        [
            {
                "image": str(tmp_path / "half.png"),
                "true_caption": "red",
                "false_caption": "blue",
                "bbox_x": 64,
                "bbox_y": 0,
                "bbox_w": 32,
                "bbox_h": 64,
            }
        ],
    )
    with pytest.raises(DataError, match="lies outside the 64x64 image") as info:
        score_suite(MeanColour(), read_suite(root, decode=False), tmp_path / "cache")
    assert "items.json item 0" in str(info.value) and "\n" not in str(info.value)


def test_bias_of_a_bag_of_words_text_side_is_a_tie(tmp_path):
    # "a red circle and a blue square" and its reverse are one bag: the caption can follow neither object.
    result = measure_bias(BagOfWords(), bias_material(BiasConfig(pairs=5)))
    assert result["interaction"]["large_first_caption_wins"] == 0.5
    assert result["text_follows_first"] == 0.5  # each pair: the first order wins exactly when the reverse loses


def test_probe_finds_a_linear_signal_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    assert probe_accuracy(x, (x[:, 2] > 0).long(), 150, 2) > 0.9
    assert probe_accuracy(x, torch.randint(0, 4, (200,), generator=g), 150, 4) < 0.5


def test_bench_on_the_toy_clip_and_a_random_open_clip(suites_dir, toy, tiny_backbone, tmp_path):
    suites = [read_suite(suites_dir / name, decode=False) for name in SUITES]
    result = bench_models({"toy": toy, "tiny": tiny_backbone}, suites, tmp_path / "cache", SMALL)
    toy_row, tiny_row = result["models"]["toy"], result["models"]["tiny"]
    assert set(toy_row["suites"]) == set(SUITES) == set(tiny_row["suites"])
    assert (
        set(toy_row["zero_shot"]) == {"shape", "color"} and "zero_shot" not in tiny_row
    )  # toy tasks: toy vocabulary only
    assert toy_row["zero_shot"]["shape"]["accuracy"] >= 0.75  # the shipped toy CLIP knows its shapes
    # the bench reports what each measure gives on its own: same suites, same bias pairs, same probe scenes
    assert toy_row["suites"] == {s.name: score_suite(toy, s, tmp_path / "cache") for s in suites}
    assert toy_row["bias"] == measure_bias(toy, bias_material(SMALL.bias))
    assert (
        tiny_row["probes"]["image_probe"] == measure_probes(tiny_backbone, probe_material(SMALL.probes))["image_probe"]
    )
    for row in (toy_row, tiny_row):
        for name, s in row["suites"].items():
            subtypes = [v["accuracy"] for v in s["subtypes"].values()]
            assert s["macro_accuracy"] == (pytest.approx(sum(subtypes) / len(subtypes)) if subtypes else None), name
    table = markdown_tables(result).splitlines()
    assert table[0].startswith(
        "| model | attribution | attribution macro | relation | relation macro | order | negation | negation macro | "
        "img→larger |"
    )
    assert table[2].startswith("| chance / no bias | 50.0 | 50.0 |")
    assert any(line.startswith("| toy |") for line in table) and any(line.startswith("| tiny |") for line in table)


# --- the command ------------------------------------------------------------------------------


def test_cli_writes_suites_then_scores_several_models(tmp_path, capsys):
    suites, out = tmp_path / "suites", tmp_path / "out"
    code, printed, err = run_cli(capsys, "compose-bench", "--write-toy-suites", suites, "--items-per-suite", "4")
    assert code == 0, err
    assert sorted(p.name for p in suites.iterdir() if not p.name.startswith(".")) == sorted(SUITES)
    code, printed, err = run_cli(
        capsys,
        "compose-bench",
        "--suites",
        suites,
        "--out",
        out,
        "--model",
        "base=shipped",
        "--model",
        "random=none",
        *SMALL_CLI,
    )
    assert code == 0, err
    assert "| base |" in printed and "| random |" in printed and "zs shape" in printed
    assert {"compose.json", "compose.md", "suites.png", "bias.png", "probes.png"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "compose.json").read_text())
    assert list(saved["models"]) == ["base", "random"] and saved["models_pretrained"]["random"] == "none"
    assert saved["suites"] == list(SUITES)  # read back from disk, the columns keep the order they were written in
    # our own output: refused without --overwrite, replaced with it
    code, _, err = run_cli(
        capsys, "compose-bench", "--suites", suites / "negation", "--out", out, "--no-bias", "--no-probes", *SMALL_CLI
    )
    assert code == 2 and err.count("\n") == 1 and "--overwrite" in err
    code, _, err = run_cli(
        capsys,
        "compose-bench",
        "--suites",
        suites / "negation",
        "--out",
        out,
        "--no-bias",
        "--no-probes",
        "--overwrite",
        *SMALL_CLI,
    )
    assert code == 0, err
    assert json.loads((out / "compose.json").read_text())["suites"] == ["negation"]
    assert not (out / "bias.png").exists()


def test_cli_on_a_random_open_clip(tmp_path, capsys):
    suites = write_toy_suites(tmp_path / "suites", 3, ("attribution", "negation"))
    code, printed, err = run_cli(
        capsys,
        "compose-bench",
        "--suites",
        suites,
        "--out",
        tmp_path / "out",
        "--backbone",
        "test-tiny-vit",
        "--model",
        "a=none",
        "--no-probes",
        *SMALL_CLI,
    )
    assert code == 0, err
    assert "| a |" in printed and "img→larger" in printed and "zs shape" not in printed


@pytest.mark.parametrize(
    "case",
    [
        "nothing",
        "foreign",
        "inside",
        "bad-model",
        "missing-checkpoint",
        "bad-toy-checkpoint",
        "no-suites",
        "foreign-suites",
        "toy-is-out",
        "out-in-toy",
        "toy-in-out",
    ],
)
def test_cli_refuses_in_one_line_before_any_work(suites_dir, tmp_path, capsys, case):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter.tex").write_text("years of work")
    argv = {
        "nothing": [],
        "foreign": ["--suites", suites_dir, "--out", foreign],
        "inside": ["--suites", suites_dir, "--out", suites_dir / "attribution" / "out"],
        "bad-model": ["--suites", suites_dir, "--out", tmp_path / "o", "--model", "no-equals-sign"],
        "missing-checkpoint": [
            "--suites",
            suites_dir,
            "--out",
            tmp_path / "o",
            "--model",
            f"x={tmp_path}/nope.safetensors",
        ],
        "bad-toy-checkpoint": [
            "--suites",
            suites_dir,
            "--out",
            tmp_path / "o",
            "--model",
            "a=shipped",
            "--model",
            "b=garbage",
        ],
        "no-suites": ["--suites", tmp_path / "absent", "--out", tmp_path / "o"],
        "foreign-suites": ["--write-toy-suites", foreign],
        # the toy suites do not exist yet, so only a check of the two paths themselves can catch these
        "toy-is-out": ["--write-toy-suites", tmp_path / "o", "--out", tmp_path / "o"],
        "out-in-toy": ["--write-toy-suites", tmp_path / "o", "--out", tmp_path / "o" / "bench"],
        "toy-in-out": ["--write-toy-suites", tmp_path / "o" / "suites", "--out", tmp_path / "o"],
    }[case]
    code, _, err = run_cli(capsys, "compose-bench", *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:"), err
    assert (foreign / "chapter.tex").read_text() == "years of work" and not (tmp_path / "o").exists()
