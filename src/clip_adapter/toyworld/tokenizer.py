"""A word-level tokenizer for the toy world's captions.

Lower-cases, splits on anything that is not a letter or digit, and maps each
word to its id; words outside the vocabulary (a user's "golden retriever")
become ``<unk>`` instead of failing. Like CLIP, every row starts with
``<sot>``, ends with ``<eot>`` (kept even when a long text is truncated) and
is zero-padded to a fixed context length.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch

from .world import vocabulary_words

PAD, SOT, EOT, UNK = "<pad>", "<sot>", "<eot>", "<unk>"
SPECIAL_TOKENS = (PAD, SOT, EOT, UNK)
PLACEHOLDER = "x"  # prompt learners write "X X X X circle." and swap in learned vectors
CONTEXT_LENGTH = 40
_WORD = re.compile(r"[a-z0-9]+")
# What a reader calls a word: letters and digits of any script. "café" is one
# word here but becomes "caf" (é dropped) for _WORD, so it is reported unknown.
_USER_WORD = re.compile(r"[^\W_]+")


def default_vocab() -> list[str]:
    """Special tokens, the placeholder, then every grammar word.

    Example:
        >>> default_vocab()[:5]
        ['<pad>', '<sot>', '<eot>', '<unk>', 'x']
    """
    return [*SPECIAL_TOKENS, PLACEHOLDER, *(w for w in vocabulary_words() if w != PLACEHOLDER)]


class ToyTokenizer:
    """Texts → ``[N, context_length]`` long tensors.

    Example:
        >>> tok = ToyTokenizer()
        >>> ids = tok(["a photo of a golden retriever."])
        >>> tok.decode(ids[0])
        '<sot> a photo of a <unk> <unk> <eot>'
    """

    def __init__(self, vocab: Sequence[str] | None = None, context_length: int = CONTEXT_LENGTH) -> None:
        self.vocab = list(vocab) if vocab is not None else default_vocab()
        if self.vocab[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS) or len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocabulary must start with the special tokens and hold no duplicates")
        self.context_length = context_length
        self.index = {word: i for i, word in enumerate(self.vocab)}
        self.pad_id, self.sot_id, self.eot_id, self.unk_id = (self.index[t] for t in SPECIAL_TOKENS)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Ids of one text including ``<sot>``/``<eot>``, truncated to the context length."""
        ids = [self.index.get(word, self.unk_id) for word in _WORD.findall(text.lower())]
        return [self.sot_id, *ids[: self.context_length - 2], self.eot_id]

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` (as written, first occurrence) that this vocabulary cannot represent.

        A word is unknown when any piece of it maps to ``<unk>`` or when
        characters of it are dropped (non-ASCII letters): either way two
        different class names can get the same token ids.

        Example:
            >>> ToyTokenizer().unknown_words("a photo of a Siamese cat, café-red")
            ['Siamese', 'cat', 'café']
        """
        unknown: list[str] = []
        for word in _USER_WORD.findall(text):
            pieces = _WORD.findall(word.lower())
            readable = "".join(pieces) == word.lower() and all(piece in self.index for piece in pieces)
            if not readable and word not in unknown:
                unknown.append(word)
        return unknown

    def __call__(self, texts: Iterable[str]) -> torch.Tensor:
        rows = [self.encode(text) for text in texts]
        out = torch.full((len(rows), self.context_length), self.pad_id, dtype=torch.long)
        for i, ids in enumerate(rows):
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Words of one row, without padding."""
        return " ".join(self.vocab[int(i)] for i in ids if int(i) != self.pad_id)
