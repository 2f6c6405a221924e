"""Mamba-2's one-token step between the two large projections, fused (numba, CPU) and as a plain reference.

Dao & Gu 2024, "Transformers are SSMs", Sec. 7 / Fig. 6, for one time step (the recurrence of
:func:`torchssm.ops.ssd.naive.ssd_naive`, then the gated norm :func:`torchssm.ops.common.rms_norm_gated` with
norm_before_gate=False);
b batch, d = nh * p channels in nh heads of p, g groups, n state size, W conv width,
zxbcdt = in_proj(u) (b, 2d + 2gn + nh):

    z, xBC, dt = split(zxbcdt, [d, d + 2gn, nh])
    xBC        = silu(sum_k w[c, k] [conv_state, xBC][c, k] + conv_bias)    conv_state <- last W-1 inputs
    x, B, C    = split(xBC, [d, gn, gn]);  head i reads group i // (nh / g) of B and C
    dt         = softplus(dt + dt_bias)                                      (b, nh)
    s_i        = exp(dt_i A_i) s_i + dt_i x_i B_g(i)^T                       (b, nh, p, n)
    y_i        = s_i C_g(i) + D_i x_i                                        (b, nh, p)
    y          = rmsnorm_groups(y silu(z)) * norm_weight                     (b, d), out_proj is the caller's

:func:`ssd_step_cpu` runs this as one numba kernel (float32 exp / softplus / silu by the vectorisable
polynomials of ``ops/selective/cpu.py``, float64 by libm), replacing ~25 small PyTorch ops per layer and
token (BENCHMARKS.md, "Mamba-2's fused one-token step"). No autograd: for inference only.
:func:`ssd_step_naive` is the reference with the same signature (tests compare both in float64), and
``Mamba2.step_function`` runs it when gradients, autocast or torch.compile are on, or off the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit

from torchssm.ops.common import rms_norm_gated
from torchssm.ops.selective.cpu import fast_exp, fast_softplus
from torchssm.ops.selective.step import FASTMATH, conv_silu_token
from torchssm.ops.shortconv import causal_conv1d_step


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _ssd_step(  # type: ignore[no-untyped-def]  # pragma: no cover (compiled)
    zxbcdt, conv_state, s, w, conv_bias, dt_bias, A, D, norm_w, eps, group_size, ngroups, xbc, conv_out, s_out, y
):
    """Writes xbc (b, d + 2gn) scratch, conv_out (b, d + 2gn, W-1), s_out (b, nh, p, n), y (b, d)."""
    b, nh, p, n = s.shape
    conv_dim = w.shape[0]
    d = nh * p
    heads_per_group = nh // ngroups
    for i in range(b):
        conv_silu_token(zxbcdt, d, conv_state, w, conv_bias, i, xbc, conv_out)  # over [x, B, C]
        for hh in range(nh):
            dt = fast_softplus(zxbcdt[i, d + conv_dim + hh] + dt_bias[hh])
            decay = fast_exp(dt * A[hh])
            grp = hh // heads_per_group
            b_off, c_off = d + grp * n, d + ngroups * n + grp * n
            for q in range(p):
                c = hh * p + q
                xv = xbc[i, c]
                dtx = dt * xv
                acc = dtx - dtx  # s C, accumulated in the arrays' dtype
                for j in range(n):
                    sv = decay * s[i, hh, q, j] + dtx * xbc[i, b_off + j]
                    s_out[i, hh, q, j] = sv
                    acc += sv * xbc[i, c_off + j]
                zz = zxbcdt[i, c]
                y[i, c] = (acc + D[hh, q] * xv) * zz / (1.0 + fast_exp(-zz))
        for start in range(0, d, group_size):  # rmsnorm over each group of channels
            ss = y[i, start] - y[i, start]
            for c in range(start, start + group_size):
                ss += y[i, c] * y[i, c]
            scale = 1.0 / math.sqrt(ss / group_size + eps)
            for c in range(start, start + group_size):
                y[i, c] = y[i, c] * scale * norm_w[c]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def ssd_step_cpu(
    zxbcdt: torch.Tensor,
    conv_state: torch.Tensor,
    s: torch.Tensor,
    w: torch.Tensor,
    conv_bias: torch.Tensor,
    dt_bias: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    norm_weight: torch.Tensor,
    eps: float,
    group_size: int,
    ngroups: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token on CPU, all tensors in one dtype (float32 or float64), no autograd:
    zxbcdt (b, 2d + 2gn + nh), conv_state (b, d + 2gn, W-1), s (b, nh, p, n); weights w (d + 2gn, W),
    conv_bias (d + 2gn,), dt_bias (nh,), A (nh,), D (nh, p), norm_weight (d,) -> (y (b, d) after the gated
    norm, new conv_state, new s). Pure."""
    b, nh, p, n = s.shape
    conv_dim = conv_state.shape[1]
    y, xbc = zxbcdt.new_empty(b, nh * p), zxbcdt.new_empty(b, conv_dim)
    conv_out, s_out = zxbcdt.new_empty(conv_state.shape), zxbcdt.new_empty(b, nh, p, n)
    _ssd_step(
        _np(zxbcdt), _np(conv_state), _np(s), _np(w), _np(conv_bias), _np(dt_bias), _np(A), _np(D),
        _np(norm_weight), float(eps), int(group_size), int(ngroups), xbc.numpy(), conv_out.numpy(),
        s_out.numpy(), y.numpy(),
    )  # fmt: skip
    return y, conv_out, s_out


