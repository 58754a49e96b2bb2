"""The transfer protocols: domain generalisation (source → shifted targets) and base-to-new."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip_adapter.bench.base_to_new import harmonic_mean, split_base_new
from clip_adapter.bench.datasets import load_benchmark
from clip_adapter.bench.transfer import align_target, subset_accuracy
from clip_adapter.cli import main
from clip_adapter.core.errors import DataError
from clip_adapter.data import Dataset, Sample
from clip_adapter.toyworld import write_task_dataset


@pytest.fixture(scope="module")
def toy_domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return {d: write_task_dataset("color", d, root / d, 4, 2, 6, seed=0) for d in ("photo", "sketch", "night")}


def test_subset_accuracy_restricts_the_candidates():
    logits = torch.tensor([[5.0, 1.0, 2.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([2, 2])
    assert subset_accuracy(logits, labels, [0, 1, 2]) == 0.0
    assert subset_accuracy(logits, labels, [1, 2]) == 0.5  # class 0 is not a candidate any more


def test_targets_align_by_class_name_and_refuse_unknown_classes():
    source = Dataset("src", ["red fox", "cat"], Path("."), {})
    target = Dataset("tgt", ["Cat", "Red_Fox"], Path("."), {"test": [Sample(Path("a"), 0), Sample(Path("b"), 1)]})
    aligned = align_target(source, "tgt", target)
    assert [s.label for s in aligned.samples] == [1, 0] and aligned.subset == [0, 1]
    with pytest.raises(DataError, match="'dog' is not a class of the source"):
        align_target(source, "tgt", Dataset("tgt", ["dog"], Path("."), {"test": [Sample(Path("a"), 0)]}))


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(path)


def test_imagenet_variants_are_read_in_coops_layout(tmp_path):
    wnids = ["n01", "n02", "n03", "n04"]
    text = "".join(f"{w} class {i}\n" for i, w in enumerate(wnids))
    for folder, images, keys in (
        ("imagenetv2", "imagenetv2-matched-frequency-format-val", ["0", "3"]),
        ("imagenet-adversarial", "imagenet-a", ["n02", "n04"]),
    ):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "classnames.txt").write_text(text)
        for key in keys:
            _image(tmp_path / folder / images / key / "x.jpg")
    v2 = load_benchmark("imagenetv2", tmp_path)
    a = load_benchmark("imagenet_a", tmp_path)
    assert v2.classnames == [f"class {i}" for i in range(4)]
    assert sorted(s.label for s in v2.split("test")) == [0, 3] and sorted(s.label for s in a.split("test")) == [1, 3]
    source = Dataset("imagenet", v2.classnames, tmp_path, {})
    assert align_target(source, "imagenet_a", a).subset == [1, 3]


def test_domain_generalization_bench_on_toy_domains(toy_domains, tmp_path, capsys):
    out = tmp_path / "dg"
    argv = [
        "bench",
        "--setting",
        "domain-generalization",
        "--dataset",
        f"photo={toy_domains['photo']}",
        "--target",
        f"sketch={toy_domains['sketch']}",
        "--target",
        f"night={toy_domains['night']}",
        "--methods",
        "zero-shot,clip-adapter",
        "--shots",
        "2",
        "--seeds",
        "1",
        "--views",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "photo (source)" in table and "| night | sketch | target average |" in table
    result = json.loads(next((out / "runs").rglob("clip-adapter/shots2_seed1.json")).read_text())
    targets = result["transfer"]["targets"]
    assert set(targets) == {"sketch", "night"} and targets["sketch"]["num_images"] == 8 * 6
    zero_shot = json.loads(next((out / "runs").rglob("zero-shot/shots2_seed1.json")).read_text())
    # zero-shot trained "on photo" is the same classifier everywhere: its target accuracy is its zero-shot one
    assert (
        zero_shot["transfer"]["targets"]["night"]["accuracy"]
        == zero_shot["transfer"]["targets"]["night"]["zero_shot_accuracy"]
    )
    assert main(argv) == 0 and "0 runs done, 2 already finished" in capsys.readouterr().err


def test_split_base_new_follows_cocoop():
    ds = Dataset("d", list("abcde"), Path("."), {"train": [Sample(Path(str(i)), i) for i in range(5)]})
    base, new = split_base_new(ds)
    assert base.classnames == ["a", "b", "c"] and new.classnames == ["d", "e"]  # ceil(5/2) base classes
    assert [s.label for s in new.split("train")] == [0, 1]
    assert harmonic_mean(0.8, 0.6) == pytest.approx(2 * 0.8 * 0.6 / 1.4)


def test_base_and_new_parts_keep_their_datasets_templates_and_tip_settings():
    from clip_adapter.methods.tip_adapter import TipAdapter
    from clip_adapter.pipeline import templates_for

    ds = Dataset("dtd", list("abcd"), Path("."), {"train": [Sample(Path(str(i)), i) for i in range(4)]})
    for part in split_base_new(ds):
        assert templates_for(part) == templates_for(ds) == ("{} texture.",)
        assert TipAdapter.for_dataset(TipAdapter.Config(), part.name) == TipAdapter.for_dataset(
            TipAdapter.Config(), "dtd"
        )


def test_base_to_new_bench_reports_methods_that_cannot_transfer(toy_domains, tmp_path, capsys):
    out = tmp_path / "b2n"
    argv = [
        "bench",
        "--setting",
        "base-to-new",
        "--dataset",
        f"night={toy_domains['night']}",
        "--methods",
        "zero-shot,clip-adapter,linear-probe",
        "--shots",
        "2",
        "--seeds",
        "1",
        "--views",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| linear-probe | 2 |" in table and "n/a" in table.split("| linear-probe | 2 |")[1].splitlines()[0]
    rows = {p.parent.name: json.loads(p.read_text())["transfer"] for p in (out / "runs").rglob("*.json")}
    assert rows["zero-shot"]["base_classes"] == 4 and rows["zero-shot"]["new_accuracy"] is not None
    assert rows["clip-adapter"]["new_supported"] and not rows["linear-probe"]["new_supported"]
