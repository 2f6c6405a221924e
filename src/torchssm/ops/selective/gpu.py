"""Fused Triton selective scan (Mamba's S6): discretisation inside the kernel, states kept on chip.

Same signature as :func:`torchssm.ops.selective.naive.selective_scan_naive` (see its docstring for
the math). Per channel c and state index i, with a'_t = exp(dt_t[c] A[c, i]) (1 - reset_t):

    h_t[c, i] = a'_t h_{t-1}[c, i] + dt_t[c] B_t[i] u_t[c]          (h_{-1} = h0)
    y_t[c]    = sum_i C_t[i] h_t[c, i]                                (then + D u, * silu(z))

The (b, l, d, n) tensors a', dt B u and h exist only in registers, one (chunk x BLOCK_D x n) tile
at a time; HBM sees u, dt, B, C, y and one state per chunk of ``chunk_size`` steps (saved for the
backward, which recomputes the chunk's states from it). dt = softplus(delta + delta_bias) and the
D skip / z gate are (b, l, d) elementwise ops left to PyTorch autograd.

Backward (g_t = dLoss/dh_t, all real): g_t = C_t gy_t + a'_{t+1} g_{t+1} (a reverse scan started
from the final-state gradient), then with q_t = g_t (h_t - dt_t B_t u_t) = g_t a'_t h_{t-1}:
    grad C_t = sum_c gy_t h_t          grad B_t = sum_c g_t dt_t u_t
    grad u_t = dt_t sum_i g_t B_t      grad dt_t = u_t sum_i g_t B_t + sum_i q_t A
    grad A   = sum_t q_t dt_t          grad h0 = a'_0 g_0
Sums over channels are written per channel block and reduced in PyTorch (deterministic).

float32 compute and state (docs/architecture.md, Numerics); u, B, C, z may be bf16/fp16. Importing needs
Triton; tensors must be on CUDA, or on the CPU under TRITON_INTERPRET=1 (tests).
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("torchssm.ops.selective.gpu needs Triton: pip install 'torchssm[gpu]' (Linux + CUDA)") from err

from torchssm.ops.common import ScanResult
from torchssm.ops.scan._triton_kernels import _comb_real, _row
from torchssm.ops.scan.gpu import INTERPRET
from torchssm.ops.selective.common import check_selective_inputs, prepare_dt, skip_and_gate

__all__ = ["selective_scan_gpu", "kernel_chunk"]

_TILE_ELEMENTS = 4096  # chunk x BLOCK_D x n_pow2 per tile: bounds registers per program


@triton.jit
def _decay(  # type: ignore[no-untyped-def]
    dt_ptr,
    r_ptr,
    A,
    t,
    tvalid,
    cols,
    dmask,
    pid_b,
    s_dtb,
    s_dtl,
    s_rb,
    s_rl,
    HAS_RESET: tl.constexpr,
):
    """a'_t = exp(dt_t A) (1 - reset_t): (BL, BD, NP), and dt (BL, BD); dt = 0 (a' = 1) off range."""
    mask = tvalid[:, None] & dmask[None, :]
    dt = tl.load(dt_ptr + pid_b * s_dtb + t[:, None] * s_dtl + cols[None, :], mask=mask, other=0.0)
    dt = dt.to(tl.float32)
    alpha = tl.exp(dt[:, :, None] * A[None, :, :])
    if HAS_RESET:
        r = tl.load(r_ptr + pid_b * s_rb + t * s_rl, mask=tvalid, other=0)
        alpha = tl.where((r == 0)[:, None, None], alpha, 0.0)
    return alpha, dt


@triton.jit
def _bc(ptr, t, tvalid, ns, nmask, pid_b, grp, s_b, s_l, s_g):  # type: ignore[no-untyped-def]
    """B_t or C_t of this program's channel group: (BL, NP) float32."""
    off = pid_b * s_b + t[:, None] * s_l + grp * s_g + ns[None, :]
    return tl.load(ptr + off, mask=tvalid[:, None] & nmask[None, :], other=0.0).to(tl.float32)


