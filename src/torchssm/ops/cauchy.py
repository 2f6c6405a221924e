"""Cauchy kernel of S4's DPLR generating function, chunked over the evaluation points.

    cauchy(v, z, w)[..., l] = sum_n v[..., n] / (z[l] - w[..., n])

S4 evaluates its truncated generating function at the L roots of unity through four such sums
(Gu et al. 2022, "Efficiently Modeling Long Sequences with Structured State Spaces", Sec. 3.3 and
Lemma C.3, Algorithm 1 step 2). ``cauchy`` holds at most ``max_elements`` entries of the (..., n, chunk)
matrix 1 / (z - w) at a time and recomputes each chunk in the backward pass (activation
checkpointing); ``cauchy_naive`` materialises all of it.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

DEFAULT_MAX_ELEMENTS = 1 << 22


def _check(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> None:
    if not isinstance(z, torch.Tensor) or z.dim() != 1:
        raise ValueError(f"z must have shape (L,); got {getattr(z, 'shape', type(z))}")
    if not isinstance(w, torch.Tensor) or not isinstance(v, torch.Tensor) or w.dim() < 1 or v.dim() < 1:
        raise ValueError("v and w must be tensors of shape (..., n)")
    if v.shape[-1] != w.shape[-1]:
        raise ValueError(f"v must have shape (..., n={w.shape[-1]}) like w; got {tuple(v.shape)}")


def _cauchy_chunk(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (v.unsqueeze(-2) @ (1 / (z - w[..., None]))).squeeze(-2)  # (..., 1, n) @ (..., n, c) -> (..., c)


def cauchy(
    v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> torch.Tensor:
    """v (..., n), z (L,), w (..., n) complex -> (..., L) complex."""
    _check(v, z, w)
    dtype = torch.promote_types(torch.promote_types(v.dtype, w.dtype), z.dtype)
    v, z, w = v.to(dtype), z.to(dtype), w.to(dtype)
    batch = torch.broadcast_shapes(v.shape[:-1], w.shape[:-1])
    length = z.shape[0]
    step = max(1, min(length, max_elements // max(1, math.prod(batch) * w.shape[-1])))
    if step >= length:
        return _cauchy_chunk(v, z, w)
    grad = torch.is_grad_enabled() and (v.requires_grad or w.requires_grad or z.requires_grad)
    outs = []
    for start in range(0, length, step):
        zc = z[start : start + step]
        outs.append(checkpoint(_cauchy_chunk, v, zc, w, use_reentrant=False) if grad else _cauchy_chunk(v, zc, w))
    return torch.cat(outs, dim=-1)


def cauchy_naive(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, **_unused: object) -> torch.Tensor:
    """Reference for :func:`cauchy` (same signature): materialises v / (z - w) of shape (..., n, L)."""
    _check(v, z, w)
    dtype = torch.promote_types(torch.promote_types(v.dtype, w.dtype), z.dtype)
    v, z, w = v.to(dtype), z.to(dtype), w.to(dtype)
    return (v[..., None] / (z - w[..., None])).sum(-2)
