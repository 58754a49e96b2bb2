"""Reliability II, data input: split files, templates, images, class names, odd file names.

Each test names a hostile input a user can give and the one-line error (or the
handling) it must get; the same kinds run end to end through ``validate`` and
``train`` from tests/corpus.py.
"""

from __future__ import annotations

import json
import os
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from clip_adapter.apps.validate import validate_dataset
from clip_adapter.core.errors import ConfigError, DataError
from clip_adapter.data import check_template, load_dataset, load_rgb, resolve_templates
from clip_adapter.data.dataset import parse_coop_split
from clip_adapter.data.images import DECODE_VERSION, EXIF_NOTE, MAX_ASPECT_RATIO, BadImage
from clip_adapter.data.issues import Issues, show
from corpus import BAD_DATASETS, good_folder

# ---------------------------------------------------------------- split files


def test_huge_label_fails_fast_without_allocating(tmp_path):
    data = {"train": [["cat/0.png", 0, "cat"], ["cat/1.png", 10**9, "lion"]]}
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"train\[1\]: label 1000000000 is out of range.*labels 0\.\.1"):
            parse_coop_split(data, tmp_path, "s.json", "s")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20, peak  # range(10**9 + 1) as a set would be tens of GB


def test_huge_label_is_one_collected_issue_when_validating(tmp_path):
    issues = Issues(strict=False)
    data = {"train": [["cat/0.png", 0, "cat"], ["dog/0.png", 1, "dog"], ["x.png", 10**12, "lion"]]}
    ds = parse_coop_split(data, tmp_path, "s.json", "s", issues)
    assert ds.classnames == ["cat", "dog"]
    assert [i.kind for i in issues.items] == ["label-out-of-range"]


@pytest.mark.parametrize(
    "entry,pattern",
    [
        (["cat/\x000.png", 0, "cat"], r"train\[1\]: path 'cat/\\x000.png' contains a NUL byte"),
        (["cat/0.png", True, "cat"], r"train\[1\]: label must be a non-negative integer, got True"),
        (["cat/0.png", 0.0, "cat"], r"train\[1\]: label must be"),
        (["cat/0.png", 0, {"name": "cat"}], r"train\[1\]: class name must be a non-empty string"),
        ({"path": "cat/0.png"}, r"train\[1\]: expected \[relative_path, label, classname\]"),
    ],
)
def test_odd_entries_are_one_line_errors_naming_the_entry(tmp_path, entry, pattern):
    data = {"train": [["cat/0.png", 0, "cat"], entry]}
    with pytest.raises(DataError, match=pattern) as info:
        parse_coop_split(data, tmp_path, "s.json", "s")
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_symlink_loop_in_a_split_file_is_an_entry_error(tmp_path):
    os.symlink("loop.png", tmp_path / "loop.png")
    with pytest.raises(DataError, match=r"train\[0\]: path 'loop.png' cannot be resolved"):
        parse_coop_split({"train": [["loop.png", 0, "cat"]]}, tmp_path, "s.json", "s")


@pytest.mark.parametrize("data", ["bad\x00path", "bad\x00path.json"])
def test_nul_byte_in_the_data_option_is_a_data_error(data):
    with pytest.raises(DataError, match="not found|cannot be read"):
        load_dataset(data)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"train": [["a.png", ' + "7" * 10_000 + ', "a"]]}'])
def test_split_json_that_json_cannot_hold_is_a_one_line_error(tmp_path, text):
    (tmp_path / "images").mkdir()
    (tmp_path / "split.json").write_text(text)
    with pytest.raises(DataError, match="split file .*split.json") as info:
        load_dataset(tmp_path)
    assert "\n" not in str(info.value)


