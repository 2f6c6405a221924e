"""Real-valued synthetic tasks: the adding problem and the aa-vs-ab information-propagation sequences.

Adding problem (Hochreiter & Schmidhuber 1997, Sec. 5.4; the variant of Arjovsky, Shah & Bengio 2016,
Sec. 4.2, lengths T in {100, 200, 400, 750}): inputs (T, 2); channel 0 is uniform in [0, 1),
channel 1 marks exactly two steps, one uniform in the first half and one in the second half;
the regression target is the sum of the two marked values (targets (1,) float). Predicting 1
always gives the baseline mean squared error 1/6 ~ 0.167.

aa vs ab (the LRU article's Figs. 3-5, after Orvieto et al. 2023, "Resurrecting Recurrent Neural
Networks for Long Sequences"): two tokens with 1-D embeddings a = +1, b = -1 are fed as pulses
``gap`` steps apart (the article uses an interval of 10), then zeros until step ``length``; the
label says whether the sequence was "aa" (0) or "ab" (1). A strongly damped linear recurrence
(|lambda| << 1) forgets the pulses before the end, so the final states of aa and ab coincide;
an appropriately damped one keeps them apart. ``first_differs=True`` makes the FIRST token carry
the label ("aa" vs "ba"), which needs memory over ``length - 1`` steps instead of
``length - 1 - gap``. ``noise`` adds i.i.d. Gaussian noise so the data set is not two points
(default 0.01: a mode with |lambda| ~ 1 sums the noise of all L steps, std noise * sqrt(L),
which must stay below the pulses).
"""

from __future__ import annotations

import torch

from torchssm.data.registry import TaskData, TaskInfo, register_task
from torchssm.data.synthetic.common import check_positive_ints, randint, synthetic_task

ADDING_CITATION = "Hochreiter & Schmidhuber 1997, Sec. 5.4; Arjovsky, Shah & Bengio 2016, Sec. 4.2"
AA_AB_CITATION = "Orvieto et al. 2023, Resurrecting RNNs for Long Sequences; LRU article (seed 000), Figs. 3-5"


def adding_example(generator: torch.Generator, *, length: int) -> dict:
    """inputs (length, 2) float32, targets (1,) float32 = sum of the two marked values."""
    values = torch.rand(length, generator=generator)  # (L,)
    half = length // 2
    first = int(randint(0, half, 1, generator))
    second = int(randint(half, length, 1, generator))
    marks = torch.zeros(length)
    marks[first] = marks[second] = 1.0
    inputs = torch.stack([values, marks], dim=-1)  # (L, 2)
    return {"inputs": inputs, "targets": (values[first] + values[second]).reshape(1)}


@register_task("adding", "adding problem (Hochreiter 1997): sum of two marked values; regression, (L, 2) real")
def build_adding(
    data_dir=None,
    seed: int = 0,
    length: int = 200,
    n_train: int = 10000,
    n_val: int = 1000,
    n_test: int = 1000,
    materialize: bool | None = None,
) -> TaskData:
    """Adding problem of length ``length`` (default 200, one of Arjovsky et al.'s T)."""
    check_positive_ints(length=length)
    if length < 2:
        raise ValueError(f"adding problem needs length >= 2, got {length}")
    info = TaskInfo(
        name="adding",
        d_input=2,
        d_output=1,
        length=length,
        kind="regression",
        input_kind="real",
        citation=ADDING_CITATION,
    )
    return synthetic_task(
        info,
        lambda g: adding_example(g, length=length),
        seed=seed,
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        materialize=materialize,
    )


def aa_ab_pair(length: int, gap: int = 10, first_differs: bool = False) -> torch.Tensor:
    """The two noise-free sequences (2, length, 1): row 0 is "aa", row 1 is "ab" (or "ba")."""
    check_positive_ints(length=length, gap=gap)
    if gap >= length:
        raise ValueError(f"gap must be < length; got gap={gap}, length={length}")
    x = torch.zeros(2, length, 1)
    x[:, 0, 0] = 1.0
    x[:, gap, 0] = 1.0
    x[1, 0 if first_differs else gap, 0] = -1.0
    return x


def aa_ab_example(generator: torch.Generator, *, length: int, gap: int, first_differs: bool, noise: float) -> dict:
    label = int(randint(0, 2, 1, generator))
    x = aa_ab_pair(length, gap, first_differs)[label]  # (L, 1)
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=generator)
    return {"inputs": x, "targets": torch.tensor(label)}


@register_task("aa_ab", "aa vs ab (LRU article): classify two pulses 'gap' apart after a long silence; real")
def build_aa_ab(
    data_dir=None,
    seed: int = 0,
    length: int = 1024,
    gap: int = 10,
    first_differs: bool = False,
    noise: float = 0.01,
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 1000,
    materialize: bool | None = None,
) -> TaskData:
    """aa-vs-ab classification (gap 10 as in the article; length and noise are this library's choice)."""
    aa_ab_pair(length, gap, first_differs)  # validates length / gap
    if not float(noise) >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    info = TaskInfo(
        name="aa_ab",
        d_input=1,
        d_output=2,
        length=length,
        kind="classification",
        input_kind="real",
        citation=AA_AB_CITATION,
    )

    def make(g):
        return aa_ab_example(g, length=length, gap=gap, first_differs=first_differs, noise=float(noise))

    return synthetic_task(info, make, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, materialize=materialize)
