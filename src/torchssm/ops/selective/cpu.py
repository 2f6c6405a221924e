"""Fused CPU selective scan (numba): one compiled loop per (batch, channel) row, forward and backward.

Same math and signature as :func:`torchssm.ops.selective.naive.selective_scan_naive`. The chunked op
materialises exp(dt A) and dt u B as (b, l, d, n) tensors and runs a generic scan over them; here the
recurrence is fused:

    forward   h_t[k] = exp(dt_t A[k]) h_{t-1}[k] + dt_t u_t B_t[k];   y_t = sum_k C_t[k] h_t[k]
    backward  (reverse time, adjoint g of h)  g += gy_t C_t;  grads of dt, u, A, B, C from g and h_{t-1};
              g <- g * exp(dt_t A)  (0 where reset[t]: the state was zeroed before step t)

The forward keeps the states h_t (b, l, d, n) for the backward (the memory the chunked op's autograd
holds too). dt bias/softplus, the D skip and the z gate stay in PyTorch around the kernel (autograd).
Rows are split over ``torch.get_num_threads()`` Python threads (the kernels release the GIL); no numba
thread pool, whose idle workers slowed PyTorch's own ops on a small shared CPU (see BENCHMARKS.md).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import torch
from numba import njit

from torchssm.ops.selective.common import (
    check_selective_inputs,
    compute_dtype,
    prepare_dt,
    skip_and_gate,
    without_autocast,
)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "afn"})
def _forward_rows(dt, u, A, B, C, h0, reset, gsize, y, hs, hlast, i0, i1):  # pragma: no cover (compiled)
    l, d = u.shape[1], u.shape[2]
    n = A.shape[1]
    for i in range(i0, i1):
        for c in range(d):
            g = c // gsize
            h = h0[i, c].copy()
            for t in range(l):
                if reset[i, t]:
                    h[:] = 0.0
                dtv = dt[i, t, c]
                x = dtv * u[i, t, c]
                acc = 0.0
                for k in range(n):
                    h[k] = math.exp(dtv * A[c, k]) * h[k] + x * B[i, t, g, k]
                    acc += C[i, t, g, k] * h[k]
                    hs[i, t, c, k] = h[k]
                y[i, t, c] = acc
            hlast[i, c] = h


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "afn"})
def _backward_rows(dt, u, A, B, C, h0, reset, gsize, hs, gy, ghlast,
                   gdt, gu, gA, gB, gC, gh0, i0, i1):  # pragma: no cover (compiled)
    l, d = u.shape[1], u.shape[2]
    n = A.shape[1]
    for i in range(i0, i1):
        for c in range(d):
            g = c // gsize
            gh = ghlast[i, c].copy()
            for t in range(l - 1, -1, -1):
                dtv = dt[i, t, c]
                uv = u[i, t, c]
                gyv = gy[i, t, c]
                zeroed = reset[i, t]
                acc_dt = 0.0
                acc_u = 0.0
                for k in range(n):
                    if zeroed:
                        hp = 0.0
                    elif t > 0:
                        hp = hs[i, t - 1, c, k]
                    else:
                        hp = h0[i, c, k]
                    gh[k] += gyv * C[i, t, g, k]
                    gC[i, t, g, k] += gyv * hs[i, t, c, k]
                    e = math.exp(dtv * A[c, k])
                    acc_dt += gh[k] * (A[c, k] * e * hp + uv * B[i, t, g, k])
                    acc_u += gh[k] * dtv * B[i, t, g, k]
                    gB[i, t, g, k] += gh[k] * dtv * uv
                    gA[i, c, k] += gh[k] * dtv * e * hp
                    gh[k] = 0.0 if zeroed else gh[k] * e
                gdt[i, t, c] = acc_dt
                gu[i, t, c] = acc_u
            gh0[i, c] = gh


def _run_rows(kernel, batch: int, *args) -> None:
    """Call ``kernel(*args, i0, i1)`` over batch rows, split across torch's thread count."""
    workers = max(1, min(torch.get_num_threads(), batch))
    if workers == 1:
        kernel(*args, 0, batch)
        return
    bounds = np.linspace(0, batch, workers + 1).astype(np.int64)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda j: kernel(*args, int(bounds[j]), int(bounds[j + 1])), range(workers)))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class _FusedSelectiveScan(torch.autograd.Function):
    """Core scan: (dt, u (b, l, d), A (d, n), B, C (b, l, g, n), h0 (b, d, n), reset (b, l)) -> (y, h_last)."""

    @staticmethod
    def forward(ctx, dt, u, A, B, C, h0, reset):
        b, l, d = u.shape
        n = A.shape[1]
        gsize = d // B.shape[2]
        y = torch.empty(b, l, d, dtype=u.dtype)
        hs = torch.empty(b, l, d, n, dtype=u.dtype)
        hlast = torch.empty(b, d, n, dtype=u.dtype)
        arrays = [_np(t) for t in (dt, u, A, B, C, h0)]
        rst = _np(reset)
        _run_rows(_forward_rows, b, *arrays, rst, gsize, y.numpy(), hs.numpy(), hlast.numpy())
        ctx.save_for_backward(dt, u, A, B, C, h0, reset, hs)
        return y, hlast

    @staticmethod
    def backward(ctx, gy, ghlast):
        dt, u, A, B, C, h0, reset, hs = ctx.saved_tensors
        b, l, d = u.shape
        gy = torch.zeros_like(u) if gy is None else gy
        ghlast = torch.zeros_like(h0) if ghlast is None else ghlast
        gdt, gu = torch.empty_like(dt), torch.empty_like(u)
        gA = torch.zeros(b, *A.shape, dtype=u.dtype)  # per batch row, summed below (no races)
        gB, gC, gh0 = torch.zeros_like(B), torch.zeros_like(C), torch.empty_like(h0)
        _run_rows(_backward_rows, b, *[_np(t) for t in (dt, u, A, B, C, h0, reset)], d // B.shape[2], _np(hs),
                  _np(gy.to(u.dtype)), _np(ghlast.to(u.dtype)), gdt.numpy(), gu.numpy(), gA.numpy(), gB.numpy(),
                  gC.numpy(), gh0.numpy())
        return gdt, gu, gA.sum(0), gB, gC, gh0, None


@without_autocast
def selective_scan_cpu(
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
):
    """Fused CPU kernel with the signature of :func:`selective_scan_naive` (``chunk_size`` unused).
    Returns y (b, l, d) [, h_last (b, d, n)]."""
    check_selective_inputs(u, delta, A, B, C, D, z, delta_bias, h0, reset)
    if u.device.type != "cpu":
        raise ValueError(f"selective_scan_cpu runs on CPU tensors; got device {u.device}")
    b, l, d = u.shape
    n = A.shape[1]
    dtype = compute_dtype(u, delta, A, B, C, h0)
    dt = prepare_dt(delta, delta_bias, delta_softplus, dtype)  # (b, l, d)
    uc = u.to(dtype)
    B4 = (B if B.dim() == 4 else B[:, :, None]).to(dtype)  # (b, l, g, n)
    C4 = (C if C.dim() == 4 else C[:, :, None]).to(dtype)  # (b, l, g, n)
    h0c = h0.to(dtype) if h0 is not None else uc.new_zeros(b, d, n)
    rst = reset if reset is not None else torch.zeros(b, l, dtype=torch.bool)
    y, h_last = _FusedSelectiveScan.apply(dt, uc, A.to(dtype), B4, C4, h0c, rst)
    y = skip_and_gate(y, uc, D, z).to(u.dtype)
    return (y, h_last) if return_final_state else y
