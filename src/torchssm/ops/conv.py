"""Long convolution by FFT: the convolution mode of S4 / S4D / DSS.

Per channel h, with a causal kernel k (H, Lk) (Lk >= L, only k[:, :L] is used) and optionally an
anti-causal one k_bwd (H, Lk) for bidirectional layers:

    y[b, t, h] = sum_{s <= t} k[h, t - s] u[b, s, h]  +  sum_{s > t} k_bwd[h, s - t - 1] u[b, s, h]

(the anti-causal part starts one step away so the diagonal is not counted twice, as in the
bidirectional S4 of Gu et al. 2022, "Efficiently Modeling Long Sequences with Structured State
Spaces", App. D.2). ``fft_conv`` pads to a fast FFT size n >= 2L so the circular FFT product is a
linear convolution: O(B H L log L), forward and backward by FFT products in one autograd Function.
``conv_naive`` builds the (H, L, L) Toeplitz matrix: the reference for tests.
Low-precision inputs (bf16/fp16) are convolved in float32 and cast back.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable


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


def fast_fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: an FFT size done by radix-2/3/5 passes only (MKL and pocketfft are
    slower on sizes with larger prime factors; 2L itself can be one, e.g. L = 1000 + 7)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    best = 1 << (n - 1).bit_length()  # next power of two
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            best = min(best, p35 << (-(-n // p35) - 1).bit_length())  # p35 * 2^a >= n, a minimal
            p35 *= 3
        p5 *= 5
    return best


class _FFTConv(torch.autograd.Function):
    """y[b, t, h] = sum_{s < L} k[h, (t - s) mod n] u[b, s, h] for t < L: a circular convolution of size n of
    the zero-padded input with a circular kernel k (H, nk <= n), truncated to the first L outputs.

    Backward by the adjoints, also FFT products (one rfft and one irfft of size n per (b, h) line each way):
        du[s] = sum_{t < L} g[t] k[(t - s) mod n]     = irfft(conj(K) G)[:L]
        dk[j] = sum_b sum_{t < L} g[t] u[(t - j) mod n] = irfft(sum_b conj(U) G)[:nk]
    The spectra U (B, H, n/2+1) (for dk) and K (H, n/2+1) (for du) are kept from the forward pass, so no
    transform is recomputed, and autograd's generic rfft backward (a full-length complex FFT) is not used."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, kern: torch.Tensor, n: int) -> torch.Tensor:
        length = u.shape[1]
        u_f = torch.fft.rfft(u.transpose(1, 2), n=n)  # (B, H, n/2+1)
        k_f = torch.fft.rfft(kern, n=n)  # (H, n/2+1): one transform of the kernel per call
        y = torch.fft.irfft(u_f * k_f, n=n)[..., :length]  # (B, H, L)
        ctx.n, ctx.length, ctx.klen = n, length, kern.shape[-1]
        ctx.save_for_backward(u_f if ctx.needs_input_grad[1] else None, k_f if ctx.needs_input_grad[0] else None)
        return y.transpose(1, 2)  # (B, L, H)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        u_f, k_f = ctx.saved_tensors
        n = ctx.n
        g_f = torch.fft.rfft(grad_y.transpose(1, 2), n=n)  # (B, H, n/2+1)
        grad_k = None
        if ctx.needs_input_grad[1]:
            grad_k = torch.fft.irfft(torch.einsum("bhf,bhf->hf", u_f.conj(), g_f), n=n)[:, :ctx.klen]  # (H, nk)
        grad_u = None
        if ctx.needs_input_grad[0]:
            grad_u = torch.fft.irfft(g_f.mul_(k_f.conj()), n=n)[..., :ctx.length].transpose(1, 2)  # (B, L, H)
        return grad_u, grad_k, None


def fft_conv(u: torch.Tensor, k: torch.Tensor, k_bwd: Optional[torch.Tensor] = None) -> torch.Tensor:
    """u (B, L, H), k (H, Lk >= L), k_bwd (H, Lk >= L) or None -> y (B, L, H) (see module docstring).

    FFT size n = :func:`fast_fft_length` (2L) >= 2L: the causal taps sit at 0..L-1 of the circular kernel and
    anti-causal tap j at n-1-j, so the causal part never wraps around (n >= 2L - 1) and the two never overlap."""
    _check(u, k, k_bwd)
    length = u.shape[1]
    out_dtype = u.dtype
    work = torch.promote_types(u.dtype, torch.float32)
    n = fast_fft_length(2 * length)
    kern = k[:, :length].to(work)  # (H, L)
    if k_bwd is not None:
        gap = kern.new_zeros(kern.shape[0], n - 2 * length)
        kern = torch.cat([kern, gap, k_bwd[:, :length].to(work).flip(-1)], dim=-1)  # (H, n)
    return _FFTConv.apply(u.to(work), kern, n).to(out_dtype)


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
