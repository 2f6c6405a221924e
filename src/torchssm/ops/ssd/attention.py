"""SSD as masked attention: the quadratic "dual" form of Mamba-2's scalar-identity SSM.

Structured state-space duality (Dao & Gu 2024, "Transformers are SSMs", Sec. 3-5; Eq. (SSD) and
Def. 3.1 of N-semiseparable matrices): for one head with scalar A, the sequence map x -> y of
:func:`torchssm.ops.ssd.naive.ssd_naive` is y = M (dt x) with the lower-triangular matrix

    M[t, s] = (C_t . B_s) * Lmask[t, s],   Lmask[t, s] = exp(sum_{k=s+1}^{t} dt_k A)   (s <= t, else 0)

i.e. linear attention with queries C, keys B, values dt x and the 1-semiseparable causal mask Lmask
(every submatrix on or below the diagonal of Lmask has rank <= 1). This module computes that form
directly, O(l^2) time and memory per head: the third algorithm next to the recurrence (``naive.py``,
O(l)) and the chunked algorithm (``chunked.py``, quadratic inside chunks only). With h0 the carried-in
state adds exp(sum_{k<=t} dt_k A) C_t h0; ``reset`` zeroes every mask entry whose path (s, t] crosses
a reset (and h0's path from the start). Same signature and outputs as ``ssd_naive``.
"""

from __future__ import annotations

import torch

from torchssm.ops.common import ScanResult, compute_dtype, expand_groups, prepare_dt, skip_and_gate, without_autocast
from torchssm.ops.ssd.chunked import segsum
from torchssm.ops.ssd.common import check_ssd_inputs, d_skip


def ssd_mask(dt: torch.Tensor, A: torch.Tensor, reset: torch.Tensor | None = None) -> torch.Tensor:
    """The 1-semiseparable causal mask: dt (b, l, h) prepared steps, A (h,) -> (b, h, l, l) with
    entry [t, s] = exp(sum_{k=s+1}^t dt_k A) for s <= t (0 above the diagonal and across a reset)."""
    log_mask = segsum((dt * A).transpose(1, 2))  # (b, h, l, l), -inf above the diagonal
    mask = torch.exp(log_mask)
    if reset is not None:
        seg = torch.cumsum(reset.to(torch.int64), dim=1)  # (b, l) segment id of each step
        same = seg[:, :, None] == seg[:, None, :]  # (b, l, l): no reset in (s, t]
        mask = mask * same[:, None].to(mask.dtype)
    return mask


@without_autocast
def ssd_attention(
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
    """The masked-attention form y = (C B^T * Lmask) (dt x) (module docstring); signature of
    :func:`torchssm.ops.ssd.naive.ssd_naive` (``chunk_size`` accepted for parity, unused).
    Returns y (b, l, h, p) [, h_last (b, h, p, n)]."""
    check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, h0, reset)
    b, l, h, p = x.shape
    dtype = compute_dtype(x, dt, A, B, C, h0)
    dtc = prepare_dt(dt, dt_bias, dt_softplus, dtype)  # (b, l, h)
    xc = x.to(dtype)
    Bh = expand_groups(B.to(dtype), h)  # (b, l, h, n)
    Ch = expand_groups(C.to(dtype), h)  # (b, l, h, n)
    Ac = A.to(dtype)  # (h,)
    mask = ssd_mask(dtc, Ac, reset)  # (b, h, l, l)
    scores = torch.einsum("bthn,bshn->bhts", Ch, Bh) * mask  # (b, h, l, l): the attention matrix M
    v = dtc[..., None] * xc  # (b, l, h, p) values dt x
    y = torch.einsum("bhts,bshp->bthp", scores, v)  # (b, l, h, p)
    h_last = y.new_zeros(0)  # replaced below when return_final_state
    if h0 is not None or return_final_state:
        from_start = torch.exp(torch.cumsum(dtc * Ac, dim=1))  # (b, l, h) decay from the start to t
        if reset is not None:
            from_start = from_start * (torch.cumsum(reset.to(torch.int64), dim=1) == 0)[..., None].to(dtype)
        if h0 is not None:
            y = y + from_start[..., None] * torch.einsum("bthn,bhpn->bthp", Ch, h0.to(dtype))
        if return_final_state:
            h_last = torch.einsum("bhs,bshp,bshn->bhpn", mask[:, :, -1], v, Bh)  # (b, h, p, n)
            if h0 is not None:
                h_last = h_last + from_start[:, -1, :, None, None] * h0.to(dtype)
    y = skip_and_gate(y, xc, d_skip(D, xc), z).to(x.dtype)  # (b, l, h, p)
    return (y, h_last) if return_final_state else y


__all__ = ["ssd_attention", "ssd_mask"]
