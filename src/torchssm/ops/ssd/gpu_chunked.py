"""SSD (Mamba-2) by Triton kernels of the chunked matmul form (``tl.dot``: tensor cores on a GPU).

Same signature as :func:`torchssm.ops.ssd.naive.ssd_naive` (math there) and the same algorithm as
:func:`torchssm.ops.ssd.chunked.ssd_chunked` (Dao & Gu 2024, Sec. 6 and Listing 1; the split into
a chunk-state, a state-passing and a chunk-scan step follows state-spaces/mamba
``mamba_ssm/ops/triton/ssd_chunk_state.py``, ``ssd_state_passing.py`` and ``ssd_chunk_scan.py``).
Per chunk of T steps, head j, with X_t = dt_t x_t (p,), a_cum the cumulative log-decays
sum_{k <= t} dt_k A[j] inside the chunk and seg_t the number of resets so far in the chunk:

    1. state_c   = sum_s w_s X_s B_s^T,  w_s = exp(a_cum[T-1] - a_cum[s]) [seg_s = seg_{T-1}]
                   (p, n) per chunk: one tl.dot (p x T) @ (T x n)            -- ssd_chunk_state_kernel
    2. H_c       = exp(a_cum[T-1]) [no reset in chunk c] H_{c-1} + state_c,   H_{-1} = h0
                   a diagonal scan over the c chunks of (p n) channels: :func:`torchssm.ops.linear_scan`
    3. y_t       = exp(a_cum[t]) [seg_t = 0] C_t H_{c-1}                            (tl.dot)
                 + sum_{s <= t, seg_s = seg_t} (C_t . B_s) exp(a_cum[t] - a_cum[s]) X_s   (2 tl.dot)
                   -- ssd_chunk_scan_kernel

so the (b, l, h, p, n) states are never formed, only one (p, n) state per chunk. dt = softplus(dt +
bias), X = dt x, a_cum = cumsum(dt A), the D skip and the z gate are elementwise PyTorch ops (autograd).

Backward, in Triton: steps 1 and 3 are torch.library custom ops (``torchssm::ssd_chunk_state``,
``torchssm::ssd_chunk_scan``) whose registered autograd calls one backward kernel each, itself a
custom op (``torchssm::ssd_chunk_state_bwd``, ``torchssm::ssd_chunk_scan_bwd``); step 2 is
differentiated by linear_scan's own backward (a reverse scan), the glue above by PyTorch autograd.
One program per (batch, chunk, head) holds all of p. With K[t, s] = exp(a_cum[t] - a_cum[s])
[s <= t, seg_s = seg_t], M = (C B^T) * K, f_t = exp(a_cum[t]) [seg_t = 0] and dY (T, p) the chunk's
gradient of y, step 3's kernel (ssd_chunk_scan_bwd_kernel) computes, with dM = dY X^T (T, T):

    dX        = M^T dY                       dH_{c-1} = (f dY)^T C              (p, n)
    dC        = f (dY H_{c-1}) + (dM * K) B  dB       = (dM * K)^T C
    d a_cum[t] = f_t sum_p dY_t (C H_{c-1}^T)_t + sum_s Q[t, s] - sum_s Q[s, t],   Q = dM * M

(the last two terms because dK[t, s]/d a_cum[t] = K[t, s] = -dK[t, s]/d a_cum[s]); step 1's kernel
(ssd_chunk_state_bwd_kernel), from dS (p, n) the gradient of the chunk's state, with E = B dS^T (T, p):

    dX += w E,   dB += w (X dS),   d a_cum[s] -= w_s sum_p X_s E_s,   d a_cum[T-1] += sum_s w_s sum_p X_s E_s

dB and dC are written per head, (b, l, h, n) float32, and summed over each group's h / g heads
by PyTorch. Saved for the backward: X (b, l, h, p) float32, B, C, a_cum (b, h, c, T), seg and the
carried states (b, c, h, p, n) float32; linear_scan saves its per-chunk decay, expanded to (b, c,
h p n), and its outputs (b, c, h p n): three float32 tensors of b c h p n (1/T of the per-step
states) besides the inputs. No (T, T) tensor is written to memory: M, K and dM are recomputed
in the program. Under torch.compile the op is captured whole (``fullgraph=True`` works).

Precision: inputs are loaded as float32 (bf16/fp16 upcast) and every dot accumulates in float32.
For float32 ``x``, ``tf32=False`` (default) asks for IEEE float32 dots (exact to float32 rounding;
on the GPU these run on the CUDA cores) and ``tf32=True`` lets them use TF32 tensor cores (about
1e-3 relative error). For bf16 / fp16 ``x`` the dot operands (C, B, dt x, the decay-masked
scores and the carried state) are rounded to that dtype, as in mamba_ssm's kernels, so the dots
run on 16-bit tensor cores: relative error of the order of that dtype's rounding (2^-8 for bf16).
Under TRITON_INTERPRET=1 the bf16 dot is emulated (operands rounded to bf16, then a float32 dot),
because the interpreter's own bf16 ``tl.dot`` returns garbage (Triton 3.9); the tests therefore
check the bf16 numerics, and only PTX compilation checks the bf16 ``tl.dot`` itself. The
backward kernels round their dot operands the same way.
Tile sizes are fixed (not autotuned): T, p and n are padded to powers of two >= 16 (tl.dot's
minimum); the forward splits p in blocks of at most 64, the backward holds all of p (it sums
over p for d a_cum) and is checked free of register spills only at p = 64 (T 64, n 128).
Needs Triton; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1 (tests).
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("torchssm.ops.ssd.gpu_chunked needs Triton: pip install 'torchssm[gpu]' (Linux + CUDA)") from err

from torchssm.ops.common import ScanResult, prepare_dt, skip_and_gate
from torchssm.ops.scan.api import linear_scan
from torchssm.ops.scan.gpu import INTERPRET
from torchssm.ops.selective.gpu import check_kernel_inputs
from torchssm.ops.ssd.chunked import chunk_decays
from torchssm.ops.ssd.common import check_ssd_inputs, d_skip

Tensor = torch.Tensor
OptTensor = torch.Tensor | None

__all__ = ["ssd_chunked_gpu"]


@triton.jit
def _chunk_rows(  # type: ignore[no-untyped-def]
    acum_ptr,
    seg_ptr,
    NCH,
    T,
    L,
    H,
    P,
    N,
    HAS_RESET: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    NP: tl.constexpr,
):
    """What every chunk kernel's program (batch x chunk pid_bc, head pid_h, p block) works on:
    (pid_bc, pid_h, batch index, rows (CHUNK,), time t, validity, a_cum (CHUNK,), a_cum of the
    chunk's last row, seg (CHUNK,), seg of the last row, the offset of this (batch, head, chunk)
    in a (b, h, c, T) tensor, p indices (BLOCK_P,) and mask, n indices (NP,) and mask)."""
    pid_bc, pid_h = tl.program_id(0), tl.program_id(1)
    ps = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)  # the backward's grid has one p block
    ns = tl.arange(0, NP)
    bi = (pid_bc // NCH).to(tl.int64)
    ci = pid_bc % NCH
    rows = tl.arange(0, CHUNK)
    inchunk = rows < T
    t = ci * T + rows
    tvalid = inchunk & (t < L)
    a_off = (bi * H + pid_h) * NCH * T + ci * T  # a_cum (b, h, c, T) contiguous
    acum = tl.load(acum_ptr + a_off + rows, mask=inchunk, other=0.0)
    alast = tl.load(acum_ptr + a_off + T - 1)
    if HAS_RESET:
        sbase = seg_ptr + pid_bc * T  # seg (b, c, T) contiguous
        seg = tl.load(sbase + rows, mask=inchunk, other=0)
        slast = tl.load(sbase + T - 1)
    else:
        seg = tl.zeros((CHUNK,), dtype=tl.int32)
        slast = 0
    return pid_bc, pid_h, bi, rows, t, tvalid, acum, alast, seg, slast, a_off, ps, ps < P, ns, ns < N


@triton.jit
def _scan_operands(  # type: ignore[no-untyped-def]
    C_ptr,
    B_ptr,
    hp_ptr,
    pid_bc,
    pid_h,
    bi,
    t,
    tvalid,
    ps,
    pmask,
    ns,
    nmask,
    L,
    H,
    P,
    N,
    G,
    HPG,
):
    """C and B of the head's group for the chunk's rows, (CHUNK, NP) each, and the state carried
    into the chunk, Hp (BLOCK_P, NP), as float32: the inputs shared by both chunk-scan kernels."""
    grp = pid_h // HPG
    ptr, mask = _rows_n(C_ptr, bi, grp, t, tvalid, ns, nmask, L, G, N)
    Ct = _load(ptr, mask)
    ptr, mask = _rows_n(B_ptr, bi, grp, t, tvalid, ns, nmask, L, G, N)
    Bt = _load(ptr, mask)
    ptr, mask = _pn(hp_ptr, pid_bc, pid_h, ps, pmask, ns, nmask, H, P, N)
    return Ct, Bt, _load(ptr, mask)


@triton.jit
def _rows_p(ptr, bi, pid_h, t, tvalid, ps, pmask, L, H, P):  # type: ignore[no-untyped-def]
    """Offsets and mask of a (CHUNK, BLOCK_P) tile of a contiguous (b, l, h, p) tensor."""
    off = ((bi * L + t[:, None]) * H + pid_h) * P + ps[None, :]
    return ptr + off, tvalid[:, None] & pmask[None, :]


@triton.jit
def _rows_n(ptr, bi, j, t, tvalid, ns, nmask, L, J, N):  # type: ignore[no-untyped-def]
    """Offsets and mask of a (CHUNK, NP) tile of a contiguous (b, l, J, n) tensor, index j of J."""
    off = ((bi * L + t[:, None]) * J + j) * N + ns[None, :]
    return ptr + off, tvalid[:, None] & nmask[None, :]


@triton.jit
def _load(ptr, mask):  # type: ignore[no-untyped-def]
    return tl.load(ptr, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _pn(ptr, pid_bc, pid_h, ps, pmask, ns, nmask, H, P, N):  # type: ignore[no-untyped-def]
    """Offsets and mask of the (BLOCK_P, NP) state of (batch x chunk, head) in (b, c, h, p, n)."""
    off = (pid_bc.to(tl.int64) * H + pid_h) * P * N + ps[:, None] * N + ns[None, :]
    return ptr + off, pmask[:, None] & nmask[None, :]


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):  # type: ignore[no-untyped-def]
    """a @ b with float32 accumulation: operands rounded to bf16 / fp16 ("bf16", "fp16": tensor
    cores, as mamba_ssm's kernels do for 16-bit inputs), or float32 with input_precision "ieee"
    (exact products) or "tf32" (tensor cores)."""
    if PRECISION == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif PRECISION == "bf16_emulated":  # the interpreter's bf16 tl.dot is wrong (Triton 3.9): round, then fp32
        return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    elif PRECISION == "fp16":
        return tl.dot(a.to(tl.float16), b.to(tl.float16))
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _state_weights(acum, alast, seg, slast, tvalid, HAS_RESET: tl.constexpr):  # type: ignore[no-untyped-def]
    """w_s = exp(a_cum[T-1] - a_cum[s]) for the rows after the chunk's last reset, else 0."""
    keep = tvalid
    if HAS_RESET:
        keep = keep & (seg == slast)
    return tl.where(keep, tl.exp(alast - acum), 0.0)


@triton.jit
def _intra(acum, seg, rows, tvalid, HAS_RESET: tl.constexpr):  # type: ignore[no-untyped-def]
    """exp(a_cum[t] - a_cum[s]) for s <= t in the same segment, else 0: (CHUNK, CHUNK)."""
    causal = (rows[:, None] >= rows[None, :]) & tvalid[None, :] & tvalid[:, None]
    if HAS_RESET:
        causal = causal & (seg[:, None] == seg[None, :])
    return tl.exp(tl.where(causal, acum[:, None] - acum[None, :], float("-inf")))


@triton.jit
def _readout_decay(acum, seg, HAS_RESET: tl.constexpr):  # type: ignore[no-untyped-def]
    """exp(a_cum[t]) before the chunk's first reset, else 0: how the carried state reaches row t."""
    f = tl.exp(acum)
    if HAS_RESET:
        f = tl.where(seg == 0, f, 0.0)
    return f


@triton.jit
def ssd_chunk_state_kernel(  # type: ignore[no-untyped-def]
    X_ptr,
    B_ptr,
    C_ptr,
    acum_ptr,
    seg_ptr,
    st_ptr,
    L,
    T,
    NCH,
    H,
    P,
    N,
    G,
    HPG,
    HAS_RESET: tl.constexpr,
    PRECISION: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    NP: tl.constexpr,
):
    """state_c (b, c, h, p, n) = sum_s w_s X_s B_s^T over the chunk (step 1 of the module docstring)."""
    pid_bc, pid_h, bi, rows, t, tvalid, acum, alast, seg, slast, _, ps, pmask, ns, nmask = _chunk_rows(
        acum_ptr, seg_ptr, NCH, T, L, H, P, N, HAS_RESET, CHUNK, BLOCK_P, NP
    )
    w = _state_weights(acum, alast, seg, slast, tvalid, HAS_RESET)  # (CHUNK,)
    ptr, mask = _rows_p(X_ptr, bi, pid_h, t, tvalid, ps, pmask, L, H, P)
    X = _load(ptr, mask)  # (CHUNK, BP)
    ptr, mask = _rows_n(B_ptr, bi, pid_h // HPG, t, tvalid, ns, nmask, L, G, N)
    Bt = _load(ptr, mask)  # (CHUNK, NP)
    st = _dot(tl.trans(X * w[:, None]), Bt, PRECISION)  # (BP, NP)
    ptr, mask = _pn(st_ptr, pid_bc, pid_h, ps, pmask, ns, nmask, H, P, N)
    tl.store(ptr, st, mask=mask)


@triton.jit
def ssd_chunk_state_bwd_kernel(  # type: ignore[no-untyped-def]
    X_ptr,
    B_ptr,
    C_ptr,
    acum_ptr,
    seg_ptr,
    dst_ptr,
    dX_ptr,
    dB_ptr,
    dacum_ptr,
    L,
    T,
    NCH,
    H,
    P,
    N,
    G,
    HPG,
    HAS_RESET: tl.constexpr,
    PRECISION: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    NP: tl.constexpr,
):
    """Gradients of step 1 from d state (BLOCK_P covers all of p): with E = B dS^T (CHUNK, p),
    dX = w E, dB (per head) = w X dS, dw_s = sum_p X E, d a_cum[s] = -w dw, d a_cum[T-1] += sum w dw."""
    pid_bc, pid_h, bi, rows, t, tvalid, acum, alast, seg, slast, a_off, ps, pmask, ns, nmask = _chunk_rows(
        acum_ptr, seg_ptr, NCH, T, L, H, P, N, HAS_RESET, CHUNK, BLOCK_P, NP
    )
    w = _state_weights(acum, alast, seg, slast, tvalid, HAS_RESET)
    ptr, mask = _rows_p(X_ptr, bi, pid_h, t, tvalid, ps, pmask, L, H, P)
    X = _load(ptr, mask)  # (CHUNK, BP)
    ptr, mask = _rows_n(B_ptr, bi, pid_h // HPG, t, tvalid, ns, nmask, L, G, N)
    Bt = _load(ptr, mask)  # (CHUNK, NP)
    ptr, mask = _pn(dst_ptr, pid_bc, pid_h, ps, pmask, ns, nmask, H, P, N)
    dS = _load(ptr, mask)  # (BP, NP)
    E = _dot(Bt, tl.trans(dS), PRECISION)  # (CHUNK, BP)
    ptr, mask = _rows_p(dX_ptr, bi, pid_h, t, tvalid, ps, pmask, L, H, P)
    tl.store(ptr, E * w[:, None], mask=mask)
    ptr, mask = _rows_n(dB_ptr, bi, pid_h, t, tvalid, ns, nmask, L, H, N)  # per head: (b, l, h, n)
    tl.store(ptr, _dot(X, dS, PRECISION) * w[:, None], mask=mask)
    wdw = w * tl.sum(X * E, axis=1)  # (CHUNK,)
    dacum = tl.where(rows == T - 1, tl.sum(wdw, axis=0), 0.0) - wdw
    tl.store(dacum_ptr + a_off + rows, dacum, mask=rows < T)


@triton.jit
def ssd_chunk_scan_kernel(  # type: ignore[no-untyped-def]
    X_ptr,
    B_ptr,
    C_ptr,
    acum_ptr,
    seg_ptr,
    hp_ptr,
    y_ptr,
    L,
    T,
    NCH,
    H,
    P,
    N,
    G,
    HPG,
    HAS_RESET: tl.constexpr,
    PRECISION: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    NP: tl.constexpr,
):
    """y (b, l, h, p) of one chunk from the state carried in, hp (b, c, h, p, n), and the chunk's
    own inputs (step 3 of the module docstring)."""
    pid_bc, pid_h, bi, rows, t, tvalid, acum, alast, seg, slast, _, ps, pmask, ns, nmask = _chunk_rows(
        acum_ptr, seg_ptr, NCH, T, L, H, P, N, HAS_RESET, CHUNK, BLOCK_P, NP
    )
    Ct, Bt, Hp = _scan_operands(
        C_ptr, B_ptr, hp_ptr, pid_bc, pid_h, bi, t, tvalid, ps, pmask, ns, nmask, L, H, P, N, G, HPG
    )  # (CHUNK, NP), (CHUNK, NP), (BP, NP)
    f = _readout_decay(acum, seg, HAS_RESET)  # (CHUNK,)
    y = _dot(Ct, tl.trans(Hp), PRECISION) * f[:, None]  # (CHUNK, BP): carried-in state read out
    M = _dot(Ct, tl.trans(Bt), PRECISION) * _intra(acum, seg, rows, tvalid, HAS_RESET)  # (CHUNK, CHUNK)
    ptr, mask = _rows_p(X_ptr, bi, pid_h, t, tvalid, ps, pmask, L, H, P)
    X = _load(ptr, mask)  # (CHUNK, BP)
    y += _dot(M, X, PRECISION)
    ptr, mask = _rows_p(y_ptr, bi, pid_h, t, tvalid, ps, pmask, L, H, P)
    tl.store(ptr, y, mask=mask)


@triton.jit
def ssd_chunk_scan_bwd_kernel(  # type: ignore[no-untyped-def]
    X_ptr,
    B_ptr,
    C_ptr,
    acum_ptr,
    seg_ptr,
    hp_ptr,
    dy_ptr,
    dX_ptr,
    dB_ptr,
    dC_ptr,
    dacum_ptr,
    dhp_ptr,
    L,
    T,
    NCH,
    H,
    P,
    N,
    G,
    HPG,
    HAS_RESET: tl.constexpr,
    PRECISION: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    NP: tl.constexpr,
):
    """Gradients of step 3 (BLOCK_P covers all of p; math in the module docstring). With K the
    masked decays, M = (C B^T) * K, dM = dy X^T (* elementwise): dHp = (f dy)^T C,
    dC = f (dy Hp) + (dM * K) B, dX = M^T dy, dB (per head) = (dM * K)^T C,
    d a_cum[t] = f_t sum_p dy (C Hp^T) + sum_s Q[t, s] - sum_s Q[s, t], Q = dM * M."""
    pid_bc, pid_h, bi, rows, t, tvalid, acum, alast, seg, slast, a_off, ps, pmask, ns, nmask = _chunk_rows(
        acum_ptr, seg_ptr, NCH, T, L, H, P, N, HAS_RESET, CHUNK, BLOCK_P, NP
    )
    Ct, Bt, Hp = _scan_operands(
        C_ptr, B_ptr, hp_ptr, pid_bc, pid_h, bi, t, tvalid, ps, pmask, ns, nmask, L, H, P, N, G, HPG
    )  # (CHUNK, NP), (CHUNK, NP), (BP, NP)
    ptr, mask = _rows_p(X_ptr, bi, pid_h, t, tvalid, ps, pmask, L, H, P)
    X = _load(ptr, mask)  # (CHUNK, BP)
    ptr, mask = _rows_p(dy_ptr, bi, pid_h, t, tvalid, ps, pmask, L, H, P)
    dy = _load(ptr, mask)  # (CHUNK, BP)
    f = _readout_decay(acum, seg, HAS_RESET)  # (CHUNK,)
    K = _intra(acum, seg, rows, tvalid, HAS_RESET)  # (CHUNK, CHUNK)
    M = _dot(Ct, tl.trans(Bt), PRECISION) * K
    dM = _dot(dy, tl.trans(X), PRECISION)  # (CHUNK, CHUNK)
    dcb = dM * K
    Q = dM * M
    dacum = f * tl.sum(dy * _dot(Ct, tl.trans(Hp), PRECISION), axis=1) + tl.sum(Q, axis=1) - tl.sum(Q, axis=0)
    tl.store(dacum_ptr + a_off + rows, dacum, mask=rows < T)
    ptr, mask = _pn(dhp_ptr, pid_bc, pid_h, ps, pmask, ns, nmask, H, P, N)
    tl.store(ptr, _dot(tl.trans(dy * f[:, None]), Ct, PRECISION), mask=mask)
    ptr, mask = _rows_n(dC_ptr, bi, pid_h, t, tvalid, ns, nmask, L, H, N)  # per head: (b, l, h, n)
    tl.store(ptr, _dot(dy, Hp, PRECISION) * f[:, None] + _dot(dcb, Bt, PRECISION), mask=mask)
    ptr, mask = _rows_n(dB_ptr, bi, pid_h, t, tvalid, ns, nmask, L, H, N)
    tl.store(ptr, _dot(tl.trans(dcb), Ct, PRECISION), mask=mask)
    ptr, mask = _rows_p(dX_ptr, bi, pid_h, t, tvalid, ps, pmask, L, H, P)
    tl.store(ptr, _dot(tl.trans(M), dy, PRECISION), mask=mask)


_HALF = {torch.bfloat16: "bf16", torch.float16: "fp16"}  # dot operands of 16-bit inputs


def _launch(
    kernel: Any,
    X: Tensor,
    B: Tensor,
    C: Tensor,
    a_cum: Tensor,
    seg: OptTensor,
    *tensors: Tensor,
    precision: str,
    whole_p: bool,
) -> None:
    """Run a chunk kernel on the grid (b * c, h, p blocks). X (b, l, h, p) float32, B and C
    (b, l, g, n), a_cum (b, h, c, T) float32 and seg (b, c, T) int32 or None, all contiguous.
    Tiles: powers of two >= 16 (tl.dot's smallest); p in blocks of <= 64, or whole (``whole_p``:
    the backward kernels reduce over p inside one program)."""
    b, l, h, p = X.shape
    g, n = B.shape[2], B.shape[3]
    c, T = a_cum.shape[2], a_cum.shape[3]
    pow2 = lambda v: max(16, triton.next_power_of_2(v))  # noqa: E731
    BP = pow2(p) if whole_p else min(64, pow2(p))
    kernel[(b * c, h, triton.cdiv(p, BP))](
        X,
        B,
        C,
        a_cum,
        seg if seg is not None else a_cum,
        *tensors,
        l,
        T,
        c,
        h,
        p,
        n,
        g,
        h // g,
        HAS_RESET=seg is not None,
        PRECISION=precision,
        CHUNK=pow2(T),
        BLOCK_P=BP,
        NP=pow2(n),
    )


def _per_group(d_heads: torch.Tensor, g: int) -> torch.Tensor:
    """(b, l, h, n) gradient per head -> (b, l, g, n): heads sharing a group's B or C summed."""
    b, l, h, n = d_heads.shape
    return d_heads.view(b, l, g, h // g, n).sum(3)


@torch.library.custom_op("torchssm::ssd_chunk_state", mutates_args=())
def _chunk_state(
    X: torch.Tensor, B: torch.Tensor, a_cum: torch.Tensor, seg: torch.Tensor | None, precision: str
) -> torch.Tensor:
    """Step 1: each chunk's own end state (b, c, h, p, n)."""
    b, l, h, p = X.shape
    states = X.new_empty(b, a_cum.shape[2], h, p, B.shape[3])
    _launch(ssd_chunk_state_kernel, X, B, B, a_cum, seg, states, precision=precision, whole_p=False)
    return states


@_chunk_state.register_fake
def _(X: Tensor, B: Tensor, a_cum: Tensor, seg: OptTensor, precision: str) -> Tensor:
    return X.new_empty(X.shape[0], a_cum.shape[2], X.shape[2], X.shape[3], B.shape[3])


@torch.library.custom_op("torchssm::ssd_chunk_state_bwd", mutates_args=())
def _chunk_state_bwd(
    X: torch.Tensor,
    B: torch.Tensor,
    a_cum: torch.Tensor,
    seg: torch.Tensor | None,
    d_states: torch.Tensor,
    precision: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dX (b, l, h, p), dB (b, l, g, n), d a_cum (b, h, c, T)) of step 1."""
    dX, dB, da = torch.empty_like(X), X.new_empty(*X.shape[:3], B.shape[3]), torch.empty_like(a_cum)
    _launch(
        ssd_chunk_state_bwd_kernel,
        X,
        B,
        B,
        a_cum,
        seg,
        d_states.contiguous(),
        dX,
        dB,
        da,
        precision=precision,
        whole_p=True,
    )
    return dX, _per_group(dB, B.shape[2]).to(B.dtype), da


@_chunk_state_bwd.register_fake
def _(
    X: Tensor, B: Tensor, a_cum: Tensor, seg: OptTensor, d_states: Tensor, precision: str
) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(X), torch.empty_like(B), torch.empty_like(a_cum)


def _chunk_state_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    X, B, a_cum, seg, precision = inputs
    ctx.save_for_backward(X, B, a_cum, seg)
    ctx.precision = precision


def _chunk_state_backward(ctx: Any, d_states: Tensor) -> tuple[OptTensor, ...]:
    X, B, a_cum, seg = ctx.saved_tensors
    dX, dB, da = _chunk_state_bwd(X, B, a_cum, seg, d_states, ctx.precision)
    return dX, dB, da, None, None


torch.library.register_autograd("torchssm::ssd_chunk_state", _chunk_state_backward, setup_context=_chunk_state_setup)


@torch.library.custom_op("torchssm::ssd_chunk_scan", mutates_args=())
def _chunk_scan(
    X: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    a_cum: torch.Tensor,
    seg: torch.Tensor | None,
    carried: torch.Tensor,
    precision: str,
) -> torch.Tensor:
    """Step 3: y (b, l, h, p) float32 from each chunk's inputs and the state carried into it."""
    y = torch.empty_like(X)
    _launch(ssd_chunk_scan_kernel, X, B, C, a_cum, seg, carried, y, precision=precision, whole_p=False)
    return y


@_chunk_scan.register_fake
def _(X: Tensor, B: Tensor, C: Tensor, a_cum: Tensor, seg: OptTensor, carried: Tensor, precision: str) -> Tensor:
    return torch.empty_like(X)


@torch.library.custom_op("torchssm::ssd_chunk_scan_bwd", mutates_args=())
def _chunk_scan_bwd(
    X: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    a_cum: torch.Tensor,
    seg: torch.Tensor | None,
    carried: torch.Tensor,
    dy: torch.Tensor,
    precision: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dX, dB (b, l, g, n), dC (b, l, g, n), d a_cum, d carried) of step 3."""
    heads = X.new_empty(*X.shape[:3], B.shape[3])  # (b, l, h, n)
    dX, dB, dC = torch.empty_like(X), heads, torch.empty_like(heads)
    da, dcar = torch.empty_like(a_cum), torch.empty_like(carried)
    _launch(
        ssd_chunk_scan_bwd_kernel,
        X,
        B,
        C,
        a_cum,
        seg,
        carried,
        dy.contiguous(),
        dX,
        dB,
        dC,
        da,
        dcar,
        precision=precision,
        whole_p=True,
    )
    g = B.shape[2]
    return dX, _per_group(dB, g).to(B.dtype), _per_group(dC, g).to(C.dtype), da, dcar


@_chunk_scan_bwd.register_fake
def _(
    X: Tensor, B: Tensor, C: Tensor, a_cum: Tensor, seg: OptTensor, carried: Tensor, dy: Tensor, precision: str
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return (
        torch.empty_like(X),
        torch.empty_like(B),
        torch.empty_like(C),
        torch.empty_like(a_cum),
        torch.empty_like(carried),
    )


def _chunk_scan_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    X, B, C, a_cum, seg, carried, precision = inputs
    ctx.save_for_backward(X, B, C, a_cum, seg, carried)
    ctx.precision = precision


def _chunk_scan_backward(ctx: Any, dy: Tensor) -> tuple[OptTensor, ...]:
    X, B, C, a_cum, seg, carried = ctx.saved_tensors
    dX, dB, dC, da, dcar = _chunk_scan_bwd(X, B, C, a_cum, seg, carried, dy, ctx.precision)
    return dX, dB, dC, da, None, dcar, None


torch.library.register_autograd("torchssm::ssd_chunk_scan", _chunk_scan_backward, setup_context=_chunk_scan_setup)


def _chunked_forward(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    h0: OptTensor,
    reset: OptTensor,
    chunk_size: int,
    precision: str,
) -> tuple[Tensor, Tensor]:
    """(y (b, l, h, p) float32 without D/z, final state (b, h, p, n) float32); differentiable: the
    kernels' backward kernels, linear_scan's backward and PyTorch autograd for the glue."""
    b, l, h, p = x.shape
    n = B.shape[3]
    T, c, _, _, a_cum, seg = chunk_decays(dt, A.float(), reset, chunk_size)  # (b, h, c, T), (b, c, T)
    a_cum = a_cum.contiguous()
    seg = seg.to(torch.int32).contiguous() if seg is not None else None
    X = (x.float() * dt[..., None]).contiguous()  # (b, l, h, p): dt x
    B, C = B.contiguous(), C.contiguous()  # (b, l, g, n)
    states = _chunk_state(X, B, a_cum, seg, precision)  # (b, c, h, p, n)
    # inter-chunk state passing: H_c = decay_c H_{c-1} + state_c over the c chunks, p*n channels per head
    decay = torch.exp(a_cum[..., -1])  # (b, h, c) total decay of each chunk
    if seg is not None:
        decay = decay * (seg[:, None, :, -1] == 0)  # a reset inside the chunk cuts the carried state
    decay = decay.permute(0, 2, 1)[..., None].expand(b, c, h, p * n).reshape(b, c, h * p * n)
    s0 = h0.float().reshape(b, h * p * n) if h0 is not None else None  # (b, h p n)
    Hs = linear_scan(decay, states.view(b, c, h * p * n), s0)  # (b, c, h p n): state after each chunk
    start = s0 if s0 is not None else Hs.new_zeros(b, h * p * n)
    carried = torch.cat([start[:, None], Hs[:, :-1]], 1).view(b, c, h, p, n).contiguous()  # entering each chunk
    y = _chunk_scan(X, B, C, a_cum, seg, carried, precision)  # (b, l, h, p)
    return y, Hs[:, -1].view(b, h, p, n)


def ssd_chunked_gpu(
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
    tf32: bool = False,
) -> ScanResult:
    """SSD by the Triton chunked-matmul kernels; same signature and result as ``ssd_naive``.

    x (b, l, h, p), dt (b, l, h), A (h,), B and C (b, l, g, n), D (h,) or (h, p), z (b, l, h, p),
    dt_bias (h,), h0 (b, h, p, n), reset bool (b, l). ``chunk_size``: T, any value >= 1 (the last
    chunk may be partial). ``tf32``: for float32 x, let the dots use TF32 tensor cores; bf16 / fp16
    x always use 16-bit tensor-core dots (see the module docstring).
    Differentiable in every input (Triton backward kernels; see the module docstring).
    Returns y (b, l, h, p) in x's dtype [, h_last (b, h, p, n) float32].
    """
    check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, h0, reset)
    check_kernel_inputs("SSD", dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, h0=h0))
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    dtc = prepare_dt(dt, dt_bias, dt_softplus, torch.float32)  # (b, l, h)
    precision = _HALF.get(x.dtype, "tf32" if tf32 else "ieee")
    if precision == "bf16" and INTERPRET:
        precision = "bf16_emulated"
    y, final = _chunked_forward(x, dtc, A, B, C, h0, reset, chunk_size, precision)
    y = skip_and_gate(y, x.float(), d_skip(D, x), z).to(x.dtype)  # (b, l, h, p)
    return (y, final) if return_final_state else y
