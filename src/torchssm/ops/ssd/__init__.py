"""Mamba-2's state-space duality (SSD): scalar-times-identity A per head, grouped B/C.

``ssd(..., backend=...)`` runs, as chosen by :func:`torchssm.ops.backend.choose_backend` (the one
dispatcher; its table gives "auto"): "naive" the recurrence (:func:`ssd_naive`); "chunked" the
chunked matmul algorithm (:func:`ssd_chunked`, plain PyTorch, any device); "cpu" the fused numba
kernel of the recurrence, states checkpointed every ``chunk_size`` steps (:func:`torchssm.ops.ssd.cpu.ssd_cpu`,
the CPU "auto" choice); "gpu" the Triton kernels, of the recurrent form (``method="recurrent"``, the
default: :func:`torchssm.ops.ssd.gpu.ssd_gpu`) or of the chunked matmul form (``method="chunked"``:
:func:`torchssm.ops.ssd.gpu_chunked.ssd_chunked_gpu`, Triton forward and backward). On CPU,
``method="chunked"`` with backend "auto" runs "chunked".
``method="attention"`` is the quadratic masked-attention (dual) form, plain PyTorch on any device
(:func:`torchssm.ops.ssd.attention.ssd_attention`; docs/theory.md).
"""

from __future__ import annotations

import torch

from torchssm.ops.backend import check_backend_name, choose_backend, load_kernel
from torchssm.ops.common import ScanResult
from torchssm.ops.ssd.attention import ssd_attention
from torchssm.ops.ssd.chunked import segsum, ssd_chunked
from torchssm.ops.ssd.naive import ssd_naive

_METHODS = ("auto", "recurrent", "chunked", "attention")


def ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    h0: torch.Tensor | None = None,
    *,
    return_final_state: bool = False,
    reset: torch.Tensor | None = None,
    chunk_size: int = 64,
    backend: str = "auto",
    method: str = "auto",
) -> ScanResult:
    """SSD y = SSM(A, dt x, B, C) + D x, gated by silu(z) (math in ``naive.py``).

    Args:
        x: (b, l, h, p).  dt: (b, l, h) raw steps.  A: (h,) negative scalars (Mamba-2: -exp(A_log)).
        B, C: (b, l, g, n) with g dividing h.  D: (h,) or (h, p).  z: (b, l, h, p).  dt_bias: (h,).
        h0: (b, h, p, n).  reset: bool (b, l), zero the state before step t.
        chunk_size: chunk of the matmul algorithm, or the checkpoint interval of "cpu" (any value;
            L need not be a multiple).
        backend: "auto" | "naive" | "chunked" | "cpu" | "gpu" (module docstring).
        method: "auto" | "recurrent" | "chunked": the algorithm of the "gpu" backend ("auto" =
            "recurrent"); other backends have one form each ("naive" and "cpu" recurrent, "chunked"
            chunked) and accept "auto" or that form. "attention": the O(l^2) masked-attention form
            (:func:`ssd_attention`, plain PyTorch), with backend "auto" only.
    """
    check_backend_name(backend)
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(map(repr, _METHODS))}")
    if method == "attention":
        if backend != "auto":
            raise ValueError(f"method='attention' is plain PyTorch and takes backend='auto'; got backend={backend!r}")
        return ssd_attention(
            x,
            dt,
            A,
            B,
            C,
            D,
            z,
            dt_bias,
            dt_softplus,
            h0,
            return_final_state=return_final_state,
            reset=reset,
            chunk_size=chunk_size,
        )
    op = "ssd_chunked" if method == "chunked" else "ssd"  # the form of the "gpu" kernels
    chosen = choose_backend(op, backend, x)
    own = {"naive": "recurrent", "cpu": "recurrent", "chunked": "chunked"}.get(chosen)
    if own is not None and method not in ("auto", own):
        raise ValueError(
            f"backend={chosen!r}{' (chosen by auto)' if backend == 'auto' else ''} has only the "
            f"{own} form; got method={method!r} (both forms exist for backend='gpu')"
        )
    if chosen in ("cpu", "gpu"):
        fn = load_kernel(op, chosen)
    else:
        fn = ssd_naive if chosen == "naive" else ssd_chunked
    return fn(
        x,
        dt,
        A,
        B,
        C,
        D,
        z,
        dt_bias,
        dt_softplus,
        h0,
        return_final_state=return_final_state,
        reset=reset,
        chunk_size=chunk_size,
    )


__all__ = ["segsum", "ssd", "ssd_attention", "ssd_chunked", "ssd_naive"]
