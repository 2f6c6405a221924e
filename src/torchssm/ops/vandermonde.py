"""Vandermonde products of diagonal SSMs (S4D, DSS), chunked over the length so memory stays bounded.

    vandermonde(c, log_z, L)[..., l]   = sum_n c[..., n] exp(log_z[..., n] * l),      l = 0..L-1
    vandermonde_transpose(u, log_z)[..., n] = sum_l u[..., l] exp(log_z[..., n] * l)

The first is the convolution kernel of a diagonal SSM: with log_z = dt A and c = C B_bar it gives
K_l = C A_bar^l B_bar (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State
Space Models", Sec. 3.1: "computing the kernel is a Vandermonde matrix-vector product"). The second
sums inputs against powers of A_bar: the final state of a diagonal SSM, h_{L-1} = sum_s A_bar^(L-1-s)
B_bar u_s, is ``vandermonde_transpose(u.flip(-1), dt A)`` times B_bar.

Leading dimensions broadcast. The fast versions never hold more than ``max_elements`` entries of the
(..., n, chunk) power matrix: each chunk is recomputed in the backward pass (activation
checkpointing), so training memory is bounded too. ``*_naive`` materialise the full (..., n, L) matrix.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

DEFAULT_MAX_ELEMENTS = 1 << 22


def _powers(log_z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """exp(log_z[..., n] * l) for l in [start, stop): (..., n, stop - start)."""
    l = torch.arange(start, stop, device=log_z.device, dtype=log_z.real.dtype)
    if not log_z.is_complex():
        return torch.exp(log_z[..., None] * l)
    # exp(a + ib) = e^a (cos b + i sin b) from real ops: several times faster than the complex exp on CPU
    return torch.polar(torch.exp(log_z.real[..., None] * l), log_z.imag[..., None] * l)


def _check(log_z: torch.Tensor, other: torch.Tensor, other_name: str, length_dim: bool) -> None:
    if not isinstance(log_z, torch.Tensor) or log_z.dim() < 1:
        raise ValueError(f"log_z must have shape (..., n); got {getattr(log_z, 'shape', type(log_z))}")
    if not isinstance(other, torch.Tensor) or other.dim() < 1:
        raise ValueError(f"{other_name} must be a tensor of shape (..., {'L' if length_dim else 'n'})")
    if not length_dim and other.shape[-1] != log_z.shape[-1]:
        raise ValueError(f"{other_name} must have shape (..., n={log_z.shape[-1]}); got {tuple(other.shape)}")


def _chunk(batch_shape, n: int, length: int, max_elements: int) -> int:
    per_step = max(1, math.prod(batch_shape) * n)
    return max(1, min(length, max_elements // per_step))


def _vandermonde_chunk(c: torch.Tensor, log_z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    return (c.unsqueeze(-2) @ _powers(log_z, start, stop)).squeeze(-2)  # (..., 1, n) @ (..., n, c)


def vandermonde(c: torch.Tensor, log_z: torch.Tensor, length: int, *,
                max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """c (..., n), log_z (..., n) complex -> (..., length) complex: sum_n c_n z_n^l."""
    _check(log_z, c, "c", length_dim=False)
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    dtype = torch.promote_types(c.dtype, log_z.dtype)
    c, log_z = c.to(dtype), log_z.to(dtype)
    batch = torch.broadcast_shapes(c.shape[:-1], log_z.shape[:-1])
    step = _chunk(batch, c.shape[-1], length, max_elements)
    if step >= length:
        return _vandermonde_chunk(c, log_z, 0, length)
    grad = torch.is_grad_enabled() and (c.requires_grad or log_z.requires_grad)
    outs = []
    for start in range(0, length, step):
        stop = min(length, start + step)
        if grad:
            outs.append(checkpoint(_vandermonde_chunk, c, log_z, start, stop, use_reentrant=False))
        else:
            outs.append(_vandermonde_chunk(c, log_z, start, stop))
    return torch.cat(outs, dim=-1)


def vandermonde_naive(c: torch.Tensor, log_z: torch.Tensor, length: int, **_unused) -> torch.Tensor:
    """Reference for :func:`vandermonde`: materialises exp(log_z * l) of shape (..., n, length)."""
    _check(log_z, c, "c", length_dim=False)
    dtype = torch.promote_types(c.dtype, log_z.dtype)
    return (c.to(dtype)[..., None] * _powers(log_z.to(dtype), 0, length)).sum(-2)


def _transpose_chunk(u: torch.Tensor, log_z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    # (..., 1, c) @ (..., c, n) -> (..., n)
    return (u[..., start:stop].unsqueeze(-2) @ _powers(log_z, start, stop).transpose(-1, -2)).squeeze(-2)


def vandermonde_transpose(u: torch.Tensor, log_z: torch.Tensor, *,
                          max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """u (..., L) real or complex, log_z (..., n) complex -> (..., n) complex: sum_l u_l z_n^l."""
    _check(log_z, u, "u", length_dim=True)
    dtype = torch.promote_types(u.dtype, log_z.dtype)
    u, log_z = u.to(dtype), log_z.to(dtype)
    length = u.shape[-1]
    batch = torch.broadcast_shapes(u.shape[:-1], log_z.shape[:-1])
    step = _chunk(batch, log_z.shape[-1], length, max_elements)
    grad = torch.is_grad_enabled() and (u.requires_grad or log_z.requires_grad)
    total = None
    for start in range(0, length, step):
        stop = min(length, start + step)
        if grad and step < length:
            part = checkpoint(_transpose_chunk, u, log_z, start, stop, use_reentrant=False)
        else:
            part = _transpose_chunk(u, log_z, start, stop)
        total = part if total is None else total + part
    return total


def vandermonde_transpose_naive(u: torch.Tensor, log_z: torch.Tensor, **_unused) -> torch.Tensor:
    """Reference for :func:`vandermonde_transpose`: materialises the (..., n, L) power matrix."""
    _check(log_z, u, "u", length_dim=True)
    dtype = torch.promote_types(u.dtype, log_z.dtype)
    return (u.to(dtype)[..., None, :] * _powers(log_z.to(dtype), 0, u.shape[-1])).sum(-1)
