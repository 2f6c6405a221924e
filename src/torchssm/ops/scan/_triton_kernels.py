"""Triton kernels of the diagonal linear scan (private: use torchssm.ops.scan.gpu).

Glossary: b = batch, l = length (time), d = channel; BL x BD is one tile (time x channels).

Forward, per channel, with a'_t = a_t * (1 - reset_t):

    h_t = a'_t h_{t-1} + b_t                  (t = 0..L-1, h_{-1} = h0), or t = L-1..0 with REVERSE

Backward (PyTorch's complex convention: grad = dLoss/d conj(z)), g_t = dLoss/dh_t in total:

    g_t     = grad_h_t + conj(a'_{t+1}) g_{t+1}     (a reverse scan; t+1 -> t-1 with REVERSE)
    grad_b  = g
    grad_a  = g_t conj(h_{t-1}) (1 - reset_t)       (h_{-1} = h0)
    grad_h0 = conj(a'_0) g_0

One program owns (one batch row) x (BD channels) and walks over time in tiles of BL steps:
each tile is scanned with ``tl.associative_scan`` along time (many loads in flight per program,
which is what keeps a memory-bound scan near the bandwidth limit), then combined with the state
carried from the previous tile. Arithmetic and the carried state are float32 whatever the input
dtype (bf16/fp16 inputs are upcast on load); complex tensors are read through
``torch.view_as_real`` (interleaved re/im, channel stride 2), so no copy into planes is made.

LB (unused in the kernels) is the chunk length rounded up to a power of two: the autotuning key,
so a new sequence length does not trigger a new tuning run unless it changes that bucket.

Padding rows (outside the program's time range) act as the identity (a' = 1, b = 0), so the
carry passes through them.

Sequence split (third grid axis, for narrow shapes where B * D / BD programs cannot fill the GPU):
program c owns steps [c CL, (c+1) CL). With SUMMARY the kernel only writes, per chunk, the state
reached from a zero start (E) and the product of the decays (P): the chunk maps h -> P h + E.
The wrapper scans those (B, C, D) summaries across chunks and runs the kernel again with each
chunk's entry state (forward: h0 per chunk; backward: the g carried in per chunk).

A_MODE: 0 = a is (B, L, D) time-varying; 1 = a is (D,) time-invariant (broadcast in-kernel);
2 = LRU (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks", eq. 6-7): a is built
in-kernel as lambda = exp(-exp(nu_log) + i exp(theta_log)) and b is scaled by
gamma = exp(gamma_log), so the layer never materialises gamma * (B u) nor lambda per step.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _comb_real(a1, b1, a2, b2):  # type: ignore[no-untyped-def]
    # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
    return a2 * a1, a2 * b1 + b2


@triton.jit
def _comb_cplx(a1r, a1i, b1r, b1i, a2r, a2i, b2r, b2i):  # type: ignore[no-untyped-def]
    return (
        a2r * a1r - a2i * a1i,
        a2r * a1i + a2i * a1r,
        a2r * b1r - a2i * b1i + b2r,
        a2r * b1i + a2i * b1r + b2i,
    )


@triton.jit
def _load2(ptr, row_off, cols, mask, IS_C: tl.constexpr, other_re):  # type: ignore[no-untyped-def]
    """Load a (re, im) float32 pair; row_off in real elements, channel stride 2 if complex."""
    if IS_C:
        # one (..., 2) load of adjacent (re, im) pairs, so the compiler can vectorise it
        off = tl.expand_dims(row_off + cols * 2, -1) + tl.arange(0, 2)
        pair = tl.load(ptr + off, mask=tl.expand_dims(mask, -1), other=0.0).to(tl.float32)
        re, im = tl.split(pair)
        re = tl.where(mask, re, other_re)
    else:
        re = tl.load(ptr + row_off + cols, mask=mask, other=other_re).to(tl.float32)
        im = tl.zeros_like(re)
    return re, im


@triton.jit
def _store2(ptr, row_off, cols, mask, re, im, IS_C: tl.constexpr):  # type: ignore[no-untyped-def]
    """Store a (re, im) pair; only re when the destination is real (grad of a real input)."""
    if IS_C:
        off = tl.expand_dims(row_off + cols * 2, -1) + tl.arange(0, 2)
        tl.store(ptr + off, tl.join(re, im).to(ptr.dtype.element_ty), mask=tl.expand_dims(mask, -1))
    else:
        tl.store(ptr + row_off + cols, re.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _invariant_a(a_ptr, a2_ptr, cols, dmask, A_MODE: tl.constexpr, A_C: tl.constexpr):  # type: ignore[no-untyped-def]
    """Time-invariant decay (BD,) for A_MODE 1 (given) or 2 (LRU: built from nu_log, theta_log)."""
    if A_MODE == 2:
        nu_log = tl.load(a_ptr + cols, mask=dmask, other=0.0).to(tl.float32)
        theta_log = tl.load(a2_ptr + cols, mask=dmask, other=0.0).to(tl.float32)
        modulus = tl.exp(-tl.exp(nu_log))  # |lambda| = exp(-exp(nu_log))
        angle = tl.exp(theta_log)  # arg lambda = exp(theta_log)
        re = modulus * tl.cos(angle)
        im = modulus * tl.sin(angle)
    else:
        re, im = _load2(a_ptr, 0, cols, dmask, A_C, 1.0)
    return re, im


@triton.jit
def _row(x, rows, edge):  # type: ignore[no-untyped-def]
    """Row ``edge`` (along time, axis 0) of a (BL, BD) tile as a (BD,) vector; pass rows[:, None]
    for a (BL, BD, N) tile (selective scan) to get a (BD, N) block."""
    return tl.sum(tl.where(rows[:, None] == edge, x, 0.0), axis=0)


@triton.jit
def _decay_tile(  # type: ignore[no-untyped-def]
    a_ptr,
    r_ptr,
    t,
    tvalid,
    cols,
    dmask,
    pid_b,
    s_ab,
    s_al,
    s_rb,
    s_rl,
    inv_re,
    inv_im,
    A_MODE: tl.constexpr,
    A_C: tl.constexpr,
    HAS_RESET: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """a'_t = a_t (1 - reset_t) for the time indices t (BL,); 0 where tvalid is false."""
    mask = tvalid[:, None] & dmask[None, :]
    if A_MODE == 0:
        ar, ai = _load2(a_ptr, pid_b * s_ab + t[:, None] * s_al, cols[None, :], mask, A_C, 0.0)
    else:
        ar = tl.where(mask, tl.broadcast_to(inv_re[None, :], (BLOCK_L, BLOCK_D)), 0.0)
        ai = tl.where(mask, tl.broadcast_to(inv_im[None, :], (BLOCK_L, BLOCK_D)), 0.0)
    if HAS_RESET:
        r = tl.load(r_ptr + pid_b * s_rb + t * s_rl, mask=tvalid, other=0)
        keep = (r == 0)[:, None]
        ar = tl.where(keep, ar, 0.0)
        ai = tl.where(keep, ai, 0.0)
    return ar, ai


