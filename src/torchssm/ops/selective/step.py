"""Mamba's one-token step between the two large projections, fused (numba, CPU) and as a plain reference.

Gu & Dao 2023, "Mamba", Sec. 3 / Alg. 2 for one time step (the recurrence of
:func:`torchssm.ops.selective.naive.selective_scan_naive`); b batch, d channels, W conv width, n state
size, r dt rank, xz = in_proj(u) (b, 2d):

    x, z     = xz[:, :d], xz[:, d:]
    x        = silu(sum_k w[c, k] [conv_state, x][c, k] + conv_bias)     conv_state <- last W-1 inputs
    dt, B, C = split(x @ wx_t, [r, n, n])                                (the x_proj)
    dt       = softplus(dt @ w_dt_t + b_dt)                              (b, d)
    h        = exp(dt A) h + (dt x) B                                    (b, d, n)
    y        = (C h + D x) silu(z)                                       (b, d), out_proj is the caller's

:func:`mamba_step_cpu` runs this as one Python call of two numba kernels (float32 exp / softplus / silu by
the vectorisable polynomials of ``ops/selective/cpu.py``, float64 by libm), replacing ~25 small PyTorch ops
per layer and token: at d_model 256, batch 1, 1 thread, a Mamba layer's one-token step took 100 us instead
of 133 us, and a 4-layer LM's token 0.70x the CPU time (BENCHMARKS.md, 2026-12-05). No autograd: for
inference only. :func:`mamba_step_naive` is the reference with the same signature (tests compare both in
float64), and ``Mamba.step_function`` runs it when gradients, autocast or torch.compile are on.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit

from torchssm.ops.selective.cpu import fast_exp, fast_softplus

FASTMATH = {"reassoc", "contract", "nsz"}  # the step kernels' fastmath flags (no "nnan" / "ninf")


@njit(cache=True, nogil=True, inline="always")
def conv_silu_token(src, offset, conv_state, w, conv_bias, i, out, conv_out):  # type: ignore[no-untyped-def]  # pragma: no cover (compiled)
    """Row i of the one-token depthwise short conv, then silu, for the c channels of w (c, W):
    out[i, c] = silu(sum_k w[c, k] [conv_state[i, c], src[i, offset + c]]_k + conv_bias[c]), and
    conv_out[i, c] = the last W-1 inputs of that window. Shared by the fused Mamba and Mamba-2 steps."""
    channels, width = w.shape
    for c in range(channels):
        v = src[i, offset + c]
        acc = conv_bias[c] + w[c, width - 1] * v
        for k in range(width - 1):
            acc += w[c, k] * conv_state[i, c, k]
            conv_out[i, c, k] = conv_state[i, c, k + 1] if k + 1 < width - 1 else v
        out[i, c] = acc / (1.0 + fast_exp(-acc))


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _conv_and_projections(xz, conv_state, w, conv_bias, wx_t, w_dt_t, b_dt, x_out, dbc_out, dt_out, conv_out):  # type: ignore[no-untyped-def]  # pragma: no cover (compiled)
    """Short conv + silu -> x_out (b, d), new conv_out (b, d, W-1); x_proj -> dbc_out (b, r+2n); dt_out (b, d)."""
    b, d = x_out.shape
    r, m = w_dt_t.shape[0], wx_t.shape[1]
    for i in range(b):
        conv_silu_token(xz, 0, conv_state, w, conv_bias, i, x_out, conv_out)
        for j in range(m):
            dbc_out[i, j] = 0.0
        for c in range(d):
            xv = x_out[i, c]
            for j in range(m):
                dbc_out[i, j] += xv * wx_t[c, j]
        for c in range(d):
            dt_out[i, c] = b_dt[c]
        for k in range(r):
            v = dbc_out[i, k]
            for c in range(d):
                dt_out[i, c] += v * w_dt_t[k, c]
        for c in range(d):
            dt_out[i, c] = fast_softplus(dt_out[i, c])


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _state_update(xz, h, x, dbc, dt, A, D, y_out, h_out):  # type: ignore[no-untyped-def]  # pragma: no cover (compiled)
    """h_out = exp(dt A) h + dt x B (b, d, n); y_out = (C h_out + D x) silu(z) (b, d)."""
    b, d, n = h.shape
    r = dbc.shape[1] - 2 * n
    for i in range(b):
        for c in range(d):
            dtc, dtx = dt[i, c], dt[i, c] * x[i, c]
            s = dtx - dtx  # C h, accumulated in the arrays' dtype
            for j in range(n):
                hv = fast_exp(dtc * A[c, j]) * h[i, c, j] + dtx * dbc[i, r + j]
                h_out[i, c, j] = hv
                s += hv * dbc[i, r + n + j]
            zz = xz[i, d + c]
            y_out[i, c] = (s + D[c] * x[i, c]) * zz / (1.0 + fast_exp(-zz))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def mamba_step_cpu(
    xz: torch.Tensor,
    conv_state: torch.Tensor,
    h: torch.Tensor,
    w: torch.Tensor,
    conv_bias: torch.Tensor,
    wx_t: torch.Tensor,
    w_dt_t: torch.Tensor,
    b_dt: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token on CPU, all tensors in one dtype (float32 or float64), no autograd:
    xz (b, 2d), conv_state (b, d, W-1), h (b, d, n); weights w (d, W), conv_bias (d,), wx_t (d, r+2n),
    w_dt_t (r, d), b_dt (d,), A (d, n), D (d,) -> (y (b, d), new conv_state, new h). Pure."""
    b, d, n = h.shape
    x, dt = xz.new_empty(b, d), xz.new_empty(b, d)
    dbc, conv_out = xz.new_empty(b, wx_t.shape[1]), xz.new_empty(conv_state.shape)
    y, h_out = xz.new_empty(b, d), xz.new_empty(b, d, n)
    xz_np, x_np, dt_np, dbc_np = _np(xz), x.numpy(), dt.numpy(), dbc.numpy()
    _conv_and_projections(
        xz_np, _np(conv_state), _np(w), _np(conv_bias), _np(wx_t), _np(w_dt_t), _np(b_dt), x_np, dbc_np, dt_np,
        conv_out.numpy(),
    )  # fmt: skip
    _state_update(xz_np, _np(h), x_np, dbc_np, dt_np, _np(A), _np(D), y.numpy(), h_out.numpy())
    return y, conv_out, h_out


