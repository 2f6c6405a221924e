"""Fused Triton kernels of the linear scan (forward + backward), and the fused LRU scan (the "gpu"
backend of :func:`torchssm.ops.scan.lru.lru_scan`, whose reference is beside it in ``lru.py``).

    h_t = a_t * h_{t-1} + b_t       (elementwise over channels; h_{-1} = h0, zeroed where reset)

Same primitive as every scan backend (naive.py, chunked.py, cpu.py):

    linear_scan_forward(a, b, h0=None, *, reverse=False, reset=None, chunks=None) -> h
    linear_scan_backward(a, h, h0, grad_h, *, reverse=False, reset=None, chunks=None)
        -> (grad_a, grad_b, grad_h0)                 (the argument order of cpu.py / function.py)

Shapes: a (B, L, D) or (D,), b (B, L, D), h0 (B, D) or None, reset bool (B, L) or None,
h (B, L, D). Real (float32, bfloat16, float16) or complex64; the kernels compute and carry the
state in float32 (docs/architecture.md, Numerics: no bf16 complex exists and bf16 rounds 0.999 to 1.0).
The output dtype is ``promote(a, b, h0)`` like the naive reference; grad_x has x's dtype and
shape (grad_a of a (D,) is (D,), summed over batch and time; without h0, grad_h0 is the
gradient with respect to a zero initial state, in h's dtype). ``chunks`` splits the time axis
for narrow shapes (:func:`auto_chunks`; see docs/gpu.md).

Importing this module needs Triton (``pip install torchssm[gpu]``); it raises ImportError
otherwise. Tensors must be on CUDA, or on the CPU with ``TRITON_INTERPRET=1`` set before
Triton is first imported (the test suite does this; slow, for tests only).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

try:
    import triton
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("torchssm.ops.scan.gpu needs Triton: pip install 'torchssm[gpu]' (Linux + CUDA)") from err

from torchssm.ops.scan import _triton_kernels as K
from torchssm.ops.scan.api import check_scan_inputs
from torchssm.ops.scan.lru import check_lru_inputs, lru_lambda

__all__ = [
    "auto_chunks",
    "linear_scan_forward",
    "linear_scan_backward",
    "lru_scan",
    "INTERPRET",
]

# Decided when Triton decorates the kernels (on import), so read it once, here.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

_REAL = (torch.float32, torch.bfloat16, torch.float16)
_COMPLEX = (torch.complex64,)

# Fixed small tile under the interpreter (it runs the in-tile scan element by element, so padding
# costs time); autotuned on CUDA. Tiles are BLOCK_L time steps x BLOCK_D channels.
_INTERPRET_CONFIG = {"BLOCK_L": 16, "BLOCK_D": 8}
_CUDA_CONFIGS = [
    triton.Config({"BLOCK_L": bl, "BLOCK_D": bd}, num_warps=w)
    for bl, bd, w in [
        (16, 64, 2),
        (32, 32, 2),
        (32, 64, 4),
        (64, 32, 4),
        (32, 128, 4),
        (64, 64, 4),
        (64, 64, 8),
        (128, 32, 4),
        (64, 128, 8),
        (128, 64, 8),
    ]
]
# tuned per (power-of-two bucket of the chunk length, D, variant), not per exact L
_KEY = ["LB", "D", "A_MODE", "COMPLEX", "HAS_RESET", "REVERSE", "SUMMARY"]
_fwd_tuned = triton.autotune(configs=_CUDA_CONFIGS, key=_KEY)(K.scan_fwd_kernel)
_bwd_tuned = triton.autotune(configs=_CUDA_CONFIGS, key=_KEY)(K.scan_bwd_kernel)

# Sequence split: used when B * D / 64 programs are fewer than _SPLIT_TARGET_PER_SM per SM and
# L >= 2 _SPLIT_MIN_CHUNK, with chunks of at least _SPLIT_MIN_CHUNK steps. It reads a and b twice
# (5 tensor passes instead of 3), so it only pays where the plain grid leaves SMs idle.
_SPLIT_TARGET_PER_SM = 2
_SPLIT_MIN_CHUNK = 1024


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def auto_chunks(batch: int, length: int, dim: int, device: torch.device) -> int:
    """How many time chunks the sequence split uses for this shape (1: no split)."""
    if device.type != "cuda":
        return 1
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    programs = batch * triton.cdiv(dim, 64)
    want = triton.cdiv(_SPLIT_TARGET_PER_SM * sms, programs)
    return max(1, min(want, length // _SPLIT_MIN_CHUNK))


def _launch(kernel: Any, tuned: Any, batch: int, dim: int, chunks: int, *args: Any, **flags: Any) -> None:
    if INTERPRET:
        cfg = _INTERPRET_CONFIG
        kernel[(batch, triton.cdiv(dim, cfg["BLOCK_D"]), chunks)](*args, **flags, **cfg)
    else:
        tuned[lambda meta: (batch, triton.cdiv(dim, meta["BLOCK_D"]), chunks)](*args, **flags)


def _split(length: int, chunks: int | None, batch: int, dim: int, device: torch.device) -> tuple[int, int]:
    """(number of chunks, chunk length) for ``chunks`` (None: :func:`auto_chunks`)."""
    if chunks is None:
        chunks = auto_chunks(batch, length, dim, device)
    if not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunks must be a positive int or None; got {chunks!r}")
    cl = triton.cdiv(length, min(chunks, length))
    return triton.cdiv(length, cl), cl


def _summaries(
    batch: int, n_chunks: int, dim: int, complex_: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chunk maps h -> P h + E: (E, P), each (B, C, D) float32 or complex64."""
    dtype = torch.complex64 if complex_ else torch.float32
    return (
        torch.empty(batch, n_chunks, dim, dtype=dtype, device=device),
        torch.empty(batch, n_chunks, dim, dtype=dtype, device=device),
    )


