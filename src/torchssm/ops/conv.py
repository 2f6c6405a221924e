"""Long convolution by FFT: the convolution mode of S4 / S4D / DSS.

Per channel h, with a causal kernel k (H, Lk) (Lk >= L, only k[:, :L] is used) and optionally an
anti-causal one k_bwd (H, Lk) for bidirectional layers:

    y[b, t, h] = sum_{s <= t} k[h, t - s] u[b, s, h]  +  sum_{s > t} k_bwd[h, s - t - 1] u[b, s, h]
                 (+ D[h] u[b, t, h], the skip term of the SSM layers, when D (H,) is given)

(the anti-causal part starts one step away so the diagonal is not counted twice, as in the
bidirectional S4 of Gu et al. 2022, "Efficiently Modeling Long Sequences with Structured State
Spaces", App. D.2). ``fft_conv`` pads to a fast FFT size n >= 2L so the circular FFT product is a
linear convolution: O(B H L log L), forward and backward by FFT products in one autograd Function.
``conv_naive`` builds the (H, L, L) Toeplitz matrix: the reference for tests.
Low-precision inputs (bf16/fp16) are convolved in float32 and cast back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.autograd.function import once_differentiable


def _check(u: torch.Tensor, k: torch.Tensor, k_bwd: torch.Tensor | None, D: torch.Tensor | None) -> None:
    if not isinstance(u, torch.Tensor) or u.dim() != 3:
        raise ValueError(f"u must have shape (batch, length, channels); got {getattr(u, 'shape', type(u))}")
    _, length, h = u.shape
    if length == 0:
        raise ValueError("u is an empty sequence (length 0); expected shape (batch, length>=1, channels)")
    for name, kern in (("k", k), ("k_bwd", k_bwd)):
        if kern is None:
            continue
        if not isinstance(kern, torch.Tensor) or kern.dim() != 2 or kern.shape[0] != h:
            raise ValueError(
                f"{name} must have shape (channels, kernel_length)=({h}, Lk); got {getattr(kern, 'shape', type(kern))}"
            )
        if kern.shape[1] < length:
            raise ValueError(
                f"{name} has kernel length {kern.shape[1]}, shorter than the input length {length}; "
                f"expected shape ({h}, Lk >= {length})"
            )
    if D is not None and (not isinstance(D, torch.Tensor) or D.shape != (h,)):
        raise ValueError(f"D must have shape (channels,)=({h},); got {getattr(D, 'shape', type(D))}")


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


CHUNK_ELEMENTS = 1 << 18  # padded lines of length n per FFT call: 1 MiB in float32 (~ L2), reused from the heap


def _chunks(batch: int, channels: int, n: int) -> Iterator[tuple[slice, slice]]:
    """(batch slice, channel slice) blocks of the (B, H) lines, at most max(1, CHUNK_ELEMENTS // n) lines of
    length n each: whole rows of H channels for several b when a row fits, else channel slices of one b."""
    lines = max(1, CHUNK_ELEMENTS // n)
    if lines >= channels:
        rows = lines // channels
        for b0 in range(0, batch, rows):
            yield slice(b0, min(batch, b0 + rows)), slice(0, channels)
        return
    for b in range(batch):
        for h0 in range(0, channels, lines):
            yield slice(b, b + 1), slice(h0, min(channels, h0 + lines))


class _FFTConv(torch.autograd.Function):
    """y[b, t, h] = sum_{s < L} k[h, (t - s) mod n] u[b, s, h] + D[h] u[b, t, h] for t < L: a circular
    convolution of size n of the zero-padded input with a circular kernel k (H, nk <= n), truncated to the
    first L outputs, plus the skip term (D = None: no skip term).

    Backward by the adjoints, also FFT products (G = rfft(g), U = rfft(u), K = rfft(k), size n):
        du[s] = sum_{t < L} g[t] k[(t - s) mod n] + D g[s]   = irfft(conj(K) G)[:L] + D g
        dk[j] = sum_b sum_{t < L} g[t] u[(t - j) mod n]      = irfft(sum_b conj(U) G)[:nk]
        dD    = sum_b sum_t g[t] u[t]
    Both passes run over blocks of (b, channel) lines (``_chunks``): every FFT buffer is at most about
    CHUNK_ELEMENTS complex entries, reused by the allocator, instead of fresh (B, H, n) buffers whose first
    touch (page faults) costs as much as the FFT itself on CPU. U is recomputed in the backward pass (one
    more rfft per line) rather than kept: the saved state is u (B, L, H), K (H, n/2+1) and D."""

    @staticmethod
    def forward(
        ctx: Any,
        u: torch.Tensor,
        kern: torch.Tensor,
        skip: torch.Tensor | None,  # type: ignore[override]
        n: int,
    ) -> torch.Tensor:
        batch, length, channels = u.shape
        k_f = torch.fft.rfft(kern, n=n)  # (H, n/2+1): one transform of the kernel per call
        y = torch.empty_like(u, memory_format=torch.contiguous_format)  # (B, L, H)
        for bs, hs in _chunks(batch, channels, n):
            u_c = u[bs, :, hs].transpose(1, 2)  # (rows, lines, L)
            y_c = torch.fft.irfft(torch.fft.rfft(u_c, n=n).mul_(k_f[hs]), n=n)[..., :length]  # (rows, lines, L)
            if skip is not None:
                y_c.addcmul_(u_c, skip[hs, None])
            y[bs, :, hs] = y_c.transpose(1, 2)
        ctx.n, ctx.klen = n, kern.shape[-1]
        ctx.save_for_backward(u, k_f, skip)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        u, k_f, skip = ctx.saved_tensors
        n = ctx.n
        batch, length, channels = u.shape
        need_u, need_k, need_d = ctx.needs_input_grad[:3]
        grad_u = torch.empty_like(u, memory_format=torch.contiguous_format) if need_u else None  # (B, L, H)
        acc = k_f.new_zeros(k_f.shape) if need_k else None  # (H, n/2+1): sum_b conj(U) G
        grad_d = u.new_zeros(channels) if need_d else None  # (H,)
        k_conj = k_f.conj() if need_u else None  # (H, n/2+1)
        for bs, hs in _chunks(batch, channels, n):
            g_c = grad_y[bs, :, hs].transpose(1, 2)  # (rows, lines, L)
            u_c = u[bs, :, hs].transpose(1, 2)  # (rows, lines, L)
            if grad_d is not None:
                grad_d[hs] += (g_c * u_c).sum((0, 2))
            if not (need_u or need_k):
                continue
            g_f = torch.fft.rfft(g_c, n=n)  # (rows, lines, n/2+1)
            if acc is not None:
                acc[hs] += torch.fft.rfft(u_c, n=n).conj_physical_().mul_(g_f).sum(0)
            if grad_u is not None and k_conj is not None:
                gu_c = torch.fft.irfft(g_f.mul_(k_conj[hs]), n=n)[..., :length]  # (rows, lines, L)
                if skip is not None:
                    gu_c.addcmul_(g_c, skip[hs, None])
                grad_u[bs, :, hs] = gu_c.transpose(1, 2)
        grad_k = torch.fft.irfft(acc, n=n)[:, : ctx.klen] if acc is not None else None  # (H, nk)
        return grad_u, grad_k, grad_d, None


def fft_conv(
    u: torch.Tensor, k: torch.Tensor, k_bwd: torch.Tensor | None = None, D: torch.Tensor | None = None
) -> torch.Tensor:
    """u (B, L, H), k (H, Lk >= L), k_bwd (H, Lk >= L) or None, D (H,) or None -> y (B, L, H) (see module
    docstring), plus the skip term D u when D is given (added blockwise, no extra pass over (B, L, H)).

    FFT size n = :func:`fast_fft_length` (2L) >= 2L: the causal taps sit at 0..L-1 of the circular kernel and
    anti-causal tap j at n-1-j, so the causal part never wraps around (n >= 2L - 1) and the two never overlap."""
    _check(u, k, k_bwd, D)
    length = u.shape[1]
    out_dtype = u.dtype
    work = torch.promote_types(u.dtype, torch.float32)
    n = fast_fft_length(2 * length)
    kern = k[:, :length].to(work)  # (H, L)
    if k_bwd is not None:
        gap = kern.new_zeros(kern.shape[0], n - 2 * length)
        kern = torch.cat([kern, gap, k_bwd[:, :length].to(work).flip(-1)], dim=-1)  # (H, n)
    skip = None if D is None else D.to(work)
    return _FFTConv.apply(u.to(work), kern, skip, n).to(out_dtype)


def conv_naive(
    u: torch.Tensor, k: torch.Tensor, k_bwd: torch.Tensor | None = None, D: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference for :func:`fft_conv` (same signature): an explicit (H, L, L) Toeplitz matrix product."""
    _check(u, k, k_bwd, D)
    length = u.shape[1]
    t = torch.arange(length, device=u.device)
    diff = t[:, None] - t[None, :]  # (L, L): t - s
    T = torch.where(diff >= 0, k[:, diff.clamp(min=0)], torch.zeros((), dtype=k.dtype, device=k.device))  # (H, L, L)
    if k_bwd is not None:
        T = T + torch.where(
            diff < 0, k_bwd[:, (-diff - 1).clamp(min=0)], torch.zeros((), dtype=k.dtype, device=k.device)
        )
    y = torch.einsum("hts,bsh->bth", T.to(u.dtype), u)  # (B, L, H)
    return y if D is None else y + u * D
