"""The notebook API: its docstring examples run as tests, plus inputs a notebook passes (PIL images, mixed lists)."""

from __future__ import annotations

import doctest

import pytest
from PIL import Image

import clip_adapter
from clip_adapter import api
from clip_adapter.core.errors import ConfigError
from clip_adapter.toyworld import write_task_dataset


def test_the_api_docstring_examples_run():
    result = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    work = tmp_path_factory.mktemp("api")
    photos = write_task_dataset("color", "night", work / "photos", 4, 2, 4, seed=0)
    return clip_adapter.fit(photos, shots=2, cache_dir=work / "cache", epochs=3), photos


def test_predict_keeps_the_input_order_for_files_folders_and_pil_images(fitted):
    clf, photos = fitted
    red = photos / "images" / "red" / "test_0000.png"
    records = clf.predict([Image.open(red), red, photos / "images" / "blue"])
    assert records[0]["path"] is None and records[1]["path"] == str(red)
    blue = sorted(str(p) for p in (photos / "images" / "blue").iterdir())
    assert [r["path"] for r in records[2:]] == blue
    assert records[0]["label"] == records[1]["label"]  # the same pixels, as a file or in memory
    assert clf.result["protocol"] == "val" and clf.method == "clip-adapter"


def test_bad_top_k_is_a_clear_error(fitted):
    with pytest.raises(ConfigError, match="top_k"):
        fitted[0].predict(fitted[1] / "images" / "red", top_k=0)