json_scalars = st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=20,
)
hostile_entries = st.lists(
    st.tuples(
        st.sampled_from(["a.png", "a\x00.png", "b\n.png", "\udcff.png", "c/../../d.png"]), json_values, json_values
    ).map(list),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(entries=hostile_entries, meta=st.fixed_dictionaries({"templates": json_values}) | json_values)
def test_split_reader_fuzz_only_raises_data_errors(entries, meta):
    root = Path("/nonexistent-root")
    for strict in (True, False):
        try:
            ds = parse_coop_split({"train": entries, "meta": meta}, root, "fuzz.json", "fuzz", Issues(strict=strict))
        except DataError as exc:
            assert "\n" not in str(exc)
            continue
        assert all(0 <= s.label < ds.num_classes for s in ds.split("train"))


# ---------------------------------------------------------------- templates


@pytest.mark.parametrize(
    "template,pattern",
    [
        ("a photo of a {x}.", r"has the field '\{x\}'"),
        ("a photo of a {0}.", r"has the field '\{0\}'"),
        ("a photo of a {:>9}.", r"has the field '\{:>9\}'"),
        ("a photo of a {!r}.", r"has the field '\{!r\}'"),
        ("a photo of a {}. {", r"not a valid template \(Single '\{'"),
        ("a photo of a {}. }", r"not a valid template \(Single '\}'"),
        ("a photo of a {{}}.", r"has 0 '\{\}' fields"),
        ("{} and {}", r"has 2 '\{\}' fields"),
    ],
)
def test_bad_templates_fail_at_resolve_time_naming_template_and_source(template, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        resolve_templates(["a photo of a {}.", template])
    assert str(info.value).startswith("--template #2: prompt template") and repr(template) in str(info.value)


def test_good_templates_and_named_sets_resolve():
    assert resolve_templates("a {{sketch}} of a {}.") == ("a {{sketch}} of a {}.",)
    assert (
        resolve_templates(["imagenet-ensemble", "art of a {}."])[-1] == "art of a {}."
        and len(resolve_templates(["imagenet-ensemble", "{}"])) == 8
    )
    with pytest.raises(ConfigError, match="no prompt templates"):
        resolve_templates([])
    with pytest.raises(ConfigError, match="must be a string"):
        check_template(3, "--template")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="{}ax0:!r ", max_size=10))
def test_a_template_that_passes_the_check_formats_any_class_name(template):
    try:
        check_template(template, "fuzz")
    except ConfigError:
        return
    assert "{0} x}" in template.format("{0} x}")  # a class name with braces is never re-interpreted


def test_split_file_template_with_a_field_fails_when_the_split_is_read(tmp_path):
    root = BAD_DATASETS["template-with-named-field"](tmp_path / "ds")
    with pytest.raises(
        DataError, match=r"split file .*split.json meta.templates\[0\]: prompt template 'a photo of a \{x\}.'"
    ):
        load_dataset(root)


