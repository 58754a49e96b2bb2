"""Feature cache: hits, keys, resume after interruption, corruption."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from clip_adapter.core.errors import DataError
from clip_adapter.data import ensemble
from clip_adapter.features import AugmentConfig, FeatureStore, extract_images, image_store, prompt_embeddings
from clip_adapter.features import extract as extract_module
from clip_adapter.features.transforms import train_view


class CountingBackbone:
    """Wraps a backbone and counts encoder calls (rows), optionally crashing after N batches."""

    def __init__(self, inner, crash_after: int | None = None):
        self.inner, self.rows, self.batches, self.crash_after = inner, 0, 0, crash_after
        self.text_rows = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_images(self, pixels):
        if self.crash_after is not None and self.batches >= self.crash_after:
            raise KeyboardInterrupt("simulated kill")
        self.batches += 1
        self.rows += len(pixels)
        return self.inner.encode_images(pixels)

    def encode_texts(self, texts):
        self.text_rows += len(texts)
        return self.inner.encode_texts(texts)


def paths_of(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.jpg"))


def run(backbone, paths, cache, augment=None, seed=0, **kw):
    return extract_images(backbone, paths, image_store(backbone, cache), augment, seed, batch_size=4, **kw)


def test_second_extraction_hits_the_cache(tiny_backbone, image_folder, tmp_path):
    paths, aug = paths_of(image_folder), AugmentConfig(views=2)
    first = CountingBackbone(tiny_backbone)
    feats, kept, stats = run(first, paths, tmp_path / "c", aug)
    assert feats.shape == (len(paths), 2, tiny_backbone.embed_dim) and first.rows == 2 * len(paths)
    second = CountingBackbone(tiny_backbone)
    again, _, stats2 = run(second, paths, tmp_path / "c", aug)
    assert second.rows == 0 and stats2.cached == 2 * len(paths)
    assert torch.equal(feats, again)


def test_text_prompts_are_cached(tiny_backbone, tmp_path):
    counting = CountingBackbone(tiny_backbone)
    first = ensemble(prompt_embeddings(counting, ["cat", "dog"], ("a photo of a {}.", "art of the {}."), tmp_path), 2)
    assert counting.text_rows == 4
    second = ensemble(prompt_embeddings(counting, ["cat", "dog"], ("a photo of a {}.", "art of the {}."), tmp_path), 2)
    assert counting.text_rows == 4 and torch.equal(first, second)
    assert torch.allclose(first.norm(dim=1), torch.ones(2))


def test_interrupted_extraction_resumes_with_identical_features(tiny_backbone, image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(extract_module, "IMAGES_PER_CHUNK", 8)  # 4 images x 2 views per chunk
    paths, aug = paths_of(image_folder), AugmentConfig(views=2)
    reference, _, _ = run(tiny_backbone, paths, tmp_path / "ref", aug)
    crashing = CountingBackbone(tiny_backbone, crash_after=5)
    with pytest.raises(KeyboardInterrupt):
        run(crashing, paths, tmp_path / "resume", aug)
    resumed = CountingBackbone(tiny_backbone)
    feats, _, stats = run(resumed, paths, tmp_path / "resume", aug)
    assert 0 < resumed.rows < 2 * len(paths), "finished chunks must not be redone"
    assert torch.equal(feats, reference)


def test_changed_image_is_never_served_stale_features(tiny_backbone, image_folder, tmp_path):
    paths = paths_of(image_folder)
    before, _, _ = run(tiny_backbone, paths, tmp_path / "c")
    Image.new("RGB", (40, 40), (255, 255, 0)).save(paths[0])
    counting = CountingBackbone(tiny_backbone)
    after, _, _ = run(counting, paths, tmp_path / "c")
    assert counting.rows >= 1 and not torch.equal(before[0], after[0]) and torch.equal(before[1:], after[1:])


def test_seed_and_backbone_are_part_of_the_key(tiny_backbone, image_folder, tmp_path):
    from clip_adapter.backbones import create_backbone

    paths, aug = paths_of(image_folder)[:3], AugmentConfig(views=1)
    a, _, _ = run(tiny_backbone, paths, tmp_path / "c", aug, seed=0)
    counting = CountingBackbone(tiny_backbone)
    b, _, _ = run(counting, paths, tmp_path / "c", aug, seed=1)
    assert counting.rows == 3 and not torch.equal(a, b)
    other = create_backbone("test-tiny-vit", "none", precision="fp32", seed=7)
    assert image_store(other, tmp_path / "c").dir != image_store(tiny_backbone, tmp_path / "c").dir


def test_corrupt_shard_is_detected_and_recomputed(tiny_backbone, image_folder, tmp_path):
    paths = paths_of(image_folder)
    before, _, _ = run(tiny_backbone, paths, tmp_path / "c")
    shard = next((tmp_path / "c").rglob("shard-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    counting = CountingBackbone(tiny_backbone)
    after, _, _ = run(counting, paths, tmp_path / "c")
    assert counting.rows > 0 and torch.equal(before, after)


def test_truncated_shard_and_bad_manifest_are_dropped(tmp_path):
    store = FeatureStore(tmp_path, {"backbone": "x"}, "image")
    store.put(["a", "b"], torch.ones(2, 3))
    shard = next(store.dir.glob("shard-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:20])
    store = FeatureStore(tmp_path, {"backbone": "x"}, "image")  # a later run reads from disk
    assert store.missing(["a", "b"]) == ["a", "b"]
    store.put(["c"], torch.ones(1, 3))
    next(store.dir.glob("shard-*.json")).write_text("{not json")
    assert FeatureStore(tmp_path, {"backbone": "x"}, "image").missing(["c"]) == ["c"]


def test_non_finite_features_are_refused_on_write(tmp_path):
    store = FeatureStore(tmp_path, {"backbone": "x"}, "image")
    with pytest.raises(DataError, match="img.jpg"):
        store.put(["a"], torch.tensor([[1.0, float("nan")]]), {"a": "img.jpg"})
    assert len(store) == 0 and not list(store.dir.glob("shard-*"))


def test_augmented_views_depend_only_on_content_view_and_seed(tiny_backbone):
    img = Image.new("RGB", (50, 40), (10, 200, 30))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    pre, aug = tiny_backbone.preprocess, AugmentConfig()
    assert torch.equal(train_view(img, pre, aug, "abc", 3, 0), train_view(img, pre, aug, "abc", 3, 0))
    views = [train_view(img, pre, aug, "abc", v, 0) for v in range(4)]
    assert len({v.sum().item() for v in views}) > 1
    assert views[0].shape == (3, pre.image_size, pre.image_size)


def test_bad_image_stops_or_is_skipped_and_listed(tiny_backbone, image_folder, tmp_path):
    paths = paths_of(image_folder)
    paths[2].write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=paths[2].name):
        run(tiny_backbone, paths, tmp_path / "c")
    feats, kept, stats = run(tiny_backbone, paths, tmp_path / "c", skip_bad=True)
    assert 2 not in kept and len(kept) == len(paths) - 1 and feats.shape[0] == len(paths) - 1
    assert [p for p, _ in stats.skipped] == [str(paths[2])]


def test_unchanged_images_are_hashed_once_per_process(tiny_backbone, image_folder, tmp_path, monkeypatch):
    calls = []
    real = extract_module.sha256_file
    monkeypatch.setattr(extract_module, "sha256_file", lambda p: calls.append(p) or real(p))
    extract_module._hash_file.cache_clear()
    paths = paths_of(image_folder)[:4]
    run(tiny_backbone, paths, tmp_path / "c")
    run(tiny_backbone, paths, tmp_path / "c")
    assert len(calls) == 4
    Image.new("RGB", (40, 40), (0, 0, 255)).save(paths[0])
    run(tiny_backbone, paths, tmp_path / "c")
    assert len(calls) == 5


def test_store_examples_run():
    import doctest

    from clip_adapter.features import store as store_module

    result = doctest.testmod(store_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_shards_of_the_previous_manifest_version_are_recomputed(tmp_path):
    """Version 1 checksummed the tensor bytes only, so its keys cannot be trusted: such shards are dropped."""
    import json

    store = FeatureStore(tmp_path, {"backbone": "x"}, "image", dim=3)
    store.put(["a"], torch.ones(1, 3))
    manifest_path = next(store.dir.glob("shard-*.json"))
    manifest = json.loads(manifest_path.read_text())
    old = {"version": 1, "keys": manifest["keys"], "dim": 3, "sha256": manifest["sha256"]}
    manifest_path.write_text(json.dumps(old))
    assert FeatureStore(tmp_path, {"backbone": "x"}, "image", dim=3).missing(["a"]) == ["a"]
    assert not list(store.dir.glob("shard-*"))


def test_a_newer_manifest_format_is_left_alone_but_not_used(tmp_path):
    """A newer clip-adapter sharing the cache keeps its shards; this one recomputes beside them."""
    import json

    store = FeatureStore(tmp_path, {"backbone": "x"}, "image", dim=3)
    store.put(["a"], torch.ones(1, 3))
    manifest_path = next(store.dir.glob("shard-*.json"))
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "version": 99}))
    assert FeatureStore(tmp_path, {"backbone": "x"}, "image", dim=3).missing(["a"]) == ["a"]
    assert manifest_path.exists()


def test_bad_image_hint_is_the_callers(tiny_backbone, image_folder, tmp_path):
    paths = paths_of(image_folder)[:2]
    paths[1].write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="use --skip-bad"):
        run(tiny_backbone, paths, tmp_path / "c")
    with pytest.raises(DataError) as caught:
        run(tiny_backbone, paths, tmp_path / "c", bad_hint=None)
    assert paths[1].name in str(caught.value) and "skip" not in str(caught.value)
