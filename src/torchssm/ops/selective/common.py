"""The selective scan's own input checks and preparation (Mamba's S6); the pieces it shares with SSD
live in :mod:`torchssm.ops.common` (re-exported here).

Symbols as in docs/architecture.md: b batch, l length, d channels, n state size per channel,
g groups of channels sharing B and C.
"""

from __future__ import annotations

import torch

from torchssm.ops.common import (  # noqa: F401  (re-exported: the selective ops import them from here)
    check_bc,
    check_reset,
    compute_dtype,
    expand_groups,
    prepare_dt,
    shape_str,
    skip_and_gate,
    without_autocast,
)


def check_selective_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    h0: torch.Tensor | None,
    reset: torch.Tensor | None,
) -> None:
    """Shapes/dtypes only (no device sync). See :func:`torchssm.ops.selective.selective_scan`."""
    if not isinstance(u, torch.Tensor) or u.dim() != 3:
        raise ValueError(f"u must have shape (batch, length, d); got {shape_str(u)}")
    b, l, d = u.shape
    if l == 0:
        raise ValueError("u is an empty sequence (length 0); expected shape (batch, length>=1, d)")
    if not u.is_floating_point():
        raise TypeError(f"u must be a floating-point tensor; got dtype {u.dtype}")
    if not isinstance(delta, torch.Tensor) or tuple(delta.shape) != (b, l, d):
        raise ValueError(f"delta must have shape (batch, length, d)=({b}, {l}, {d}); got {shape_str(delta)}")
    if not isinstance(A, torch.Tensor) or A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must have shape (d, n)=({d}, n); got {shape_str(A)}")
    if A.is_complex():
        raise TypeError("A must be real (Mamba's S6 uses a real diagonal A)")
    n = A.shape[1]
    check_bc("B", B, b, l, d, n)
    check_bc("C", C, b, l, d, n)
    for name, t, shape in (
        ("D", D, (d,)),
        ("delta_bias", delta_bias, (d,)),
        ("z", z, (b, l, d)),
        ("h0", h0, (b, d, n)),
    ):
        if t is not None and (not isinstance(t, torch.Tensor) or tuple(t.shape) != shape):
            raise ValueError(f"{name} must have shape {shape}; got {shape_str(t)}")
    check_reset(reset, b, l)


def prepare_selective(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    h0: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Discretisation inputs shared by the reference and the chunked scan, in the compute dtype:
    dt (b, l, d), u (b, l, d), B and C expanded to (b, l, d or 1, n), A (d, n), h0 or None."""
    d = u.shape[2]
    dtype = compute_dtype(u, delta, A, B, C, h0)
    dt = prepare_dt(delta, delta_bias, delta_softplus, dtype)  # (b, l, d)
    Bx = expand_groups(B.to(dtype), d)  # (b, l, d or 1, n)
    Cx = expand_groups(C.to(dtype), d)  # (b, l, d or 1, n)
    return dt, u.to(dtype), Bx, Cx, A.to(dtype), None if h0 is None else h0.to(dtype)


def reset_from_cu_seqlens(cu_seqlens: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """Packed sequences as in flash-attention / mamba_ssm (``cu_seqlens`` = (0, l_1, l_1 + l_2, ..., total))
    -> the (1, total) bool ``reset`` mask every op and layer here takes (true where a sequence starts)."""
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError("cu_seqlens must be a 1-D tensor (0, l_1, l_1 + l_2, ..., total) with at least 2 entries")
    total = int(cu_seqlens[-1]) if length is None else length
    reset = torch.zeros(1, total, dtype=torch.bool, device=cu_seqlens.device)
    starts = cu_seqlens[:-1].long()
    reset[0, starts[starts < total]] = True
    return reset