@triton.jit
def selective_fwd_kernel(  # type: ignore[no-untyped-def]
    dt_ptr,
    u_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    h0_ptr,
    r_ptr,
    y_ptr,
    hl_ptr,
    S_ptr,
    L,
    D,
    N,
    DPG,
    s_dtb,
    s_dtl,
    s_ub,
    s_ul,
    s_Bb,
    s_Bl,
    s_Bg,
    s_Cb,
    s_Cl,
    s_Cg,
    s_rb,
    s_rl,
    s_yb,
    s_yl,
    HAS_H0: tl.constexpr,
    HAS_RESET: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NP: tl.constexpr,
):
    """y (B, L, D) = sum_i C h, final state (B, D, N), chunk-entry states S (B, n_chunks, D, N)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    dmask = cols < D
    ns = tl.arange(0, NP)  # (NP,)
    nmask = ns < N
    dn_mask = dmask[:, None] & nmask[None, :]  # (BD, NP)
    dn_off = cols[:, None] * N + ns[None, :]  # (BD, NP) offsets in a (D, N) block
    grp = (pid_d * BLOCK_D) // DPG  # channel group sharing B and C
    A = tl.load(A_ptr + dn_off, mask=dn_mask, other=0.0).to(tl.float32)  # (BD, NP)
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * D * N + dn_off, mask=dn_mask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros((BLOCK_D, NP), dtype=tl.float32)
    rows = tl.arange(0, BLOCK_L)
    n_tiles = tl.cdiv(L, BLOCK_L)
    for i in range(n_tiles):
        tl.store(S_ptr + (pid_b * n_tiles + i) * D * N + dn_off, h, mask=dn_mask)
        t = i * BLOCK_L + rows  # (BL,)
        tvalid = t < L
        mask = tvalid[:, None] & dmask[None, :]  # (BL, BD)
        alpha, dt = _decay(dt_ptr, r_ptr, A, t, tvalid, cols, dmask, pid_b, s_dtb, s_dtl, s_rb, s_rl, HAS_RESET)
        u = tl.load(u_ptr + pid_b * s_ub + t[:, None] * s_ul + cols[None, :], mask=mask, other=0.0)
        Bt = _bc(B_ptr, t, tvalid, ns, nmask, pid_b, grp, s_Bb, s_Bl, s_Bg)  # (BL, NP)
        beta = (dt * u.to(tl.float32))[:, :, None] * Bt[:, None, :]  # (BL, BD, NP)
        P, Q = tl.associative_scan((alpha, beta), 0, _comb_real)
        hs = P * h[None, :, :] + Q  # (BL, BD, NP)
        Ct = _bc(C_ptr, t, tvalid, ns, nmask, pid_b, grp, s_Cb, s_Cl, s_Cg)
        y = tl.sum(hs * Ct[:, None, :], axis=2)  # (BL, BD)
        tl.store(y_ptr + pid_b * s_yb + t[:, None] * s_yl + cols[None, :], y, mask=mask)
        h = _row(hs, rows[:, None], BLOCK_L - 1)
    tl.store(hl_ptr + pid_b * D * N + dn_off, h, mask=dn_mask)


@triton.jit
def selective_bwd_kernel(  # type: ignore[no-untyped-def]
    dt_ptr,
    u_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    r_ptr,
    S_ptr,
    gy_ptr,
    ghl_ptr,
    gdt_ptr,
    gu_ptr,
    gA_ptr,
    gB_ptr,
    gC_ptr,
    gh0_ptr,
    L,
    D,
    N,
    DPG,
    NDB,
    s_dtb,
    s_dtl,
    s_ub,
    s_ul,
    s_Bb,
    s_Bl,
    s_Bg,
    s_Cb,
    s_Cl,
    s_Cg,
    s_rb,
    s_rl,
    s_gyb,
    s_gyl,
    HAS_RESET: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NP: tl.constexpr,
):
    """grad dt, grad u (B, L, D); per-batch grad A (B, D, N); per-channel-block grad B and grad C
    (B, L, NDB, NP); grad h0 (B, D, N). Chunk states are recomputed from S."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = cols < D
    ns = tl.arange(0, NP)
    nmask = ns < N
    dn_mask = dmask[:, None] & nmask[None, :]
    dn_off = cols[:, None] * N + ns[None, :]
    grp = (pid_d * BLOCK_D) // DPG
    A = tl.load(A_ptr + dn_off, mask=dn_mask, other=0.0).to(tl.float32)  # (BD, NP)
    g = tl.load(ghl_ptr + pid_b * D * N + dn_off, mask=dn_mask, other=0.0).to(tl.float32)  # carried g
    acc_A = tl.zeros((BLOCK_D, NP), dtype=tl.float32)
    rows = tl.arange(0, BLOCK_L)
    n_tiles = tl.cdiv(L, BLOCK_L)
    for i in range(n_tiles):
        tile = n_tiles - 1 - i
        t = tile * BLOCK_L + rows
        tvalid = t < L
        mask = tvalid[:, None] & dmask[None, :]
        # recompute the chunk's states from its entry state
        S = tl.load(S_ptr + (pid_b * n_tiles + tile) * D * N + dn_off, mask=dn_mask, other=0.0)
        alpha, dt = _decay(dt_ptr, r_ptr, A, t, tvalid, cols, dmask, pid_b, s_dtb, s_dtl, s_rb, s_rl, HAS_RESET)
        u = tl.load(u_ptr + pid_b * s_ub + t[:, None] * s_ul + cols[None, :], mask=mask, other=0.0)
        u = u.to(tl.float32)
        dtu = dt * u  # (BL, BD)
        Bt = _bc(B_ptr, t, tvalid, ns, nmask, pid_b, grp, s_Bb, s_Bl, s_Bg)  # (BL, NP)
        beta = dtu[:, :, None] * Bt[:, None, :]
        P, Q = tl.associative_scan((alpha, beta), 0, _comb_real)
        hs = P * S[None, :, :] + Q  # (BL, BD, NP)
        # reverse scan: g_t = C_t gy_t + a'_{t+1} g_{t+1}; a' = 1 past the end (carry enters at L-1)
        tn = t + 1
        alpha_n, _ = _decay(dt_ptr, r_ptr, A, tn, tn < L, cols, dmask, pid_b, s_dtb, s_dtl, s_rb, s_rl, HAS_RESET)
        gy = tl.load(gy_ptr + pid_b * s_gyb + t[:, None] * s_gyl + cols[None, :], mask=mask, other=0.0)
        gy = gy.to(tl.float32)
        Ct = _bc(C_ptr, t, tvalid, ns, nmask, pid_b, grp, s_Cb, s_Cl, s_Cg)
        Pg, Qg = tl.associative_scan((alpha_n, gy[:, :, None] * Ct[:, None, :]), 0, _comb_real, reverse=True)
        gh = Pg * g[None, :, :] + Qg  # (BL, BD, NP)
        g = _row(gh, rows[:, None], 0)
        gh = tl.where(mask[:, :, None], gh, 0.0)
        # parameter and input gradients of this chunk
        bc_off = ((pid_b * L + t[:, None]) * NDB + pid_d) * NP + ns[None, :]  # (BL, NP)
        tl.store(gC_ptr + bc_off, tl.sum(gy[:, :, None] * hs, axis=1), mask=tvalid[:, None])
        tl.store(gB_ptr + bc_off, tl.sum(gh * dtu[:, :, None], axis=1), mask=tvalid[:, None])
        gdtu = tl.sum(gh * Bt[:, None, :], axis=2)  # (BL, BD)
        q = gh * (hs - beta)  # g_t a'_t h_{t-1}
        gdt = u * gdtu + tl.sum(q * A[None, :, :], axis=2)
        acc_A += tl.sum(q * dt[:, :, None], axis=0)
        ld_off = pid_b * s_dtb + t[:, None] * s_dtl + cols[None, :]  # grads are contiguous like dt
        tl.store(gdt_ptr + ld_off, gdt, mask=mask)
        tl.store(gu_ptr + ld_off, dt * gdtu, mask=mask)
    # grad h0 = a'_0 g_0
    t0 = tl.zeros((1,), dtype=tl.int32)
    alpha0, _ = _decay(dt_ptr, r_ptr, A, t0, t0 < L, cols, dmask, pid_b, s_dtb, s_dtl, s_rb, s_rl, HAS_RESET)
    tl.store(gh0_ptr + pid_b * D * N + dn_off, tl.sum(alpha0, axis=0) * g, mask=dn_mask)
    tl.store(gA_ptr + pid_b * D * N + dn_off, acc_A, mask=dn_mask)


