"""Reference selective scan (Mamba's S6): a Python loop over time, the ground truth for tests.

Math (Gu & Dao 2023, "Mamba", Alg. 2 and Eq. 4; reference code ``selective_scan_ref`` in
state-spaces/mamba ``mamba_ssm/ops/selective_scan_interface.py``), per channel c and state index i:

    dt_t      = softplus(delta_t + delta_bias)         (each optional)
    A_bar_t   = exp(dt_t[c] A[c, i])                   (zero-order hold on A)
    B_bar_t   = dt_t[c] B_t[i]                         (Euler on B, as the reference code does)
    h_t[c, i] = A_bar_t h_{t-1}[c, i] + B_bar_t u_t[c]          (h_{-1} = h0; 0 where reset[:, t])
    y_t[c]    = sum_i C_t[i] h_t[c, i] + D[c] u_t[c];   y_t *= silu(z_t[c])

B, C are shared by all channels (b, l, n), or by groups of channels (b, l, g, n).
"""

from __future__ import annotations

import torch

from torchssm.ops.common import ScanResult
from torchssm.ops.selective.common import check_selective_inputs, prepare_selective, skip_and_gate, without_autocast


@without_autocast
def selective_scan_naive(
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
) -> ScanResult:
    """Loop reference; same signature as :func:`selective_scan_chunked` (``chunk_size`` is accepted
    for parity and unused: the loop has no chunks). Returns y (b, l, d) [, h_last (b, d, n)]."""
    check_selective_inputs(u, delta, A, B, C, D, z, delta_bias, h0, reset)
    b, l, d = u.shape
    n = A.shape[1]
    dt, uc, Bx, Cx, Ac, h0 = prepare_selective(u, delta, A, B, C, delta_bias, delta_softplus, h0)
    h = h0 if h0 is not None else uc.new_zeros(b, d, n)  # (b, d, n)
    ys = []
    for t in range(l):
        if reset is not None:
            h = torch.where(reset[:, t, None, None], torch.zeros_like(h), h)
        dA = torch.exp(dt[:, t, :, None] * Ac)  # (b, d, n)
        h = dA * h + (dt[:, t] * uc[:, t])[:, :, None] * Bx[:, t]  # (b, d, n)
        ys.append((h * Cx[:, t]).sum(-1))  # (b, d)
    y = skip_and_gate(torch.stack(ys, dim=1), uc, D, z).to(u.dtype)  # (b, l, d)
    return (y, h) if return_final_state else y
