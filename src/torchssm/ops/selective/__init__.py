"""Mamba's selective scan (S6): input-dependent dt (per channel), B and C (shared or grouped).

``selective_scan(...)`` dispatches:
    "naive"          the reference loop (:func:`selective_scan_naive`);
    "cpu"            the fused numba kernel (:func:`torchssm.ops.selective.cpu.selective_scan_cpu`);
    "chunked", "gpu" :func:`selective_scan_chunked`, whose inner diagonal scan is ``linear_scan`` with
                     that backend (plain PyTorch, or the Triton scan on CUDA);
    "auto"           "cpu" for CPU tensors when numba imports, else the chunked op with ``linear_scan``'s
                     own "auto" choice.
"""

from __future__ import annotations

from typing import Optional

import torch

from torchssm.ops.selective.chunked import selective_scan_chunked
from torchssm.ops.selective.common import reset_from_cu_seqlens
from torchssm.ops.selective.naive import selective_scan_naive


def _fused_cpu():
    """The fused CPU kernel, or None without numba (imported on first use: numba is slow to import)."""
    try:
        from torchssm.ops.selective.cpu import selective_scan_cpu
    except ImportError:
        return None
    return selective_scan_cpu


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
        chunk_size: time chunk of the chunked backend.  backend: "auto" | "naive" | "chunked" | "cpu" | "gpu".
    """
    if backend == "auto" and u.device.type == "cpu" and _fused_cpu() is not None:
        backend = "cpu"
    if backend == "cpu":
        fused = _fused_cpu()
        if fused is None:
            raise ImportError("backend='cpu' needs numba (pip install numba)")
        return fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0,
                     return_final_state=return_final_state, reset=reset, chunk_size=chunk_size)
    if backend == "naive":
        return selective_scan_naive(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0,
                                    return_final_state=return_final_state, reset=reset, chunk_size=chunk_size)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0,
                                  return_final_state=return_final_state, reset=reset, chunk_size=chunk_size,
                                  scan_backend=backend)


__all__ = ["reset_from_cu_seqlens", "selective_scan", "selective_scan_chunked", "selective_scan_naive"]
