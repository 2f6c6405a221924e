"""Tokenizers: byte-level (no files) and byte-level BPE (a ``tokenizer.json`` of the ``tokenizers`` package).

* :class:`ByteTokenizer`: token id = UTF-8 byte (vocab 256), no training, any text. The default of
  ``torchssm generate`` and of the ``lm_text`` task (byte-level models, e.g. MambaByte, Wang et al. 2024).
* :class:`BPETokenizer`: a Hugging Face ``tokenizers.Tokenizer`` (the ``tokenizer.json`` format that
  Hugging Face checkpoints ship, e.g. GPT-NeoX's for the Mamba models), trained here with
  :func:`train_bpe` as GPT-2's byte-level BPE (Radford et al. 2019, Sec. 2.2: BPE over UTF-8 bytes, so
  every string round-trips exactly and no token is unknown).

``tokenizer.json`` (and ``tokenizer_config.json`` for the special tokens) travel with a model directory:
:func:`load_tokenizer` reads them; ``save_pretrained`` writes ``model.tokenizer`` when the model has one.

    tok = train_bpe(["a.txt", "b.txt"], vocab_size=1024)      # or: torchssm tokenizer train ...
    ids = tok.encode("def f(x):\\n    return x")             # list of ints
    assert tok.decode(ids) == "def f(x):\\n    return x"
    tok.save("out/")                                          # out/tokenizer.json, out/tokenizer_config.json
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from torchssm.fileio import PathLike, atomic_write_text

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
END_OF_TEXT = "<|endoftext|>"  # GPT-2's document separator, also GPT-NeoX's (Black et al. 2022)


class ByteTokenizer:
    """UTF-8 bytes as ids; ``decode`` replaces an invalid sequence by U+FFFD."""

    vocab_size = 256
    eos_token_id: int | None = None
    kind = "bytes"

    def encode(self, text: str) -> list[int]:
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

    def save(self, path: PathLike) -> None:
        """Byte-level needs no file: nothing is written (``load_tokenizer`` falls back to bytes for vocab 256)."""


class BPETokenizer:
    """A ``tokenizers.Tokenizer`` with the methods the rest of torchssm uses (encode/decode/save)."""

    kind = "bpe"

    def __init__(self, tokenizer, eos_token: str | None = None):
        self.tokenizer = tokenizer  # tokenizers.Tokenizer
        self.eos_token = eos_token
        self.eos_token_id = tokenizer.token_to_id(eos_token) if eos_token else None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def stream_decoder(self):
        """A function id -> str that returns the text this token completes ('' while a character is partial)."""
        from tokenizers.decoders import DecodeStream

        stream = DecodeStream(skip_special_tokens=False)
        return lambda i: stream.step(self.tokenizer, int(i)) or ""

    def save(self, path: PathLike) -> None:
        """Write ``path/tokenizer.json`` and ``path/tokenizer_config.json`` (atomically)."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        text = self.tokenizer.to_str(pretty=True)
        atomic_write_text(out / TOKENIZER_FILE, text)
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1 << 20}
        if self.eos_token:
            config.update(eos_token=self.eos_token, bos_token=self.eos_token, unk_token=self.eos_token)
        atomic_write_text(out / TOKENIZER_CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def train_bpe(
    files: Sequence[PathLike], vocab_size: int = 4096, *, min_frequency: int = 2, show_progress: bool = False
) -> BPETokenizer:
    """Train a byte-level BPE tokenizer (GPT-2's scheme) on UTF-8 text ``files``.

    The vocabulary holds the 256 byte symbols, ``<|endoftext|>`` and ``vocab_size - 257`` merges.
    Files are read by :func:`torchssm.data.text.read_text` (a bad byte sequence names its file and line).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from torchssm.data.text import read_text

    if not isinstance(vocab_size, int) or vocab_size < 258:
        raise ValueError(f"vocab_size must be an int >= 258 (256 bytes + <|endoftext|> + merges); got {vocab_size!r}")
    if not files:
        raise ValueError("train_bpe needs at least one text file")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator((read_text(f) for f in files), trainer=trainer, length=len(files))
    return BPETokenizer(tok, eos_token=END_OF_TEXT)


def load_tokenizer(path: PathLike, vocab_size: int | None = None):
    """The tokenizer of a model directory: ``tokenizer.json`` (+ ``tokenizer_config.json`` for the eos
    token) when present; else the byte tokenizer when ``vocab_size`` is 256; else None."""
    p = Path(path)
    file = p / TOKENIZER_FILE
    if file.is_file():
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as err:  # tokenizers raises its own Exception subclass for a bad file
            raise ValueError(f"{file} is not a valid tokenizer.json: {err}") from None
        eos = None
        config_file = p / TOKENIZER_CONFIG_FILE
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{config_file} is not valid JSON: {err}") from None
            eos = config.get("eos_token")
            eos = eos.get("content") if isinstance(eos, dict) else eos  # older files store an AddedToken dict
        elif tok.token_to_id(END_OF_TEXT) is not None:
            eos = END_OF_TEXT
        return BPETokenizer(tok, eos_token=eos)
    if vocab_size == ByteTokenizer.vocab_size:
        return ByteTokenizer()
    return None


def build_tokenizer(kind: str = "bytes", path: PathLike | None = None):
    """``"bytes"`` -> :class:`ByteTokenizer`; ``"bpe"`` -> the ``tokenizer.json`` at ``path`` (a file or a
    directory holding one, e.g. written by ``torchssm tokenizer train``)."""
    if kind == "bytes":
        if path is not None:
            raise ValueError("tokenizer 'bytes' takes no tokenizer file; use tokenizer: bpe with tokenizer_path")
        return ByteTokenizer()
    if kind != "bpe":
        raise ValueError(f"unknown tokenizer {kind!r}; expected 'bytes' or 'bpe'")
    if path is None:
        raise ValueError(
            "tokenizer 'bpe' needs tokenizer_path: a tokenizer.json (train one with `torchssm tokenizer train`)"
        )
    p = Path(path).expanduser()
    directory = p.parent if p.is_file() else p
    if not (directory / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(f"no {TOKENIZER_FILE} at {str(p)!r}; train one with `torchssm tokenizer train`")
    return load_tokenizer(directory)
