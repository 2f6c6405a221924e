"""Compiled CPU linear scan (numba): a sequential loop in time at memory bandwidth.

    h_t = a_t * h_{t-1} + b_t          (elementwise; h_{-1} = h0, or 0 where reset[:, t])

Why numba: the recurrence is memory bound (one multiply-add per element read), so the fastest
CPU algorithm is the plain sequential loop, compiled, parallel over independent (batch row,
channel block) jobs and vectorised over the contiguous channel axis D. numba compiles that loop
with no C/C++ build step at install time, native complex64/complex128 arithmetic, and an on-disk
compilation cache (``cache=True``), so a fresh process loads the machine code instead of
recompiling. One kernel covers every case (time-varying or time-invariant a, h0, reset, reverse):
the flags are runtime arguments, so there is one compilation per dtype, not one per combination.

Parallelism: the kernels are ``@njit(nogil=True)`` functions over a range of jobs; ``_launch``
splits the jobs over ``torch.get_num_threads()`` threads (a small thread pool, the calling thread
takes the first range). This is what ``@njit(parallel=True)`` with ``prange`` over the jobs would
do, without its costs: a second, slower compilation of every kernel (measured: cold first call
about twice as long) and the start-up of numba's own threading layer, which also competes with
PyTorch's OpenMP pool. Problems under ``PARALLEL_MIN_ELEMENTS`` run on the calling thread.

Also provides the fused backward (``linear_scan_backward``) used by ``function.py``: one reverse
pass that produces grad_b, grad_a and grad_h0 together (no shifted copies of a or h).
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from numba import njit

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)

# Channel block per parallel job: a multiple of the SIMD width, big enough to amortise the loop.
_MIN_BLOCK = 16


# The kernels index one-dimensional row views (``b_i[t, d0:d1]``) in their inner loops: LLVM then
# vectorises the loop over channels without per-element index arithmetic. Measured against direct
# 3-D indexing: forward ~3x faster (float32) and ~2x (complex64) at (1, 16384, 16); backward ~6x
# (float32) and ~2.7x (complex64) at (2, 4096, 256), though ~2x slower at (1, 16384, 16), where
# the per-step cost of the row views is not amortised over only 16 channels.


@njit(cache=True, nogil=True)
def _fwd_jobs(a, b, h0, reset, out, a_varies, reverse, has_reset, block, job0, job1):  # type: ignore[no-untyped-def]  # pragma: no cover
    # Jobs job0..job1-1; job = (batch row i, channels d0:d1), all of time, sequential.
    # a: (B, L, D) if a_varies else (1, 1, D); b, out: (B, L, D); h0: (B, D); reset: (B, L) or (1, 1)
    length, dim = b.shape[1], b.shape[2]
    n_blocks = (dim + block - 1) // block
    h = np.empty(block, dtype=out.dtype)  # running state of one job's channels
    for job in range(job0, job1):
        i = job // n_blocks
        d0 = (job % n_blocks) * block
        d1 = min(d0 + block, dim)
        n = d1 - d0
        h[:n] = h0[i, d0:d1]
        a_i, b_i, out_i = a[i if a_varies else 0], b[i], out[i]  # (L or 1, D) each
        for s in range(length):
            t = length - 1 - s if reverse else s
            if has_reset and reset[i, t]:
                h[:n] = 0
            a_row = a_i[t if a_varies else 0, d0:d1]  # (n,)
            b_row, out_row = b_i[t, d0:d1], out_i[t, d0:d1]  # (n,)
            for k in range(n):
                v = a_row[k] * h[k] + b_row[k]
                h[k] = v
                out_row[k] = v


@njit(cache=True, nogil=True)
def _bwd_jobs(  # type: ignore[no-untyped-def]
    a,
    h,
    h0,
    g,
    reset,
    grad_b,
    grad_a,
    grad_h0,
    a_varies,
    reverse,
    has_reset,
    block,
    job0,
    job1,
):  # pragma: no cover
    # Reverse-time pass of the forward recurrence (for reverse=False; mirrored for reverse=True):
    #   delta_t = g_t + conj(a_{t+1}) delta_{t+1}   (the carry is cut where reset[t+1])
    #   grad_b_t = delta_t,  grad_a_t = delta_t conj(h_{t-1}),  grad_h0 = conj(a_0) delta_0
    # grad_a: (B, L, D) if a_varies else per-batch sums (B, 1, D), reduced over batch by the caller.
    # One inner loop serves both kinds of a (a loop per kind in one function defeats LLVM's
    # vectoriser): a time-invariant a writes its per-step grad_a row into a scratch row summed
    # into ``acc``.
    length, dim = g.shape[1], g.shape[2]
    n_blocks = (dim + block - 1) // block
    carry = np.empty(block, dtype=g.dtype)  # conj(a_{t+1}) delta_{t+1}
    acc = np.empty(block, dtype=g.dtype)  # sum_t delta_t conj(h_{t-1}) for time-invariant a
    scratch = np.empty((1, block), dtype=g.dtype)  # grad_a row of a time-invariant a
    for job in range(job0, job1):
        i = job // n_blocks
        d0 = (job % n_blocks) * block
        d1 = min(d0 + block, dim)
        n = d1 - d0
        carry[:n] = 0
        acc[:n] = 0
        a_i, h_i, g_i, gb_i = a[i if a_varies else 0], h[i], g[i], grad_b[i]  # (L or 1, D) each
        ga_i = grad_a[i] if a_varies else scratch  # (L, D) or (1, block)
        c0 = d0 if a_varies else 0
        for s in range(length):
            t = s if reverse else length - 1 - s  # walk against the forward direction
            g_row, gb_row = g_i[t, d0:d1], gb_i[t, d0:d1]  # (n,)
            ga_row = ga_i[t if a_varies else 0, c0 : c0 + n]  # (n,)
            if has_reset and reset[i, t]:  # h_t does not depend on h_{t-1}: no grad_a, carry cut
                for k in range(n):
                    gb_row[k] = g_row[k] + carry[k]
                    carry[k] = 0
                    ga_row[k] = 0
                continue
            a_row = a_i[t if a_varies else 0, d0:d1]  # (n,)
            if s == length - 1:  # first step of the forward recurrence: h_{-1} = h0
                hp_row = h0[i, d0:d1]
            else:
                hp_row = h_i[t + 1 if reverse else t - 1, d0:d1]
            for k in range(n):
                delta = g_row[k] + carry[k]
                gb_row[k] = delta
                ga_row[k] = delta * np.conj(hp_row[k])
                carry[k] = np.conj(a_row[k]) * delta
            if not a_varies:
                for k in range(n):
                    acc[k] += ga_row[k]
        grad_h0[i, d0:d1] = carry[:n]
        if not a_varies:
            grad_a[i, 0, d0:d1] = acc[:n]


# Below this many elements (B * L * D) one thread runs all jobs: handing work to other threads
# costs more than the work there (and much more on a busy machine).
PARALLEL_MIN_ELEMENTS = 1 << 16

_pool: ThreadPoolExecutor | None = None  # worker threads (the calling thread works too)
_pool_size = 0


def _threads() -> int:
    """Threads for the scan: PyTorch's intra-op setting (torch.set_num_threads) is the one knob."""
    return max(1, torch.get_num_threads())


