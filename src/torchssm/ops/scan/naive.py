"""Reference linear recurrence: a plain Python loop over time, the ground truth for tests.

    h_t = a_t * h_{t-1} + b_t          (elementwise; h_{-1} = h0, or 0 where reset[:, t])

Shapes: b (B, L, D) real or complex; a (B, L, D) or (D,); h0 (B, D) or None; reset (B, L) bool
or None. Returns h (B, L, D). With ``reverse=True`` the recurrence runs from t = L-1 down to 0
(h_{L} = h0). Differentiable by autograd (it builds a graph of L steps: slow, tests only).
"""

from __future__ import annotations

import torch


def linear_scan_naive(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    reset: torch.Tensor | None = None,
) -> torch.Tensor:
    batch, length, dim = b.shape
    h = h0 if h0 is not None else b.new_zeros(batch, dim)
    # unbind (not a[:, t]): its backward stacks the L step gradients once, whereas the backward of
    # each a[:, t] would write into a fresh zero tensor of the full (B, L, D) shape (O(L^2) work).
    b_steps = b.unbind(1)  # L x (B, D)
    a_steps = a.unbind(1) if a.dim() == 3 else [a] * length  # L x (B, D), or the (D,) a broadcast
    reset_steps = reset.unbind(1) if reset is not None else None  # L x (B,)
    out: list[torch.Tensor] = [b_steps[0]] * length  # every entry is written below
    times = range(length - 1, -1, -1) if reverse else range(length)
    for t in times:
        if reset_steps is not None:
            h = torch.where(reset_steps[t][:, None], torch.zeros_like(h), h)
        h = a_steps[t] * h + b_steps[t]
        out[t] = h
    return torch.stack(out, dim=1)


# The backend primitive's name, shared by every backend module (chunked.py, cpu.py, gpu.py), so
# ``resolve_backend("naive", x).linear_scan_forward`` is this loop.
linear_scan_forward = linear_scan_naive