def mamba_step_naive(
    xz: torch.Tensor,
    conv_state: torch.Tensor,
    h: torch.Tensor,
    w: torch.Tensor,
    conv_bias: torch.Tensor,
    wx_t: torch.Tensor,
    w_dt_t: torch.Tensor,
    b_dt: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference of :func:`mamba_step_cpu` (same signature and math, plain PyTorch, differentiable), and the path
    ``Mamba.step_function`` takes where the fused kernel cannot (gradients, autocast, torch.compile, GPU, bf16).

    Mixed dtypes are allowed here: the short conv and the x_proj run in xz's dtype (the parameters'), the
    recurrence in h's (the state dtype: float32 for bf16 / fp16 parameters), and y (b, d) comes back in h's.
    Fused PyTorch ops (addmm, addcmul, bmm) keep a token to few kernels; the comments give the math."""
    n = h.shape[-1]
    x, z = xz.chunk(2, dim=-1)  # (b, d) each
    window = torch.cat((conv_state, x.unsqueeze(-1)), dim=-1)  # (b, d, W): the conv's causal window
    x = F.silu(torch.linalg.vecdot(window, w) + conv_bias)  # (b, d): one-token depthwise conv, sum_k w_k window_k
    dt, B, C = (x @ wx_t).to(h.dtype).split([w_dt_t.shape[0], n, n], dim=-1)  # (b, r), (b, n), (b, n)
    dt = F.softplus(torch.addmm(b_dt, dt, w_dt_t))  # (b, d): softplus(dt w_dt + b_dt)
    x = x.to(h.dtype)
    # h = exp(dt A) h + (dt x) B  (b, d, n);  y = (C h + D x) silu(z)  (b, d)
    h = torch.addcmul((dt * x).unsqueeze(-1) * B.unsqueeze(1), torch.exp(dt.unsqueeze(-1) * A), h)
    y = torch.addcmul(torch.bmm(h, C.unsqueeze(-1)).squeeze(-1), x, D).mul_(F.silu(z.to(h.dtype)))
    return y, window[..., 1:], h


__all__ = ["conv_silu_token", "mamba_step_cpu", "mamba_step_naive"]
