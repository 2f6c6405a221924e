"""Vandermonde products of diagonal SSMs (S4D, DSS) from O(sqrt L) power blocks.

    vandermonde(c, log_z, L)[..., l]   = sum_n c[..., n] exp(log_z[..., n] * l),      l = 0..L-1
    vandermonde_transpose(u, log_z)[..., n] = sum_l u[..., l] exp(log_z[..., n] * l)

The first is the convolution kernel of a diagonal SSM: with log_z = dt A and c = C B_bar it gives
K_l = C A_bar^l B_bar (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State
Space Models", Sec. 3.1: "computing the kernel is a Vandermonde matrix-vector product"). The second
sums inputs against powers of A_bar: the final state of a diagonal SSM, h_{L-1} = sum_s A_bar^(L-1-s)
B_bar u_s, is ``vandermonde_transpose(u.flip(-1), dt A)`` times B_bar.

Leading dimensions broadcast. The fast versions split each power l = q T + r (q < Q = ceil(L / T),
r < T) and use z^l = z^(qT) z^r, both factors from exp (never by repeated multiplication, so no rounding
error accumulates along l; the phases qT Im(log z) and r Im(log z) are rounded once each, as l Im(log z)
is in exp(l log z)):

    vandermonde[..., qT + r]   = sum_n (c_n z_n^(qT)) z_n^r             a (Q, n) @ (n, T) matmul
    vandermonde_transpose[n]   = sum_q z_n^(qT) sum_r u_(qT+r) z_n^r     a (Q, T) @ (T, n) matmul

so they hold two power blocks z^r (..., n, T) and z^(qT) (..., n, Q) over log_z's own leading shape and
products of the same sizes over the broadcast shape, instead of the (..., n, L) power matrix;
T = ceil(sqrt L) (see ``_split``), and autograd saves only these (nothing is recomputed in the backward).
``*_naive`` materialise the full (..., n, L) matrix.
"""

from __future__ import annotations

import math

import torch


def _powers_at(log_z: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """exp(log_z[..., n] * l[j]) for the exponents l (j,): (..., n, j)."""
    l = l.to(device=log_z.device, dtype=log_z.real.dtype)
    if not log_z.is_complex():
        return torch.exp(log_z[..., None] * l)
    # exp(a + ib) = e^a (cos b + i sin b) from real ops: several times faster than the complex exp on CPU
    return torch.polar(torch.exp(log_z.real[..., None] * l), log_z.imag[..., None] * l)


def _powers(log_z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """exp(log_z[..., n] * l) for l in [start, stop): (..., n, stop - start)."""
    return _powers_at(log_z, torch.arange(start, stop))


def _check(log_z: torch.Tensor, other: torch.Tensor, other_name: str, length_dim: bool) -> None:
    if not isinstance(log_z, torch.Tensor) or log_z.dim() < 1:
        raise ValueError(f"log_z must have shape (..., n); got {getattr(log_z, 'shape', type(log_z))}")
    if not isinstance(other, torch.Tensor) or other.dim() < 1:
        raise ValueError(f"{other_name} must be a tensor of shape (..., {'L' if length_dim else 'n'})")
    if not length_dim and other.shape[-1] != log_z.shape[-1]:
        raise ValueError(f"{other_name} must have shape (..., n={log_z.shape[-1]}); got {tuple(other.shape)}")
    if length_dim and other.shape[-1] < 1:
        raise ValueError(f"{other_name} must have shape (..., L >= 1); got {tuple(other.shape)}")


def _split(length: int) -> tuple[int, int]:
    """(T, Q): block length T = ceil(sqrt(L)) and Q = ceil(L / T) blocks, which minimises T + Q: the power
    blocks hold (..., n, T) and (..., n, Q) entries, and so do the products over a broadcast batch (the
    matmul expands z^r to the batch shape), so a larger T for a batch of inputs costs more, not less."""
    block = math.isqrt(length - 1) + 1
    return block, -(-length // block)


def _block_powers(log_z: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z^r (..., n, T) for r < T, and z^(qT) (..., n, Q) for q < Q (see the module docstring)."""
    block, count = _split(length)
    inner = _powers(log_z, 0, block)  # (..., n, T)
    outer = _powers_at(log_z, torch.arange(count) * block)  # (..., n, Q)
    return inner, outer


def vandermonde(c: torch.Tensor, log_z: torch.Tensor, length: int) -> torch.Tensor:
    """c (..., n), log_z (..., n) complex -> (..., length) complex: sum_n c_n z_n^l."""
    _check(log_z, c, "c", length_dim=False)
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    dtype = torch.promote_types(c.dtype, log_z.dtype)
    c, log_z = c.to(dtype), log_z.to(dtype)
    inner, outer = _block_powers(log_z, length)  # (..., n, T), (..., n, Q)
    out = (c[..., None] * outer).transpose(-1, -2) @ inner  # (..., Q, n) @ (..., n, T) -> (..., Q, T)
    return out.flatten(-2)[..., :length]  # (..., L): index qT + r


def vandermonde_naive(c: torch.Tensor, log_z: torch.Tensor, length: int) -> torch.Tensor:
    """Reference for :func:`vandermonde`: materialises exp(log_z * l) of shape (..., n, length)."""
    _check(log_z, c, "c", length_dim=False)
    dtype = torch.promote_types(c.dtype, log_z.dtype)
    return (c.to(dtype)[..., None] * _powers(log_z.to(dtype), 0, length)).sum(-2)


def vandermonde_transpose(u: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
    """u (..., L) real or complex, log_z (..., n) complex -> (..., n) complex: sum_l u_l z_n^l."""
    _check(log_z, u, "u", length_dim=True)
    dtype = torch.promote_types(u.dtype, log_z.dtype)
    u, log_z = u.to(dtype), log_z.to(dtype)
    length = u.shape[-1]
    inner, outer = _block_powers(log_z, length)  # (..., n, T), (..., n, Q)
    block, count = inner.shape[-1], outer.shape[-1]
    blocks = torch.nn.functional.pad(u, (0, block * count - length)).unflatten(-1, (count, block))  # (..., Q, T)
    inner_sums = blocks @ inner.transpose(-1, -2)  # (..., Q, T) @ (..., T, n) -> (..., Q, n)
    return (inner_sums * outer.transpose(-1, -2)).sum(-2)  # (..., n)


def vandermonde_transpose_naive(u: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
    """Reference for :func:`vandermonde_transpose`: materialises the (..., n, L) power matrix."""
    _check(log_z, u, "u", length_dim=True)
    dtype = torch.promote_types(u.dtype, log_z.dtype)
    return (u.to(dtype)[..., None, :] * _powers(log_z.to(dtype), 0, u.shape[-1])).sum(-1)
