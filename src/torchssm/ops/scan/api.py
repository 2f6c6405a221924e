"""Public entry point of the linear scan: input checks, then the backend chosen by ops/backend.py."""

from __future__ import annotations

import torch

from torchssm.ops.backend import check_backend_name
from torchssm.ops.scan.function import scan
from torchssm.ops.scan.naive import linear_scan_naive


def check_scan_inputs(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, reset: torch.Tensor | None) -> None:
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
    for name, t in (("a", a), ("h0", h0), ("reset", reset)):
        if t is not None and t.device != b.device:
            raise ValueError(f"{name} is on {t.device} but b is on {b.device}")
    for name, t in (("a", a), ("b", b), ("h0", h0)):
        if t is not None and not (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"{name} must be a floating-point or complex tensor; got dtype {t.dtype}")


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    reset: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t for t = 0..L-1 (or L-1..0 with ``reverse``), elementwise.

    Args:
        a: decay, (batch, length, dim) time-varying or (dim,) time-invariant; real or complex.
        b: input, (batch, length, dim).
        h0: initial state (batch, dim); zero if None.
        reverse: run from the end of the sequence.
        reset: bool (batch, length); where true the state is zeroed before step t (episode starts).
        backend: "auto" | "naive" | "chunked" | "cpu" | "gpu" (see torchssm.ops.backend). "auto" is the
            Triton kernel on CUDA, the numba kernel on CPU, else the chunked PyTorch scan. Every
            backend except "naive" runs under one autograd Function whose backward is a reverse scan.
    Returns:
        h: (batch, length, dim), dtype of the promoted (a, b, h0).

    Example:
        >>> import torch
        >>> from torchssm.ops import linear_scan
        >>> a = torch.full((3,), 0.5)                     # time-invariant decay, (dim,)
        >>> b = torch.ones(1, 4, 3)                       # (batch, length, dim)
        >>> linear_scan(a, b)[0, :, 0]
        tensor([1.0000, 1.5000, 1.7500, 1.8750])
    """
    check_scan_inputs(a, b, h0, reset)
    check_backend_name(backend)
    if backend == "naive":  # the reference loop, differentiated by autograd (slow: tests and benchmarks)
        return linear_scan_naive(a, b, h0, reverse=reverse, reset=reset)
    return scan(a, b, h0, reverse=reverse, reset=reset, backend=backend)
