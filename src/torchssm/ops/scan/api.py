"""Public entry point of the linear scan: input checks, then the backend chosen by ops/backend.py."""

from __future__ import annotations

from typing import Optional

import torch

from torchssm.ops.scan.naive import linear_scan_naive


def check_scan_inputs(a, b, h0, reset) -> None:
    """Shape/dtype checks only (no device sync)."""
    if not isinstance(b, torch.Tensor) or b.dim() != 3:
        raise ValueError(f"b must have shape (batch, length, dim); got {getattr(b, 'shape', type(b))}")
    batch, length, dim = b.shape
    if length == 0:
        raise ValueError("b is an empty sequence (length 0); expected shape (batch, length>=1, dim)")
    if not isinstance(a, torch.Tensor) or tuple(a.shape) not in {(batch, length, dim), (dim,)}:
        raise ValueError(
            f"a must have shape (batch, length, dim)={(batch, length, dim)} or (dim,)=({dim},); "
            f"got {tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__}"
        )
    if h0 is not None and tuple(h0.shape) != (batch, dim):
        raise ValueError(f"h0 must have shape (batch, dim)={(batch, dim)}; got {tuple(h0.shape)}")
    if reset is not None:
        if tuple(reset.shape) != (batch, length):
            raise ValueError(f"reset must have shape (batch, length)={(batch, length)}; got {tuple(reset.shape)}")
        if reset.dtype != torch.bool:
            raise TypeError(f"reset must be a bool tensor; got dtype {reset.dtype}")
    for name, t in (("a", a), ("h0", h0)):
        if t is not None and t.device != b.device:
            raise ValueError(f"{name} is on {t.device} but b is on {b.device}")


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: Optional[torch.Tensor] = None,
    *,
    reverse: bool = False,
    reset: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t for t = 0..L-1 (or L-1..0 with ``reverse``), elementwise.

    Args:
        a: decay, (batch, length, dim) time-varying or (dim,) time-invariant; real or complex.
        b: input, (batch, length, dim).
        h0: initial state (batch, dim); zero if None.
        reverse: run from the end of the sequence.
        reset: bool (batch, length); where true the state is zeroed before step t (episode starts).
        backend: "auto" | "naive" | "chunked" | "cpu" | "gpu" (see torchssm.ops.backend).
    Returns:
        h: (batch, length, dim), dtype of the promoted (a, b).
    """
    check_scan_inputs(a, b, h0, reset)
    if backend == "naive":
        return linear_scan_naive(a, b, h0, reverse=reverse, reset=reset)
    # Filled in by ops/scan/function.py + ops/backend.py (autograd Function with a scan backward).
    return linear_scan_naive(a, b, h0, reverse=reverse, reset=reset)
