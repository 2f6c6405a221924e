"""The LRU recurrence as an op: Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences" (ICML), eq. (6)-(7) and Sec. 3.3 (the stable exponential parameterisation):

    lambda = exp(-exp(nu_log) + i exp(theta_log))        (N,) complex, |lambda| < 1
    x_t    = lambda * x_{t-1} + bu_t                      (B, L, N) complex; x_{-1} = h0 (0 where reset)

    lru_scan(nu_log, theta_log, bu, h0=None, *, reverse=False, reset=None, backend="auto")
    lru_scan_reference(nu_log, theta_log, bu, h0=None, *, reverse=False, reset=None)

``bu`` is the layer's input term gamma * (B u_t): the normalisation gamma = exp(gamma_log) is folded
into the (N, H) matrix B by the caller (one (N, H) product instead of a (B, L, N) one, forward and
backward: 31 vs 49 ms per LRU fwd+bwd at B=16, L=1024, H=N=64 on one CPU thread).

``lru_lambda`` is the one place lambda is built (the layer's ``step`` and ``eigenvalues``, the
reference, and the chain rule of the fused Triton backward all call it). Backends (chosen by
:func:`torchssm.ops.backend.choose_backend`, op "lru_scan"): "gpu" is the fused Triton scan
(:func:`torchssm.ops.scan.gpu.lru_scan`: lambda built in-kernel from nu_log and theta_log, forward
and backward; its in-kernel gamma is 1 here); "naive", "chunked" and "cpu" build lambda here and run
:func:`torchssm.ops.linear_scan` with that backend.
"""

from __future__ import annotations

import torch

from torchssm.ops.backend import choose_backend, load_kernel
from torchssm.ops.scan.api import check_scan_inputs, linear_scan
from torchssm.ops.scan.naive import linear_scan_naive


def lru_lambda(nu_log: torch.Tensor, theta_log: torch.Tensor) -> torch.Tensor:
    """lambda (N,) complex = exp(-exp(nu_log) + i exp(theta_log)) (Orvieto et al. 2023, Sec. 3.3)."""
    return torch.exp(torch.complex(-torch.exp(nu_log), torch.exp(theta_log)))


def check_lru_inputs(bu: torch.Tensor, **params: torch.Tensor) -> None:
    """Shape checks of the LRU scan: bu (B, L, N) and each named parameter (nu_log, ...) (N,) real."""
    if not isinstance(bu, torch.Tensor) or bu.dim() != 3:
        raise ValueError(f"bu must have shape (batch, length, N); got {getattr(bu, 'shape', type(bu))}")
    n = bu.shape[-1]
    for name, p in params.items():
        if not isinstance(p, torch.Tensor) or tuple(p.shape) != (n,):
            raise ValueError(f"{name} must have shape (N,)=({n},); got {getattr(p, 'shape', type(p))}")
        if p.is_complex() or not p.is_floating_point():
            raise TypeError(f"{name} must be a real floating-point tensor; got {p.dtype}")


def lru_scan_reference(
    nu_log: torch.Tensor,
    theta_log: torch.Tensor,
    bu: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    reset: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain PyTorch reference of :func:`lru_scan` (same signature; any dtype, autograd): the loop."""
    check_lru_inputs(bu, nu_log=nu_log, theta_log=theta_log)
    check_scan_inputs(nu_log, bu, h0, reset)
    return linear_scan_naive(lru_lambda(nu_log, theta_log), bu, h0, reverse=reverse, reset=reset)


def lru_scan(
    nu_log: torch.Tensor,
    theta_log: torch.Tensor,
    bu: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    reset: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """x_t = lambda x_{t-1} + bu_t with lambda from (nu_log, theta_log) (module docstring), differentiable
    in every input.

    Args:
        nu_log, theta_log: (N,) real parameters of lambda.
        bu: (B, L, N) complex input gamma * (B u) (gamma folded into B by the caller).
        h0: (B, N) complex initial state or None (zero).
        reverse: run from the end of the sequence.  reset: bool (B, L), zero the state before step t.
        backend: "auto" | "naive" | "chunked" | "cpu" | "gpu" (see :mod:`torchssm.ops.backend`).
    Returns:
        x: (B, L, N) complex.
    """
    check_lru_inputs(bu, nu_log=nu_log, theta_log=theta_log)
    chosen = choose_backend("lru_scan", backend, bu)
    if chosen == "gpu":  # the fused kernel scales bu by exp(gamma_log) in-kernel: gamma = 1 here
        fused = load_kernel("lru_scan", "gpu")
        return fused(nu_log, theta_log, torch.zeros_like(nu_log), bu, h0, reverse=reverse, reset=reset)
    if chosen == "naive":
        return lru_scan_reference(nu_log, theta_log, bu, h0, reverse=reverse, reset=reset)
    return linear_scan(lru_lambda(nu_log, theta_log), bu, h0, reverse=reverse, reset=reset, backend=chosen)


__all__ = ["check_lru_inputs", "lru_lambda", "lru_scan", "lru_scan_reference"]
