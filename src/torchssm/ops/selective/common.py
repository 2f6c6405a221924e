"""Shared pieces of the selective scan (Mamba's S6) and of SSD (Mamba-2): input checks,
dt preparation, group expansion and the D-skip / z-gate epilogue.

Glossary (shape comments):
    b: batch   l: length   d: channels (d_inner)   n: state size per channel
    g: groups of channels sharing B and C   h: heads (SSD)   p: head dim (SSD)
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F


def without_autocast(fn):
    """Run an op with autocast off: under ``torch.autocast`` the einsums/matmuls of SSD would otherwise
    run in bf16 and the decays exp(dt A) and states with them (DESIGN.md, Numerics). Outputs come back in
    the input's dtype, so the surrounding network still runs in bf16."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = next((t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), None)
        with torch.autocast(device_type=first.device.type if first is not None else "cpu", enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def compute_dtype(*tensors: Optional[torch.Tensor]) -> torch.dtype:
    """float64 if any input is float64, else float32: decays and states never run in bf16/fp16
    (DESIGN.md, Numerics: bf16 rounds exp(dt A) = 0.999 to 1.0)."""
    for t in tensors:
        if t is not None and t.dtype == torch.float64:
            return torch.float64
    return torch.float32


def prepare_dt(dt: torch.Tensor, bias: Optional[torch.Tensor], softplus: bool, dtype: torch.dtype) -> torch.Tensor:
    """dt <- softplus(dt + bias) as in Mamba's reference ``selective_scan_ref`` (delta_bias, delta_softplus)."""
    dt = dt.to(dtype)
    if bias is not None:
        dt = dt + bias.to(dtype)
    if softplus:
        dt = F.softplus(dt)
    return dt


def expand_groups(M: torch.Tensor, channels: int) -> torch.Tensor:
    """(b, l, n) -> (b, l, 1, n) (shared by all channels) or (b, l, g, n) -> (b, l, channels, n),
    channel c using group c // (channels // g) (Mamba-2's n_groups layout)."""
    if M.dim() == 3:
        return M[:, :, None, :]
    return M.repeat_interleave(channels // M.shape[2], dim=2)


def skip_and_gate(y: torch.Tensor, x: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor]) -> torch.Tensor:
    """y + D * x, then y * silu(z) (Mamba's reference epilogue). D broadcasts over the last dims of x."""
    if D is not None:
        y = y + x * D.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def check_bc(name: str, M, batch: int, length: int, channels: int, n: Optional[int]) -> int:
    """B or C: (b, l, n) or grouped (b, l, g, n) with channels % g == 0. Returns n."""
    if not isinstance(M, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape (batch, length, n) or (batch, length, groups, n)")
    ok = M.dim() in (3, 4) and tuple(M.shape[:2]) == (batch, length)
    if ok and n is not None:
        ok = M.shape[-1] == n
    if ok and M.dim() == 4:
        ok = M.shape[2] >= 1 and channels % M.shape[2] == 0
    if not ok:
        want_n = "n" if n is None else n
        raise ValueError(
            f"{name} must have shape (batch, length, n)=({batch}, {length}, {want_n}) or (batch, length, groups, n) "
            f"with groups dividing {channels}; got {_shape(M)}"
        )
    return M.shape[-1]


def check_reset(reset, batch: int, length: int) -> None:
    if reset is None:
        return
    if not isinstance(reset, torch.Tensor) or tuple(reset.shape) != (batch, length):
        raise ValueError(f"reset must have shape (batch, length)=({batch}, {length}); got {_shape(reset)}")
    if reset.dtype != torch.bool:
        raise TypeError(f"reset must be a bool tensor; got dtype {reset.dtype}")


def check_selective_inputs(u, delta, A, B, C, D, z, delta_bias, h0, reset) -> None:
    """Shapes/dtypes only (no device sync). See :func:`torchssm.ops.selective.selective_scan`."""
    if not isinstance(u, torch.Tensor) or u.dim() != 3:
        raise ValueError(f"u must have shape (batch, length, d); got {_shape(u)}")
    b, l, d = u.shape
    if l == 0:
        raise ValueError("u is an empty sequence (length 0); expected shape (batch, length>=1, d)")
    if not u.is_floating_point():
        raise TypeError(f"u must be a floating-point tensor; got dtype {u.dtype}")
    if not isinstance(delta, torch.Tensor) or tuple(delta.shape) != (b, l, d):
        raise ValueError(f"delta must have shape (batch, length, d)=({b}, {l}, {d}); got {_shape(delta)}")
    if not isinstance(A, torch.Tensor) or A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must have shape (d, n)=({d}, n); got {_shape(A)}")
    if A.is_complex():
        raise TypeError("A must be real (Mamba's S6 uses a real diagonal A)")
    n = A.shape[1]
    check_bc("B", B, b, l, d, n)
    check_bc("C", C, b, l, d, n)
    for name, t, shape in (("D", D, (d,)), ("delta_bias", delta_bias, (d,)), ("z", z, (b, l, d)), ("h0", h0, (b, d, n))):
        if t is not None and (not isinstance(t, torch.Tensor) or tuple(t.shape) != shape):
            raise ValueError(f"{name} must have shape {shape}; got {_shape(t)}")
    check_reset(reset, b, l)


def prepare_selective(u, delta, A, B, C, delta_bias, delta_softplus, h0):
    """Discretisation inputs shared by the reference and the chunked scan, in the compute dtype:
    dt (b, l, d), u (b, l, d), B and C expanded to (b, l, d or 1, n), A (d, n), h0 or None."""
    d = u.shape[2]
    dtype = compute_dtype(u, delta, A, B, C, h0)
    dt = prepare_dt(delta, delta_bias, delta_softplus, dtype)  # (b, l, d)
    Bx = expand_groups(B.to(dtype), d)  # (b, l, d or 1, n)
    Cx = expand_groups(C.to(dtype), d)  # (b, l, d or 1, n)
    return dt, u.to(dtype), Bx, Cx, A.to(dtype), None if h0 is None else h0.to(dtype)


def reset_from_cu_seqlens(cu_seqlens: torch.Tensor, length: Optional[int] = None) -> torch.Tensor:
    """Packed sequences as in flash-attention / mamba_ssm (``cu_seqlens`` = (0, l_1, l_1 + l_2, ..., total))
    -> the (1, total) bool ``reset`` mask every op and layer here takes (true where a sequence starts)."""
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError("cu_seqlens must be a 1-D tensor (0, l_1, l_1 + l_2, ..., total) with at least 2 entries")
    total = int(cu_seqlens[-1]) if length is None else length
    reset = torch.zeros(1, total, dtype=torch.bool, device=cu_seqlens.device)
    starts = cu_seqlens[:-1].long()
    reset[0, starts[starts < total]] = True
    return reset