def _shift_in(S: torch.Tensor, start: torch.Tensor, later: bool) -> torch.Tensor:
    """Entry value of each chunk from S (B, C, D), the value after each chunk: ``start`` then S
    shifted by one chunk (towards later chunks if ``later``, else towards earlier ones)."""
    start = start[:, None].to(S.dtype)  # (B, 1, D)
    return torch.cat([start, S[:, :-1]], 1) if later else torch.cat([S[:, 1:], start], 1)


def _check_tensor(name: str, t: torch.Tensor | None, device: torch.device) -> None:
    if t is None:
        return
    if t.dtype not in _REAL + _COMPLEX:
        raise TypeError(
            f"{name} has dtype {t.dtype}; the Triton scan takes float32, bfloat16, float16 or "
            "complex64 (it computes in float32: use backend='cpu' or 'chunked' for float64)"
        )
    if t.device.type != "cuda" and not INTERPRET:
        raise ValueError(
            f"{name} is on {t.device}; the Triton scan needs CUDA tensors "
            "(or TRITON_INTERPRET=1 set before importing triton, to test on the CPU)"
        )
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but b is on {device}")


def _view(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A real view with unit channel stride (complex: interleaved re/im) and its complex flag.

    Only the channel (last) dimension must be dense: batch/time strides are passed to the
    kernel, so expanded or sliced inputs are not copied.
    """
    if t.stride(-1) != 1:
        t = t.contiguous()
    if t.is_complex():
        return torch.view_as_real(t), True
    return t, False


def _strides(t: torch.Tensor, n: int) -> list[int]:
    """The first n strides of a real view, in real elements (0 for a broadcast dimension)."""
    return [t.stride(i) if t.size(i) > 1 else 0 for i in range(n)]


def _promote(*ts: torch.Tensor | None) -> torch.dtype:
    dtype: torch.dtype | None = None
    for t in ts:
        if t is not None:
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    if dtype is None:
        raise ValueError("no tensor to promote")
    return dtype


def _common(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, reset: torch.Tensor | None
) -> torch.Tensor | None:
    """Checks and views shared by forward and backward (and the LRU path)."""
    for name, t in (("a", a), ("b", b), ("h0", h0)):
        _check_tensor(name, t, b.device)
    if reset is not None and reset.device != b.device:
        raise ValueError(f"reset is on {reset.device} but b is on {b.device}")
    r = reset.view(torch.uint8) if reset is not None else None
    return r


def linear_scan_forward(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    reset: torch.Tensor | None = None,
    chunks: int | None = None,
) -> torch.Tensor:
    """h_t = a_t h_{t-1} + b_t by the fused Triton kernel (see the module docstring).

    a (B, L, D) or (D,), b (B, L, D), h0 (B, D) or None, reset bool (B, L) or None
    -> h (B, L, D) of dtype promote(a, b, h0); float32 accumulation. Not differentiable by
    itself: ops/scan/function.py wraps it with :func:`linear_scan_backward`. ``chunks``: number of
    time chunks run in parallel (sequence split), None = :func:`auto_chunks` (1 off CUDA).
    """
    check_scan_inputs(a, b, h0, reset)
    r = _common(a, b, h0, reset)
    batch, length, dim = b.shape
    out_dtype = _promote(a, b, h0)
    h = torch.empty(batch, length, dim, dtype=out_dtype, device=b.device)  # (B, L, D)
    return _forward(a, None, b, None, h0, r, h, reverse=reverse, a_mode=0 if a.dim() == 3 else 1, chunks=chunks)


def _forward(
    a: torch.Tensor,
    a2: torch.Tensor | None,
    b: torch.Tensor,
    bscale: torch.Tensor | None,
    h0: torch.Tensor | None,
    r: torch.Tensor | None,
    h: torch.Tensor,
    *,
    reverse: bool,
    a_mode: int,
    chunks: int | None = 1,
) -> torch.Tensor:
    batch, length, dim = b.shape
    n_chunks, cl = _split(length, chunks, batch, dim, b.device)
    av, a_c = _view(a)
    bv, b_c = _view(b)
    hv, h_c = _view(h)
    rv = r if r is not None else bv

    def launch(
        h0: torch.Tensor | None,
        out: torch.Tensor,
        e: torch.Tensor | None = None,
        p: torch.Tensor | None = None,
    ) -> None:
        h0v, h0_c = _view(h0) if h0 is not None else (bv, False)
        h0_strides = [0, 0]
        if h0 is not None:  # (B, D), or (B, C, D) entry states per chunk
            h0_strides = _strides(h0v, 2) if h0.dim() == 3 else [_strides(h0v, 1)[0], 0]
        _launch(
            K.scan_fwd_kernel,
            _fwd_tuned,
            batch,
            dim,
            n_chunks,
            av,
            a2 if a2 is not None else av,
            bv,
            bscale if bscale is not None else av,
            h0v,
            rv,
            out,
            e if e is not None else out,
            p if p is not None else out,
            length,
            dim,
            cl,
            triton.next_power_of_2(cl),
            *(_strides(av, 2) if a_mode == 0 else [0, 0]),
            *_strides(bv, 2),
            *h0_strides,
            *(_strides(rv, 2) if r is not None else [0, 0]),
            *_strides(hv, 2),
            A_MODE=a_mode,
            A_C=a_c,
            B_C=b_c,
            H0_C=h0_c,
            COMPLEX=h_c,
            HAS_H0=h0 is not None,
            HAS_RESET=r is not None,
            REVERSE=bool(reverse),
            SUMMARY=e is not None,
        )

    if n_chunks > 1:
        E, P = _summaries(batch, n_chunks, dim, h_c, b.device)  # (B, C, D) each
        launch(None, hv, _view(E)[0], _view(P)[0])
        # state after each chunk, in the order the forward visits them: a short scan over chunks
        S = _forward(P, None, E, None, h0, None, torch.empty_like(E), reverse=reverse, a_mode=0)
        start = h0 if h0 is not None else torch.zeros(batch, dim, dtype=E.dtype, device=b.device)
        h0 = _shift_in(S, start, later=not reverse)  # (B, C, D) state entering each chunk
    launch(h0, hv)
    return h


def linear_scan_backward(
    a: torch.Tensor,
    h: torch.Tensor,
    h0: torch.Tensor | None,
    grad_h: torch.Tensor,
    *,
    reverse: bool = False,
    reset: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    chunks: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`linear_scan_forward` in one reverse-scan kernel.

    With g_t = dLoss/dh_t in total (PyTorch's complex convention, grad = dLoss/d conj z):
        g_t = grad_h_t + conj(a'_{t+1}) g_{t+1},  a'_t = a_t (1 - reset_t)   (t+1 -> t-1 if reverse)
        grad_b = g,   grad_a_t = g_t conj(h_{t-1}) (1 - reset_t),   grad_h0 = conj(a'_0) g_0.

    Same signature as cpu.py's, called by ops/scan/function.py. Args: a, h0, reverse, reset as
    given to the forward; h (B, L, D) its output; grad_h (B, L, D) the incoming gradient; b
    (optional) only fixes grad_b's dtype (a real b gets the real part), default h's dtype.
    Returns (grad_a like a, grad_b (B, L, D), grad_h0 (B, D) in h0's dtype, or h's dtype when
    h0 is None: the gradient with respect to a zero initial state). grad_a of a time-invariant
    a (D,) is summed over batch and time. ``chunks``: as in :func:`linear_scan_forward`.
    """
    check_scan_inputs(a, h, h0, reset)
    if tuple(grad_h.shape) != tuple(h.shape):
        raise ValueError(f"grad_h must have the shape of h {tuple(h.shape)}; got {tuple(grad_h.shape)}")
    r = _common(a, h, h0, reset)
    _check_tensor("grad_h", grad_h, h.device)
    if grad_h.dtype != h.dtype:
        grad_h = grad_h.to(h.dtype)
    batch, length, dim = h.shape
    b_dtype = b.dtype if b is not None else h.dtype
    grad_b = torch.empty(batch, length, dim, dtype=b_dtype, device=h.device)  # (B, L, D)
    invariant = a.dim() == 1
    grad_a = None if invariant else torch.empty_like(a, memory_format=torch.contiguous_format)
    grad_h0 = torch.empty(batch, dim, dtype=(h0 if h0 is not None else h).dtype, device=h.device)
    sum_a, _ = _backward(
        a,
        None,
        None,
        None,
        h0,
        r,
        h,
        grad_h,
        grad_a,
        grad_b,
        grad_h0,
        reverse=reverse,
        a_mode=1 if invariant else 0,
        chunks=chunks,
    )
    if invariant:
        assert sum_a is not None  # a_mode 1 returns the sum over batch and time
        return sum_a.to(a.dtype), grad_b, grad_h0  # (D,)
    assert grad_a is not None
    return grad_a, grad_b, grad_h0


def _backward(
    a: torch.Tensor,
    a2: torch.Tensor | None,
    b: torch.Tensor | None,
    bscale: torch.Tensor | None,
    h0: torch.Tensor | None,
    r: torch.Tensor | None,
    h: torch.Tensor,
    grad_h: torch.Tensor,
    ga: torch.Tensor | None,
    gb: torch.Tensor,
    gh0: torch.Tensor | None,
    *,
    reverse: bool,
    a_mode: int,
    chunks: int | None = 1,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Launch the backward; returns the sums over batch and time (D,) of grad_a (None for a
    time-varying a, whose gradient goes to ``ga``) and, for LRU, of Re(g conj(u)) (else None)."""
    batch, length, dim = h.shape
    n_chunks, cl = _split(length, chunks, batch, dim, h.device)
    av, a_c = _view(a)
    hv, h_c = _view(h)
    ghv, _ = _view(grad_h)
    gbv, gb_c = _view(gb)
    bv = _view(b)[0] if b is not None else hv
    h0v, _ = _view(h0) if h0 is not None else (hv, False)
    gh0v, gh0_c = _view(gh0) if gh0 is not None else (hv, False)
    rv = r if r is not None else hv
    if a_mode == 0:
        assert ga is not None  # a time-varying a: its gradient is written to ga
        gav = _view(ga)[0]
    else:  # per-(batch, chunk) partial sums, reduced below
        part_dtype = torch.complex64 if (a_c or a_mode == 2) else torch.float32
        part = torch.empty(batch, n_chunks, dim, dtype=part_dtype, device=h.device)  # (B, C, D)
        gav = _view(part)[0]
    ggam = torch.empty(batch, n_chunks, dim, dtype=torch.float32, device=h.device) if a_mode == 2 else None

    def launch(g0: torch.Tensor | None = None, e: torch.Tensor | None = None, p: torch.Tensor | None = None) -> None:
        _launch(
            K.scan_bwd_kernel,
            _bwd_tuned,
            batch,
            dim,
            n_chunks,
            av,
            a2 if a2 is not None else av,
            bv,
            bscale if bscale is not None else av,
            h0v,
            rv,
            hv,
            ghv,
            _view(g0)[0] if g0 is not None else hv,
            gav,
            gbv,
            gh0v,
            ggam if ggam is not None else hv,
            e if e is not None else hv,
            p if p is not None else hv,
            length,
            dim,
            cl,
            triton.next_power_of_2(cl),
            *(_strides(av, 2) if a_mode == 0 else [0, 0]),
            *_strides(bv, 2),
            _strides(h0v, 1)[0] if h0 is not None else 0,
            *(_strides(rv, 2) if r is not None else [0, 0]),
            *_strides(hv, 2),
            *_strides(ghv, 2),
            *(_strides(gav, 2) if a_mode == 0 else [0, 0]),
            *_strides(gbv, 2),
            _strides(gh0v, 1)[0] if gh0 is not None else 0,
            A_MODE=a_mode,
            A_C=a_c,
            B_C=gb_c,
            H0_C=gh0_c,
            COMPLEX=h_c,
            HAS_H0=h0 is not None,
            STORE_GH0=gh0 is not None,
            HAS_RESET=r is not None,
            REVERSE=bool(reverse),
            HAS_G0=g0 is not None,
            SUMMARY=e is not None,
        )

    g0 = None
    if n_chunks > 1:
        E, P = _summaries(batch, n_chunks, dim, h_c, h.device)  # (B, C, D) each
        launch(e=_view(E)[0], p=_view(P)[0])
        # g leaving each chunk, in the order the backward visits them (opposite to the forward)
        G = _forward(P, None, E, None, None, None, torch.empty_like(E), reverse=not reverse, a_mode=0)
        g0 = _shift_in(G, torch.zeros(batch, dim, dtype=E.dtype, device=h.device), later=reverse)
    launch(g0)
    if a_mode == 0:
        return None, None
    return part.sum((0, 1)), ggam.sum((0, 1)) if ggam is not None else None


# ----------------------------------------------------------------------------------------------
# Fused LRU scan (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
# Sequences", eq. (6)-(7) and Section 3.3): lambda = exp(-exp(nu_log) + i exp(theta_log)),
# x_t = lambda * x_{t-1} + exp(gamma_log) * (B u)_t.
# ----------------------------------------------------------------------------------------------


def _check_lru(nu_log: torch.Tensor, theta_log: torch.Tensor, gamma_log: torch.Tensor, bu: torch.Tensor) -> None:
    """The LRU op's shape checks, then the kernels' dtypes."""
    check_lru_inputs(bu, nu_log=nu_log, theta_log=theta_log, gamma_log=gamma_log)
    _check_tensor("bu", bu, bu.device)
    for name, p in (("nu_log", nu_log), ("theta_log", theta_log), ("gamma_log", gamma_log)):
        if p.dtype not in _REAL:
            raise TypeError(
                f"{name} must be a real float32/bf16/fp16 tensor; got {p.dtype} (the Triton "
                "kernels compute in float32: use backend='cpu' or 'chunked' for float64)"
            )


@torch.library.custom_op("torchssm::lru_scan_fwd", mutates_args=())
def _lru_scan_fwd(
    nu_log: torch.Tensor,
    theta_log: torch.Tensor,
    gamma_log: torch.Tensor,
    bu: torch.Tensor,
    h0: torch.Tensor | None,
    reset: torch.Tensor | None,
    reverse: bool,
    chunks: int | None,
) -> torch.Tensor:
    """x (B, L, N) complex64 by the kernel with A_MODE=2 (lambda, gamma built in-kernel)."""
    r = _common(nu_log, bu, h0, reset)
    batch, length, n = bu.shape
    h = torch.empty(batch, length, n, dtype=torch.complex64, device=bu.device)  # (B, L, N)
    _forward(
        nu_log.contiguous(),
        theta_log.contiguous(),
        bu,
        gamma_log.contiguous(),
        h0,
        r,
        h,
        reverse=reverse,
        a_mode=2,
        chunks=chunks,
    )
    return h


@_lru_scan_fwd.register_fake
def _(
    nu_log: torch.Tensor,
    theta_log: torch.Tensor,
    gamma_log: torch.Tensor,
    bu: torch.Tensor,
    h0: torch.Tensor | None,
    reset: torch.Tensor | None,
    reverse: bool,
    chunks: int | None,
) -> torch.Tensor:
    return bu.new_empty(bu.shape, dtype=torch.complex64)  # (B, L, N)


@torch.library.custom_op("torchssm::lru_scan_bwd", mutates_args=())
def _lru_scan_bwd(
    nu_log: torch.Tensor,
    theta_log: torch.Tensor,
    gamma_log: torch.Tensor,
    bu: torch.Tensor,
    h0: torch.Tensor | None,
    reset: torch.Tensor | None,
    h: torch.Tensor,
    grad_h: torch.Tensor,
    reverse: bool,
    chunks: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad nu_log, theta_log, gamma_log (N,), grad bu (B, L, N), grad h0 (B, N), or (0,) without h0)."""
    nu, th, ga = nu_log.contiguous(), theta_log.contiguous(), gamma_log.contiguous()
    r = reset.view(torch.uint8) if reset is not None else None
    grad_bu = torch.empty_like(bu, memory_format=torch.contiguous_format)  # (B, L, N)
    grad_h0 = torch.empty_like(h0, memory_format=torch.contiguous_format) if h0 is not None else None
    sum_lam, sum_gam = _backward(
        nu,
        th,
        bu,
        ga,
        h0,
        r,
        h,
        grad_h.to(torch.complex64),
        None,
        grad_bu,
        grad_h0,
        reverse=reverse,
        a_mode=2,
        chunks=chunks,
    )  # (N,) each
    assert sum_lam is not None and sum_gam is not None  # a_mode 2 returns both sums
    # chain rule through lambda = exp(z), z = -exp(nu_log) + i exp(theta_log): O(N) work
    lam = lru_lambda(nu.float(), th.float())
    grad_z = sum_lam * lam.conj()  # (N,)
    grad_nu = (grad_z.real * -torch.exp(nu.float())).to(nu.dtype)
    grad_th = (grad_z.imag * torch.exp(th.float())).to(th.dtype)
    grad_gam = (sum_gam * torch.exp(ga.float())).to(ga.dtype)
    return grad_nu, grad_th, grad_gam, grad_bu, grad_h0 if grad_h0 is not None else bu.new_empty(0)


@_lru_scan_bwd.register_fake
def _(
    nu_log: torch.Tensor,
    theta_log: torch.Tensor,
    gamma_log: torch.Tensor,
    bu: torch.Tensor,
    h0: torch.Tensor | None,
    reset: torch.Tensor | None,
    h: torch.Tensor,
    grad_h: torch.Tensor,
    reverse: bool,
    chunks: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_h0 = torch.empty_like(h0) if h0 is not None else bu.new_empty(0)
    return (
        torch.empty_like(nu_log),
        torch.empty_like(theta_log),
        torch.empty_like(gamma_log),
        torch.empty_like(bu),
        grad_h0,
    )


class _LRUScan(torch.autograd.Function):
    """Differentiable fused LRU scan over the two custom ops (opaque to torch.compile)."""

    @staticmethod
    def forward(
        ctx: Any,
        nu_log: torch.Tensor,
        theta_log: torch.Tensor,
        gamma_log: torch.Tensor,
        bu: torch.Tensor,
        h0: torch.Tensor | None,  # type: ignore[override]
        reset: torch.Tensor | None,
        reverse: bool,
        chunks: int | None,
    ) -> torch.Tensor:
        h = _lru_scan_fwd(nu_log, theta_log, gamma_log, bu, h0, reset, reverse, chunks)  # (B, L, N)
        ctx.save_for_backward(nu_log, theta_log, gamma_log, bu, h0, reset, h)
        ctx.reverse, ctx.chunks = reverse, chunks
        return h

    @staticmethod
    def backward(ctx: Any, grad_h: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        nu, th, ga, bu, h0, reset, h = ctx.saved_tensors
        grad_nu, grad_th, grad_gam, grad_bu, grad_h0 = _lru_scan_bwd(
            nu, th, ga, bu, h0, reset, h, grad_h.contiguous(), ctx.reverse, ctx.chunks
        )
        return grad_nu, grad_th, grad_gam, grad_bu, grad_h0 if h0 is not None else None, None, None, None


def lru_scan(
    nu_log: torch.Tensor,
    theta_log: torch.Tensor,
    gamma_log: torch.Tensor,
    bu: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    reset: torch.Tensor | None = None,
    chunks: int | None = None,
) -> torch.Tensor:
    """Fused LRU recurrence x_t = lambda x_{t-1} + gamma (B u)_t, differentiable.

    lambda = exp(-exp(nu_log) + i exp(theta_log)) and gamma = exp(gamma_log) are built inside
    the kernel (forward and backward), so neither lambda per step nor gamma * (B u) is
    materialised; the backward recomputes them and writes grad (B u) and per-batch partial sums
    for the three (N,) parameters.

    Args: nu_log, theta_log, gamma_log (N,) real; bu (B, L, N) complex64 (or real);
    h0 (B, N) or None; reverse; reset bool (B, L) or None; chunks (sequence split) as in
    :func:`linear_scan_forward`. Returns x (B, L, N) complex64.
    """
    _check_lru(nu_log, theta_log, gamma_log, bu)
    check_scan_inputs(nu_log, bu, h0, reset)
    return _LRUScan.apply(nu_log, theta_log, gamma_log, bu, h0, reset, bool(reverse), chunks)