def _block_size(batch: int, dim: int, threads: int) -> int:
    """Channels per job: all of D when the batch alone keeps every thread busy, else D split in
    blocks that are multiples of 16 (the SIMD width) so that there are about 2 jobs per thread."""
    if batch >= 2 * threads:
        return max(dim, 1)
    block = math.ceil(dim / math.ceil(2 * threads / batch))
    return min(max(_MIN_BLOCK, -(-block // _MIN_BLOCK) * _MIN_BLOCK), max(dim, 1))


def run_jobs(kernel: Any, args: tuple[Any, ...], n_jobs: int, parallel: bool = True) -> None:
    """Run ``kernel(*args, job0, job1)`` over the jobs ``range(n_jobs)`` (a ``nogil`` numba kernel).

    With ``parallel`` and more than one thread (``torch.get_num_threads()``), the job ranges are shared
    by a small thread pool plus the calling thread; else the calling thread runs all of them. Shared by
    the compiled CPU kernels of the other ops (the fused selective scan), so there is one pool.
    """
    global _pool, _pool_size
    workers = min(_threads(), n_jobs) if parallel else 1
    if workers <= 1:
        kernel(*args, 0, n_jobs)
        return
    if _pool is None or _pool_size < workers - 1:
        _pool = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="torchssm-scan")
        _pool_size = workers - 1
    # Dynamic balancing: every thread takes the next range of jobs from one shared counter (next()
    # on itertools.count is atomic under the GIL), so a thread that the OS delays on a busy machine
    # does not hold the others up as a static split would.
    chunk = max(1, n_jobs // (4 * workers))
    starts = itertools.count(0, chunk)

    def work() -> None:
        for j0 in starts:
            if j0 >= n_jobs:
                return
            kernel(*args, j0, min(j0 + chunk, n_jobs))

    futures = [_pool.submit(work) for _ in range(workers - 1)]
    work()
    for f in futures:
        f.result()


def _launch(kernel: Any, args: tuple[Any, ...], batch: int, length: int, dim: int) -> None:
    """Run ``kernel(*args, block, job0, job1)`` over all (batch row, channel block) jobs.

    The kernels are compiled with ``nogil=True``, so job ranges run truly in parallel on a thread
    pool plus the calling thread (:func:`run_jobs`): no numba threading layer to start and no separate
    parallel compilation, so the first call compiles one small function per dtype.
    """
    threads = _threads()
    if threads == 1 or batch * length * dim < PARALLEL_MIN_ELEMENTS:
        run_jobs(kernel, args + (max(dim, 1),), batch, parallel=False)
        return
    block = _block_size(batch, dim, threads)
    run_jobs(kernel, args + (block,), batch * -(-dim // block))


def _np(t: torch.Tensor) -> np.ndarray:
    """Zero-copy numpy view of a CPU tensor (contiguous, no lazy conj/neg bits, no autograd).

    Each step runs only when needed: a per-call fixed cost that matters for narrow scans."""
    if t.requires_grad:
        t = t.detach()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    if not t.is_contiguous():
        t = t.contiguous()
    return t.numpy()


_NO_RESET = np.zeros((1, 1), dtype=np.bool_)  # the kernels' reset argument when there is none


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in SUPPORTED_DTYPES:
        return dtype
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32  # numba has no half types: compute in float32, cast back
    raise TypeError(f"cpu scan backend supports {[str(d) for d in SUPPORTED_DTYPES]} (and half types); got {dtype}")


def _prepare(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None,
    reset: torch.Tensor | None,
) -> tuple[torch.dtype, torch.dtype, bool, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Common dtype (no autograd), a as (Ba, La, D), dummy h0/reset when absent."""
    if b.device.type != "cpu":
        raise ValueError(f"cpu scan backend needs CPU tensors; got b on {b.device} (use backend='auto')")
    result = torch.promote_types(a.dtype, b.dtype)
    result = result if h0 is None else torch.promote_types(result, h0.dtype)
    dtype = _compute_dtype(result)
    batch, length, dim = b.shape
    a_varies = a.dim() == 3
    a3 = a.reshape(1, 1, dim) if not a_varies else a  # (B, L, D) or (1, 1, D)
    h0 = b.new_zeros(batch, dim, dtype=dtype) if h0 is None else h0
    has_reset = reset is not None
    mask = _np(reset) if reset is not None else _NO_RESET
    return result, dtype, a_varies, _np(a3.to(dtype)), _np(h0.to(dtype)), mask, has_reset


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
    Returns h (B, L, D) in the promoted dtype of (a, b, h0).
    """
    result, dtype, a_varies, a_np, h0_np, reset_np, has_reset = _prepare(a, b, h0, reset)
    batch, length, dim = b.shape
    b_c = b.to(dtype)
    out = torch.empty((batch, length, dim), dtype=dtype)  # (B, L, D)
    _launch(_fwd_jobs, (a_np, _np(b_c), h0_np, reset_np, out.numpy(), a_varies, reverse, has_reset), batch, length, dim)
    return out.to(result)


def linear_scan_backward(
    a: torch.Tensor,
    h: torch.Tensor,
    h0: torch.Tensor | None,
    grad_h: torch.Tensor,
    *,
    reverse: bool = False,
    reset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused gradients of h = linear_scan(a, b, h0) given dL/dh (conjugate-Wirtinger, as autograd).

    a, h, h0, grad_h share one dtype. Returns (grad_a shaped like a, grad_b (B, L, D), grad_h0 (B, D)).
    """
    result, dtype, a_varies, a_np, h0_np, reset_np, has_reset = _prepare(a, grad_h, h0, reset)
    batch, length, dim = grad_h.shape
    grad_b = torch.empty((batch, length, dim), dtype=dtype)  # (B, L, D)
    grad_a = torch.empty((batch, length if a_varies else 1, dim), dtype=dtype)  # (B, L or 1, D)
    grad_h0 = torch.empty((batch, dim), dtype=dtype)  # (B, D)
    _launch(
        _bwd_jobs,
        (
            a_np,
            _np(h.to(dtype)),
            h0_np,
            _np(grad_h.to(dtype)),
            reset_np,
            grad_b.numpy(),
            grad_a.numpy(),
            grad_h0.numpy(),
            a_varies,
            reverse,
            has_reset,
        ),
        batch,
        length,
        dim,
    )
    if not a_varies:
        grad_a = grad_a.sum((0, 1))  # (D,)
    return grad_a.to(result), grad_b.to(result), grad_h0.to(result)
