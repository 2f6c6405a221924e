"""Associative recall: induction heads (Mamba) and multi-query associative recall (MQAR, Zoology).

Induction heads (Olsson et al. 2022; setting of Gu & Dao 2023, "Mamba", Sec. 4.1.2 / App. E.1,
Table 2): a random token sequence over a vocabulary of 16 contains a special token s once,
followed by a target token t; the sequence ends with s again and the model must output t::

    inputs  = [x_0 .. s t .. x_{L-2}, s]
    targets = [-  ...  -  - ..  -,     t]      (- = ignore_index; only the last step is scored)

Tokens 0 .. V-2 are ordinary, V-1 is the special token. Trained at L = 256 and tested at
L = 2^6 .. 2^20 in the Mamba paper; ``test_lengths`` builds one extrapolation test set per
length (generated lazily, so 2^14 or 2^20 costs nothing until read), in ``TaskData.extra``.

MQAR (Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language Models",
Sec. 3; generator ``multiquery_ar`` in HazyResearch/zoology ``zoology/data/multiquery_ar.py``, earlier
``_mqar`` in ``zoology/data/associative_recall.py``): K key-value pairs ``k_1 v_1 .. k_K v_K`` (keys
drawn without replacement from 1 .. V/2-1, values from V/2 .. V-1; 0 is the filler), then the K keys
again as queries, at offsets ``2 * gap`` after the pairs, the K gaps drawn without replacement from
0 .. (L - 2K)/2 - 1 with a power law p(gap = i) ~ (i+1)^(a-1), a = 0.01 (most queries come soon after
the pairs). The target at a query's position is its value (the next-token form: Zoology's labels
shifted by one); every other position is ignored. ``random_non_queries`` replaces the filler 0s by
tokens uniform over the whole vocabulary (Zoology's function default); Zoology's Figure 2 sweep
(``zoology/experiments/paper_configs/iclr24_zoology_figure2/configs.py``) sets it False, and so do
the defaults here, which are that sweep's L = 256 row: vocabulary 8192, L = 256, K = 16, 100 000
training and 3 000 test sequences (the paper sweeps (L, K) in {(64, 4), (128, 8), (256, 16), (512, 64)}).

Differences from Zoology's generator (none changes the distribution of an example): every example
is a pure function of (seed, split, index) (``common.example_seed``), where Zoology draws a whole
split from one numpy seed; the random filler of ``random_non_queries`` is drawn from that same
per-example generator (Zoology uses the unseeded global torch generator for it); the validation split
is this library's (Zoology early-stops on its test split); JRT-style repeated passes over the pairs
(``num_passes``) are not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchssm.data.registry import TaskData, TaskInfo, register_task
from torchssm.data.synthetic.common import SPLITS, GeneratedDataset, check_positive_ints, randint, synthetic_task

IGNORE = -100

INDUCTION_CITATION = "Gu & Dao 2023, Mamba, Sec. 4.1.2 and App. E.1 (induction heads, vocab 16, train L=256)"
MQAR_CITATION = "Arora et al. 2023, Zoology: Measuring and Improving Recall in Efficient Language Models, Sec. 3"


def induction_example(generator: torch.Generator, *, length: int, vocab_size: int) -> dict:
    """inputs (length,) long with the special token V-1 twice; targets (length,) long, scored at the end."""
    special = vocab_size - 1
    inputs = randint(0, special, length, generator)  # (L,) ordinary tokens 0..V-2
    pos = int(randint(0, length - 2, 1, generator))  # first s at pos, its successor at pos + 1 <= L-2
    inputs[pos] = special
    inputs[-1] = special
    targets = torch.full((length,), IGNORE, dtype=torch.long)  # (L,)
    targets[-1] = inputs[pos + 1]
    return {"inputs": inputs, "targets": targets}


@register_task("induction_heads", "induction heads (Mamba 2023): recall the token after a special token; vocab 16")
def build_induction_heads(
    data_dir=None,
    seed: int = 0,
    length: int = 256,
    vocab_size: int = 16,
    n_train: int = 10000,
    n_val: int = 1000,
    n_test: int = 1000,
    test_lengths: Sequence[int] = (64, 256, 1024, 4096, 16384),
    n_test_lengths: int = 256,
    materialize: bool | None = None,
) -> TaskData:
    """Induction heads at ``length``; ``extra["test_lengths"]`` = {L: lazily generated test set}."""
    check_positive_ints(length=length, vocab_size=vocab_size, n_test_lengths=n_test_lengths)
    if length < 3 or vocab_size < 3:
        raise ValueError(f"induction heads needs length >= 3 and vocab_size >= 3; got {length}, {vocab_size}")
    lengths = [int(n) for n in test_lengths]
    if any(n < 3 for n in lengths):
        raise ValueError(f"test_lengths must all be >= 3; got {lengths}")
    info = TaskInfo(
        name="induction_heads",
        d_input=vocab_size,
        d_output=vocab_size,
        length=length,
        kind="seq2seq",
        input_kind="tokens",
        ignore_index=IGNORE,
        citation=INDUCTION_CITATION,
    )

    def maker(n):
        return lambda g: induction_example(g, length=n, vocab_size=vocab_size)

    # Each extrapolation set gets its own stream: split id 3 + index in test_lengths.
    extra = {
        "test_lengths": {
            n: GeneratedDataset(maker(n), n_test_lengths, seed, len(SPLITS) + i) for i, n in enumerate(lengths)
        }
    }
    return synthetic_task(
        info,
        maker(length),
        seed=seed,
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        materialize=materialize,
        extra=extra,
    )


def mqar_sequence(
    keys: torch.Tensor, values: torch.Tensor, gaps: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """MQAR's layout before any random filler: keys, values, gaps (K,) long -> inputs, targets (length,).

    ``inputs = [k_1 v_1 .. k_K v_K, 0 ..]`` with key ``k_j`` again at position ``2K + 2 gaps[j]``, where
    ``targets`` holds ``v_j``; everything else is 0 (inputs) or ``IGNORE`` (targets).
    """
    context = 2 * keys.shape[0]
    inputs = torch.zeros(length, dtype=torch.long)  # (L,)
    inputs[0:context:2], inputs[1:context:2] = keys, values
    inputs[context + 2 * gaps] = keys
    targets = torch.full((length,), IGNORE, dtype=torch.long)  # (L,)
    targets[context + 2 * gaps] = values
    return inputs, targets


def mqar_example(
    generator: torch.Generator,
    *,
    length: int,
    vocab_size: int,
    num_kv_pairs: int,
    power_a: float = 0.01,
    random_non_queries: bool = False,
) -> dict:
    """One MQAR example: inputs (length,) long, targets (length,) long (value at each query, else ignored)."""
    k = num_kv_pairs
    key_vocab = vocab_size // 2
    keys = torch.randperm(key_vocab - 1, generator=generator)[:k] + 1  # (K,) in 1..key_vocab-1
    values = torch.randperm(vocab_size - key_vocab, generator=generator)[:k] + key_vocab  # (K,)
    space = (length - 2 * k) // 2
    p = power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (power_a - 1)  # (space,) power law
    gaps = torch.multinomial(p / p.sum(), k, replacement=False, generator=generator)  # (K,) in 0..space-1
    inputs, targets = mqar_sequence(keys, values, gaps, length)
    if random_non_queries:
        fill = inputs == 0
        inputs[fill] = randint(0, vocab_size, (int(fill.sum()),), generator)
    return {"inputs": inputs, "targets": targets}


@register_task("mqar", "multi-query associative recall (Zoology 2023): K key-value pairs then K queries; seq2seq")
def build_mqar(
    data_dir=None,
    seed: int = 0,
    length: int = 256,
    vocab_size: int = 8192,
    num_kv_pairs: int = 16,
    power_a: float = 0.01,
    random_non_queries: bool = False,
    n_train: int = 100000,
    n_val: int = 1000,
    n_test: int = 3000,
    materialize: bool | None = None,
) -> TaskData:
    """MQAR; the Zoology constraints hold: even length, vocab_size > length, 4 * num_kv_pairs <= length."""
    check_positive_ints(length=length, vocab_size=vocab_size, num_kv_pairs=num_kv_pairs)
    if length % 2 or vocab_size <= length or 4 * num_kv_pairs > length:
        raise ValueError(
            f"MQAR needs an even length, vocab_size > length and 4 * num_kv_pairs <= length; "
            f"got length={length}, vocab_size={vocab_size}, num_kv_pairs={num_kv_pairs}"
        )
    if num_kv_pairs >= vocab_size // 2:
        raise ValueError(f"num_kv_pairs must be < vocab_size // 2 = {vocab_size // 2}; got {num_kv_pairs}")
    if not 0.0 < float(power_a) <= 1.0:
        raise ValueError(f"power_a must be in (0, 1], got {power_a!r}")
    info = TaskInfo(
        name="mqar",
        d_input=vocab_size,
        d_output=vocab_size,
        length=length,
        kind="seq2seq",
        input_kind="tokens",
        ignore_index=IGNORE,
        citation=MQAR_CITATION,
    )

    def make(g):
        return mqar_example(
            g,
            length=length,
            vocab_size=vocab_size,
            num_kv_pairs=num_kv_pairs,
            power_a=float(power_a),
            random_non_queries=random_non_queries,
        )

    return synthetic_task(info, make, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, materialize=materialize)
