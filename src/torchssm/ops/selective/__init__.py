"""Mamba's selective scan (S6): input-dependent dt (per channel), B and C (shared or grouped).

``selective_scan(...)`` dispatches:
    "naive"          the reference loop (:func:`selective_scan_naive`);
    "cpu"            the fused numba kernel (:func:`torchssm.ops.selective.cpu.selective_scan_cpu`):
                     float32 vectorised with polynomial exp/softplus, states checkpointed per chunk
                     (1/6 of the chunked op's autograd memory in float32); in float32 1.4-2.3x faster
                     than "chunked" forward+backward, in float64 (libm exp) 1.2-1.3x slower;
    "gpu"            the fused Triton kernels (:func:`torchssm.ops.selective.gpu.selective_scan_gpu`);
    "chunked"        :func:`selective_scan_chunked` (its inner diagonal scan is ``linear_scan`` "auto");
    "auto"           "gpu" for CUDA tensors (not float64) when Triton imports; on CPU "cpu" when the
                     compute dtype is float32 (no float64 input; bf16/fp16 compute in float32) and numba
                     imports; else "chunked".
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from torchssm.ops.selective.chunked import selective_scan_chunked
from torchssm.ops.selective.common import compute_dtype, reset_from_cu_seqlens
from torchssm.ops.selective.naive import selective_scan_naive


def _fused_cpu():
    """The fused CPU kernel (imported on first use: numba is slow to import); ImportError without numba."""
    from torchssm.ops.selective.cpu import selective_scan_cpu

    return selective_scan_cpu


def _fused_gpu(module: str, name: str):
    """A fused Triton op (``module.name``); ImportError without Triton."""
    return getattr(importlib.import_module(module), name)


def auto_backend(x: torch.Tensor, cpu_loader, gpu_module: Optional[str]) -> str:
    """The "auto" choice of the selective ops for ``x``'s device and dtype (see the module docstring)."""
    if x.device.type == "cpu" and cpu_loader is not None:
        try:
            cpu_loader()
            return "cpu"
        except ImportError:
            return "chunked"
    if x.device.type == "cuda" and x.dtype != torch.float64 and gpu_module is not None:
        try:
            importlib.import_module(gpu_module)
            return "gpu"
        except ImportError:
            return "chunked"
    return "chunked"


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    h0: Optional[torch.Tensor] = None,
    *,
    return_final_state: bool = False,
    reset: Optional[torch.Tensor] = None,
    chunk_size: int = 64,
    backend: str = "auto",
):
    """Selective scan y = S6(u; delta, A, B, C) + D u, gated by silu(z) (see ``naive.py`` for the math).

    Args:
        u: (b, l, d) input.  delta: (b, l, d) raw step sizes (before ``delta_bias``/softplus).
        A: (d, n) real, negative for stability (Mamba: A = -exp(A_log)).
        B, C: (b, l, n), or grouped (b, l, g, n) with g dividing d.
        D: (d,) skip.  z: (b, l, d) gate.  delta_bias: (d,).  delta_softplus: apply softplus to dt.
        h0: (b, d, n) initial state.  reset: bool (b, l), zero the state before step t.
        return_final_state: also return the last state (b, d, n).
        chunk_size: time chunk of the chunked backend (the checkpoint interval of "cpu").
        backend: "auto" | "naive" | "chunked" | "cpu" | "gpu".
    """
    if backend == "auto":
        f32 = compute_dtype(u, delta, A, B, C, h0) == torch.float32  # the fused CPU kernel wins in float32 only
        backend = auto_backend(u, _fused_cpu if f32 else None, "torchssm.ops.selective.gpu")
    if backend in ("cpu", "gpu"):
        fused = _fused_cpu() if backend == "cpu" else _fused_gpu("torchssm.ops.selective.gpu", "selective_scan_gpu")
        return fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0,
                     return_final_state=return_final_state, reset=reset, chunk_size=chunk_size)
    if backend == "chunked":
        backend = "auto"  # the chunked op, with linear_scan's own choice for the inner scan
    if backend == "naive":
        return selective_scan_naive(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0,
                                    return_final_state=return_final_state, reset=reset, chunk_size=chunk_size)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0,
                                  return_final_state=return_final_state, reset=reset, chunk_size=chunk_size,
                                  scan_backend=backend)


__all__ = ["auto_backend", "reset_from_cu_seqlens", "selective_scan", "selective_scan_chunked", "selective_scan_naive"]
