"""Copying and selective copying: memorise M tokens, reproduce them after a marker.

Tokens (vocabulary A = ``vocab_size``): 0 = blank/noise, 1 .. A-2 = data, A-1 = marker.

Copying (Arjovsky, Shah & Bengio 2016, "Unitary Evolution RNNs", Sec. 4.1; Hochreiter &
Schmidhuber 1997): M data tokens at the start, then blanks, then M markers; the targets at the M
marker positions are the data tokens, in order::

    inputs  = [d_1 .. d_M, 0 ... 0, m ... m]      (length L)
    targets = [-   ...   -, -  ...  -, d_1 .. d_M]   (- = ignore_index: not scored)

Arjovsky et al. use M = 10 data tokens from 8 categories (A = 10) and delays T in {100, 200, 300,
500}; they cue the output with ONE delimiter followed by blanks, while here (as in the
state-spaces/s4 ``np_copying_data``) every output position holds a marker. ``length = T + 2M``,
default T = 100 -> length 120.

Selective copying (Gu & Dao 2023, "Mamba", Sec. 3.1 / App. E.1, Table 1): the M data tokens sit at
random (sorted) positions among blanks, so a time-invariant model cannot solve it by a fixed
delay. Layout as the state-spaces/s4 ``torch_copying_data(L, M, A, variable=True)`` generator
used by the Mamba paper: data region of length L - M, then M markers. The Mamba setting
(``preset="mamba"``): length 4096, vocabulary 16, 16 data tokens. ``length`` here counts the whole
input (data region 4080 + 16 markers): the paper's "sequence length 4096" does not say whether
the markers are included.
"""

from __future__ import annotations

import torch

from torchssm.data.registry import TaskData, TaskInfo, register_task
from torchssm.data.synthetic.common import check_positive_ints, randint, synthetic_task

IGNORE = -100

COPYING_CITATION = "Arjovsky, Shah & Bengio 2016, Unitary Evolution Recurrent Neural Networks, Sec. 4.1"
SELECTIVE_CITATION = (
    "Gu & Dao 2023, Mamba: Linear-Time Sequence Modeling with Selective State Spaces, Sec. 3.1, App. E.1"
)


def copying_example(
    generator: torch.Generator, *, length: int, n_tokens: int, vocab_size: int, selective: bool
) -> dict:
    """One example: inputs (length,) long, targets (length,) long (IGNORE except the last n_tokens)."""
    region = length - n_tokens  # data region (tokens + blanks)
    tokens = randint(1, vocab_size - 1, n_tokens, generator)  # (M,) in 1..A-2
    if selective:
        pos = torch.randperm(region, generator=generator)[:n_tokens].sort().values  # (M,) sorted positions
    else:
        pos = torch.arange(n_tokens)
    inputs = torch.zeros(length, dtype=torch.long)  # (L,)
    inputs[pos] = tokens
    inputs[region:] = vocab_size - 1  # markers
    targets = torch.full((length,), IGNORE, dtype=torch.long)  # (L,)
    targets[region:] = tokens
    return {"inputs": inputs, "targets": targets}


def _check(length: int, n_tokens: int, vocab_size: int, selective: bool) -> None:
    check_positive_ints(length=length, n_tokens=n_tokens, vocab_size=vocab_size)
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 (blank, >= 1 data token, marker); got {vocab_size}")
    need = 2 * n_tokens + (0 if selective else 1)
    if length < need:
        raise ValueError(f"length must be >= {need} for n_tokens={n_tokens}; got {length}")


def _build(
    name: str,
    citation: str,
    selective: bool,
    seed: int,
    length: int,
    n_tokens: int,
    vocab_size: int,
    n_train: int,
    n_val: int,
    n_test: int,
    materialize: bool | None,
) -> TaskData:
    _check(length, n_tokens, vocab_size, selective)
    info = TaskInfo(
        name=name,
        d_input=vocab_size,
        d_output=vocab_size,
        length=length,
        kind="seq2seq",
        input_kind="tokens",
        ignore_index=IGNORE,
        citation=citation,
    )

    def make(g):
        return copying_example(g, length=length, n_tokens=n_tokens, vocab_size=vocab_size, selective=selective)

    return synthetic_task(info, make, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, materialize=materialize)


@register_task("copying", "copying memory (Arjovsky 2016): recall 10 tokens after a delay; seq2seq, tokens")
def build_copying(
    data_dir=None,
    seed: int = 0,
    delay: int = 100,
    n_tokens: int = 10,
    vocab_size: int = 10,
    n_train: int = 10000,
    n_val: int = 1000,
    n_test: int = 1000,
    materialize: bool | None = None,
) -> TaskData:
    """Copying memory task; ``length = delay + 2 * n_tokens`` (defaults: M=10, 8 data symbols, T=100)."""
    check_positive_ints(delay=delay)
    return _build(
        "copying",
        COPYING_CITATION,
        False,
        seed,
        delay + 2 * n_tokens,
        n_tokens,
        vocab_size,
        n_train,
        n_val,
        n_test,
        materialize,
    )


# Mamba paper, Sec. 3.1 / Table 1: "sequence length 4096, vocabulary size 16, 16 tokens to memorize".
MAMBA_PRESET = {"length": 4096, "n_tokens": 16, "vocab_size": 16}


@register_task("selective_copying", "selective copying (Mamba 2023): recall 16 randomly spaced tokens; seq2seq")
def build_selective_copying(
    data_dir=None,
    seed: int = 0,
    preset: str | None = None,
    length: int = 256,
    n_tokens: int = 16,
    vocab_size: int = 16,
    n_train: int = 10000,
    n_val: int = 1000,
    n_test: int = 1000,
    materialize: bool | None = None,
) -> TaskData:
    """Selective copying; ``preset="mamba"`` sets the paper's L=4096, M=16, A=16 (overrides the others).

    The default length 256 is a small CPU setting, not the paper's.
    """
    if preset is not None:
        if preset != "mamba":
            raise ValueError(f"unknown selective copying preset {preset!r}; expected 'mamba' or None")
        length, n_tokens, vocab_size = MAMBA_PRESET["length"], MAMBA_PRESET["n_tokens"], MAMBA_PRESET["vocab_size"]
    return _build(
        "selective_copying",
        SELECTIVE_CITATION,
        True,
        seed,
        length,
        n_tokens,
        vocab_size,
        n_train,
        n_val,
        n_test,
        materialize,
    )
