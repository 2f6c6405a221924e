"""Fused CPU selective scan (numba): vectorised over channels, states checkpointed every chunk.

Same math and signature as :func:`torchssm.ops.selective.naive.selective_scan_naive`; per batch row i,
channel c and state index k (symbols as in docs/architecture.md):

    dt_t[c]   = softplus(delta_t[c] + delta_bias[c])            (each optional; computed in the kernel)
    h_t[k, c] = exp(dt_t[c] A[c, k]) keep_t h_{t-1}[k, c] + dt_t[c] u_t[c] B_t[k]    (keep_t = 0 if reset[t])
    y_t[c]    = sum_k C_t[k] h_t[k, c]          (then + D u and * silu(z) in PyTorch, ``skip_and_gate``)

Layout: the state of a block of channels is kept as (n, channels), so the innermost loop runs over
contiguous channels and LLVM vectorises it (16 float32 lanes with AVX-512); exp, softplus and its
derivative are branch-free polynomials (:func:`fast_exp`, Cephes' expf) for float32, since numba has
no vector math library here (no SVML) and a libm call per element stops vectorisation. float64 keeps
libm's exp/log1p (the exact reference path of the tests).

Memory: the forward stores the state only where a chunk of ``chunk_size`` steps starts, (b, L / chunk,
n, d), not every h_t (b, L, d, n); the backward recomputes one chunk's states at a time for a block of
channels (a scratch of (chunk + 1, n, block) per thread) and walks it in reverse time with the adjoint
g of h:

    g_t    = g_{t+1}-carried + gy_t C_t                    (the carry is g_{t+1} e_{t+1} keep_{t+1})
    gA     += g_t e_t keep_t h_{t-1} dt_t;   gdt_t = sum_k g_t (A e_t keep_t h_{t-1} + u_t B_t)
    gu_t   = dt_t sum_k g_t B_t;   gB_t = sum_c g_t dt_t u_t;   gC_t = sum_c gy_t h_t

Parallelism: (batch row, channel block) jobs run on the thread pool of the compiled linear scan
(:func:`torchssm.ops.scan.cpu.run_jobs`; ``nogil`` kernels, ``torch.get_num_threads()`` threads). In
the backward, B and C are shared by many channels, so each channel split of a batch row writes its own
partial gB/gC (summed afterwards); with one thread there is one split and no extra buffer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numba import njit, types
from numba.extending import intrinsic, overload

from torchssm.ops.common import ScanResult, compute_dtype, skip_and_gate, without_autocast
from torchssm.ops.scan.cpu import PARALLEL_MIN_ELEMENTS, run_jobs
from torchssm.ops.selective.common import check_selective_inputs

# --- vectorisable float32 math ------------------------------------------------------------------

# Cephes expf (S. L. Moshier, Cephes Math Library, ``expf.c``): x = k ln2 + r with ln2 split in two
# (Cody-Waite), e^r by a degree-7 polynomial, 2^k built in the exponent bits.
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_P = tuple(
    np.float32(c)
    for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
)
_EXP_LO = np.float32(-87.0)  # e^-87 = 1.6e-38, the smallest normal float32 is 1.2e-38
_EXP_INF_AT = np.float32(88.72283905206835)  # ~ log(float32 max): the result is inf above it
_F32_HALF, _F32_ONE, _F32_TWO = np.float32(0.5), np.float32(1.0), np.float32(2.0)
_F32_ZERO, _F32_INF = np.float32(0.0), np.float32(np.inf)
_I32_BIAS, _I32_SHIFT = np.int32(127), np.int32(23)
_SOFTPLUS_THRESHOLD = 20.0  # torch.nn.functional.softplus's default: softplus(x) = x above it
_F32_THRESHOLD = np.float32(_SOFTPLUS_THRESHOLD)
# log1p(w) = 2 atanh(s), s = w / (2 + w) in [0, 1/3] for w in [0, 1]: the odd series to s^17 (error < 2e-9)
_ATANH = tuple(np.float32(1.0 / (2 * j + 1)) for j in range(9))


@intrinsic
def _int32_bits_as_float32(typingctx, bits):  # type: ignore[no-untyped-def]
    """Reinterpret an int32's bits as a float32 (an LLVM bitcast: vectorises, unlike math.ldexp)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


