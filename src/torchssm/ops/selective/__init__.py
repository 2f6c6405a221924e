"""Mamba's selective scan (S6): input-dependent dt (per channel), B and C (shared or grouped).

``selective_scan(..., backend=...)`` runs, as chosen by :func:`torchssm.ops.backend.choose_backend`
(the one dispatcher; its table gives "auto"):
    "naive"          the reference loop (:func:`selective_scan_naive`);
    "chunked"        :func:`selective_scan_chunked` (its inner diagonal scan is ``linear_scan`` "auto");
    "cpu"            the fused numba kernel (:func:`torchssm.ops.selective.cpu.selective_scan_cpu`):
                     float32 vectorised with polynomial exp/softplus, states checkpointed per chunk
                     (1/6 of the chunked op's autograd memory in float32); in float32 1.4-2.3x faster
                     than "chunked" forward+backward, in float64 (libm exp) 1.2-1.3x slower, so
                     "auto" takes it for float32 compute only;
    "gpu"            the fused Triton kernels (:func:`torchssm.ops.selective.gpu.selective_scan_gpu`).
"""

from __future__ import annotations

import torch

from torchssm.ops.backend import choose_backend, load_kernel
from torchssm.ops.common import ScanResult
from torchssm.ops.selective.chunked import selective_scan_chunked
from torchssm.ops.selective.common import compute_dtype, reset_from_cu_seqlens
from torchssm.ops.selective.naive import selective_scan_naive


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    h0: torch.Tensor | None = None,
    *,
    return_final_state: bool = False,
    reset: torch.Tensor | None = None,
    chunk_size: int = 64,
    backend: str = "auto",
) -> ScanResult:
    """Selective scan y = S6(u; delta, A, B, C) + D u, gated by silu(z) (see ``naive.py`` for the math).

    Args:
        u: (b, l, d) input.  delta: (b, l, d) raw step sizes (before ``delta_bias``/softplus).
        A: (d, n) real, negative for stability (Mamba: A = -exp(A_log)).
        B, C: (b, l, n), or grouped (b, l, g, n) with g dividing d.
        D: (d,) skip.  z: (b, l, d) gate.  delta_bias: (d,).  delta_softplus: apply softplus to dt.
        h0: (b, d, n) initial state.  reset: bool (b, l), zero the state before step t.
        return_final_state: also return the last state (b, d, n).
        chunk_size: time chunk of the chunked backend (the checkpoint interval of "cpu").
        backend: "auto" | "naive" | "chunked" | "cpu" | "gpu" (module docstring).
    """
    chosen = choose_backend("selective_scan", backend, u, dtype=compute_dtype(u, delta, A, B, C, h0))
    if chosen == "naive":
        fn = selective_scan_naive
    elif chosen == "chunked":
        fn = selective_scan_chunked  # with linear_scan's own choice for the inner scan
    else:
        fn = load_kernel("selective_scan", chosen)
    return fn(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        delta_softplus,
        h0,
        return_final_state=return_final_state,
        reset=reset,
        chunk_size=chunk_size,
    )


__all__ = ["reset_from_cu_seqlens", "selective_scan", "selective_scan_chunked", "selective_scan_naive"]