def ssd_step_naive(
    zxbcdt: torch.Tensor,
    conv_state: torch.Tensor,
    s: torch.Tensor,
    w: torch.Tensor,
    conv_bias: torch.Tensor,
    dt_bias: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    norm_weight: torch.Tensor,
    eps: float,
    group_size: int,
    ngroups: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference of :func:`ssd_step_cpu` (same signature and math, plain PyTorch, differentiable), and the path
    ``Mamba2.step_function`` takes where the fused kernel cannot (gradients, autocast, torch.compile, GPU, bf16).

    Mixed dtypes are allowed here: the short conv runs in zxbcdt's dtype (the parameters'), the recurrence in
    s's (the state dtype: float32 for bf16 / fp16 parameters); y (b, d) comes back in zxbcdt's dtype, the gated
    norm computed in float32 (float64 for float64) by :func:`~torchssm.ops.common.rms_norm_gated`."""
    b, nh, p, n = s.shape
    d, sdt = nh * p, s.dtype
    z, xBC, dt = torch.split(zxbcdt, [d, conv_state.shape[1], nh], dim=-1)
    xBC, conv_state = causal_conv1d_step(xBC, w, conv_bias, conv_state)  # (b, d + 2gn), (b, d + 2gn, W-1)
    xBC = F.silu(xBC)
    x, B, C = torch.split(xBC, [d, ngroups * n, ngroups * n], dim=-1)
    dt = F.softplus(dt.to(sdt) + dt_bias)  # (b, nh)
    x = x.to(sdt).view(b, nh, p)

    def heads(M: torch.Tensor) -> torch.Tensor:  # (b, g*n) -> (b, nh or 1, n): head i reads group i // (nh/g)
        M = M.to(sdt).view(b, ngroups, n)
        return M if ngroups == 1 else M.repeat_interleave(nh // ngroups, dim=1)

    # s = exp(dt A) s + dt x B^T  (b, nh, p, n);  y = s C + D x  (b, nh, p)
    dBx = (dt[:, :, None] * x)[..., None] * heads(B)[:, :, None, :]
    s = torch.addcmul(dBx, torch.exp(dt * A)[:, :, None, None], s)
    y = torch.addcmul(torch.matmul(s, heads(C)[..., None])[..., 0], x, D)
    y = rms_norm_gated(y.reshape(b, d).to(zxbcdt.dtype), z, norm_weight, eps, group_size)
    return y, conv_state, s


__all__ = ["ssd_step_cpu", "ssd_step_naive"]
