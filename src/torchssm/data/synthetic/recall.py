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
Sec. 3 / App. E.1; generator ``multiquery_ar`` of HazyResearch/zoology): K key-value pairs
``k_1 v_1 .. k_K v_K`` (keys from the lower half of the vocabulary, values from the upper half,
no repeats), then the K keys again as queries at positions drawn without replacement with a power
law p(gap = i) ~ i^(a-1), a = 0.01, the other positions filled with random tokens. The target at a
query's position is its value; all other positions are ignored. Defaults: vocabulary 8192,
L = 256, K = 16 (one of the Zoology training settings; the paper sweeps L in {64, 128, 256, 512}
and K up to L/4).
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


def mqar_example(
    generator: torch.Generator,
    *,
    length: int,
    vocab_size: int,
    num_kv_pairs: int,
    power_a: float = 0.01,
    random_non_queries: bool = True,
) -> dict:
    """One MQAR example: inputs (length,) long, targets (length,) long (value at each query, else ignored)."""
    k = num_kv_pairs
    context = 2 * k
    key_vocab = vocab_size // 2
    keys = torch.randperm(key_vocab - 1, generator=generator)[:k] + 1  # (K,) in 1..key_vocab-1
    values = torch.randperm(vocab_size - key_vocab, generator=generator)[:k] + key_vocab  # (K,)
    space = (length - context) // 2
    p = power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (power_a - 1)  # (space,) power law
    gaps = torch.multinomial(p / p.sum(), k, replacement=False, generator=generator)  # (K,) in 0..space-1
    seq = torch.zeros(length + 1, dtype=torch.long)  # (L+1,): the sequence before the one-step shift
    seq[0:context:2], seq[1:context:2] = keys, values
    seq[context + 2 * gaps] = keys
    labels = torch.full((length + 1,), IGNORE, dtype=torch.long)
    labels[context + 2 * gaps + 1] = values
    inputs, targets = seq[:-1].clone(), labels[1:].clone()  # next-token form: target at the query's position
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
    random_non_queries: bool = True,
    n_train: int = 20000,
    n_val: int = 1000,
    n_test: int = 1000,
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
