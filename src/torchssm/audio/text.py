"""Characters <-> ids for speech recognition, and the normalisation of transcripts.

The alphabet is LibriSpeech's (Panayotov et al. 2015): 26 letters, apostrophe and space; transcripts are
lower-cased. Id 0 is the CTC blank (Graves et al. 2006), also used as padding; the encoder-decoder
adds begin / end-of-sentence ids after the characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ALPHABET = " '" + "abcdefghijklmnopqrstuvwxyz"
BLANK = 0


class CharVocabulary:
    """id 0 blank, ids 1..28 the characters of ``ALPHABET``, then ``<s>`` and ``</s>`` (ids 29, 30)."""

    def __init__(self, alphabet: str = ALPHABET):
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"alphabet has repeated characters: {alphabet!r}")
        self.alphabet = alphabet
        self.index = {c: i + 1 for i, c in enumerate(alphabet)}
        self.bos, self.eos = len(alphabet) + 1, len(alphabet) + 2

    def __len__(self) -> int:
        return len(self.alphabet) + 3  # blank, characters, <s>, </s>

    @property
    def n_ctc(self) -> int:
        """Number of CTC outputs: blank + characters."""
        return len(self.alphabet) + 1

    def encode(self, text: str) -> list[int]:
        """Ids of a normalised transcript; ValueError naming any character outside the alphabet."""
        if not isinstance(text, str):
            raise TypeError(f"transcript must be a str, got {type(text).__name__}")
        if not text.strip():
            raise ValueError("empty transcript")
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(
                f"transcript {text[:60]!r} has characters outside the alphabet {self.alphabet!r}: {unknown}"
            )
        return [self.index[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        """Characters of ``ids``; blank, ``<s>`` and ``</s>`` are dropped."""
        return "".join(self.alphabet[i - 1] for i in (int(i) for i in ids) if 1 <= i <= len(self.alphabet))


def normalize_transcript(text: str) -> str:
    """Lower case, runs of white space to one space, stripped (LibriSpeech transcripts are upper case)."""
    return re.sub(r"\s+", " ", text.lower()).strip()
