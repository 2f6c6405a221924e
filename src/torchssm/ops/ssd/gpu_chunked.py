"""SSD (Mamba-2) by Triton kernels of the chunked matmul form (``tl.dot``: tensor cores on a GPU).

Same signature as :func:`torchssm.ops.ssd.naive.ssd_naive` (math there) and the same algorithm as
:func:`torchssm.ops.ssd.chunked.ssd_chunked` (Dao & Gu 2024, Sec. 6 and Listing 1; the split into
a chunk-state, a state-passing and a chunk-scan step follows state-spaces/mamba
``mamba_ssm/ops/triton/ssd_chunk_state.py``, ``ssd_state_passing.py`` and ``ssd_chunk_scan.py``).
Per chunk of T steps, head j, with X_t = dt_t x_t (p,), a_cum the cumulative log-decays
sum_{k <= t} dt_k A[j] inside the chunk and seg_t the number of resets so far in the chunk:

    1. state_c   = sum_s w_s X_s B_s^T,  w_s = exp(a_cum[T-1] - a_cum[s]) [seg_s = seg_{T-1}]
                   (p, n) per chunk: one tl.dot (p x T) @ (T x n)            -- ssd_chunk_state_kernel
    2. H_c       = exp(a_cum[T-1]) [no reset in chunk c] H_{c-1} + state_c,   H_{-1} = h0
                   a diagonal scan over the c chunks of (p n) channels: :func:`torchssm.ops.linear_scan`
    3. y_t       = exp(a_cum[t]) [seg_t = 0] C_t H_{c-1}                            (tl.dot)
                 + sum_{s <= t, seg_s = seg_t} (C_t . B_s) exp(a_cum[t] - a_cum[s]) X_s   (2 tl.dot)
                   -- ssd_chunk_scan_kernel

so the (b, l, h, p, n) states are never formed, only one (p, n) state per chunk. dt = softplus(dt +
bias), the D skip and the z gate are elementwise PyTorch ops (autograd).

Backward: NOT in Triton. It recomputes the forward through PyTorch autograd of the chunked
reference (``ssd_chunked``, plain einsums) from the saved inputs and returns its gradients, so a
training step costs the Triton forward plus the PyTorch chunked forward and backward (memory of
the PyTorch path: (b, c, T, T, h) scores). Only the forward is a Triton kernel; it is a
torch.library custom op (``torchssm::ssd_chunked_fwd``). The backward calls torch.autograd.grad,
which torch.compile does not trace: under torch.compile the op is a graph break (fullgraph=True
fails), unlike the scan and the fused LRU path.

Precision: inputs are loaded as float32 (bf16/fp16 upcast) and every dot accumulates in float32.
For float32 ``x``, ``tf32=False`` (default) asks for IEEE float32 dots (exact to float32 rounding;
on the GPU these run on the CUDA cores) and ``tf32=True`` lets them use TF32 tensor cores (about
1e-3 relative error). For bf16 / fp16 ``x`` the dot operands (C, B, dt x, the decay-masked
scores and the carried state) are rounded to that dtype, as in mamba_ssm's kernels, so the dots
run on 16-bit tensor cores: relative error of the order of that dtype's rounding (2^-8 for bf16).
Under TRITON_INTERPRET=1 the bf16 dot is emulated (operands rounded to bf16, then a float32 dot),
because the interpreter's own bf16 ``tl.dot`` returns garbage (Triton 3.9); the tests therefore
check the bf16 numerics, and only PTX compilation checks the bf16 ``tl.dot`` itself.
Tile sizes are fixed (not autotuned): T, p and n are padded to powers of two >= 16 (tl.dot's
minimum), p is split in blocks of at most 64. Needs Triton; CUDA tensors, or CPU tensors under
TRITON_INTERPRET=1 (tests).
"""

from __future__ import annotations

from typing import Optional

import torch

