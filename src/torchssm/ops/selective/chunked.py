"""Selective scan built on :func:`torchssm.ops.linear_scan` over the flattened (d * n) state.

The discretised recurrence of :mod:`torchssm.ops.selective.naive` is a diagonal linear scan
h_t = a_t * h_{t-1} + b_t with a_t = exp(dt_t A) and b_t = dt_t u_t B_t, both (b, l, d*n). We run it
chunk by chunk along time (``chunk_size`` steps at once) so the (b, chunk, d, n) expansion, not
(b, l, d, n), is what a forward pass without gradients holds in memory; the carried state links
the chunks. The scan itself is whatever backend ``linear_scan`` dispatches to (naive loop,
chunked PyTorch, compiled CPU, Triton), and gradients (including w.r.t. h0) flow through it.
"""

from __future__ import annotations

import itertools

import torch

from torchssm.ops.common import ScanResult
from torchssm.ops.scan.api import linear_scan
from torchssm.ops.selective.common import check_selective_inputs, prepare_selective, skip_and_gate, without_autocast


@without_autocast
def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    h0: torch.Tensor | None = None,
    *,
    return_final_state: bool = False,
    reset: torch.Tensor | None = None,
    chunk_size: int = 64,
    scan_backend: str = "auto",
) -> ScanResult:
    """Same math and signature as :func:`selective_scan_naive`; ``scan_backend`` is passed to
    ``linear_scan``. Returns y (b, l, d) [, h_last (b, d, n)]."""
    check_selective_inputs(u, delta, A, B, C, D, z, delta_bias, h0, reset)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    b, l, d = u.shape
    n = A.shape[1]
    dt, uc, Bx, Cx, Ac, h0 = prepare_selective(u, delta, A, B, C, delta_bias, delta_softplus, h0)
    h = h0.reshape(b, d * n) if h0 is not None else None  # (b, d*n)
    ys = []
    # Chunks by split(), not by slicing inside the loop: the backward of each slice x[:, s:e] fills a
    # zero gradient of the whole length, which made the backward O(L^2 / chunk_size) (measured: 68% of
    # a Mamba step at L=16384 in aten::fill_). split() has one backward for all its chunks.
    chunks = zip(
        dt.split(chunk_size, 1),  # (b, T, d) each
        uc.split(chunk_size, 1),  # (b, T, d)
        Bx.split(chunk_size, 1),  # (b, T, 1 or d, n)
        Cx.split(chunk_size, 1),  # (b, T, 1 or d, n)
        reset.split(chunk_size, 1) if reset is not None else itertools.repeat(None),  # (b, T) bool
    )
    for dt_c, u_c, B_c, C_c, reset_c in chunks:
        T = dt_c.shape[1]
        a = torch.exp(dt_c[..., None] * Ac)  # (b, T, d, n)
        x = (dt_c * u_c)[..., None] * B_c  # (b, T, d, n)
        hs = linear_scan(
            a.reshape(b, T, d * n), x.reshape(b, T, d * n), h, reset=reset_c, backend=scan_backend
        )  # (b, T, d*n)
        ys.append((hs.view(b, T, d, n) * C_c).sum(-1))  # (b, T, d)
        h = hs[:, -1]
    y = skip_and_gate(torch.cat(ys, dim=1), uc, D, z).to(u.dtype)  # (b, l, d)
    if not return_final_state:
        return y
    assert h is not None  # l >= 1: at least one chunk ran
    return y, h.view(b, d, n)
