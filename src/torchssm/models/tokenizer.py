"""Byte-level tokenizer: token id = UTF-8 byte (vocab 256), no training, no files, any text.

The default of ``torchssm generate`` (as the byte-level models of e.g. MambaByte, Wang et al. 2024).
Streaming output decodes incrementally, so a multi-byte character is printed once complete.
"""

from __future__ import annotations

import codecs
from typing import Iterable, List


class ByteTokenizer:
    vocab_size = 256

    def encode(self, text: str) -> List[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < 256]
        if bad:
            raise ValueError(f"byte tokenizer ids must be in [0, 256); got {bad[:5]}")
        return bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self):
        """A function id -> str that returns the text completed by this byte ('' mid-character)."""
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda i: dec.decode(bytes([int(i) % 256]))
