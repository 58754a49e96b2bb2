"""Grow a toy CLIP's closed vocabulary (a remedy that teaches "no" must be able to read it).

Example:
    >>> from clip_adapter.backbones import create_backbone
    >>> bb = create_backbone("toy", pretrained="none", precision="fp32")
    >>> before = bb.encode_texts(["a red circle and no blue square"])
    >>> extend_toy_vocab(bb, ["no"]), bb.tokenizer.vocab[-1]
    (['no'], 'no')
    >>> bool(torch.equal(before, bb.encode_texts(["a red circle and no blue square"])))
    True
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from ..core.errors import ConfigError
from ..toyworld.tokenizer import ToyTokenizer

_TOY_WORD = re.compile(r"^[a-z0-9]+$")  # what the toy tokenizer can ever produce as one word


def extend_toy_vocab(backbone, words: Sequence[str]) -> list[str]:
    """Append the unknown ``words`` to ``backbone``'s tokenizer and token embedding; returns them.

    Each new row starts as a copy of ``<unk>``'s row, so every text encodes
    exactly as before (the base model read these words as ``<unk>``); the
    rows train like any other parameter of the text tower.
    """
    for word in words:
        if not _TOY_WORD.match(word):
            raise ConfigError(
                f"cannot add {word!r} to the toy vocabulary: a word is lower-case letters and digits only"
            )
    tokenizer: ToyTokenizer = backbone.tokenizer
    new = [w for w in dict.fromkeys(words) if w not in tokenizer.index]
    if not new:
        return []
    model = backbone.model
    old: nn.Embedding = model.token_embedding
    grown = nn.Embedding(
        old.num_embeddings + len(new), old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype
    )
    with torch.no_grad():
        grown.weight[: old.num_embeddings] = old.weight
        grown.weight[old.num_embeddings :] = old.weight[tokenizer.unk_id]
    grown.weight.requires_grad_(old.weight.requires_grad)
    model.token_embedding = grown
    model.cfg = model.cfg.replace(vocab_size=grown.num_embeddings)
    backbone.tokenizer = ToyTokenizer([*tokenizer.vocab, *new], context_length=tokenizer.context_length)
    return new
