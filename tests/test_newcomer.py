"""What a newcomer sees: the commands the tool prints work in the shell they are printed to."""

from __future__ import annotations

import sys
from pathlib import Path

from clip_adapter.cli.demo import command_name


def test_the_demo_names_a_command_the_users_shell_can_run(monkeypatch, tmp_path):
    # scripts/demo.sh runs inside .venv; the user's shell has not activated it.
    tool = command_name()
    if sys.prefix == sys.base_prefix:
        assert tool == "clip-adapter"
    else:
        assert Path(tool).is_file() and Path(tool).name == "clip-adapter"
        monkeypatch.chdir(Path(sys.prefix).parent)
        assert command_name() == f"{Path(sys.prefix).name}/bin/clip-adapter"


def test_search_image_names_what_a_non_file_is(tmp_path, capsys):
    import os

    from clip_adapter.cli import main

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, words in (("/dev/null", "is a device"), (str(fifo), "named pipe"), (str(tmp_path), "is a folder")):
        assert main(["search", str(tmp_path / "no-index"), "--image", path]) == 2
        err = capsys.readouterr().err
        assert words in err and "not found" not in err and err.count("\n") == 1, err


def test_a_long_sentence_query_is_text_not_an_os_error():
    # Over 255 bytes, a query is "File name too long" to the kernel; it must still be read as words.
    from clip_adapter.cli.search import query_source

    sentence = "a photo of a dog on a beach " * 20
    assert query_source(sentence, None, False) == ("text", sentence)


def test_a_cache_manifest_holding_nan_is_recomputed_not_a_crash(tmp_path):
    import json

    import torch

    from clip_adapter.features.store import FeatureStore

    store = FeatureStore(tmp_path, {"backbone": "demo"}, "text", dim=3)
    store.put(["k1"], torch.ones(1, 3))
    manifest = next(tmp_path.rglob("shard-*.json"))
    manifest.write_text(manifest.read_text().rstrip().rstrip("}") + ', "x": NaN}')
    json.loads(manifest.read_text())  # valid to Python's reader, as a hand-edited file would be
    again = FeatureStore(tmp_path, {"backbone": "demo"}, "text", dim=3)
    assert again.missing(["k1"]) == ["k1"]  # dropped as a bad shard, to be recomputed (it used to raise ValueError)