@intrinsic
def _cody_waite(typingctx, x, k, hi, lo):  # type: ignore[no-untyped-def]
    """(x - k hi) - k lo for float32s, as written. numba compiles an overload with its caller's fast-math
    flags, and "reassoc" folds this to x - k (hi + lo), losing the split (float32 ln2 is 1.9e-9 off, so
    e^x 2.4e-7 off at |x| = 87). numba's fast-math pass leaves instructions that have flags alone, so
    these carry "contract" only (a fused multiply-add is still exact enough)."""
    if not all(v == types.float32 for v in (x, k, hi, lo)):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        vx, vk, vhi, vlo = args
        t = builder.fsub(vx, builder.fmul(vk, vhi, flags=("contract",)), flags=("contract",))
        return builder.fsub(t, builder.fmul(vk, vlo, flags=("contract",)), flags=("contract",))

    return types.float32(types.float32, types.float32, types.float32, types.float32), codegen


def fast_exp(x: float) -> float:
    """exp(x): for float32 inside numba kernels a branch-free polynomial that LLVM vectorises (relative
    error < 2.5e-7 for -87 <= x <= 88.72, also inside "reassoc" kernels; inf above, NaN for NaN; results
    below e^-87 are about 1.6e-38 instead of 0 or a denormal); float64 calls libm. Called from Python
    it is ``math.exp``."""
    return math.exp(x)


def fast_softplus(x: float) -> float:
    """softplus(x) = log(1 + e^x), and x above 20 as ``torch.nn.functional.softplus``. float32 in numba:
    max(x, 0) + log1p(e^-|x|) by a polynomial (relative error < 4e-7 for x >= -87; below, about 1.6e-38
    as :func:`fast_exp`, an absolute error < 2e-38)."""
    return x if x > _SOFTPLUS_THRESHOLD else math.log1p(math.exp(x))


def fast_dsoftplus(x: float) -> float:
    """softplus'(x) = sigmoid(x) (1 above 20, where softplus is the identity). float32 in numba:
    1 / (1 + fast_exp(-x)) (relative error < 2.5e-7 for x >= -87; below, an absolute error < 2e-38)."""
    return 1.0 if x > _SOFTPLUS_THRESHOLD else 1.0 / (1.0 + math.exp(-x))


def _is_f32(x: object) -> bool:
    return isinstance(x, types.Float) and x.bitwidth == 32


@overload(fast_exp)
def _fast_exp_impl(x):  # type: ignore[no-untyped-def]
    if not _is_f32(x):
        return lambda x: math.exp(x)

    def exp_f32(x):  # type: ignore[no-untyped-def]
        xc = min(max(x, _EXP_LO), _EXP_INF_AT)
        k = np.floor(xc * _LOG2E + _F32_HALF)  # float32, in [-126, 128]
        r = _cody_waite(xc, k, _LN2_HI, _LN2_LO)  # |r| <= ln2 / 2
        p = _EXP_P[0]
        p = p * r + _EXP_P[1]
        p = p * r + _EXP_P[2]
        p = p * r + _EXP_P[3]
        p = p * r + _EXP_P[4]
        p = p * r + _EXP_P[5]
        e = p * r * r + r + _F32_ONE  # e^r
        ki = np.int32(k)
        top = ki > _I32_BIAS  # k = 128: 2^128 is not a float32, so e 2^128 = (2 e) 2^127
        e = e * _F32_TWO if top else e  # a select: "reassoc" cannot merge the two products into 2^128
        two_k = _int32_bits_as_float32(np.int32((ki - np.int32(top) + _I32_BIAS) << _I32_SHIFT))  # 2^k
        return e * two_k if x <= _EXP_INF_AT else _F32_INF * x  # inf above the range, NaN stays NaN

    return exp_f32


@overload(fast_softplus)
def _fast_softplus_impl(x):  # type: ignore[no-untyped-def]
    if not _is_f32(x):
        return lambda x: x if x > _SOFTPLUS_THRESHOLD else math.log1p(math.exp(x))

    def softplus_f32(x):  # type: ignore[no-untyped-def]
        w = fast_exp(-abs(x))  # in (0, 1]
        s = w / (_F32_TWO + w)
        s2 = s * s
        p = _ATANH[8]
        for j in range(7, -1, -1):
            p = p * s2 + _ATANH[j]
        return x if x > _F32_THRESHOLD else max(x, _F32_ZERO) + _F32_TWO * s * p

    return softplus_f32