try:
    import triton
    import triton.language as tl
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "torchssm.ops.ssd.gpu_chunked needs Triton: pip install 'torchssm[gpu]' (Linux + CUDA)"
    ) from err

from torchssm.ops.scan.api import linear_scan
from torchssm.ops.scan.gpu import INTERPRET
from torchssm.ops.selective.common import prepare_dt, skip_and_gate
from torchssm.ops.selective.gpu import _check_kernel_inputs
from torchssm.ops.ssd.chunked import chunk_decays, ssd_chunked
from torchssm.ops.ssd.common import check_ssd_inputs, d_skip

__all__ = ["ssd_chunked_gpu"]


@triton.jit
def _chunk_rows(acum_ptr, seg_ptr, pid_bc, pid_h, NCH, T, L, H, HAS_RESET: tl.constexpr,
                CHUNK: tl.constexpr):
    """Row indices of chunk pid_bc = (batch, chunk): (rows (CHUNK,), global time t, validity,
    a_cum (CHUNK,), a_cum of the chunk's last row, seg (CHUNK,), seg of the last row)."""
    bi = (pid_bc // NCH).to(tl.int64)
    ci = pid_bc % NCH
    rows = tl.arange(0, CHUNK)
    inchunk = rows < T
    t = ci * T + rows
    tvalid = inchunk & (t < L)
    abase = acum_ptr + (bi * H + pid_h) * NCH * T + ci * T  # a_cum (b, h, c, T) contiguous
    acum = tl.load(abase + rows, mask=inchunk, other=0.0)
    alast = tl.load(abase + T - 1)
    if HAS_RESET:
        sbase = seg_ptr + pid_bc * T  # seg (b, c, T) contiguous
        seg = tl.load(sbase + rows, mask=inchunk, other=0)
        slast = tl.load(sbase + T - 1)
    else:
        seg = tl.zeros((CHUNK,), dtype=tl.int32)
        slast = 0
    return bi, rows, t, tvalid, acum, alast, seg, slast


@triton.jit
def _load_x(x_ptr, dt_ptr, bi, pid_h, t, tvalid, ps, pmask, s_xb, s_xl, s_xh, s_db, s_dl, s_dh):
    """X = dt x for the chunk's rows: (CHUNK, BLOCK_P) float32, 0 off range."""
    dt = tl.load(dt_ptr + bi * s_db + t * s_dl + pid_h * s_dh, mask=tvalid, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + bi * s_xb + t[:, None] * s_xl + pid_h * s_xh + ps[None, :],
                mask=tvalid[:, None] & pmask[None, :], other=0.0).to(tl.float32)
    return x * dt[:, None]


@triton.jit
def _load_bc(ptr, bi, grp, t, tvalid, ns, nmask, s_b, s_l, s_g):
    """B or C of the head's group for the chunk's rows: (CHUNK, NP) float32."""
    return tl.load(ptr + bi * s_b + t[:, None] * s_l + grp * s_g + ns[None, :],
                   mask=tvalid[:, None] & nmask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """a @ b with float32 accumulation: operands rounded to bf16 / fp16 ("bf16", "fp16": tensor
    cores, as mamba_ssm's kernels do for 16-bit inputs), or float32 with input_precision "ieee"
    (exact products) or "tf32" (tensor cores)."""
    if PRECISION == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif PRECISION == "bf16_emulated":  # the interpreter's bf16 tl.dot is wrong (Triton 3.9): round, then fp32
        return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    elif PRECISION == "fp16":
        return tl.dot(a.to(tl.float16), b.to(tl.float16))
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def ssd_chunk_state_kernel(
    x_ptr, dt_ptr, B_ptr, acum_ptr, seg_ptr, st_ptr,
    L, T, NCH, H, P, N, HPG,
    s_xb, s_xl, s_xh, s_db, s_dl, s_dh, s_Bb, s_Bl, s_Bg,
    HAS_RESET: tl.constexpr, PRECISION: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_P: tl.constexpr, NP: tl.constexpr,
):
    """state_c (b, c, h, p, n) = sum_s w_s X_s B_s^T over the chunk (step 1 of the module docstring)."""
    pid_bc = tl.program_id(0)
    pid_h = tl.program_id(1)
    ps = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BP,)
    pmask = ps < P
    ns = tl.arange(0, NP)  # (NP,)
    nmask = ns < N
    bi, rows, t, tvalid, acum, alast, seg, slast = _chunk_rows(
        acum_ptr, seg_ptr, pid_bc, pid_h, NCH, T, L, H, HAS_RESET, CHUNK)
    w = tl.exp(alast - acum)  # (CHUNK,) decay from step s to the chunk's end
    keep = tvalid
    if HAS_RESET:
        keep = keep & (seg == slast)
    w = tl.where(keep, w, 0.0)
    X = _load_x(x_ptr, dt_ptr, bi, pid_h, t, tvalid, ps, pmask, s_xb, s_xl, s_xh, s_db, s_dl, s_dh)
    Bt = _load_bc(B_ptr, bi, pid_h // HPG, t, tvalid, ns, nmask, s_Bb, s_Bl, s_Bg)  # (CHUNK, NP)
    st = _dot(tl.trans(X * w[:, None]), Bt, PRECISION)  # (BP, NP)
    off = (pid_bc.to(tl.int64) * H + pid_h) * P * N + ps[:, None] * N + ns[None, :]
    tl.store(st_ptr + off, st, mask=pmask[:, None] & nmask[None, :])


@triton.jit
def ssd_chunk_scan_kernel(
    x_ptr, dt_ptr, B_ptr, C_ptr, acum_ptr, seg_ptr, hp_ptr, y_ptr,
    L, T, NCH, H, P, N, HPG,
    s_xb, s_xl, s_xh, s_db, s_dl, s_dh, s_Bb, s_Bl, s_Bg, s_Cb, s_Cl, s_Cg,
    HAS_RESET: tl.constexpr, PRECISION: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_P: tl.constexpr, NP: tl.constexpr,
):
    """y (b, l, h, p) of one chunk from the state carried in, hp (b, c, h, p, n), and the chunk's
    own inputs (step 3 of the module docstring)."""
    pid_bc = tl.program_id(0)
    pid_h = tl.program_id(1)
    ps = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BP,)
    pmask = ps < P
    ns = tl.arange(0, NP)
    nmask = ns < N
    bi, rows, t, tvalid, acum, alast, seg, slast = _chunk_rows(
        acum_ptr, seg_ptr, pid_bc, pid_h, NCH, T, L, H, HAS_RESET, CHUNK)
    grp = pid_h // HPG
    Ct = _load_bc(C_ptr, bi, grp, t, tvalid, ns, nmask, s_Cb, s_Cl, s_Cg)  # (CHUNK, NP)
    Bt = _load_bc(B_ptr, bi, grp, t, tvalid, ns, nmask, s_Bb, s_Bl, s_Bg)  # (CHUNK, NP)
    # the carried-in state read out: exp(a_cum[t]) C_t H_{c-1}, cut after the chunk's first reset
    hoff = (pid_bc.to(tl.int64) * H + pid_h) * P * N + ps[:, None] * N + ns[None, :]
    Hp = tl.load(hp_ptr + hoff, mask=pmask[:, None] & nmask[None, :], other=0.0)  # (BP, NP)
    f = tl.exp(acum)
    if HAS_RESET:
        f = tl.where(seg == 0, f, 0.0)
    y = _dot(Ct, tl.trans(Hp), PRECISION) * f[:, None]  # (CHUNK, BP)
    # intra-chunk: (C B^T masked by exp(segsum)) @ X
    cb = _dot(Ct, tl.trans(Bt), PRECISION)  # (CHUNK, CHUNK)
    causal = (rows[:, None] >= rows[None, :]) & tvalid[None, :]
    if HAS_RESET:
        causal = causal & (seg[:, None] == seg[None, :])
    decay = tl.exp(tl.where(causal, acum[:, None] - acum[None, :], float("-inf")))  # (CHUNK, CHUNK)
    X = _load_x(x_ptr, dt_ptr, bi, pid_h, t, tvalid, ps, pmask, s_xb, s_xl, s_xh, s_db, s_dl, s_dh)
    y += _dot(cb * decay, X, PRECISION)  # (CHUNK, BP)
    yoff = ((bi * L + t[:, None]) * H + pid_h) * P + ps[None, :]  # y (b, l, h, p) contiguous
    tl.store(y_ptr + yoff, y, mask=tvalid[:, None] & pmask[None, :])


_HALF = {torch.bfloat16: "bf16", torch.float16: "fp16"}  # dot operands of 16-bit inputs


def _dense_last(t: torch.Tensor) -> torch.Tensor:
    """The kernels index the last dimension with unit stride; other strides are passed."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _tiles(T: int, p: int, n: int) -> tuple[int, int, int]:
    """(CHUNK, BLOCK_P, NP): powers of two >= 16 (tl.dot's smallest tile), BLOCK_P <= 64."""
    pow2 = lambda v: max(16, triton.next_power_of_2(v))  # noqa: E731
    return pow2(T), min(64, pow2(p)), pow2(n)


def _chunked_forward(x, dt, A, B, C, h0, reset, chunk_size, precision):
    """The Triton forward: (y (b, l, h, p) float32 without D/z, final state (b, h, p, n) float32)."""
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    T, c, _, _, a_cum, seg = chunk_decays(dt, A.float(), reset, chunk_size)  # (b, h, c, T), (b, c, T)
    a_cum = a_cum.contiguous()
    seg = seg.to(torch.int32).contiguous() if seg is not None else None
    x, dt, B, C = _dense_last(x), dt.contiguous(), _dense_last(B), _dense_last(C)
    CHUNK, BP, NP = _tiles(T, p, n)
    grid = (b * c, h, triton.cdiv(p, BP))
    common = dict(HAS_RESET=seg is not None, PRECISION=precision, CHUNK=CHUNK, BLOCK_P=BP, NP=NP)
    sizes = (l, T, c, h, p, n, h // g)
    xs = (*x.stride()[:3], *dt.stride())
    seg_arg = seg if seg is not None else a_cum

    states = torch.empty(b, c, h, p, n, dtype=torch.float32, device=x.device)  # each chunk's own end state
    ssd_chunk_state_kernel[grid](x, dt, B, a_cum, seg_arg, states, *sizes, *xs, *B.stride()[:3], **common)

    # inter-chunk state passing: H_c = decay_c H_{c-1} + state_c over the c chunks, p*n channels per head
    decay = torch.exp(a_cum[..., -1])  # (b, h, c) total decay of each chunk
    if seg is not None:
        decay = decay * (seg[:, None, :, -1] == 0)  # a reset inside the chunk cuts the carried state
    decay = decay.permute(0, 2, 1)[..., None].expand(b, c, h, p * n).reshape(b, c, h * p * n)
    s0 = h0.float().reshape(b, h * p * n) if h0 is not None else None  # (b, h p n)
    Hs = linear_scan(decay, states.view(b, c, h * p * n), s0)  # (b, c, h p n): state after each chunk
    start = s0 if s0 is not None else Hs.new_zeros(b, h * p * n)
    carried = torch.cat([start[:, None], Hs[:, :-1]], 1).view(b, c, h, p, n).contiguous()  # entering each chunk

    y = torch.empty(b, l, h, p, dtype=torch.float32, device=x.device)  # (b, l, h, p)
    ssd_chunk_scan_kernel[grid](x, dt, B, C, a_cum, seg_arg, carried, y, *sizes, *xs,
                                *B.stride()[:3], *C.stride()[:3], **common)
    return y, Hs[:, -1].view(b, h, p, n)


@torch.library.custom_op("torchssm::ssd_chunked_fwd", mutates_args=())
def _ssd_chunked_fwd(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    h0: Optional[torch.Tensor], reset: Optional[torch.Tensor], chunk_size: int, precision: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (b, l, h, p) without D/z, final state (b, h, p, n)), float32, by the Triton kernels."""
    return _chunked_forward(x, dt, A, B, C, h0, reset, chunk_size, precision)


@_ssd_chunked_fwd.register_fake
def _(x, dt, A, B, C, h0, reset, chunk_size, precision):
    b, l, h, p = x.shape
    return x.new_empty(b, l, h, p, dtype=torch.float32), x.new_empty(b, h, p, B.shape[-1], dtype=torch.float32)


def _ssd_chunked_grads(x, dt, A, B, C, h0, reset, grad_y, grad_final, chunk_size, needs):
    """Gradients of (x, dt, A, B, C, h0) by recomputing ``ssd_chunked`` under autograd; None where
    ``needs`` is false."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(need) if t is not None else None
                  for t, need in zip((x, dt, A, B, C, h0), needs)]
        y, final = ssd_chunked(*leaves[:5], h0=leaves[5], return_final_state=True, reset=reset,
                               chunk_size=chunk_size)
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad([y, final], wanted, [grad_y, grad_final]) if wanted else ())
    return [next(grads) if need else None for need in needs]


class _SSDChunkedCore(torch.autograd.Function):
    """(x, dt, A, B, C, h0) -> (y without D/z, final state): Triton forward (a custom op), backward
    by recomputing ``ssd_chunked`` under PyTorch autograd (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, h0, reset, chunk_size, precision):
        y, final = _ssd_chunked_fwd(x, dt, A, B, C, h0, reset, chunk_size, precision)
        ctx.save_for_backward(x, dt, A, B, C, h0, reset)
        ctx.chunk_size = chunk_size
        return y, final

    @staticmethod
    def backward(ctx, grad_y, grad_final):
        x, dt, A, B, C, h0, reset = ctx.saved_tensors
        needs = [bool(n) and t is not None for n, t in zip(ctx.needs_input_grad[:6], (x, dt, A, B, C, h0))]
        grads = _ssd_chunked_grads(x, dt, A, B, C, h0, reset, grad_y, grad_final, ctx.chunk_size, needs)
        return (*grads, None, None, None)


def ssd_chunked_gpu(
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
    tf32: bool = False,
):
    """SSD by the Triton chunked-matmul kernels; same signature and result as ``ssd_naive``.

    x (b, l, h, p), dt (b, l, h), A (h,), B and C (b, l, g, n), D (h,) or (h, p), z (b, l, h, p),
    dt_bias (h,), h0 (b, h, p, n), reset bool (b, l). ``chunk_size``: T, any value >= 1 (the last
    chunk may be partial). ``tf32``: for float32 x, let the dots use TF32 tensor cores; bf16 / fp16
    x always use 16-bit tensor-core dots (see the module docstring).
    Differentiable in every input (backward recomputed by PyTorch autograd, not in Triton).
    Returns y (b, l, h, p) in x's dtype [, h_last (b, h, p, n) float32].
    """
    check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, h0, reset)
    _check_kernel_inputs("SSD", dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, h0=h0))
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    dtc = prepare_dt(dt, dt_bias, dt_softplus, torch.float32)  # (b, l, h)
    precision = _HALF.get(x.dtype, "tf32" if tf32 else "ieee")
    if precision == "bf16" and INTERPRET:
        precision = "bf16_emulated"
    y, final = _SSDChunkedCore.apply(x, dtc, A, B, C, h0, reset, chunk_size, precision)
    y = skip_and_gate(y, x.float(), d_skip(D, x), z).to(x.dtype)  # (b, l, h, p)
    return (y, final) if return_final_state else y
