"""The toy pretraining's text-only binding objective (toyworld.binding)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from clip_adapter.io import sha256_file
from clip_adapter.toyworld import PretrainConfig, Scene, ToyClip, ToyClipConfig, ToyObject, ToyTokenizer, pretrain, sample_scene
from clip_adapter.toyworld.binding import binding_text_batch, binding_text_loss, binding_twin


def _values(scene: Scene, attr: str) -> Counter:
    return Counter(getattr(o, attr) for o in scene.objects)


def test_a_twin_exchanges_one_attribute_between_two_objects_and_keeps_the_bag_of_words():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng, n_objects=int(rng.integers(2, 4)))
        twin = binding_twin(scene, rng)
        if twin is None:
            continue
        changed = [(i, a) for i, (o, t) in enumerate(zip(scene.objects, twin.objects)) for a in ("shape", "color", "size", "fill")
                   if getattr(o, a) != getattr(t, a)]
        assert len(changed) == 2 and changed[0][1] == changed[1][1]  # one attribute, on exactly two objects
        assert all(_values(scene, a) == _values(twin, a) for a in ("shape", "color", "size", "fill", "position"))


def test_no_twin_when_no_two_objects_differ():
    obj = ToyObject("circle", "red", "large", "left", "solid")
    assert binding_twin(Scene((obj, ToyObject("circle", "red", "large", "right", "solid"))), np.random.default_rng(0)) is None


def test_the_batch_is_seeded_and_a_twin_differs_from_its_anchor_only_where_the_swap_shows():
    anchors, candidates, targets = binding_text_batch(3, 5, 16)
    assert (anchors, candidates, targets.tolist()) == tuple(x if not torch.is_tensor(x) else x.tolist() for x in binding_text_batch(3, 5, 16))
    n = len(anchors)
    assert torch.all(targets[:, :n].diagonal() == 1)  # its own paraphrase is always a positive
    for i, (anchor, twin) in enumerate(zip(anchors, candidates[n:])):
        words, twin_words = anchor.split(), twin.split()
        assert len(words) == len(twin_words)  # the same phrasing: only attribute words (and their articles) change
        assert sum(w != t for w, t in zip(words, twin_words)) <= 4
        assert bool(targets[i, n + i]) == (anchor.rstrip(".") == twin.rstrip("."))  # a twin reads as a paraphrase only if identical


def test_the_loss_prefers_paraphrases_over_twins():
    anchors = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    targets = torch.cat([torch.eye(4), torch.zeros(4, 4)], 1)
    good = binding_text_loss(anchors, torch.cat([anchors, -anchors]), targets)
    bad = binding_text_loss(anchors, torch.cat([-anchors, anchors]), targets)
    assert float(good) < 0.01 < float(bad)


def test_a_few_steps_on_the_binding_loss_separate_anchors_from_their_twins():
    torch.manual_seed(0)
    model, tok = ToyClip(ToyClipConfig()), ToyTokenizer()
    anchors, candidates, targets = binding_text_batch(0, 0, 16)
    a, c = tok(anchors), tok(candidates)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("visual")], lr=1e-3)
    losses = []
    for _ in range(25):
        loss = binding_text_loss(model.encode_text(a), model.encode_text(c), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_pretraining_with_the_binding_loss_is_reproducible_and_differs_from_plain(tmp_path):
    settings = dict(steps=2, batch_size=8, warmup_steps=1, workers=0, text_binding_batch=8)
    plain = pretrain(PretrainConfig(out_dir=str(tmp_path / "p"), **settings))
    first = pretrain(PretrainConfig(out_dir=str(tmp_path / "a"), text_binding_weight=1.0, **settings))
    second = pretrain(PretrainConfig(out_dir=str(tmp_path / "b"), text_binding_weight=1.0, **settings))
    assert sha256_file(first) == sha256_file(second) != sha256_file(plain)
    assert "--text-binding-weight 1.0" in (tmp_path / "a" / "toy_clip.json").read_text()


def test_continued_pretraining_starts_from_the_init_checkpoint(tmp_path):
    from clip_adapter.toyworld import load_toy_clip

    path = pretrain(PretrainConfig(out_dir=str(tmp_path / "c"), init="shipped", steps=1, batch_size=4, lr=1e-6, warmup_steps=1, workers=0))
    shipped, tokenizer, _, _ = load_toy_clip("shipped")
    continued, cont_tokenizer, _, _ = load_toy_clip(path)
    assert cont_tokenizer.vocab == tokenizer.vocab
    start, after = shipped.state_dict(), continued.state_dict()
    assert max(float((start[k].float() - after[k].float()).abs().max()) for k in start if "weight" in k) < 1e-3
    assert "--init shipped" in (tmp_path / "c" / "toy_clip.json").read_text()


def test_init_refuses_architecture_options():
    import pytest

    from clip_adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="drop widths"):
        PretrainConfig(init="shipped", widths=(8, 16), depths=(1, 1))
