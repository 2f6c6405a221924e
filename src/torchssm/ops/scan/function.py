"""Autograd for the linear scan: one ``torch.autograd.Function`` whose backward is itself a scan.

Forward (for ``reverse=False``; ``reverse=True`` mirrors time):

    h_t = a_t * h_{t-1} + b_t,    h_{-1} = h0 (or 0 where reset[:, t])

Backward, with g_t = dL/dh_t in PyTorch's conjugate-Wirtinger convention:

    delta_t  = g_t + conj(a_{t+1}) * delta_{t+1}      (a reverse scan; the carry is cut where reset[:, t+1])
    grad_b_t = delta_t
    grad_a_t = delta_t * conj(h_{t-1})                (summed over batch and time when a is (D,))
    grad_h0  = conj(a_0) * delta_0                    (0 where reset[:, 0])

So memory is O(B L D) (a, h and the gradients), no graph of L steps is built, and any backend
that implements the primitive ``linear_scan_forward`` trains. A backend may also provide a fused
``linear_scan_backward`` (cpu.py does); otherwise the composition below is used.

Both directions are ``torch.library`` custom ops (``torchssm::linear_scan_fwd`` and
``torchssm::linear_scan_bwd``) with fake (meta) implementations, so ``torch.compile`` sees one
opaque op per direction instead of tracing into numba or Triton.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from torchssm.ops.backend import resolve_backend


def _conj(x: torch.Tensor) -> torch.Tensor:
    # A materialised conjugate: lazy conj-bit views are not reliable inside an opaque custom op
    # called from a torch.compile graph (observed with torch 2.13 + aot_eager).
    return x.conj_physical() if x.is_complex() else x


def scan_backward_generic(
    scan_forward: Callable[..., torch.Tensor],
    a: torch.Tensor,
    h: torch.Tensor,
    h0: torch.Tensor | None,
    grad_h: torch.Tensor,
    *,
    reverse: bool = False,
    reset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (grad_a shaped like a, grad_b (B, L, D), grad_h0 (B, D)) from the primitive ``scan_forward``.

    a: (B, L, D) or (D,); h: forward output (B, L, D); h0: (B, D) or None; grad_h: (B, L, D); one dtype.
    """
    batch, length, dim = h.shape
    a_varies = a.dim() == 3
    a_conj = _conj(a)
    zero_step = h.new_zeros(batch, 1, dim)  # (B, 1, D)
    # The backward scan runs against the forward direction; its coefficient at t links delta_t to
    # the delta of the forward-next step: conj(a_{t+1}) (or conj(a_{t-1}) when reverse), cut by its reset.
    if a_varies:
        a_next = (
            torch.cat([zero_step, a_conj[:, :-1]], 1) if reverse else torch.cat([a_conj[:, 1:], zero_step], 1)
        )  # (B, L, D)
    else:
        a_next = a_conj  # (D,)
    reset_next = None
    if reset is not None:
        no_reset = reset.new_zeros(batch, 1)  # (B, 1)
        reset_next = (
            torch.cat([no_reset, reset[:, :-1]], 1) if reverse else torch.cat([reset[:, 1:], no_reset], 1)
        )  # (B, L)
    delta = scan_forward(a_next, grad_h, None, reverse=not reverse, reset=reset_next)  # (B, L, D)

    start = h.new_zeros(batch, dim) if h0 is None else h0  # (B, D)
    h_prev = (
        torch.cat([h[:, 1:], start[:, None]], 1) if reverse else torch.cat([start[:, None], h[:, :-1]], 1)
    )  # (B, L, D): h_{t-1} of the forward direction
    if reset is not None:
        h_prev = h_prev.masked_fill(reset[:, :, None], 0)
    grad_a = delta * _conj(h_prev)  # (B, L, D)
    if not a_varies:
        grad_a = grad_a.sum((0, 1))  # (D,)

    first = length - 1 if reverse else 0  # first step of the forward recurrence
    a_first = a[:, first] if a_varies else a  # (B, D) or (D,)
    grad_h0 = _conj(a_first) * delta[:, first]  # (B, D)
    if reset is not None:
        grad_h0 = grad_h0.masked_fill(reset[:, first, None], 0)
    return grad_a, delta, grad_h0


