"""SSD chunked matmul algorithm (Mamba-2): quadratic (attention-like) inside each chunk of
``chunk_size`` steps, a recurrence over the chunk states across chunks.

Follows ``ssd_minimal_discrete`` (Dao & Gu 2024, Sec. 6 and Listing 1; state-spaces/mamba
``mamba_ssm/modules/ssd_minimal.py``), extended beyond that listing with: an initial state h0
(folded in as chunk "-1"), grouped B/C (n_groups > 1), any length (zero padding at the end: dt = 0
there, so the decay is 1 and nothing is added; the final state is unchanged), and ``reset``
(packed sequences: every decay that crosses a reset position is masked to zero). For a chunk with
cumulative log-decays a_cum (T,) and segsum S[i, j] = a_cum[i] - a_cum[j] (-inf for j > i):

    Y_diag = ((C B^T) * exp(S)) (dt x)                    intra-chunk, quadratic in T
    state_c = sum_j exp(a_cum[-1] - a_cum[j]) (dt x)_j B_j^T   each chunk's own end state
    H_c = sum_{c' <= c} exp(sum of chunk decays between) state_c'   (incl. h0)  inter-chunk
    Y_off = exp(a_cum) C H_{c-1}                           the carried-in state read out
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchssm.ops.common import ScanResult, compute_dtype, prepare_dt, skip_and_gate, without_autocast
from torchssm.ops.ssd.common import check_ssd_inputs, d_skip


def segsum(a: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T) with out[..., i, j] = sum_{k=j+1}^{i} a[..., k] for j <= i, -inf above.

    The stable form of ``ssd_minimal``: a masked cumulative sum, no difference of large cumsums."""
    T = a.shape[-1]
    x = a[..., None].expand(*a.shape, T)  # (..., T, T): x[..., i, j] = a[..., i]
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)
    x = torch.cumsum(x.masked_fill(~strict, 0.0), dim=-2)
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=0)
    return x.masked_fill(~lower, float("-inf"))


def chunk_decays(
    dt: torch.Tensor,
    A: torch.Tensor,
    reset: torch.Tensor | None,
    chunk_size: int,
) -> tuple[int, int, int, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The chunk layout shared by ``ssd_chunked`` and the Triton chunked kernels (``gpu_chunked.py``).

    dt (b, l, h) prepared steps, A (h,), reset bool (b, l) or None. The sequence is cut into c chunks
    of T = min(chunk_size, l) steps, the last one padded with dt = 0 (decay 1, nothing added).
    Returns (T, c, pad, a (b, h, c, T) log-decays dt_t A, a_cum (b, h, c, T) their cumulative sum
    within each chunk, seg (b, c, T) int64 number of resets so far in the chunk, or None).
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    b, l, h = dt.shape
    T = min(chunk_size, l)
    pad = (-l) % T
    c = (l + pad) // T
    a = F.pad(dt * A, (0, 0, 0, pad)).view(b, c, T, h).permute(0, 3, 1, 2)  # (b, h, c, T) log decays
    a_cum = torch.cumsum(a, dim=-1)  # (b, h, c, T)
    seg = None
    if reset is not None:
        seg = torch.cumsum(F.pad(reset, (0, pad)).view(b, c, T).to(torch.int64), dim=-1)  # (b, c, T)
    return T, c, pad, a, a_cum, seg


def _same_segment(seg: torch.Tensor) -> torch.Tensor:
    """seg (..., T) nondecreasing segment ids -> (..., T, T) bool: no reset in (j, i]."""
    return seg[..., :, None] == seg[..., None, :]


@without_autocast
def ssd_chunked(
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
    """Same math and signature as :func:`ssd_naive`. Returns y (b, l, h, p) [, h_last (b, h, p, n)]."""
    check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, h0, reset)
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    dtype = compute_dtype(x, dt, A, B, C, h0)
    dtc = prepare_dt(dt, dt_bias, dt_softplus, dtype)  # (b, l, h); softplus before padding with 0
    T, c, pad, a, a_cum, seg = chunk_decays(dtc, A.to(dtype), reset, chunk_size)
    xc = x.to(dtype)
    X = xc * dtc[..., None]  # (b, l, h, p): dt x, i.e. B_bar = dt B
    Bc, Cc = B.to(dtype), C.to(dtype)  # (b, l, g, n)
    if pad:
        X = F.pad(X, (0, 0, 0, 0, 0, pad))
        Bc = F.pad(Bc, (0, 0, 0, 0, 0, pad))
        Cc = F.pad(Cc, (0, 0, 0, 0, 0, pad))
    X = X.view(b, c, T, h, p)
    Bc = Bc.view(b, c, T, g, n)
    Cc = Cc.view(b, c, T, g, n)

    def heads(M: torch.Tensor, dim: int) -> torch.Tensor:  # group axis of size g -> h heads
        if g == h:
            return M
        if g == 1:
            return M.expand(*[h if i == dim % M.dim() else -1 for i in range(M.dim())])
        return M.repeat_interleave(h // g, dim=dim)

    # 1. intra-chunk (diagonal blocks): scores C_i . B_j per group, masked by the decay exp(segsum)
    CB = torch.einsum("bclgn,bcsgn->bclsg", Cc, Bc)  # (b, c, T, T, g)
    Lmat = torch.exp(segsum(a)).permute(0, 2, 3, 4, 1)  # (b, c, T, T, h)
    if seg is not None:
        Lmat = Lmat * _same_segment(seg)[..., None]
    scores = heads(CB, -1) * Lmat  # (b, c, T, T, h)
    y = torch.einsum("bclsh,bcshp->bclhp", scores, X)  # (b, c, T, h, p)

    # 2. each chunk's end state from its own inputs
    decay_states = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, T)
    if seg is not None:
        decay_states = decay_states * torch.eq(seg, seg[..., -1:])[:, None]
    Bh = heads(Bc, 3)  # (b, c, T, h, n)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bh, decay_states, X)  # (b, c, h, p, n)

    # 3. inter-chunk recurrence over chunk states (h0 is the state before chunk 0)
    init = h0.to(dtype)[:, None] if h0 is not None else X.new_zeros(b, 1, h, p, n)
    states = torch.cat([init, states], dim=1)  # (b, c+1, h, p, n)
    decay_chunk = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    if seg is not None:
        chunk_seg = torch.cumsum(F.pad((seg[..., -1] > 0).to(torch.int64), (1, 0)), dim=-1)  # (b, c+1)
        decay_chunk = decay_chunk * _same_segment(chunk_seg)[:, None]
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)  # (b, c+1, h, p, n)
    carried, final = new_states[:, :-1], new_states[:, -1]  # (b, c, h, p, n), (b, h, p, n)

    # 4. read the carried-in state out inside each chunk
    state_decay_out = torch.exp(a_cum)  # (b, h, c, T)
    if seg is not None:
        state_decay_out = state_decay_out * torch.eq(seg, 0)[:, None]
    Ch = heads(Cc, 3)  # (b, c, T, h, n)
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", Ch, carried, state_decay_out)
    y = y.reshape(b, c * T, h, p)[:, :l]  # (b, l, h, p)
    y = skip_and_gate(y, xc, d_skip(D, xc), z).to(x.dtype)
    return (y, final) if return_final_state else y
