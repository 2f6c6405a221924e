"""Reference SSD (Mamba-2's scalar-identity SSM): the recurrence as a Python loop, ground truth.

Math (Dao & Gu 2024, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
Structured State Space Duality", Sec. 3 and Eq. (SSD); reference ``ssd_minimal.py`` and
``mamba_chunk_scan_combined`` in state-spaces/mamba), per head j with A[j] a scalar:

    dt_t      = softplus(dt_t + dt_bias)                            (each optional)
    h_t[j]    = exp(dt_t[j] A[j]) h_{t-1}[j] + dt_t[j] x_t[j] B_t[g(j)]^T     (p x n; 0 where reset)
    y_t[j]    = h_t[j] C_t[g(j)] + D[j] x_t[j];   y_t *= silu(z_t)

with g(j) = j // (heads // groups) the group whose B, C head j reads.
"""

from __future__ import annotations

import torch

from torchssm.ops.common import ScanResult, compute_dtype, expand_groups, prepare_dt, skip_and_gate, without_autocast
from torchssm.ops.ssd.common import check_ssd_inputs, d_skip


@without_autocast
def ssd_naive(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    h0: torch.Tensor | None = None,
    *,
    return_final_state: bool = False,
    reset: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> ScanResult:
    """Loop reference with the signature of :func:`ssd_chunked` (``chunk_size`` accepted for parity,
    unused). Returns y (b, l, h, p) [, h_last (b, h, p, n)]."""
    check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, h0, reset)
    b, l, h, p = x.shape
    n = B.shape[-1]
    dtype = compute_dtype(x, dt, A, B, C, h0)
    dtc = prepare_dt(dt, dt_bias, dt_softplus, dtype)  # (b, l, h)
    xc = x.to(dtype)
    Bh = expand_groups(B.to(dtype), h)  # (b, l, h, n)
    Ch = expand_groups(C.to(dtype), h)  # (b, l, h, n)
    Ac = A.to(dtype)  # (h,)
    s = h0.to(dtype) if h0 is not None else xc.new_zeros(b, h, p, n)  # (b, h, p, n)
    ys = []
    for t in range(l):
        if reset is not None:
            s = torch.where(reset[:, t, None, None, None], torch.zeros_like(s), s)
        decay = torch.exp(dtc[:, t] * Ac)  # (b, h)
        s = decay[:, :, None, None] * s + (dtc[:, t, :, None] * xc[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", s, Ch[:, t]))  # (b, h, p)
    y = skip_and_gate(torch.stack(ys, dim=1), xc, d_skip(D, xc), z).to(x.dtype)  # (b, l, h, p)
    return (y, s) if return_final_state else y
