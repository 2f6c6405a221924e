"""Mamba-2's state-space duality (SSD): scalar-times-identity A per head, grouped B/C.

``ssd(...)`` dispatches: ``backend="naive"`` runs the recurrence (:func:`ssd_naive`); "gpu" the
Triton kernels, of the recurrent form (``method="recurrent"``, the default:
:func:`torchssm.ops.ssd.gpu.ssd_gpu`) or of the chunked matmul form (``method="chunked"``:
:func:`torchssm.ops.ssd.gpu_chunked.ssd_chunked_gpu`, Triton forward and backward);
"chunked" and "cpu" the chunked matmul algorithm (:func:`ssd_chunked`, plain PyTorch, any device);
"auto" is "gpu" for CUDA tensors (not float64) when Triton imports, else "chunked".
"""

from __future__ import annotations

from typing import Optional

import torch

from torchssm.ops.backend import check_backend_name
from torchssm.ops.selective import _fused_gpu, auto_backend
from torchssm.ops.ssd.chunked import segsum, ssd_chunked
from torchssm.ops.ssd.naive import ssd_naive

_METHODS = ("auto", "recurrent", "chunked")


def ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    dt_bias: Optional[torch.Tensor] = None,
    dt_softplus: bool = False,
    h0: Optional[torch.Tensor] = None,
    *,
    return_final_state: bool = False,
    reset: Optional[torch.Tensor] = None,
    chunk_size: int = 64,
    backend: str = "auto",
    method: str = "auto",
):
    """SSD y = SSM(A, dt x, B, C) + D x, gated by silu(z) (math in ``naive.py``).

    Args:
        x: (b, l, h, p).  dt: (b, l, h) raw steps.  A: (h,) negative scalars (Mamba-2: -exp(A_log)).
        B, C: (b, l, g, n) with g dividing h.  D: (h,) or (h, p).  z: (b, l, h, p).  dt_bias: (h,).
        h0: (b, h, p, n).  reset: bool (b, l), zero the state before step t.
        chunk_size: chunk of the matmul algorithm (any value; L need not be a multiple).
        backend: "auto" | "naive" | "chunked" | "cpu" (= chunked) | "gpu".
        method: "auto" | "recurrent" | "chunked": the algorithm of the "gpu" backend ("auto" =
            "recurrent"); other backends have one form each ("naive" recurrent, "chunked"/"cpu"
            chunked) and accept "auto" or that form.
    """
    check_backend_name(backend)
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(map(repr, _METHODS))}")
    chosen = backend == "auto"
    if chosen:
        backend = auto_backend(x, None, "torchssm.ops.ssd.gpu")
    own = {"naive": "recurrent", "chunked": "chunked", "cpu": "chunked"}.get(backend)
    if own is not None and method not in ("auto", own):
        raise ValueError(f"backend={backend!r}{' (chosen by auto)' if chosen else ''} has only the {own} "
                         f"form; got method={method!r} (both forms exist for backend='gpu')")
    if backend == "gpu":
        if method == "chunked":
            fn = _fused_gpu("torchssm.ops.ssd.gpu_chunked", "ssd_chunked_gpu")
        else:
            fn = _fused_gpu("torchssm.ops.ssd.gpu", "ssd_gpu")
    else:
        fn = ssd_naive if backend == "naive" else ssd_chunked
    return fn(x, dt, A, B, C, D, z, dt_bias, dt_softplus, h0,
              return_final_state=return_final_state, reset=reset, chunk_size=chunk_size)


__all__ = ["segsum", "ssd", "ssd_chunked", "ssd_naive"]