def test_bad_template_option_stops_train_before_any_encoding(tmp_path, capsys, monkeypatch):
    import clip_adapter.pipeline as pipeline
    from clip_adapter.cli import main

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoding started before the templates were checked")

    monkeypatch.setattr(pipeline, "encode_split", no_encoding)
    data = good_folder(tmp_path / "ds", per_class=4)
    code = main(
        ["train", "--data", str(data), "--template", "a photo of {x}.", "--shots", "1", "--out", str(tmp_path / "a")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "'a photo of {x}.'" in err and "AssertionError" not in err, err


# ---------------------------------------------------------------- images


def _exif_jpeg(path: Path, orientation: int) -> None:
    pixels = np.zeros((16, 24, 3), dtype=np.uint8)  # stored 24 wide, 16 tall: left half red, right half blue
    pixels[:, :12] = (255, 0, 0)
    pixels[:, 12:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)


def _is_red(pixel) -> bool:
    return pixel[0] > 200 and pixel[2] < 60


def test_exif_rotated_jpeg_decodes_upright(tmp_path):
    _exif_jpeg(tmp_path / "portrait.jpg", 6)  # "rotate 90° clockwise to display": the stored left side is the top
    img, notes = load_rgb(tmp_path / "portrait.jpg")
    assert img.size == (16, 24)
    assert _is_red(img.getpixel((8, 2))) and not _is_red(img.getpixel((8, 21)))
    assert notes == [f"{EXIF_NOTE} 6 (stored rotated or mirrored)"] and DECODE_VERSION == 2
    _exif_jpeg(tmp_path / "upside-down.jpg", 3)
    img, _ = load_rgb(tmp_path / "upside-down.jpg")
    assert img.size == (24, 16) and _is_red(img.getpixel((21, 8))) and not _is_red(img.getpixel((2, 8)))
    _exif_jpeg(tmp_path / "plain.jpg", 1)
    img, notes = load_rgb(tmp_path / "plain.jpg")
    assert img.size == (24, 16) and _is_red(img.getpixel((2, 8))) and notes == []


def test_extreme_aspect_ratio_is_refused_from_the_header(tmp_path):
    Image.new("L", (1_000_000, 1)).save(tmp_path / "line.png")
    Image.new("L", (MAX_ASPECT_RATIO * 20, 20)).save(tmp_path / "panorama.png")
    Image.new("L", (MAX_ASPECT_RATIO * 20 + 1, 20)).save(tmp_path / "too-wide.png")
    Image.new("L", (1, MAX_ASPECT_RATIO + 1)).save(tmp_path / "too-tall.png")
    assert load_rgb(tmp_path / "panorama.png")[0].size == (MAX_ASPECT_RATIO * 20, 20)
    for name in ("line.png", "too-wide.png", "too-tall.png"):
        with pytest.raises(BadImage, match=f"{name} is .*aspect ratio beyond {MAX_ASPECT_RATIO}:1") as info:
            load_rgb(tmp_path / name)
        assert info.value.kind == "extreme-aspect-ratio"


def test_float_tiff_with_nan_is_a_bad_image_without_numpy_warnings(tmp_path):
    pixels = np.linspace(0, 2, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(pixels, "F").save(tmp_path / "ok.tif")
    pixels[1, 1] = np.nan
    Image.fromarray(pixels, "F").save(tmp_path / "nan.tif")
    pixels[1, 1] = -np.inf
    Image.fromarray(pixels, "F").save(tmp_path / "inf.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img, notes = load_rgb(tmp_path / "ok.tif")
        assert (
            img.getpixel((7, 7)) == (255, 255, 255) and img.getpixel((0, 0)) == (0, 0, 0) and "rescaled F" in notes[0]
        )
        for name in ("nan.tif", "inf.tif"):
            with pytest.raises(BadImage, match=f"{name} holds 1 non-finite") as info:
                load_rgb(tmp_path / name)
            assert info.value.kind == "non-finite-pixels"


# ---------------------------------------------------------------- class names


def _folder(root: Path, *classes: str) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (c * 40 % 256, i, 7)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("a,b", [("red_fox", "red fox"), ("Red_Fox", "red_fox"), ("CAT", "cat")])
def test_colliding_class_folders_are_refused_naming_both(tmp_path, a, b):
    root = _folder(tmp_path / "ds", "dog", a, b)
    with pytest.raises(DataError, match="same class name") as info:
        load_dataset(root)
    assert repr(a) in str(info.value) and repr(b) in str(info.value)
    issues = Issues(strict=False)
    load_dataset(root, issues=issues)
    assert [i.kind for i in issues.items] == ["duplicate-classname"]


def test_class_folder_that_cleans_to_empty_is_refused(tmp_path):
    root = _folder(tmp_path / "ds", "dog", "___")
    with pytest.raises(DataError, match="class folder '___' gives an empty class name"):
        load_dataset(root)
    assert load_dataset(root, classnames={"___": "unknown"}).classnames == ["unknown", "dog"]


def test_class_name_map_renames_by_folder_or_cleaned_name(tmp_path):
    root = _folder(tmp_path / "ds", "red fox", "red_fox", "cat")
    mapping = tmp_path / "names.json"
    mapping.write_text(json.dumps({"red_fox": "arctic fox", "cat": "tabby_cat"}))
    assert load_dataset(root, classnames=mapping).classnames == ["tabby cat", "red fox", "arctic fox"]
    assert load_dataset(root, classnames={"red fox": "fox", "red_fox": "arctic fox"}).classnames[1:] == [
        "fox",
        "arctic fox",
    ]


@pytest.mark.parametrize(
    "mapping,pattern",
    [
        ({"cat": "Dog"}, r"class folder 'cat' and class folder 'dog' give the same class name|class folder 'dog' and"),
        ({"lion": "big cat"}, r"class-name map: 'lion' matches no class folder or class name"),
        ({"cat": 5}, r"class-name map: the new name for 'cat' must be a string, got 5"),
        ({"cat": "\x07"}, r"class folder 'cat' holds control characters"),
    ],
)
def test_class_name_map_errors_name_the_key(tmp_path, mapping, pattern):
    root = _folder(tmp_path / "ds", "cat", "dog")
    with pytest.raises(DataError, match=pattern):
        load_dataset(root, classnames=mapping)


@pytest.mark.parametrize(
    "content,pattern", [(None, "not found"), ("{", "not valid JSON"), ("[1]", "must be a JSON object")]
)
def test_unreadable_class_name_map_names_the_file(tmp_path, content, pattern):
    root = _folder(tmp_path / "ds", "cat", "dog")
    if content is not None:
        (tmp_path / "map.json").write_text(content)
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(root, classnames=tmp_path / "map.json")
    assert "map.json" in str(info.value)


def test_class_name_map_applies_to_split_files(tmp_path):
    root = BAD_DATASETS["split-classnames-collide"](tmp_path / "ds")
    with pytest.raises(DataError, match=r"label 0 \('cat'\) and label 2 \('Cat'\) give the same class name"):
        load_dataset(root)
    assert load_dataset(root, classnames={"Cat": "lynx"}).classnames == ["cat", "dog", "lynx"]


def test_validate_reports_class_problems_and_accepts_a_map(tmp_path):
    root = _folder(tmp_path / "ds", "Red_Fox", "red fox", "___")
    report = validate_dataset(root, shots=2)
    assert {i.kind for i in report.errors} == {"duplicate-classname", "empty-classname"}
    fixed = validate_dataset(root, shots=2, classnames={"red fox": "arctic fox", "___": "other"})
    assert fixed.errors == [] and fixed.clean


# ---------------------------------------------------------------- report and file names


def test_report_splits_errors_from_warnings(tmp_path):
    root = _folder(tmp_path / "ds", "cat", "dog")
    (root / "cat" / "notes.txt").write_text("x")
    (root / "dog" / "0.png").write_bytes(b"")
    report = validate_dataset(root, shots=16)
    assert {i.kind for i in report.errors} == {"zero-byte"}
    assert {i.kind for i in report.warnings} == {"few-images", "non-image-file"}
    assert report.to_dict()["severity_counts"]["error"] == 1 and not report.clean
    assert validate_dataset(_folder(tmp_path / "small", "a", "b"), shots=16).errors == []


def test_newline_and_non_utf8_file_names_are_read_and_reported_on_one_line(tmp_path):
    root = good_folder(tmp_path / "ds", per_class=4)
    os.rename(root / "cat" / "0.png", os.fsencode(root / "cat") + b"/new\nline.png")
    os.rename(root / "cat" / "1.png", os.fsencode(root / "cat") + b"/caf\xe9.png")
    (root / "dog" / "bad\n.png").write_bytes(b"")
    ds = load_dataset(root)
    names = {s.path.name for samples in ds.splits.values() for s in samples}
    assert {"new\nline.png", "caf\udce9.png", "bad\n.png"} <= names
    report = validate_dataset(root, shots=2)
    kinds = {(i.kind, i.severity) for i in report.issues}
    assert kinds == {("unusual-filename", "info"), ("zero-byte", "error")}, kinds
    for issue in report.issues:
        assert issue.message.isprintable(), issue.message
        issue.message.encode("utf-8")  # a strict UTF-8 stdout can print it
    assert "'" + str(root / "cat") + "/caf\\xe9.png'" in [i.message.split(":")[0] for i in report.issues]
    with pytest.raises(DataError, match=r"bad\\n\.png' is an empty"):
        load_rgb(root / "dog" / "bad\n.png")


def test_show_escapes_only_what_needs_it():
    assert show("photos/café/1.png") == "photos/café/1.png"
    assert show("a\nb") == "'a\\nb'" and show("caf\udce9") == "'caf\\xe9'" and show("tab\there") == "'tab\\there'"
