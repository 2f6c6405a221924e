"""CPU time of SSD's three forms vs sequence length, and of the diagonal-decay chunked algorithm
next to the scalar one (docs/theory.md; the duality claims in :mod:`torchssm.theory.duality`).

Times are process CPU seconds (``time.process_time``), the median of ``repeats`` rounds in which
the forms run interleaved, so machine load affects them alike (team rule: CPU time, interleaved).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import torch

from torchssm.ops.ssd import ssd_attention, ssd_chunked, ssd_naive
from torchssm.theory.duality import diagonal_ssm_chunked


def _cpu_seconds(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def ssd_forms_cpu_time(
    lengths: Sequence[int] = (128, 256, 512, 1024, 2048),
    heads: int = 4,
    headdim: int = 32,
    d_state: int = 32,
    chunk_size: int = 64,
    repeats: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Rows {"length", "recurrent_s", "chunked_s", "attention_s", "diagonal_chunked_s"} (float32,
    batch 1, forward only). "diagonal_chunked_s" runs :func:`diagonal_ssm_chunked` with per-state
    decays on the same total work (heads x headdim values, d_state states per head)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for l in lengths:
        x = torch.randn(1, l, heads, headdim, generator=gen)
        dt = torch.rand(1, l, heads, generator=gen) * 0.1
        A = -torch.rand(heads, generator=gen) - 0.1
        B, C = torch.randn(2, 1, l, 1, d_state, generator=gen)
        xd = x.permute(0, 2, 1, 3).reshape(heads, l, headdim)  # heads as batch
        log_a = -torch.rand(heads, l, d_state, generator=gen) * 0.1
        Bd, Cd = (M.expand(1, l, heads, d_state).permute(2, 1, 0, 3).reshape(heads, l, d_state) for M in (B, C))
        forms: dict[str, Callable[[], object]] = {
            "recurrent_s": partial(ssd_naive, x, dt, A, B, C),
            "chunked_s": partial(ssd_chunked, x, dt, A, B, C, chunk_size=chunk_size),
            "attention_s": partial(ssd_attention, x, dt, A, B, C),
            "diagonal_chunked_s": partial(diagonal_ssm_chunked, xd, log_a, Bd, Cd, chunk_size=chunk_size),
        }
        times: dict[str, list[float]] = {k: [] for k in forms}
        with torch.no_grad():
            for _ in range(repeats):
                for name, fn in forms.items():
                    times[name].append(_cpu_seconds(fn))
        rows.append({"length": l, **{k: statistics.median(v) for k, v in times.items()}})
    return rows


__all__ = ["ssd_forms_cpu_time"]
