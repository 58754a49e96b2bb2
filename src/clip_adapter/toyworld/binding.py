"""A text-only objective that teaches the toy text tower which attribute belongs to which object.

The seed's finding about real CLIP (Koishigarina et al., 2025, the LABCLIP
paper) is that binding is *present* in each encoder on its own — a linear
probe reads "the colour of the circle" from the text embedding — while the
image–text cosine ignores it. Real CLIP's text tower learns that structure
from the variety of web captions; the toy's plain pretraining never needs
it (two captions that differ only in binding almost never share a batch), so
its text embeddings are a bag of words (probe ≈ 50 %) and LABCLIP, a linear
map of text embeddings, has nothing to work with.

``PretrainConfig.text_binding_weight > 0`` adds this loss to pretraining, a
stand-in for what language alone teaches: for a multi-object scene, a caption
(the anchor) must be closer to another phrasing of the same scene than to the
*same phrasing* of the scene's binding twin — two of its objects with one
attribute (shape, colour, size or fill) exchanged — and to the other scenes'
phrasings. No image takes part, so the loss shapes the text side only; what
it does to the cross-modal cosine is measured, not assumed (``compose-bench``).

Example:
    >>> anchors, candidates, targets = binding_text_batch(0, 0, 4)
    >>> len(anchors), len(candidates), targets.shape
    (4, 8, torch.Size([4, 8]))
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from .world import Scene, ToyObject, caption, sample_scene

SWAPPABLE = ("shape", "color", "size", "fill")
TEXT_TEMPERATURE = 0.07  # CLIP's initial temperature; fixed, so this loss cannot move the shared logit scale


def binding_twin(scene: Scene, rng: np.random.Generator) -> Scene | None:
    """``scene`` with one attribute exchanged between two of its objects (``None`` if no pair differs).

    Example:
        >>> a = ToyObject("circle", "red", "large", "left", "solid")
        >>> b = ToyObject("square", "blue", "small", "right", "outline")
        >>> twin = binding_twin(Scene((a, b)), np.random.default_rng(0))
        >>> sorted(o.shape for o in twin.objects) == ["circle", "square"] and twin != Scene((a, b))
        True
    """
    options = [(i, j, attr) for i in range(len(scene.objects)) for j in range(i + 1, len(scene.objects)) for attr in SWAPPABLE
               if getattr(scene.objects[i], attr) != getattr(scene.objects[j], attr)]
    if not options:
        return None
    i, j, attr = options[rng.integers(len(options))]
    objects = list(scene.objects)
    first, second = objects[i].__dict__, objects[j].__dict__
    objects[i] = ToyObject(**{**first, attr: second[attr]})
    objects[j] = ToyObject(**{**second, attr: first[attr]})
    return Scene(tuple(objects))


def _same_phrasing(scene: Scene, twin: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """Both scenes phrased with the same random draws, so their captions differ only where the swap shows."""
    twin_rng = copy.deepcopy(rng)
    return caption(scene, rng), caption(twin, twin_rng)


def binding_text_batch(seed: int, step: int, n: int) -> tuple[list[str], list[str], torch.Tensor]:
    """Anchors, candidates (``n`` paraphrases, then ``n`` twin captions) and the ``[n, 2n]`` positive mask.

    A twin caption that reads exactly like its anchor (the caption left the
    swapped attribute unsaid) is a paraphrase, so it counts as a positive.
    A function of ``(seed, step)`` only.
    """
    rng = np.random.default_rng([seed, step, 7])
    anchors, paraphrases, twins = [], [], []
    while len(anchors) < n:
        scene = sample_scene(rng, n_objects=int(rng.integers(2, 4)))
        twin = binding_twin(scene, rng)
        if twin is None:
            continue
        anchor, twin_text = _same_phrasing(scene, twin, rng)
        anchors.append(anchor)
        twins.append(twin_text)
        paraphrases.append(caption(scene, rng))
    candidates = paraphrases + twins
    key = lambda t: t.strip().rstrip(".")  # noqa: E731  ("a circle." reads as "a circle")
    targets = torch.tensor([[key(a) == key(c) or (k == i) for k, c in enumerate(candidates)] for i, a in enumerate(anchors)])
    return anchors, candidates, targets.float()


def binding_text_loss(anchor_emb: torch.Tensor, candidate_emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each anchor over the candidates, mass spread over its positives.

    Example:
        >>> e = F.normalize(torch.eye(2, 4), dim=-1)
        >>> float(binding_text_loss(e, torch.cat([e, -e]), torch.tensor([[1., 0, 0, 0], [0, 1, 0, 0]]))) < 0.01
        True
    """
    logits = F.normalize(anchor_emb.float(), dim=-1) @ F.normalize(candidate_emb.float(), dim=-1).T / TEXT_TEMPERATURE
    return -(targets / targets.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
