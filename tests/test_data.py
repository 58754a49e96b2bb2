"""Datasets, the few-shot sampler, templates and image decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip_adapter.core.errors import ConfigError, DataError
from clip_adapter.data import (
    Dataset,
    Sample,
    ensemble,
    load_dataset,
    load_rgb,
    read_coop_split,
    read_image_folder,
    resolve_templates,
    sample_few_shot,
    write_coop_split,
)


def toy_dataset(per_class: int = 10, classes: int = 3) -> Dataset:
    samples = [Sample(Path(f"/d/c{c}/{i}.jpg"), c) for c in range(classes) for i in range(per_class)]
    return Dataset(
        "toy", [f"c{c}" for c in range(classes)], Path("/d"), {"train": samples, "val": samples, "test": samples}
    )


def test_sampler_is_seeded_and_follows_the_coop_protocol():
    ds = toy_dataset()
    a, b, c = sample_few_shot(ds, 4, 1), sample_few_shot(ds, 4, 1), sample_few_shot(ds, 4, 2)
    assert a.train == b.train and a.val == b.val
    assert a.train != c.train
    assert len(a.train) == 12 and len(a.val) == 12 and len(a.test) == 30
    assert len(sample_few_shot(ds, 16, 1).val) == 3 * 4  # min(K, 4) validation shots
    per_class = [sum(s.label == k for s in a.train) for k in range(3)]
    assert per_class == [4, 4, 4]


def dassl_generate_fewshot(data_source: list, num_shots: int) -> list:
    """Dassl's DatasetBase.generate_fewshot_dataset (repeat=False), re-stated as the reference."""
    import random
    from collections import defaultdict

    tracker = defaultdict(list)
    for item in data_source:
        tracker[item.label].append(item)
    dataset = []
    for _, items in tracker.items():
        dataset.extend(random.sample(items, num_shots) if len(items) >= num_shots else items)
    return dataset


@pytest.mark.parametrize(("shots", "seed"), [(1, 1), (2, 2), (4, 3), (16, 1), (8, 2)])
def test_sampler_reproduces_dassl_on_a_split_file_with_shuffled_class_order(shots, seed):
    import random

    rng = random.Random(0)
    train = [Sample(Path(f"/d/c{c}/{i:03d}.jpg"), c) for c in range(15) for i in range(rng.randint(6, 25))]
    rng.shuffle(train)  # CoOp's split files list each class's images in no sorted order, classes interleaved
    val = [Sample(Path(f"/d/v{c}/{i}.jpg"), c) for c in range(15) for i in range(6)]
    rng.shuffle(val)
    ds = Dataset("toy", [f"c{c}" for c in range(15)], Path("/d"), {"train": train, "val": val, "test": []})
    random.seed(seed)  # Dassl's set_random_seed, then train and val from the same generator
    expected_train = dassl_generate_fewshot(train, shots)
    expected_val = dassl_generate_fewshot(val, min(shots, 4))
    split = sample_few_shot(ds, shots, seed)
    assert split.train == expected_train and split.val == expected_val


def test_short_class_uses_all_it_has_and_says_so():
    ds = toy_dataset(per_class=3)
    split = sample_few_shot(ds, 8, 1)
    assert len(split.train) == 9 and split.short_classes["c0"]["train"] == 3


def test_bad_shots_value_is_refused():
    with pytest.raises(ConfigError):
        sample_few_shot(toy_dataset(), -1, 1)


def test_coop_json_round_trips(tmp_path):
    root = tmp_path / "images"
    for c in ("golden_retriever", "tabby_cat"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8)).save(root / c / f"{i}.png")
    ds = read_image_folder(root)
    assert ds.classnames == ["golden retriever", "tabby cat"]
    write_coop_split(ds, tmp_path / "split.json", meta={"note": "x"})
    back = read_coop_split(tmp_path / "split.json", root)
    assert back.classnames == ds.classnames
    for split in ("train", "val", "test"):
        assert [(s.path.resolve(), s.label) for s in back.split(split)] == [
            (s.path.resolve(), s.label) for s in ds.split(split)
        ]


def write_split(tmp_path, entries, root=None):
    root = root or tmp_path
    (tmp_path / "s.json").write_text(json.dumps({"train": entries, "val": [], "test": []}))
    return tmp_path / "s.json", root


def test_split_labels_that_disagree_with_class_names_are_refused(tmp_path):
    path, root = write_split(tmp_path, [["a.jpg", 0, "cat"], ["b.jpg", 0, "dog"]])
    with pytest.raises(DataError, match=r"train\[1\].*label 0 is 'dog' here but 'cat'"):
        read_coop_split(path, root)


def test_split_label_gaps_and_duplicate_names_are_refused(tmp_path):
    with pytest.raises(DataError, match="label 1 has no image"):
        read_coop_split(*write_split(tmp_path, [["a.jpg", 0, "cat"], ["b.jpg", 2, "dog"], ["c.jpg", 0, "cat"]]))
    with pytest.raises(DataError, match=r"label 0 \('cat'\) and label 1 \('cat'\) give the same class name"):
        read_coop_split(*write_split(tmp_path, [["a.jpg", 0, "cat"], ["b.jpg", 1, "cat"]]))
    with pytest.raises(DataError, match=r"label 2 is out of range.*labels 0\.\.1"):
        read_coop_split(*write_split(tmp_path, [["a.jpg", 0, "cat"], ["b.jpg", 2, "dog"]]))


