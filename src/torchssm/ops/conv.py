"""Long convolution by FFT: the convolution mode of S4 / S4D / DSS.

Per channel h, with a causal kernel k (H, Lk) (Lk >= L, only k[:, :L] is used) and optionally an
anti-causal one k_bwd (H, Lk) for bidirectional layers:

    y[b, t, h] = sum_{s <= t} k[h, t - s] u[b, s, h]  +  sum_{s > t} k_bwd[h, s - t - 1] u[b, s, h]

(the anti-causal part starts one step away so the diagonal is not counted twice, as in the
bidirectional S4 of Gu et al. 2022, "Efficiently Modeling Long Sequences with Structured State
Spaces", App. D.2). ``fft_conv`` pads to 2L so the circular FFT product is a linear convolution:
O(B H L log L). ``conv_naive`` builds the (H, L, L) Toeplitz matrix: the reference for tests.
Low-precision inputs (bf16/fp16) are convolved in float32 and cast back.
"""

from __future__ import annotations

from typing import Optional

import torch


def _check(u: torch.Tensor, k: torch.Tensor, k_bwd: Optional[torch.Tensor]) -> None:
    if not isinstance(u, torch.Tensor) or u.dim() != 3:
        raise ValueError(f"u must have shape (batch, length, channels); got {getattr(u, 'shape', type(u))}")
    _, length, h = u.shape
    if length == 0:
        raise ValueError("u is an empty sequence (length 0); expected shape (batch, length>=1, channels)")
    for name, kern in (("k", k), ("k_bwd", k_bwd)):
        if kern is None:
            continue
        if not isinstance(kern, torch.Tensor) or kern.dim() != 2 or kern.shape[0] != h:
            raise ValueError(f"{name} must have shape (channels, kernel_length)=({h}, Lk); "
                             f"got {getattr(kern, 'shape', type(kern))}")
        if kern.shape[1] < length:
            raise ValueError(f"{name} has kernel length {kern.shape[1]}, shorter than the input length {length}; "
                             f"expected shape ({h}, Lk >= {length})")


def fft_conv(u: torch.Tensor, k: torch.Tensor, k_bwd: Optional[torch.Tensor] = None) -> torch.Tensor:
    """u (B, L, H), k (H, Lk >= L), k_bwd (H, Lk >= L) or None -> y (B, L, H) (see module docstring)."""
    _check(u, k, k_bwd)
    length = u.shape[1]
    out_dtype = u.dtype
    work = torch.promote_types(u.dtype, torch.float32)
    n = 2 * length
    kern = k[:, :length].to(work)  # (H, L)
    if k_bwd is None:
        k_f = torch.fft.rfft(kern, n=n)  # (H, L+1)
    else:
        # circular kernel of size 2L: causal taps at 0..L-1, anti-causal tap j at position 2L-1-j
        full = torch.cat([kern, k_bwd[:, :length].to(work).flip(-1)], dim=-1)  # (H, 2L)
        k_f = torch.fft.rfft(full, n=n)
    u_f = torch.fft.rfft(u.to(work).transpose(1, 2), n=n)  # (B, H, L+1)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :length]  # (B, H, L)
    return y.transpose(1, 2).to(out_dtype)


def conv_naive(u: torch.Tensor, k: torch.Tensor, k_bwd: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reference for :func:`fft_conv` (same signature): an explicit (H, L, L) Toeplitz matrix product."""
    _check(u, k, k_bwd)
    length = u.shape[1]
    t = torch.arange(length, device=u.device)
    diff = t[:, None] - t[None, :]  # (L, L): t - s
    T = torch.where(diff >= 0, k[:, diff.clamp(min=0)], torch.zeros((), dtype=k.dtype, device=k.device))  # (H, L, L)
    if k_bwd is not None:
        T = T + torch.where(diff < 0, k_bwd[:, (-diff - 1).clamp(min=0)],
                            torch.zeros((), dtype=k.dtype, device=k.device))
    return torch.einsum("hts,bsh->bth", T.to(u.dtype), u)
