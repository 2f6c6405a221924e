"""Selective scan built on :func:`torchssm.ops.linear_scan` over the flattened (d * n) state.

The discretised recurrence of :mod:`torchssm.ops.selective.naive` is a diagonal linear scan
h_t = a_t * h_{t-1} + b_t with a_t = exp(dt_t A) and b_t = dt_t u_t B_t, both (b, l, d*n). We run it
chunk by chunk along time (``chunk_size`` steps at once) so the (b, chunk, d, n) expansion, not
(b, l, d, n), is what a forward pass without gradients holds in memory; the carried state links
the chunks. The scan itself is whatever backend ``linear_scan`` dispatches to (naive loop,
chunked PyTorch, compiled CPU, Triton), and gradients (including w.r.t. h0) flow through it.
"""

from __future__ import annotations

from typing import Optional

import torch

from torchssm.ops.scan.api import linear_scan
from torchssm.ops.selective.common import check_selective_inputs, prepare_selective, skip_and_gate, without_autocast


@without_autocast
def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    h0: Optional[torch.Tensor] = None,
    *,
    return_final_state: bool = False,
    reset: Optional[torch.Tensor] = None,
    chunk_size: int = 64,
    scan_backend: str = "auto",
):
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
    for s in range(0, l, chunk_size):
        e = min(s + chunk_size, l)
        a = torch.exp(dt[:, s:e, :, None] * Ac)  # (b, T, d, n)
        x = (dt[:, s:e] * uc[:, s:e])[..., None] * Bx[:, s:e]  # (b, T, d, n)
        hs = linear_scan(
            a.reshape(b, e - s, d * n),
            x.reshape(b, e - s, d * n),
            h,
            reset=None if reset is None else reset[:, s:e],
            backend=scan_backend,
        )  # (b, T, d*n)
        ys.append((hs.view(b, e - s, d, n) * Cx[:, s:e]).sum(-1))  # (b, T, d)
        h = hs[:, -1]
    y = skip_and_gate(torch.cat(ys, dim=1), uc, D, z).to(u.dtype)  # (b, l, d)
    return (y, h.view(b, d, n)) if return_final_state else y