@triton.jit
def _chunk_rows(pid_c, CL, L, i, n_tiles, rows, BLOCK_L: tl.constexpr, BACKWARDS: tl.constexpr):  # type: ignore[no-untyped-def]
    """Time indices (BL,) of the i-th tile visited by chunk pid_c, and their validity."""
    tile = n_tiles - 1 - i if BACKWARDS else i
    t_lo = pid_c * CL
    t = t_lo + tile * BLOCK_L + rows
    return t, (t < L) & (t < t_lo + CL)


@triton.jit
def scan_fwd_kernel(  # type: ignore[no-untyped-def]
    a_ptr,
    a2_ptr,
    b_ptr,
    bs_ptr,
    h0_ptr,
    r_ptr,
    h_ptr,
    se_ptr,
    sp_ptr,
    L,
    D,
    CL,
    LB,
    s_ab,
    s_al,
    s_bb,
    s_bl,
    s_h0b,
    s_h0c,
    s_rb,
    s_rl,
    s_hb,
    s_hl,
    A_MODE: tl.constexpr,
    A_C: tl.constexpr,
    B_C: tl.constexpr,
    H0_C: tl.constexpr,
    COMPLEX: tl.constexpr,
    HAS_H0: tl.constexpr,
    HAS_RESET: tl.constexpr,
    REVERSE: tl.constexpr,
    SUMMARY: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """h (B, L, D) from a, b (B, L, D) [a (D,) / LRU logs (D,)], h0 (B, [C,] D), reset (B, L);
    or, with SUMMARY, the per-chunk maps (E, P) (B, C, D)."""
    pid_b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    pid_c = tl.program_id(2)
    dmask = cols < D
    rows = tl.arange(0, BLOCK_L)  # (BL,)
    inv_re, inv_im = _invariant_a(a_ptr, a2_ptr, cols, dmask, A_MODE, A_C)  # (BD,) if A_MODE > 0
    if A_MODE == 2:
        gamma = tl.exp(tl.load(bs_ptr + cols, mask=dmask, other=0.0).to(tl.float32))  # (BD,)
    if HAS_H0:  # state entering this chunk
        cr, ci = _load2(h0_ptr, pid_b * s_h0b + pid_c * s_h0c, cols, dmask, H0_C, 0.0)  # (BD,)
    else:
        cr = tl.zeros((BLOCK_D,), dtype=tl.float32)
        ci = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if SUMMARY:  # running product of the decays
        qr = tl.full((BLOCK_D,), 1.0, dtype=tl.float32)
        qi = tl.zeros((BLOCK_D,), dtype=tl.float32)
    edge = 0 if REVERSE else BLOCK_L - 1  # the row handed to the next tile
    n_tiles = tl.cdiv(tl.minimum(CL, L - pid_c * CL), BLOCK_L)
    for i in range(n_tiles):
        t, tvalid = _chunk_rows(pid_c, CL, L, i, n_tiles, rows, BLOCK_L, REVERSE)  # (BL,)
        mask = tvalid[:, None] & dmask[None, :]  # (BL, BD)
        ar, ai = _decay_tile(
            a_ptr,
            r_ptr,
            t,
            tvalid,
            cols,
            dmask,
            pid_b,
            s_ab,
            s_al,
            s_rb,
            s_rl,
            inv_re,
            inv_im,
            A_MODE,
            A_C,
            HAS_RESET,
            BLOCK_L,
            BLOCK_D,
        )
        ar = tl.where(tvalid[:, None], ar, 1.0)  # padding rows: identity
        br, bi = _load2(b_ptr, pid_b * s_bb + t[:, None] * s_bl, cols[None, :], mask, B_C, 0.0)
        if A_MODE == 2:
            br = br * gamma[None, :]
            bi = bi * gamma[None, :]
        if COMPLEX:
            pr, pi, er, ei = tl.associative_scan((ar, ai, br, bi), 0, _comb_cplx, reverse=REVERSE)
            hr = pr * cr[None, :] - pi * ci[None, :] + er
            hi = pr * ci[None, :] + pi * cr[None, :] + ei
        else:
            pr, er = tl.associative_scan((ar, br), 0, _comb_real, reverse=REVERSE)
            hr = pr * cr[None, :] + er
            hi = hr  # unused
        if not SUMMARY:
            _store2(h_ptr, pid_b * s_hb + t[:, None] * s_hl, cols[None, :], mask, hr, hi, COMPLEX)
        cr = _row(hr, rows, edge)
        if COMPLEX:
            ci = _row(hi, rows, edge)
        if SUMMARY:
            tr = _row(pr, rows, edge)  # product of this tile's decays
            if COMPLEX:
                ti = _row(pi, rows, edge)
                qr, qi = tr * qr - ti * qi, tr * qi + ti * qr
            else:
                qr = tr * qr
    if SUMMARY:
        off = (pid_b * tl.num_programs(2) + pid_c) * D + cols
        _store2(se_ptr, off * (2 if COMPLEX else 1), 0, dmask, cr, ci, COMPLEX)
        _store2(sp_ptr, off * (2 if COMPLEX else 1), 0, dmask, qr, qi, COMPLEX)


@triton.jit
def scan_bwd_kernel(  # type: ignore[no-untyped-def]
    a_ptr,
    a2_ptr,
    b_ptr,
    bs_ptr,
    h0_ptr,
    r_ptr,
    h_ptr,
    gh_ptr,
    g0_ptr,
    ga_ptr,
    gb_ptr,
    gh0_ptr,
    ggam_ptr,
    se_ptr,
    sp_ptr,
    L,
    D,
    CL,
    LB,
    s_ab,
    s_al,
    s_bb,
    s_bl,
    s_h0b,
    s_rb,
    s_rl,
    s_hb,
    s_hl,
    s_ghb,
    s_ghl,
    s_gab,
    s_gal,
    s_gbb,
    s_gbl,
    s_gh0b,
    A_MODE: tl.constexpr,
    A_C: tl.constexpr,
    B_C: tl.constexpr,
    H0_C: tl.constexpr,
    COMPLEX: tl.constexpr,
    HAS_H0: tl.constexpr,
    STORE_GH0: tl.constexpr,
    HAS_RESET: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_G0: tl.constexpr,
    SUMMARY: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """grad_b (B, L, D), grad_a (B, L, D) [or per-(batch, chunk) partial sums (B, C, D) when a is
    (D,)], grad_h0 (B, D), and for LRU the per-(batch, chunk) partial sums of Re(g conj(u))
    (B, C, D) for gamma. g0 (B, C, D): the g carried into each chunk (sequence split). With
    SUMMARY only the per-chunk maps (E, P) of the g recursion are written."""
    pid_b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    pid_c = tl.program_id(2)
    n_chunks = tl.num_programs(2)
    dmask = cols < D
    rows = tl.arange(0, BLOCK_L)  # (BL,)
    step = -1 if REVERSE else 1  # forward-time direction of the forward scan
    inv_re, inv_im = _invariant_a(a_ptr, a2_ptr, cols, dmask, A_MODE, A_C)
    if A_MODE == 2:
        gamma = tl.exp(tl.load(bs_ptr + cols, mask=dmask, other=0.0).to(tl.float32))
    if HAS_H0:
        h0r, h0i = _load2(h0_ptr, pid_b * s_h0b, cols, dmask, H0_C, 0.0)
    else:
        h0r = tl.zeros((BLOCK_D,), dtype=tl.float32)
        h0i = tl.zeros((BLOCK_D,), dtype=tl.float32)
    chunk_off = (pid_b * n_chunks + pid_c) * D + cols  # (BD,) into (B, C, D) buffers
    if HAS_G0:  # g carried into this chunk
        cr, ci = _load2(g0_ptr, chunk_off * (2 if COMPLEX else 1), 0, dmask, COMPLEX, 0.0)
    else:
        cr = tl.zeros((BLOCK_D,), dtype=tl.float32)
        ci = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if SUMMARY:
        qr = tl.full((BLOCK_D,), 1.0, dtype=tl.float32)
        qi = tl.zeros((BLOCK_D,), dtype=tl.float32)
    acc_r = tl.zeros((BLOCK_D,), dtype=tl.float32)  # sum over time of grad_a (A_MODE > 0)
    acc_i = tl.zeros((BLOCK_D,), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_D,), dtype=tl.float32)  # sum over time of Re(g conj(u)) (LRU)
    edge = BLOCK_L - 1 if REVERSE else 0
    n_tiles = tl.cdiv(tl.minimum(CL, L - pid_c * CL), BLOCK_L)
    for i in range(n_tiles):
        t, tvalid = _chunk_rows(pid_c, CL, L, i, n_tiles, rows, BLOCK_L, not REVERSE)  # (BL,)
        mask = tvalid[:, None] & dmask[None, :]
        # coefficient of g_{t+step} in g_t: conj(a'_{t+step}), 0 outside [0, L), 1 on padding
        tn = t + step
        nvalid = (tn >= 0) & (tn < L)
        nr, ni = _decay_tile(
            a_ptr,
            r_ptr,
            tn,
            nvalid,
            cols,
            dmask,
            pid_b,
            s_ab,
            s_al,
            s_rb,
            s_rl,
            inv_re,
            inv_im,
            A_MODE,
            A_C,
            HAS_RESET,
            BLOCK_L,
            BLOCK_D,
        )
        nr = tl.where(tvalid[:, None], nr, 1.0)
        ni = tl.where(tvalid[:, None], -ni, 0.0)
        ghr, ghi = _load2(gh_ptr, pid_b * s_ghb + t[:, None] * s_ghl, cols[None, :], mask, COMPLEX, 0.0)
        if COMPLEX:
            pr, pi, qr_, qi_ = tl.associative_scan((nr, ni, ghr, ghi), 0, _comb_cplx, reverse=not REVERSE)
            gr = pr * cr[None, :] - pi * ci[None, :] + qr_
            gi = pr * ci[None, :] + pi * cr[None, :] + qi_
        else:
            pr, qr_ = tl.associative_scan((nr, ghr), 0, _comb_real, reverse=not REVERSE)
            gr = pr * cr[None, :] + qr_
            gi = tl.zeros_like(gr)
        cr = _row(gr, rows, edge)
        if COMPLEX:
            ci = _row(gi, rows, edge)
        if SUMMARY:
            tr = _row(pr, rows, edge)
            if COMPLEX:
                ti = _row(pi, rows, edge)
                qr, qi = tr * qr - ti * qi, tr * qi + ti * qr
            else:
                qr = tr * qr
        else:
            # grad_b = g (LRU: gamma g)
            if A_MODE == 2:
                _store2(
                    gb_ptr,
                    pid_b * s_gbb + t[:, None] * s_gbl,
                    cols[None, :],
                    mask,
                    gr * gamma[None, :],
                    gi * gamma[None, :],
                    B_C,
                )
                ur, ui = _load2(b_ptr, pid_b * s_bb + t[:, None] * s_bl, cols[None, :], mask, B_C, 0.0)
                acc_g += tl.sum(tl.where(mask, gr * ur + gi * ui, 0.0), axis=0)
            else:
                _store2(gb_ptr, pid_b * s_gbb + t[:, None] * s_gbl, cols[None, :], mask, gr, gi, B_C)
            # grad_a = g_t conj(h_{t-step}) (1 - reset_t), h0 before the first step
            tp = t - step
            pvalid = (tp >= 0) & (tp < L)
            pmask = pvalid[:, None] & dmask[None, :]
            hr, hi = _load2(h_ptr, pid_b * s_hb + tp[:, None] * s_hl, cols[None, :], pmask, COMPLEX, 0.0)
            first = (tvalid & ~pvalid)[:, None]
            hr = tl.where(first, h0r[None, :], hr)
            hi = tl.where(first, h0i[None, :], hi)
            gar = gr * hr + gi * hi
            gai = gi * hr - gr * hi
            if HAS_RESET:
                r = tl.load(r_ptr + pid_b * s_rb + t * s_rl, mask=tvalid, other=0)
                keep = (r == 0)[:, None]
                gar = tl.where(keep, gar, 0.0)
                gai = tl.where(keep, gai, 0.0)
            if A_MODE == 0:
                _store2(ga_ptr, pid_b * s_gab + t[:, None] * s_gal, cols[None, :], mask, gar, gai, A_C)
            else:
                acc_r += tl.sum(tl.where(mask, gar, 0.0), axis=0)
                acc_i += tl.sum(tl.where(mask, gai, 0.0), axis=0)
    if SUMMARY:
        _store2(se_ptr, chunk_off * (2 if COMPLEX else 1), 0, dmask, cr, ci, COMPLEX)
        _store2(sp_ptr, chunk_off * (2 if COMPLEX else 1), 0, dmask, qr, qi, COMPLEX)
    else:
        if A_MODE != 0:
            pc = A_C or A_MODE == 2
            _store2(ga_ptr, chunk_off * (2 if pc else 1), 0, dmask, acc_r, acc_i, pc)
        if A_MODE == 2:
            tl.store(ggam_ptr + chunk_off, acc_g, mask=dmask)
        if STORE_GH0:
            # grad_h0 = conj(a'_first) g_first, first = the first step of the forward scan; only
            # the chunk holding it stores (also without h0: the gradient for a zero initial state)
            first_t = L - 1 if REVERSE else 0
            ft = first_t + tl.zeros((1,), dtype=tl.int32)  # (1,)
            fr, fi = _decay_tile(
                a_ptr,
                r_ptr,
                ft,
                ft < L,
                cols,
                dmask,
                pid_b,
                s_ab,
                s_al,
                s_rb,
                s_rl,
                inv_re,
                inv_im,
                A_MODE,
                A_C,
                HAS_RESET,
                1,
                BLOCK_D,
            )
            fr = tl.sum(fr, axis=0)  # (BD,)
            fi = -tl.sum(fi, axis=0)
            owner = (cols * 0 + pid_c) == (n_chunks - 1 if REVERSE else 0)  # (BD,)
            _store2(gh0_ptr, pid_b * s_gh0b, cols, dmask & owner, fr * cr - fi * ci, fr * ci + fi * cr, H0_C)