def kernel_chunk(chunk_size: int, n: int) -> int:
    """The kernel's time tile: chunk_size rounded down to a power of two, at most TILE / n_pow2."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    cap = max(1, min(chunk_size, _TILE_ELEMENTS // triton.next_power_of_2(n)))
    return 1 << (cap.bit_length() - 1)


def check_kernel_inputs(op: str, tensors: dict) -> None:
    """float32/bf16/fp16 only (the kernels compute in float32); CUDA, or CPU under the interpreter."""
    for name, t in tensors.items():
        if t is None:
            continue
        if t.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise TypeError(
                f"{name} has dtype {t.dtype}; the Triton {op} takes float32, bfloat16 "
                "or float16 (it computes in float32: use backend='chunked' for float64)"
            )
        if t.device.type != "cuda" and not INTERPRET:
            raise ValueError(
                f"{name} is on {t.device}; the Triton {op} needs CUDA tensors "
                "(or TRITON_INTERPRET=1 set before importing triton, to test on the CPU)"
            )


def _block_d(d: int, dpg: int, chunk: int, np_: int) -> int:
    """Largest power of two <= min(32, TILE / (chunk * n)) dividing the channels per group."""
    cap = max(1, min(32, _TILE_ELEMENTS // (chunk * np_), triton.next_power_of_2(d)))
    bd = 1
    while bd * 2 <= cap and dpg % (bd * 2) == 0:
        bd *= 2
    return bd


def _bc4(M: torch.Tensor) -> torch.Tensor:
    """(b, l, n) -> (b, l, 1, n); (b, l, g, n) as is; contiguous."""
    return (M[:, :, None, :] if M.dim() == 3 else M).contiguous()


class SelectiveCore(torch.autograd.Function):
    """(dt, u, A, B, C, h0, reset) -> (y (b, l, d) = sum_i C h, h_last (b, d, n)), float32."""

    @staticmethod
    def forward(
        ctx: Any,
        dt: torch.Tensor,
        u: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,  # type: ignore[override]
        C: torch.Tensor,
        h0: torch.Tensor | None,
        reset: torch.Tensor | None,
        chunk: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, l, d = u.shape
        n = A.shape[1]
        B4, C4 = _bc4(B), _bc4(C)  # (b, l, g, n)
        dpg = d // B4.shape[2]
        np_ = triton.next_power_of_2(n)
        bd = _block_d(d, dpg, chunk, np_)
        n_chunks = triton.cdiv(l, chunk)
        # the kernels assume unit channel stride (an expanded dt can have stride 0 there)
        dt, u, A = dt.contiguous(), u.contiguous(), A.contiguous()
        y = torch.empty(b, l, d, dtype=torch.float32, device=u.device)  # (b, l, d)
        h_last = torch.empty(b, d, n, dtype=torch.float32, device=u.device)  # (b, d, n)
        S = torch.empty(b, n_chunks, d, n, dtype=torch.float32, device=u.device)  # chunk-entry states
        r = reset.contiguous().view(torch.uint8) if reset is not None else None
        h0c = h0.contiguous() if h0 is not None else None
        selective_fwd_kernel[(b, triton.cdiv(d, bd))](
            dt,
            u,
            A,
            B4,
            C4,
            h0c if h0c is not None else y,
            r if r is not None else y,
            y,
            h_last,
            S,
            l,
            d,
            n,
            dpg,
            dt.stride(0),
            dt.stride(1),
            u.stride(0),
            u.stride(1),
            B4.stride(0),
            B4.stride(1),
            B4.stride(2),
            C4.stride(0),
            C4.stride(1),
            C4.stride(2),
            *(r.stride() if r is not None else (0, 0)),
            y.stride(0),
            y.stride(1),
            HAS_H0=h0 is not None,
            HAS_RESET=r is not None,
            BLOCK_L=chunk,
            BLOCK_D=bd,
            NP=np_,
        )
        ctx.save_for_backward(dt, u, A, B4, C4, h0, r, S)
        ctx.meta = (chunk, bd, np_, dpg, B.dim(), B.dtype, C.dtype)
        return y, h_last

    @staticmethod
    def backward(
        ctx: Any,
        grad_y: torch.Tensor | None,  # type: ignore[override]
        grad_h_last: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        dt, u, A, B4, C4, h0, r, S = ctx.saved_tensors
        chunk, bd, np_, dpg, bc_dim, b_dtype, c_dtype = ctx.meta
        b, l, d = u.shape
        n = A.shape[1]
        g = B4.shape[2]
        ndb = triton.cdiv(d, bd)
        grad_y = grad_y.contiguous() if grad_y is not None else torch.zeros_like(dt)
        ghl = (
            grad_h_last.contiguous()
            if grad_h_last is not None
            else torch.zeros(b, d, n, dtype=torch.float32, device=u.device)
        )
        gdt = torch.empty_like(dt)  # (b, l, d), strides of dt (contiguous)
        gu = torch.empty_like(dt)
        gA = torch.empty(b, d, n, dtype=torch.float32, device=u.device)  # per-batch partial sums
        gB = torch.empty(b, l, ndb, np_, dtype=torch.float32, device=u.device)  # per-channel-block partials
        gC = torch.empty_like(gB)
        gh0 = torch.empty(b, d, n, dtype=torch.float32, device=u.device)
        selective_bwd_kernel[(b, ndb)](
            dt,
            u,
            A,
            B4,
            C4,
            r if r is not None else dt,
            S,
            grad_y,
            ghl,
            gdt,
            gu,
            gA,
            gB,
            gC,
            gh0,
            l,
            d,
            n,
            dpg,
            ndb,
            dt.stride(0),
            dt.stride(1),
            u.stride(0),
            u.stride(1),
            B4.stride(0),
            B4.stride(1),
            B4.stride(2),
            C4.stride(0),
            C4.stride(1),
            C4.stride(2),
            *(r.stride() if r is not None else (0, 0)),
            grad_y.stride(0),
            grad_y.stride(1),
            HAS_RESET=r is not None,
            BLOCK_L=chunk,
            BLOCK_D=bd,
            NP=np_,
        )

        def per_group(part: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # (b, l, ndb, np) -> (b, l, g, n)
            out = part[..., :n].reshape(b, l, g, ndb // g, n).sum(3)
            return (out[:, :, 0] if bc_dim == 3 else out).to(dtype)

        return (
            gdt,
            gu.to(u.dtype),
            gA.sum(0).to(A.dtype),
            per_group(gB, b_dtype),
            per_group(gC, c_dtype),
            gh0.to(h0.dtype) if h0 is not None else None,
            None,
            None,
        )


def selective_scan_gpu(
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
    """Selective scan by the fused Triton kernels; same signature and result as
    :func:`~torchssm.ops.selective.naive.selective_scan_naive`, differentiable in every input.

    ``chunk_size`` bounds the kernel's time tile (rounded down to a power of two, and to at most
    4096 / n_pow2 steps so a tile fits in registers): one state per tile is saved for the
    backward. float64 inputs raise TypeError (the kernels compute in float32).
    Returns y (b, l, d) in u's dtype [, h_last (b, d, n) float32].
    """
    check_selective_inputs(u, delta, A, B, C, D, z, delta_bias, h0, reset)
    check_kernel_inputs("selective scan", dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, h0=h0))
    dt = prepare_dt(delta, delta_bias, delta_softplus, torch.float32).contiguous()  # (b, l, d)
    chunk = kernel_chunk(chunk_size, A.shape[1])
    y, h_last = SelectiveCore.apply(dt, u, A.float().contiguous(), B, C, h0, reset, chunk)
    y = skip_and_gate(y, u.float(), D, z).to(u.dtype)  # (b, l, d)
    return (y, h_last) if return_final_state else y