@pytest.mark.parametrize("bad", ["../outside.jpg", "/etc/passwd", "a/../../x.jpg"])
def test_split_paths_may_not_leave_the_root(tmp_path, bad):
    (tmp_path / "root").mkdir()
    with pytest.raises(DataError, match="absolute|leaves the image root"):
        read_coop_split(*write_split(tmp_path, [[bad, 0, "cat"]], tmp_path / "root"))


def test_image_folder_errors_name_the_culprit(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_image_folder(tmp_path / "missing")
    (tmp_path / "d" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "d" / "cat" / "1.png")
    (tmp_path / "d" / "dog").mkdir()
    with pytest.raises(DataError, match="class folder .*dog has no images"):
        read_image_folder(tmp_path / "d")


def test_image_folder_split_is_deterministic_and_disjoint(image_folder):
    a, b = read_image_folder(image_folder), read_image_folder(image_folder)
    assert a.splits == b.splits
    sets = [set(s.path for s in a.split(x)) for x in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(map(len, sets)) == 30 and len(sets[0]) == 15


def test_presplit_folder_is_used_as_is(tmp_path):
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (8, 8)).save(tmp_path / split / c / f"{i}.png")
    ds = load_dataset(tmp_path)
    assert ds.count("test") == 10 and ds.count("train") + ds.count("val") == 10 and ds.count("val") == 2


def test_templates_and_ensembling():
    assert resolve_templates(None, "eurosat") == ("a centered satellite photo of {}.",)
    assert resolve_templates(None, "my-photos") == ("a photo of a {}.",)
    with pytest.raises(ConfigError):
        resolve_templates("no placeholder")
    raw = torch.tensor([[2.0, 0], [0, 3.0], [1.0, 0], [1.0, 0]])
    assert torch.allclose(ensemble(raw, 2), torch.tensor([[0.7071, 0.7071], [1.0, 0.0]]), atol=1e-4)


@pytest.mark.parametrize(
    "mode,note",
    [("L", "grayscale"), ("CMYK", "CMYK"), ("I;16", "high bit depth"), ("RGBA", "transparency"), ("P", "palette")],
)
def test_unusual_modes_are_converted_and_reported(tmp_path, mode, note):
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    if mode == "I;16":
        Image.fromarray(np.full((6, 6), 40000, dtype=np.uint16)).save(path)
    else:
        Image.new(mode, (6, 6)).save(path)
    img, notes = load_rgb(path)
    assert img.mode == "RGB" and note in notes[0]
    if mode == "I;16":
        assert img.getpixel((0, 0))[0] == round(40000 / 65535 * 255) or abs(img.getpixel((0, 0))[0] - 155) <= 1


def test_broken_images_give_one_line_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.jpg")
    (tmp_path / "trunc.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:200])
    for name, pattern in [
        ("empty.jpg", "zero-byte"),
        ("text.jpg", "cannot be decoded"),
        ("trunc.jpg", "cannot be decoded"),
        ("nope.jpg", "not found"),
    ]:
        with pytest.raises(DataError, match=pattern) as info:
            load_rgb(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)


def test_dataset_without_val_split_draws_val_from_unused_train_images():
    ds = toy_dataset()
    ds.splits["val"] = []
    split = sample_few_shot(ds, 4, 1)
    assert len(split.val) == 12 and not set(split.val) & set(split.train)


def test_split_file_templates_are_the_datasets_own_and_round_trip(tmp_path):
    from clip_adapter.pipeline import templates_for

    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "cat" / "0.png")
    entries = [["cat/0.png", 0, "cat"]]
    (tmp_path / "split.json").write_text(
        json.dumps({"train": entries, "test": entries, "meta": {"templates": ["a sketch of a {}."]}})
    )
    ds = load_dataset(tmp_path)
    assert templates_for(ds) == ("a sketch of a {}.",) and templates_for(ds, ("art of the {}.",)) == ("art of the {}.",)
    write_coop_split(sample_few_shot(ds, 1, 1).dataset, tmp_path / "again.json")
    assert read_coop_split(tmp_path / "again.json", images).templates == ("a sketch of a {}.",)
    (tmp_path / "split.json").write_text(json.dumps({"train": entries, "meta": {"templates": ["no placeholder"]}}))
    with pytest.raises(DataError, match="meta.templates"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    ("name", "template"),
    [
        ("split_zhou_OxfordPets", "a photo of a {}, a type of pet."),
        ("food-101", "a photo of {}, a type of food."),
        ("split_zhou_DescribableTextures", "{} texture."),
        ("caltech-101", "a photo of a {}."),
        ("my-photos", "a photo of a {}."),
    ],
)
def test_coop_file_and_folder_names_get_their_datasets_template(name, template, tmp_path):
    from clip_adapter.pipeline import templates_for, templates_source

    ds = Dataset(name, ["a"], tmp_path, {})
    assert templates_for(ds) == (template,)
    assert ("no standard dataset matched" in templates_source(ds)) == (name == "my-photos")


def test_a_split_file_passed_on_its_own_is_named_by_its_file(tmp_path):
    from clip_adapter.data import load_dataset
    from clip_adapter.pipeline import templates_for

    (tmp_path / "images" / "a").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "a" / "x.png")
    split = tmp_path / "split_zhou_OxfordPets.json"
    split.write_text('{"train": [["a/x.png", 0, "a"]], "val": [], "test": []}')
    ds = load_dataset(tmp_path / "images", split)
    assert templates_for(ds) == ("a photo of a {}, a type of pet.",)
