"""The held-out discipline of benchmarks/: development and held-out worlds are distinct, and the runner reports both."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import heldout  # noqa: E402
import worlds  # noqa: E402
from synthetic_world import make_world  # noqa: E402


def test_dev_and_heldout_worlds_are_disjoint_and_vary_what_makes_them_hard():
    dev, held = worlds.DEV, worlds.HELDOUT
    assert {w.role for w in dev} == {"dev"} and {w.role for w in held} == {"heldout"}
    assert all(w.seed >= 5000 for w in held) and all(w.seed < 5000 for w in dev)
    assert len(held) >= 3
    # constructions, not only seeds, differ: shift strength, rank, per-class shift, noise, sizes, D
    for field in ("shift", "rank_div", "per_class_shift", "noise", "classes", "shots"):
        assert len({getattr(w, field) for w in held}) > 1, field
    assert {w.dim for w in held} == {512, 1024}
    assert min(w.classes for w in held) <= 100 and max(w.classes for w in held) >= 1000


def test_the_first_dev_world_is_the_world_the_earlier_recipe_was_tuned_on():
    spec = dataclasses.replace(worlds.WORLDS["dev-imagenet"], classes=12, shots=2, dim=32)
    data, test_x, _ = worlds.build(spec)
    reference, ref_x, _ = make_world(12, 2, dim=32)
    assert torch.equal(data.train, reference.train) and torch.equal(test_x, ref_x)


def test_worlds_are_deterministic_and_views_can_be_biased_away_from_the_centre():
    spec = worlds.WorldSpec("t", "heldout", 8, 3, 64, seed=5999, view_bias=2.0, noise=0.3)
    a, ax, _ = worlds.build(spec)
    b, bx, _ = worlds.build(spec)
    assert torch.equal(a.train, b.train) and torch.equal(ax, bx)
    unbiased, _, _ = worlds.build(dataclasses.replace(spec, view_bias=0.0))
    moved = a.train - unbiased.train  # the same shift for every view of every image; centre views untouched
    assert torch.allclose(moved, moved[:1, :1].expand_as(moved), atol=1e-4) and moved[0, 0].norm() > 1.0
    assert torch.equal(a.val, unbiased.val) and torch.equal(
        ax, worlds.build(dataclasses.replace(spec, view_bias=0.0))[1]
    )
    with pytest.raises(ValueError, match="role"):
        worlds.WorldSpec("x", "test", 2, 1)


def test_the_runner_prints_dev_and_heldout_side_by_side(monkeypatch, capsys, tmp_path):
    tiny = {
        "dev-t": worlds.WorldSpec("dev-t", "dev", 6, 2, 32, seed=1),
        "ho-t": worlds.WorldSpec("ho-t", "heldout", 6, 2, 32, seed=5001, shift=3.0),
    }
    monkeypatch.setattr(heldout, "WORLDS", tiny)
    monkeypatch.setattr(heldout, "REFERENCE_FILE", tmp_path / "ref.json")
    monkeypatch.setattr(heldout, "REFERENCE", {**heldout.REFERENCE, "epochs": 2})
    assert (
        heldout.main(
            ["--worlds", "ho-t,dev-t", "--methods", "zero-shot,clip-adapter,clap", "--slow-limit", "0", "--reference"]
        )
        == 0
    )
    out = capsys.readouterr().out
    table = out[out.index("| method |") :]
    assert table.splitlines()[0] == "| method | dev-t (dev) | ho-t (heldout) |"  # dev first, whatever the order asked
    assert "| clap | skipped | skipped |" in table
    assert "clip-adapter reference (slow recipe)" in table and "default − reference" in table
    assert (tmp_path / "ref.json").is_file()
