"""Fused CPU SSD (Mamba-2's scan, numba): the recurrence per head, states checkpointed every chunk.

Same math and signature as :func:`torchssm.ops.ssd.naive.ssd_naive`. Per batch row i and head j (group
g = j // (heads // groups)), with the head's state h_t of shape (p, n) (in the SSD code ``h`` counts
heads, as in ``ops/ssd/common.py``):

    dt_t  = softplus(dt_t + dt_bias)        (in PyTorch, before the kernel: autograd differentiates it)
    e_t   = exp(dt_t A[j]) keep_t           (one exp per step and head; keep_t = 0 where reset[t])
    h_t   = e_t h_{t-1} + dt_t x_t B_t^T    x_t (p,), B_t = B[i, t, g] (n,)
    y_t   = h_t C_t + D[j] * x_t            (D (h, p): the skip, in the kernel; then * silu(z) in PyTorch)

Why a recurrent kernel: A is a scalar per head, so the decay costs one exp per step and head instead of
one per state element (the selective scan's cost), and a step is about three multiply-adds per element
of the head's state, which stays in cache. The chunked matmul algorithm (``chunked.py``; Hugging Face's
pure-PyTorch Mamba-2 path is the same algorithm) writes (T, T) score matrices and chunk states per head
to memory and keeps them all for autograd.

Layout: the state is kept as (p, n), the layout of h0 and of the final state, so the innermost loops run
over n (contiguous in B, C and the state) and LLVM vectorises them. Memory: the forward stores the state
only where a chunk of ``chunk_size`` steps starts, (b, h, ceil(L / chunk), p, n); the backward recomputes
one chunk's states at a time for a block of the head's channels (a scratch of (chunk + 1, block, n) per
thread) and walks it in reverse time with the adjoint G_t of h_t:

    Gfull_t = G_t + gy_t C_t^T          (G_t carried from t + 1; G_{L-1} = grad of the final state)
    gC_t    = h_t^T gy_t;   gB_t = dt_t Gfull_t^T x_t;   gx_t = dt_t Gfull_t B_t + D gy_t;   gD += gy_t x_t
    gdt_t   = x_t . (Gfull_t B_t) + A e_t <Gfull_t, h_{t-1}>;   gA += dt_t e_t <Gfull_t, h_{t-1}>
    G_{t-1} = e_t Gfull_t               (after step 0: the gradient of h0)

Parallelism: forward jobs are (batch row, head, channel block); backward jobs (batch row, split of
heads), on the thread pool of the compiled linear scan (:func:`torchssm.ops.scan.cpu.run_jobs`; ``nogil``
kernels, ``torch.get_num_threads()`` threads). B and C are shared by the heads of a group, so each split
writes its own partial gB/gC (summed afterwards); with one thread there is one split and no extra buffer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numba import njit

from torchssm.ops.common import ScanResult, compute_dtype, prepare_dt, skip_and_gate, without_autocast
from torchssm.ops.scan.cpu import PARALLEL_MIN_ELEMENTS, run_jobs
from torchssm.ops.selective.cpu import fast_exp
from torchssm.ops.ssd.common import check_ssd_inputs

# --- kernels -------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def _fwd_jobs(x, dt, A, B, C, D, h0, reset, y, ck, hlast, has_reset, hpg, chunk, blk, job0, job1):  # type: ignore[no-untyped-def]  # pragma: no cover (compiled)
    # job = (batch row i, head j, channels c0:c1 of the head); all of time, sequential.
    # x, y: (b, l, h, p); dt: (b, l, h) prepared; A: (h,); B, C: (b, l, g, n); D: (h, p); h0, hlast: (b, h, p, n);
    # reset: (b, l) or (1, 1); ck: (b, h, ceil(l / chunk), p, n), the state entering each chunk.
    length, nh, p = x.shape[1], x.shape[2], x.shape[3]
    n = B.shape[3]
    n_blocks = (p + blk - 1) // blk
    s = np.empty((blk, n), dtype=y.dtype)  # the block's state
    zero = np.zeros(1, dtype=y.dtype)[0]
    for job in range(job0, job1):
        i = job // (nh * n_blocks)
        j = (job // n_blocks) % nh
        c0 = (job % n_blocks) * blk
        nb = min(blk, p - c0)
        c1 = c0 + nb
        g = j // hpg
        a, D_j = A[j], D[j, c0:c1]
        s[:nb] = h0[i, j, c0:c1]
        for t in range(length):
            if t % chunk == 0:
                ck[i, j, t // chunk, c0:c1] = s[:nb]
            d = dt[i, t, j]
            e = zero if has_reset and reset[i, t] else fast_exp(d * a)
            x_row, y_row = x[i, t, j, c0:c1], y[i, t, j, c0:c1]
            B_t, C_t = B[i, t, g], C[i, t, g]  # (n,)
            for c in range(nb):
                xdc = d * x_row[c]
                acc = zero
                for k in range(n):
                    v = e * s[c, k] + xdc * B_t[k]
                    s[c, k] = v
                    acc += C_t[k] * v
                y_row[c] = acc + D_j[c] * x_row[c]
        hlast[i, j, c0:c1] = s[:nb]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def _bwd_jobs(  # type: ignore[no-untyped-def]
    x,
    dt,
    A,
    B,
    C,
    D,
    ck,
    reset,
    gy,
    ghlast,
    gx,
    gdt,
    gD,
    gA,
    gB,
    gC,
    gh0,
    has_reset,
    hpg,
    chunk,
    blk,
    split,
    job0,
    job1,
):  # pragma: no cover (compiled)
    # job = (batch row i, split sp of ``split`` heads); each head in blocks of ``blk`` channels.
    # gdt: (b, l, h) zero on entry (summed over blocks); gA: (b, h), gD: (b, h, p) per batch row;
    # gB, gC: (n_splits, b, l, g, n) partial sums, zero on entry; ghlast, gh0: (b, h, p, n).
    length, nh, p = x.shape[1], x.shape[2], x.shape[3]
    n = B.shape[3]
    n_splits = (nh + split - 1) // split
    n_chunks = (length + chunk - 1) // chunk
    dtype = gx.dtype
    hs = np.empty((chunk + 1, blk, n), dtype=dtype)  # hs[0] entering the chunk, hs[tt + 1] after step tt
    es = np.empty(chunk, dtype=dtype)  # e_t keep_t of the chunk's steps
    gs = np.empty((blk, n), dtype=dtype)  # adjoint G of h, carried backwards in time
    zero = np.zeros(1, dtype=dtype)[0]
    for job in range(job0, job1):
        i, sp = job // n_splits, job % n_splits
        for j in range(sp * split, min((sp + 1) * split, nh)):
            g = j // hpg
            a = A[j]
            ga = zero
            for c0 in range(0, p, blk):
                nb = min(blk, p - c0)
                c1 = c0 + nb
                D_j, gD_j = D[j, c0:c1], gD[i, j, c0:c1]
                gs[:nb] = ghlast[i, j, c0:c1]
                for jc in range(n_chunks - 1, -1, -1):
                    t0 = jc * chunk
                    T = min(chunk, length - t0)
                    # recompute the chunk's states from its checkpoint
                    hs[0, :nb] = ck[i, j, jc, c0:c1]
                    for tt in range(T):
                        t = t0 + tt
                        d = dt[i, t, j]
                        e = zero if has_reset and reset[i, t] else fast_exp(d * a)
                        es[tt] = e
                        x_row, B_t = x[i, t, j, c0:c1], B[i, t, g]
                        hp, hn = hs[tt], hs[tt + 1]
                        for c in range(nb):
                            xdc = d * x_row[c]
                            for k in range(n):
                                hn[c, k] = e * hp[c, k] + xdc * B_t[k]
                    # reverse time through the chunk
                    for tt in range(T - 1, -1, -1):
                        t = t0 + tt
                        d, e = dt[i, t, j], es[tt]
                        x_row, gy_row, gx_row = x[i, t, j, c0:c1], gy[i, t, j, c0:c1], gx[i, t, j, c0:c1]
                        B_t, C_t, gB_t, gC_t = B[i, t, g], C[i, t, g], gB[sp, i, t, g], gC[sp, i, t, g]
                        hp, hn = hs[tt], hs[tt + 1]
                        sum_x = zero
                        sum_h = zero  # <Gfull, h_{t-1}>
                        for c in range(nb):
                            gyc, xdc = gy_row[c], d * x_row[c]
                            acc_b = zero
                            acc_h = zero
                            for k in range(n):
                                gk = gs[c, k] + gyc * C_t[k]
                                gC_t[k] += gyc * hn[c, k]
                                gB_t[k] += gk * xdc
                                acc_b += gk * B_t[k]
                                acc_h += gk * hp[c, k]
                                gs[c, k] = gk * e
                            gx_row[c] = d * acc_b + D_j[c] * gy_row[c]
                            gD_j[c] += gy_row[c] * x_row[c]
                            sum_x += x_row[c] * acc_b
                            sum_h += acc_h
                        gdt[i, t, j] += sum_x + a * e * sum_h
                        ga += d * e * sum_h
                gh0[i, j, c0:c1] = gs[:nb]
            gA[i, j] = ga


# --- blocking and launch -------------------------------------------------------------------------

_L1_BYTES = 64 << 10  # forward: the block's state (block, n) (measured fastest: all of p = 64 at n = 128)
_SCRATCH_BYTES = 256 << 10  # backward: one chunk's recomputed states (chunk + 1, block, n) per thread


def _round16(v: int) -> int:
    return max(16, v // 16 * 16)


def _forward_block(p: int, n: int, itemsize: int) -> int:
    return min(p, _round16(_L1_BYTES // (2 * n * itemsize)))


def _backward_block(p: int, n: int, chunk: int, itemsize: int) -> int:
    return min(p, _round16(_SCRATCH_BYTES // ((chunk + 1) * n * itemsize)))


def _head_split(b: int, nh: int, parallel: bool) -> int:
    """Heads per backward job: all of them when the batch rows alone keep every thread busy."""
    threads = max(1, torch.get_num_threads())
    if not parallel or threads == 1 or b >= 2 * threads:
        return nh
    wanted = -(-2 * threads // b)  # splits per row for about 2 jobs per thread
    return max(1, -(-nh // wanted))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class _FusedSSD(torch.autograd.Function):
    """Core: (x (b, l, h, p), dt (b, l, h) prepared, A (h,), B, C (b, l, g, n), D (h, p), h0 (b, h, p, n),
    reset (b, l) bool or None, chunk) -> (y (b, l, h, p) with the D skip, without the z gate, h_last (b, h, p, n)).
    The inputs are made contiguous once here and saved so (the backward's kernel reads them as they are)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        dt: torch.Tensor,
        A: torch.Tensor,  # type: ignore[override]
        B: torch.Tensor,
        C: torch.Tensor,
        D: torch.Tensor,
        h0: torch.Tensor,
        reset: torch.Tensor | None,
        chunk: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, l, nh, p = x.shape
        g, n = B.shape[2], B.shape[3]
        x, dt, B, C, D = (t.contiguous() for t in (x, dt, B, C, D))  # e.g. x and B, C: slices of one projection
        has_reset = reset is not None
        rst = reset if reset is not None else torch.zeros(1, 1, dtype=torch.bool)
        y = torch.empty(b, l, nh, p, dtype=x.dtype)
        ck = torch.empty(b, nh, -(-l // chunk), p, n, dtype=x.dtype)  # states entering each chunk
        hlast = torch.empty(b, nh, p, n, dtype=x.dtype)
        blk = _forward_block(p, n, x.element_size())
        parallel = b * l * nh * p * n >= PARALLEL_MIN_ELEMENTS
        run_jobs(
            _fwd_jobs,
            (_np(x), _np(dt), _np(A), _np(B), _np(C), _np(D), _np(h0), _np(rst), y.numpy(), ck.numpy(),
             hlast.numpy(), has_reset, nh // g, chunk, blk),
            b * nh * -(-p // blk),
            parallel,
        )  # fmt: skip
        ctx.save_for_backward(x, dt, A, B, C, D, ck, rst)
        ctx.flags = (has_reset, chunk, parallel)
        return y, hlast

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor | None, ghlast: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, dt, A, B, C, D, ck, rst = ctx.saved_tensors
        has_reset, chunk, parallel = ctx.flags
        b, l, nh, p = x.shape
        n = B.shape[3]
        gy = torch.zeros_like(x) if gy is None else gy.to(x.dtype)
        ghlast = torch.zeros(b, nh, p, n, dtype=x.dtype) if ghlast is None else ghlast.to(x.dtype)
        blk = _backward_block(p, n, chunk, x.element_size())
        split = _head_split(b, nh, parallel)
        n_splits = -(-nh // split)
        gx = torch.empty_like(x)  # (b, l, h, p)
        gdt = torch.zeros_like(dt)  # (b, l, h), summed over channel blocks
        gA = torch.empty(b, nh, dtype=x.dtype)  # per batch row, summed below
        gD = torch.zeros(b, nh, p, dtype=x.dtype)  # per batch row, summed below
        gB = torch.zeros(n_splits, *B.shape, dtype=x.dtype)  # per head split, summed below
        gC = torch.zeros(n_splits, *C.shape, dtype=x.dtype)
        gh0 = torch.empty(b, nh, p, n, dtype=x.dtype)
        run_jobs(
            _bwd_jobs,
            (_np(x), _np(dt), _np(A), _np(B), _np(C), _np(D), _np(ck), _np(rst), _np(gy), _np(ghlast), gx.numpy(),
             gdt.numpy(), gD.numpy(), gA.numpy(), gB.numpy(), gC.numpy(), gh0.numpy(), has_reset, nh // B.shape[2],
             chunk, blk, split),
            b * n_splits,
            parallel,
        )  # fmt: skip
        return gx, gdt, gA.sum(0), gB.sum(0), gC.sum(0), gD.sum(0), gh0, None, None


@without_autocast
def ssd_cpu(
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
    """Fused CPU kernel with the signature of :func:`ssd_naive`; ``chunk_size`` is the checkpoint
    interval (states kept for the backward: (b, h, ceil(L / chunk_size), p, n)).
    Returns y (b, l, h, p) [, h_last (b, h, p, n)] (h_last in the compute dtype, as the reference)."""
    check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, h0, reset)
    if x.device.type != "cpu":
        raise ValueError(f"ssd_cpu runs on CPU tensors; got device {x.device}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    b, l, nh, p = x.shape
    n = B.shape[3]
    dtype = compute_dtype(x, dt, A, B, C, h0)
    xc = x.to(dtype)
    dtc = prepare_dt(dt, dt_bias, dt_softplus, dtype)  # (b, l, h)
    h0c = h0.to(dtype) if h0 is not None else xc.new_zeros(b, nh, p, n)  # (b, h, p, n)
    Dp = xc.new_zeros(nh, p) if D is None else (D[:, None] if D.dim() == 1 else D).to(dtype).expand(nh, p)  # (h, p)
    y, h_last = _FusedSSD.apply(xc, dtc, A.to(dtype), B.to(dtype), C.to(dtype), Dp, h0c, reset, min(chunk_size, l))
    y = skip_and_gate(y, xc, None, z).to(x.dtype)
    return (y, h_last) if return_final_state else y