@overload(fast_dsoftplus)
def _fast_dsoftplus_impl(x):  # type: ignore[no-untyped-def]
    if not _is_f32(x):
        return lambda x: 1.0 if x > _SOFTPLUS_THRESHOLD else 1.0 / (1.0 + math.exp(-x))

    def dsoftplus_f32(x):  # type: ignore[no-untyped-def]
        return _F32_ONE if x > _F32_THRESHOLD else _F32_ONE / (_F32_ONE + fast_exp(-x))

    return dsoftplus_f32


@njit(cache=True, fastmath={"reassoc", "contract", "nsz"})
def _math_rows(x, out_exp, out_softplus, out_dsoftplus):  # type: ignore[no-untyped-def]  # pragma: no cover (compiled)
    """The three functions over a 1-D array, vectorised as in the kernels (for tests)."""
    for j in range(x.shape[0]):
        out_exp[j] = fast_exp(x[j])
        out_softplus[j] = fast_softplus(x[j])
        out_dsoftplus[j] = fast_dsoftplus(x[j])


# --- kernels -------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _dt_row(delta, bias, u, i, t, c0, softplus, dt, x):  # type: ignore[no-untyped-def]  # pragma: no cover (compiled)
    """dt[c] = softplus(delta[i, t, c0 + c] + bias[c0 + c]) (or without softplus), x = dt u."""
    nb = dt.shape[0]
    d_row, b_row, u_row = delta[i, t, c0 : c0 + nb], bias[c0 : c0 + nb], u[i, t, c0 : c0 + nb]
    for c in range(nb):
        v = d_row[c] + b_row[c]
        v = fast_softplus(v) if softplus else v
        dt[c] = v
        x[c] = v * u_row[c]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def _fwd_jobs(  # type: ignore[no-untyped-def]
    delta,
    bias,
    u,
    At,
    B,
    C,
    h0t,
    reset,
    y,
    ck,
    hlast,
    softplus,
    has_reset,
    gsize,
    chunk,
    blk,
    job0,
    job1,
):  # pragma: no cover (compiled)
    # job = (batch row i, channels c0:c1); all of time, sequential.
    # delta, u, y: (b, l, d); bias: (d,); At: (n, d); B, C: (b, l, g, n); h0t, hlast: (b, n, d);
    # reset: (b, l) or (1, 1); ck: (b, ceil(l / chunk), n, d), the state entering each chunk.
    length, dim = u.shape[1], u.shape[2]
    n = At.shape[0]
    n_blocks = (dim + blk - 1) // blk
    h = np.empty((n, blk), dtype=y.dtype)  # state of the block's channels
    dt = np.empty(blk, dtype=y.dtype)
    x = np.empty(blk, dtype=y.dtype)  # dt u
    acc = np.empty(blk, dtype=y.dtype)  # y_t
    for job in range(job0, job1):
        i = job // n_blocks
        c0 = (job % n_blocks) * blk
        nb = min(blk, dim - c0)
        c1 = c0 + nb
        h[:, :nb] = h0t[i, :, c0:c1]
        for t in range(length):
            if t % chunk == 0:
                ck[i, t // chunk, :, c0:c1] = h[:, :nb]
            if has_reset and reset[i, t]:
                h[:, :nb] = 0
            _dt_row(delta, bias, u, i, t, c0, softplus, dt[:nb], x[:nb])
            acc[:nb] = 0
            for g in range(c0 // gsize, (c1 - 1) // gsize + 1):  # groups of channels sharing B, C
                s0, s1 = max(c0, g * gsize) - c0, min(c1, (g + 1) * gsize) - c0
                dt_s, x_s, acc_s = dt[s0:s1], x[s0:s1], acc[s0:s1]
                B_t, C_t = B[i, t, g], C[i, t, g]  # (n,)
                for k in range(n):
                    bk, ckv = B_t[k], C_t[k]
                    h_k, a_k = h[k, s0:s1], At[k, c0 + s0 : c0 + s1]
                    for c in range(s1 - s0):
                        v = fast_exp(dt_s[c] * a_k[c]) * h_k[c] + x_s[c] * bk
                        h_k[c] = v
                        acc_s[c] += ckv * v
            y[i, t, c0:c1] = acc[:nb]
        hlast[i, :, c0:c1] = h[:, :nb]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def _bwd_jobs(  # type: ignore[no-untyped-def]
    delta,
    bias,
    u,
    At,
    B,
    C,
    ck,
    reset,
    gy,
    ghlast_t,
    gdelta,
    gu,
    gA,
    gB,
    gC,
    gh0t,
    softplus,
    has_reset,
    gsize,
    chunk,
    blk,
    split,
    job0,
    job1,
):  # pragma: no cover (compiled)
    # job = (batch row i, channel split s of ``split`` channels), in sub-blocks of ``blk`` channels.
    # gA: (b, n, d) per batch row; gB, gC: (n_splits, b, l, g, n) partial sums, zero on entry.
    length, dim = u.shape[1], u.shape[2]
    n = At.shape[0]
    n_splits = (dim + split - 1) // split
    n_chunks = (length + chunk - 1) // chunk
    dtype = gu.dtype
    hs = np.empty((chunk + 1, n, blk), dtype=dtype)  # hs[0] entering the chunk, hs[tt + 1] after step tt
    dts = np.empty((chunk, blk), dtype=dtype)  # dt rows of the chunk
    xs = np.empty((chunk, blk), dtype=dtype)  # dt u rows
    gh = np.empty((n, blk), dtype=dtype)  # adjoint of h, carried backwards in time
    ga = np.empty((n, blk), dtype=dtype)  # gA of the block
    acc_a = np.empty(blk, dtype=dtype)  # sum_k g e keep h_{t-1} A
    acc_b = np.empty(blk, dtype=dtype)  # sum_k g B
    zero = np.zeros(1, dtype=dtype)[0]
    one = np.ones(1, dtype=dtype)[0]
    for job in range(job0, job1):
        i, s = job // n_splits, job % n_splits
        for c0 in range(s * split, min((s + 1) * split, dim), blk):
            nb = min(blk, (s + 1) * split - c0, dim - c0)
            c1 = c0 + nb
            gh[:, :nb] = ghlast_t[i, :, c0:c1]
            ga[:, :nb] = 0
            for j in range(n_chunks - 1, -1, -1):
                t0 = j * chunk
                T = min(chunk, length - t0)
                # recompute the chunk's states from its checkpoint
                hs[0, :, :nb] = ck[i, j, :, c0:c1]
                for tt in range(T):
                    t = t0 + tt
                    keep = zero if has_reset and reset[i, t] else one
                    dt, x = dts[tt, :nb], xs[tt, :nb]
                    _dt_row(delta, bias, u, i, t, c0, softplus, dt, x)
                    for g in range(c0 // gsize, (c1 - 1) // gsize + 1):
                        s0, s1 = max(c0, g * gsize) - c0, min(c1, (g + 1) * gsize) - c0
                        dt_s, x_s, B_t = dt[s0:s1], x[s0:s1], B[i, t, g]
                        for k in range(n):
                            bk = B_t[k]
                            hp, hn, a_k = hs[tt, k, s0:s1], hs[tt + 1, k, s0:s1], At[k, c0 + s0 : c0 + s1]
                            for c in range(s1 - s0):
                                hn[c] = fast_exp(dt_s[c] * a_k[c]) * (keep * hp[c]) + x_s[c] * bk
                # reverse time through the chunk
                for tt in range(T - 1, -1, -1):
                    t = t0 + tt
                    keep = zero if has_reset and reset[i, t] else one
                    dt, x, gy_row = dts[tt, :nb], xs[tt, :nb], gy[i, t, c0:c1]
                    acc_a[:nb] = 0
                    acc_b[:nb] = 0
                    for g in range(c0 // gsize, (c1 - 1) // gsize + 1):
                        s0, s1 = max(c0, g * gsize) - c0, min(c1, (g + 1) * gsize) - c0
                        dt_s, x_s, gy_s = dt[s0:s1], x[s0:s1], gy_row[s0:s1]
                        acc_a_s, acc_b_s = acc_a[s0:s1], acc_b[s0:s1]
                        B_t, C_t, gB_t, gC_t = B[i, t, g], C[i, t, g], gB[s, i, t, g], gC[s, i, t, g]
                        for k in range(n):
                            bk, ckv = B_t[k], C_t[k]
                            hp, hn, a_k = hs[tt, k, s0:s1], hs[tt + 1, k, s0:s1], At[k, c0 + s0 : c0 + s1]
                            gh_k, ga_k = gh[k, s0:s1], ga[k, s0:s1]
                            sum_c = zero
                            sum_b = zero
                            for c in range(s1 - s0):
                                sum_c += gy_s[c] * hn[c]
                                gk = gh_k[c] + gy_s[c] * ckv
                                e = fast_exp(dt_s[c] * a_k[c])
                                geh = gk * e * (keep * hp[c])
                                acc_a_s[c] += a_k[c] * geh
                                acc_b_s[c] += gk * bk
                                ga_k[c] += geh * dt_s[c]
                                sum_b += gk * x_s[c]
                                gh_k[c] = gk * e * keep
                            gC_t[k] += sum_c
                            gB_t[k] += sum_b
                    gd_row, gu_row = gdelta[i, t, c0:c1], gu[i, t, c0:c1]
                    d_row, b_row, u_row = delta[i, t, c0:c1], bias[c0:c1], u[i, t, c0:c1]
                    for c in range(nb):
                        gdt = acc_a[c] + u_row[c] * acc_b[c]
                        gd_row[c] = gdt * fast_dsoftplus(d_row[c] + b_row[c]) if softplus else gdt
                        gu_row[c] = dt[c] * acc_b[c]
            gh0t[i, :, c0:c1] = gh[:, :nb]
            gA[i, :, c0:c1] = ga[:, :nb]


# --- blocking and launch -------------------------------------------------------------------------

_L1_BYTES = 32 << 10  # forward: the block's state and A (n, block) each fit in L1
_SCRATCH_BYTES = 256 << 10  # backward: one chunk's recomputed states (chunk + 1, n, block) per thread


def _round16(v: int) -> int:
    return max(16, v // 16 * 16)


def _forward_block(d: int, n: int, itemsize: int) -> int:
    return min(d, _round16(_L1_BYTES // (2 * n * itemsize)))


def _backward_blocks(b: int, d: int, n: int, chunk: int, itemsize: int, parallel: bool) -> tuple[int, int]:
    """(channels per sub-block, channels per split): the splits of a batch row run in parallel."""
    blk = min(d, _round16(_SCRATCH_BYTES // ((chunk + 1) * n * itemsize)))
    threads = max(1, torch.get_num_threads())
    if not parallel or threads == 1 or b >= 2 * threads:
        return blk, d
    wanted = -(-2 * threads // b)  # splits per row for about 2 jobs per thread
    split = min(d, -(-(-(-d // wanted)) // 16) * 16)  # ceil(d / wanted), rounded up to 16  # noqa: B002 (ceiling division idiom)
    return min(blk, split), split


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class _FusedSelectiveScan(torch.autograd.Function):
    """Core: (delta (b, l, d) raw, bias (d,), u (b, l, d), A (d, n), B, C (b, l, g, n), h0 (b, d, n),
    reset (b, l) bool or None) -> (y (b, l, d), h_last (b, d, n)); dt = softplus(delta + bias) inside."""

    @staticmethod
    def forward(
        ctx: Any,
        delta: torch.Tensor,
        bias: torch.Tensor,
        u: torch.Tensor,
        A: torch.Tensor,  # type: ignore[override]
        B: torch.Tensor,
        C: torch.Tensor,
        h0: torch.Tensor,
        reset: torch.Tensor | None,
        softplus: bool,
        chunk: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, l, d = u.shape
        n = A.shape[1]
        n_chunks = -(-l // chunk)
        At = A.t().contiguous()  # (n, d)
        has_reset = reset is not None
        rst = reset if reset is not None else torch.zeros(1, 1, dtype=torch.bool)
        y = torch.empty(b, l, d, dtype=u.dtype)
        ck = torch.empty(b, n_chunks, n, d, dtype=u.dtype)  # states entering each chunk
        hlast = torch.empty(b, n, d, dtype=u.dtype)
        blk = _forward_block(d, n, u.element_size())
        parallel = b * l * d * n >= PARALLEL_MIN_ELEMENTS
        run_jobs(
            _fwd_jobs,
            (
                _np(delta),
                _np(bias),
                _np(u),
                _np(At),
                _np(B),
                _np(C),
                _np(h0.transpose(1, 2)),
                _np(rst),
                y.numpy(),
                ck.numpy(),
                hlast.numpy(),
                softplus,
                has_reset,
                d // B.shape[2],
                chunk,
                blk,
            ),
            b * -(-d // blk),
            parallel,
        )
        ctx.save_for_backward(delta, bias, u, At, B, C, ck, rst)
        ctx.flags = (softplus, has_reset, chunk, parallel)
        return y, hlast.transpose(1, 2).contiguous()

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor | None, ghlast: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        delta, bias, u, At, B, C, ck, rst = ctx.saved_tensors
        softplus, has_reset, chunk, parallel = ctx.flags
        b, l, d = u.shape
        n = At.shape[0]
        gy = torch.zeros_like(u) if gy is None else gy.to(u.dtype)
        ghlast_t = torch.zeros(b, n, d, dtype=u.dtype) if ghlast is None else ghlast.to(u.dtype).transpose(1, 2)
        blk, split = _backward_blocks(b, d, n, chunk, u.element_size(), parallel)
        n_splits = -(-d // split)
        gdelta, gu = torch.empty_like(delta), torch.empty_like(u)  # (b, l, d)
        gA = torch.empty(b, n, d, dtype=u.dtype)  # per batch row, summed below (no races)
        gB = torch.zeros(n_splits, *B.shape, dtype=u.dtype)  # per channel split, summed below
        gC = torch.zeros(n_splits, *C.shape, dtype=u.dtype)
        gh0t = torch.empty(b, n, d, dtype=u.dtype)
        run_jobs(
            _bwd_jobs,
            (
                _np(delta),
                _np(bias),
                _np(u),
                _np(At),
                _np(B),
                _np(C),
                _np(ck),
                _np(rst),
                _np(gy),
                _np(ghlast_t),
                gdelta.numpy(),
                gu.numpy(),
                gA.numpy(),
                gB.numpy(),
                gC.numpy(),
                gh0t.numpy(),
                softplus,
                has_reset,
                d // B.shape[2],
                chunk,
                blk,
                split,
            ),
            b * n_splits,
            parallel,
        )
        gbias = gdelta.sum((0, 1)) if ctx.needs_input_grad[1] else None
        return (gdelta, gbias, gu, gA.sum(0).t(), gB.sum(0), gC.sum(0), gh0t.transpose(1, 2), None, None, None)


@without_autocast
def selective_scan_cpu(
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
    """Fused CPU kernel with the signature of :func:`selective_scan_naive`; ``chunk_size`` is the
    checkpoint interval (states kept for the backward: (b, ceil(L / chunk_size), d, n)).
    Returns y (b, l, d) [, h_last (b, d, n)] (h_last in the compute dtype, as the reference)."""
    check_selective_inputs(u, delta, A, B, C, D, z, delta_bias, h0, reset)
    if u.device.type != "cpu":
        raise ValueError(f"selective_scan_cpu runs on CPU tensors; got device {u.device}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    b, l, d = u.shape
    n = A.shape[1]
    dtype = compute_dtype(u, delta, A, B, C, h0)
    uc = u.to(dtype)
    bias = delta_bias.to(dtype) if delta_bias is not None else uc.new_zeros(d)  # (d,)
    B4 = (B if B.dim() == 4 else B[:, :, None]).to(dtype)  # (b, l, g, n)
    C4 = (C if C.dim() == 4 else C[:, :, None]).to(dtype)  # (b, l, g, n)
    h0c = h0.to(dtype) if h0 is not None else uc.new_zeros(b, d, n)  # (b, d, n)
    y, h_last = _FusedSelectiveScan.apply(
        delta.to(dtype), bias, uc, A.to(dtype), B4, C4, h0c, reset, bool(delta_softplus), min(chunk_size, l)
    )
    y = skip_and_gate(y, uc, D, z).to(u.dtype)
    return (y, h_last) if return_final_state else y
