"""Parallel linear scan in plain PyTorch (any device: CPU, CUDA without Triton, MPS).

    h_t = a_t * h_{t-1} + b_t          (elementwise; h_{-1} = h0, or 0 where reset[:, t])

Algorithm (chunked, log-depth, no division):

1. Fold the extras into the coefficients: a reset at step t is a_t := 0; the initial state
   enters as b_0 += a_0 * h0. ``reverse`` flips the time axis.
2. Split L into chunks of ``CHUNK`` steps and run a Hillis-Steele scan *inside* every chunk on
   the pairs (A, H) with the associative operator (A1, H1) o (A2, H2) = (A1 A2, A2 H1 + H2):
   log2(CHUNK) elementwise passes. Afterwards A[c, i] = a_{c,0} ... a_{c,i} and H[c, i] is the
   chunk-local state (started from 0).
3. The chunk end states satisfy the same recurrence one level up, S_c = A[c, -1] S_{c-1} + H[c, -1],
   which is solved by a recursive call (L / CHUNK steps, then L / CHUNK^2, ...).
4. Fix-up: h[c, i] = H[c, i] + A[c, i] * S_{c-1}.

Only products and sums of the given coefficients are formed, never a quotient by a cumulative
product, so |a| close to 1 or exactly 0 and L = 16384 are safe: products that underflow to 0 are
exactly what they should be. Work is O(L log CHUNK), depth O(log L).
"""

from __future__ import annotations

import torch

CHUNK = 32  # steps per chunk: log2(32) = 5 elementwise passes per level


def _hillis_steele_(A: torch.Tensor, H: torch.Tensor, *, keep_products: bool) -> None:
    """In-place inclusive scan along dim -2 of (..., T, D) pairs: H_t += A_t H_{t-k}, A_t *= A_{t-k}.

    With ``keep_products`` A ends as the full cumulative product; otherwise the last (unread)
    update of A is skipped.
    """
    length = H.shape[-2]
    k = 1
    while k < length:
        # The right-hand sides are materialised before the in-place copy, so the overlap is safe.
        H[..., k:, :] += A[..., k:, :] * H[..., :-k, :]
        if keep_products or 2 * k < length:
            A[..., k:, :] = A[..., k:, :] * A[..., :-k, :]
        k *= 2


def _scan_full(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h for a (B, L, D), b (B, L, D) of one dtype, zero initial state, forward in time."""
    batch, length, dim = b.shape
    if length <= CHUNK:
        A, H = a.clone(), b.clone()
        _hillis_steele_(A, H, keep_products=False)
        return H
    n_chunks = -(-length // CHUNK)
    pad = n_chunks * CHUNK - length
    if pad:  # padded steps come after the real ones, so they cannot influence them
        a = torch.cat([a, a.new_zeros(batch, pad, dim)], dim=1)
        b = torch.cat([b, b.new_zeros(batch, pad, dim)], dim=1)
    A = a.reshape(batch, n_chunks, CHUNK, dim).clone()  # (B, C, T, D)
    H = b.reshape(batch, n_chunks, CHUNK, dim).clone()  # (B, C, T, D)
    _hillis_steele_(A, H, keep_products=True)
    # State at the end of every chunk: S_c = A[c, -1] S_{c-1} + H[c, -1]   (B, C, D)
    S = _scan_full(A[:, :, -1].contiguous(), H[:, :, -1].contiguous())
    H[:, 1:] += A[:, 1:] * S[:, :-1, None, :]
    return H.reshape(batch, n_chunks * CHUNK, dim)[:, :length]


def linear_scan_forward(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    reset: torch.Tensor | None = None,
) -> torch.Tensor:
    """Backend primitive (no autograd of its own): same signature and result as ``linear_scan_naive``.

    a: (B, L, D) or (D,); b: (B, L, D); h0: (B, D) or None; reset: bool (B, L) or None.
    a, b (and h0) must share one dtype (``function.py`` promotes). Returns h (B, L, D).
    """
    batch, length, dim = b.shape
    a = a.expand(batch, length, dim)  # (B, L, D), a view for time-invariant a
    if reverse:
        a, b = a.flip(1), b.flip(1)
        reset = reset.flip(1) if reset is not None else None
    if reset is not None:
        a = a.masked_fill(reset[:, :, None], 0)
    if h0 is not None:
        b = b.clone()
        b[:, 0] += a[:, 0] * h0
    h = _scan_full(a, b)
    return h.flip(1) if reverse else h.contiguous()
