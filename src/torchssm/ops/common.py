"""Pieces shared by the input-dependent SSM ops, the selective scan (Mamba's S6) and SSD (Mamba-2):
input checks, dt preparation, group expansion, the compute dtype, the D-skip / z-gate epilogue and
Mamba-2's gated RMS norm.

Symbols as in docs/architecture.md: b batch, l length, d channels, n state size per channel,
g groups of channels sharing B and C (SSD: nh heads of p channels each).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

ScanResult = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # y, or (y, final state)

F_ = TypeVar("F_", bound=Callable[..., Any])


def without_autocast(fn: F_) -> F_:
    """Run an op with autocast off: under ``torch.autocast`` the einsums/matmuls of SSD would otherwise
    run in bf16 and the decays exp(dt A) and states with them (docs/architecture.md, Numerics). Outputs come back in
    the input's dtype, so the surrounding network still runs in bf16."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        first = next((t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), None)
        with torch.autocast(device_type=first.device.type if first is not None else "cpu", enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 if any input is float64, else float32: decays and states never run in bf16/fp16
    (docs/architecture.md, Numerics: bf16 rounds exp(dt A) = 0.999 to 1.0)."""
    for t in tensors:
        if t is not None and t.dtype == torch.float64:
            return torch.float64
    return torch.float32


def prepare_dt(dt: torch.Tensor, bias: torch.Tensor | None, softplus: bool, dtype: torch.dtype) -> torch.Tensor:
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


def skip_and_gate(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    """y + D * x, then y * silu(z) (Mamba's reference epilogue). D broadcasts over the last dims of x."""
    if D is not None:
        y = y + x * D.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def rms_norm_gated(
    x: torch.Tensor,
    z: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    group_size: int,
    norm_before_gate: bool = False,
) -> torch.Tensor:
    """Gated RMSNorm of mamba_ssm (``mamba_ssm/ops/triton/layernorm_gated.py``, reference ``rms_norm_ref``),
    x, z (..., d), weight (d,):

        norm_before_gate=False:  out = rmsnorm(x * silu(z)) * weight
        norm_before_gate=True:   out = rmsnorm(x) * weight * silu(z)

    with the mean of squares over groups of ``group_size`` channels; computed in float32 (float64 for
    float64 x), returned in x's dtype."""
    dtype = x.dtype
    wd = torch.float64 if dtype == torch.float64 else torch.float32
    y = x.to(wd)
    if z is not None and not norm_before_gate:
        y = y * F.silu(z.to(wd))
    g = y.unflatten(-1, (-1, group_size))  # (..., groups, group_size)
    y = (g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)).flatten(-2) * weight.to(wd)
    if z is not None and norm_before_gate:
        y = y * F.silu(z.to(wd))
    return y.to(dtype)


def shape_str(t: object) -> str:
    """A tensor's shape as a tuple string, or the type name of a non-tensor (for error messages)."""
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def check_bc(name: str, M: object, batch: int, length: int, channels: int, n: int | None) -> int:
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
            f"with groups dividing {channels}; got {shape_str(M)}"
        )
    return M.shape[-1]


def check_reset(reset: torch.Tensor | None, batch: int, length: int) -> None:
    """reset: None or a bool (batch, length) tensor."""
    if reset is None:
        return
    if not isinstance(reset, torch.Tensor) or tuple(reset.shape) != (batch, length):
        raise ValueError(f"reset must have shape (batch, length)=({batch}, {length}); got {shape_str(reset)}")
    if reset.dtype != torch.bool:
        raise TypeError(f"reset must be a bool tensor; got dtype {reset.dtype}")


__all__ = [
    "check_bc",
    "check_reset",
    "compute_dtype",
    "expand_groups",
    "prepare_dt",
    "shape_str",
    "skip_and_gate",
    "without_autocast",
]