def _scan_fwd(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None,
    reset: torch.Tensor | None,
    reverse: bool,
    backend: str,
) -> torch.Tensor:
    """h (B, L, D) = backend primitive on inputs already promoted to one dtype and made contiguous."""
    return resolve_backend(backend, b).linear_scan_forward(a, b, h0, reverse=reverse, reset=reset)


linear_scan_fwd = torch.library.custom_op("torchssm::linear_scan_fwd", mutates_args=())(_scan_fwd)


@linear_scan_fwd.register_fake
def _(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None,
    reset: torch.Tensor | None,
    reverse: bool,
    backend: str,
) -> torch.Tensor:
    return torch.empty_like(b)  # (B, L, D)


def _scan_bwd(
    a: torch.Tensor,
    h: torch.Tensor,
    h0: torch.Tensor | None,
    grad_h: torch.Tensor,
    reset: torch.Tensor | None,
    reverse: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_a shaped like a, grad_b (B, L, D), grad_h0 (B, D)): the backend's fused backward if it has one."""
    module = resolve_backend(backend, grad_h)
    fused = getattr(module, "linear_scan_backward", None)
    if fused is not None:
        return fused(a, h, h0, grad_h, reverse=reverse, reset=reset)
    return scan_backward_generic(module.linear_scan_forward, a, h, h0, grad_h, reverse=reverse, reset=reset)


linear_scan_bwd = torch.library.custom_op("torchssm::linear_scan_bwd", mutates_args=())(_scan_bwd)


@linear_scan_bwd.register_fake
def _(
    a: torch.Tensor,
    h: torch.Tensor,
    h0: torch.Tensor | None,
    grad_h: torch.Tensor,
    reset: torch.Tensor | None,
    reverse: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(a), torch.empty_like(grad_h), grad_h.new_empty(grad_h.shape[0], grad_h.shape[2])


class LinearScanFunction(torch.autograd.Function):
    """h = linear_scan(a, b, h0) with a scan backward. Inputs: one dtype, contiguous (see ``scan``)."""

    @staticmethod
    def forward(
        ctx: Any,
        a: torch.Tensor,
        b: torch.Tensor,
        h0: torch.Tensor | None,
        reset: torch.Tensor | None,
        reverse: bool,  # type: ignore[override]
        backend: str,
    ) -> torch.Tensor:
        # Eager calls skip the custom op's dispatch (tens of microseconds per call, most of a narrow
        # scan's fixed cost); torch.compile traces the opaque custom op.
        fwd = linear_scan_fwd if torch.compiler.is_compiling() else _scan_fwd
        h = fwd(a, b, h0, reset, reverse, backend)  # (B, L, D)
        ctx.save_for_backward(a, h, h0, reset)
        ctx.reverse, ctx.backend = reverse, backend
        return h

    @staticmethod
    def backward(ctx: Any, grad_h: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        a, h, h0, reset = ctx.saved_tensors
        bwd = linear_scan_bwd if torch.compiler.is_compiling() else _scan_bwd
        grad_a, grad_b, grad_h0 = bwd(a, h, h0, grad_h.contiguous(), reset, ctx.reverse, ctx.backend)
        needs_a, needs_b, needs_h0 = ctx.needs_input_grad[:3]
        return (
            grad_a if needs_a else None,
            grad_b if needs_b else None,
            grad_h0 if needs_h0 else None,
            None,
            None,
            None,
        )


def scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    reset: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Differentiable scan through ``backend``: promotes (a, b, h0) to one dtype (e.g. real a with complex
    b gives a complex h, and a real grad_a), makes inputs contiguous, applies ``LinearScanFunction``."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    a = a.to(dtype).contiguous()  # (B, L, D) or (D,)
    b = b.to(dtype).contiguous()  # (B, L, D)
    h0 = h0.to(dtype).contiguous() if h0 is not None else None  # (B, D)
    reset = reset.contiguous() if reset is not None else None  # (B, L)
    return LinearScanFunction.apply(a, b, h0, reset, reverse, backend)
