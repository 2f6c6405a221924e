"""Selective scan (Mamba S6): chunked == naive in float64, outputs and every gradient (incl. h0)."""

import importlib.util
import math
import os
import re

import numpy as np
import pytest
import torch
from numba import njit

from torchssm.ops.selective import cpu as fused_cpu
from torchssm.ops.selective import selective_scan, selective_scan_chunked, selective_scan_naive
from torchssm.ops.selective.cpu import selective_scan_cpu

F64 = torch.float64


def _inputs(b=2, l=11, d=6, n=4, groups=None, seed=0, reset=False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    bc = (b, l, n) if groups is None else (b, l, groups, n)
    args = dict(
        u=r(b, l, d),
        delta=r(b, l, d),
        A=-torch.rand(d, n, generator=g, dtype=F64) * 2 - 0.1,
        B=r(*bc),
        C=r(*bc),
        D=r(d),
        z=r(b, l, d),
        delta_bias=r(d),
        h0=r(b, d, n),
    )
    for v in args.values():
        v.requires_grad_(True)
    rst = (torch.rand(b, l, generator=g) < 0.25) if reset else None
    return args, rst


def _run(fn, args, reset, **kw):
    y, h = fn(**args, delta_softplus=True, return_final_state=True, reset=reset, **kw)
    g = torch.Generator().manual_seed(123)
    loss = (y * torch.randn(y.shape, generator=g, dtype=F64)).sum() + (
        h * torch.randn(h.shape, generator=g, dtype=F64)
    ).sum()
    grads = torch.autograd.grad(loss, list(args.values()))
    return y, h, dict(zip(args, grads))


@pytest.mark.parametrize("groups", [None, 1, 3])
@pytest.mark.parametrize("chunk_size", [1, 4, 64])
@pytest.mark.parametrize("reset", [False, True])
def test_chunked_matches_naive_outputs_and_all_grads(groups, chunk_size, reset):
    args, rst = _inputs(groups=groups, reset=reset)
    y0, h0, g0 = _run(selective_scan_naive, args, rst)
    y1, h1, g1 = _run(selective_scan_chunked, args, rst, chunk_size=chunk_size)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(h1, h0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=lambda m, k=name: f"grad {k}: {m}")


@pytest.mark.parametrize("groups", [None, 3])
@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("chunk_size", [3, 64])  # checkpoints every 3 steps (11 = 3 * 3 + 2), or one chunk
def test_fused_cpu_matches_naive_outputs_and_all_grads(groups, reset, chunk_size):
    args, rst = _inputs(groups=groups, reset=reset)
    y0, h0, g0 = _run(selective_scan_naive, args, rst)
    y1, h1, g1 = _run(selective_scan_cpu, args, rst, chunk_size=chunk_size)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(h1, h0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=lambda m, k=name: f"grad {k}: {m}")


@pytest.fixture
def small_blocks(monkeypatch):
    """Fused kernel with 16-channel blocks (forward and backward) and 2 threads at any size: several blocks
    and channel splits per batch row, B/C groups of 12 channels straddling the blocks."""
    monkeypatch.setattr(fused_cpu, "_L1_BYTES", 1)
    monkeypatch.setattr(fused_cpu, "_SCRATCH_BYTES", 1)
    monkeypatch.setattr(fused_cpu, "PARALLEL_MIN_ELEMENTS", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _blocked_case():
    # b l d n = 2 37 48 4, threaded (small_blocks), 37 = 2 * 16 + 5 (chunk 16)
    args, rst = _inputs(b=2, l=37, d=48, n=4, groups=4, seed=3, reset=True)
    assert fused_cpu._forward_block(48, 4, 4) == 16
    assert fused_cpu._backward_blocks(2, 48, 4, 16, 4, True) == (16, 32)  # 2 splits per row, 2 sub-blocks
    return args, rst


@pytest.mark.usefixtures("small_blocks")
def test_fused_cpu_blocks_splits_and_chunks_match_naive_float64():
    args, rst = _blocked_case()
    y0, h0, g0 = _run(selective_scan_naive, args, rst)
    y1, h1, g1 = _run(selective_scan_cpu, args, rst, chunk_size=16)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(h1, h0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=lambda m, k=name: f"grad {k}: {m}")


@pytest.mark.usefixtures("small_blocks")
def test_fused_cpu_float32_matches_float64_naive_with_all_options():
    """float32 kernel (polynomial exp/softplus) vs the float64 loop: h0, reset, 4 groups, delta_bias +
    softplus, a length that is not a multiple of the chunk; outputs and every gradient, in norm."""
    args, rst = _blocked_case()
    y0, h0, g0 = _run(selective_scan_naive, args, rst)
    args32 = {k: v.detach().float().requires_grad_(True) for k, v in args.items()}
    y, h = selective_scan_cpu(**args32, delta_softplus=True, return_final_state=True, reset=rst, chunk_size=16)
    assert y.dtype == h.dtype == torch.float32
    g = torch.Generator().manual_seed(123)  # the cotangents of _run, in float32
    gy, gh = torch.randn(y.shape, generator=g, dtype=F64).float(), torch.randn(h.shape, generator=g, dtype=F64).float()
    g1 = dict(zip(args32, torch.autograd.grad((y * gy).sum() + (h * gh).sum(), list(args32.values()))))
    for name, got, want in [("y", y, y0), ("h_last", h, h0)] + [(k, g1[k], g0[k]) for k in g0]:
        err = (got.double() - want).norm() / want.norm()
        assert err < 2e-6, f"{name}: relative error {err:.2e} in norm"


def _math_ref(x):
    """exp, softplus (x above 20: x) and its derivative in float64 numpy."""
    x = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)
        sp = np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))
        dsp = np.where(x > 20, 1.0, 1.0 / (1.0 + np.exp(-x)))
    return e, sp, dsp


def test_fast_math_float32_accuracy_and_extremes():
    """The bounds of the fast_exp / fast_softplus / fast_dsoftplus docstrings, inside a vectorised
    "reassoc" kernel (``_math_rows``), over a dense grid and the extremes."""
    special = [
        -100,
        -87,
        0,
        20,
        88,
        88.5,
        88.72,
        88.7228,
        88.8,
        1e30,
        -1e30,
        np.inf,
        -np.inf,
        np.nan,
        -0.0,
        1e-30,
        19.9999,
        20.0001,
        -86.999,
    ]
    x = np.concatenate([np.linspace(-100, 100, 400_001, dtype=np.float32), np.array(special, np.float32)])
    out = [np.empty_like(x) for _ in range(3)]
    fused_cpu._math_rows(x, *out)
    got_e, got_sp, got_dsp = (o.astype(np.float64) for o in out)
    ref_e, ref_sp, ref_dsp = _math_ref(x)
    rel = lambda got, ref, m: np.max(np.abs(got[m] - ref[m]) / np.abs(ref[m]))  # noqa: E731
    fin = np.isfinite(x)
    inside = fin & (x >= -87)
    below = (x < -87) & ~np.isnan(x)  # incl. -inf
    # exp: relative error < 2.5e-7 on [-87, 88.72]; inf above log(float32 max); ~1.6e-38 below -87
    assert rel(got_e, ref_e, inside & (x <= 88.72)) < 2.5e-7
    assert np.all(np.isposinf(got_e[x > 88.7229])) and np.isposinf(got_e[x == np.inf]).all()
    assert np.all(np.abs(got_e[below] - ref_e[below]) < 2e-38) and np.all(got_e[below] >= 1.17e-38)  # normal
    # softplus: relative error < 4e-7 for x >= -87, exactly x above 20, absolute < 2e-38 below -87
    assert rel(got_sp, ref_sp, inside) < 4e-7
    assert np.array_equal(got_sp[x > 20], x[x > 20].astype(np.float64))  # incl. inf
    assert np.all(np.abs(got_sp[below] - ref_sp[below]) < 2e-38)
    # softplus': relative error < 2.5e-7 for x >= -87, exactly 1 above 20, absolute < 2e-38 below
    assert rel(got_dsp, ref_dsp, inside) < 2.5e-7
    assert np.all(got_dsp[x > 20] == 1.0) and got_dsp[x == -np.inf][0] == 0.0
    assert np.all(np.abs(got_dsp[below] - ref_dsp[below]) < 2e-38)
    for o in (got_e, got_sp, got_dsp):
        assert np.isnan(o[np.isnan(x)]).all()  # NaN stays NaN
    assert got_e[x == 0][0] == 1.0 and got_sp[x == 0][0] == np.float32(math.log(2)) and got_dsp[x == 0][0] == 0.5


def test_fast_math_float64_is_libm_and_float32_vectorises():
    x = np.concatenate([np.linspace(-700, 700, 10_001), [0.0, 20.0, 30.0, -np.inf]])
    out = [np.empty_like(x) for _ in range(3)]
    fused_cpu._math_rows(x, *out)
    for got, ref in zip(out, _math_ref(x)):
        np.testing.assert_allclose(got, ref, rtol=1e-14, atol=0)

    # the float32 loop is vectorised (no libm call per element): LLVM's IR has float vectors. A fresh
    # (uncached) copy of _math_rows' exp loop, with the kernels' flags: cached code keeps no IR.
    @njit(fastmath={"reassoc", "contract", "nsz"})
    def exp_rows(x, out):
        for j in range(x.shape[0]):
            out[j] = fused_cpu.fast_exp(x[j])

    x32 = np.linspace(-5, 5, 64, dtype=np.float32)
    out32 = np.empty_like(x32)
    exp_rows(x32, out32)
    np.testing.assert_allclose(out32, np.exp(x32.astype(np.float64)), rtol=2.5e-7)
    ir = exp_rows.inspect_llvm(exp_rows.signatures[0])
    assert re.search(r"<(4|8|16) x float>", ir) and "@expf" not in ir


def test_fused_cpu_float32_and_batch_split():
    args, _ = _inputs(b=5, l=30)
    y64, h64 = selective_scan_naive(**args, delta_softplus=True, return_final_state=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # rows split over two threads
    try:
        y32, h32 = selective_scan_cpu(
            **{k: v.float() for k, v in args.items()}, delta_softplus=True, return_final_state=True
        )
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h32.double(), h64, rtol=1e-4, atol=1e-4)


def test_length_one_and_dispatch():
    args, _ = _inputs(l=1)
    for backend in ("naive", "chunked", "cpu", "auto"):
        y, h = selective_scan(**args, return_final_state=True, backend=backend)
        assert y.shape == (2, 1, 6) and h.shape == (2, 6, 4)
    args32 = {k: v.float() for k, v in args.items()}
    if os.environ.get("TRITON_INTERPRET") == "1" and importlib.util.find_spec("triton") is not None:
        # CPU tensors run the Triton kernels in the interpreter (tests/conftest.py sets it without a GPU)
        torch.testing.assert_close(
            selective_scan(**args32, backend="gpu"), selective_scan(**args32, backend="naive"), rtol=1e-5, atol=1e-5
        )
    else:
        with pytest.raises((ValueError, ImportError)):  # the Triton kernels need CUDA (or the interpreter)
            selective_scan(**args32, backend="gpu")
    y_n = selective_scan(**args, backend="naive")
    torch.testing.assert_close(selective_scan(**args, backend="auto"), y_n)


def test_auto_is_fused_cpu_in_float32_and_chunked_in_float64():
    args, rst = _inputs(b=2, l=40, d=8, reset=True)
    for dtype, want in ((torch.float32, "cpu"), (torch.float64, "chunked")):
        a = {k: v.detach().to(dtype) for k, v in args.items()}
        out = {
            be: selective_scan(**a, delta_softplus=True, reset=rst, chunk_size=16, backend=be)
            for be in ("auto", "cpu", "chunked")
        }
        assert not torch.equal(out["cpu"], out["chunked"])  # the two backends round differently
        assert torch.equal(out["auto"], out[want]), dtype
    a = {k: v.detach().float() for k, v in args.items()}
    a["A"] = a["A"].double()  # any float64 input makes the compute dtype float64: chunked
    torch.testing.assert_close(selective_scan(**a), selective_scan(**a, backend="chunked"), rtol=0, atol=0)


def test_continuation_with_final_state():
    args, _ = _inputs(l=12)
    full, hf = selective_scan_chunked(**args, return_final_state=True)
    cut = {k: (v[:, :5] if v.dim() >= 3 and v.shape[1] == 12 else v) for k, v in args.items()}
    rest = {k: (v[:, 5:] if v.dim() >= 3 and v.shape[1] == 12 else v) for k, v in args.items()}
    y1, s1 = selective_scan_chunked(**cut, return_final_state=True)
    rest["h0"] = s1
    y2, s2 = selective_scan_chunked(**rest, return_final_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), full)
    torch.testing.assert_close(s2, hf)


def test_reset_is_like_separate_sequences():
    args, _ = _inputs(b=1, l=10)
    args["h0"] = None
    reset = torch.zeros(1, 10, dtype=torch.bool)
    reset[0, 6] = True
    packed = selective_scan_chunked(**args, reset=reset)
    second = {k: (v[:, 6:] if v is not None and v.dim() >= 3 and v.shape[1] == 10 else v) for k, v in args.items()}
    torch.testing.assert_close(packed[:, 6:], selective_scan_naive(**second))


def test_float32_close_to_float64():
    args, _ = _inputs(l=20)
    y64 = selective_scan_naive(**args, delta_softplus=True)
    y32 = selective_scan_chunked(**{k: v.float() for k, v in args.items()}, delta_softplus=True)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fn", [selective_scan_naive, selective_scan_chunked, selective_scan_cpu])
def test_bad_inputs_raise(fn):
    args, _ = _inputs()
    with pytest.raises(ValueError, match=r"\(d, n\)"):
        fn(**{**args, "A": args["A"][:, :, None]})
    with pytest.raises(ValueError, match="B must have shape"):
        fn(**{**args, "B": args["B"][:, :, :3]})
    with pytest.raises(ValueError, match="groups dividing"):
        fn(**{**args, "B": torch.randn(2, 11, 4, 4, dtype=F64)})
    with pytest.raises(ValueError, match="h0 must have shape"):
        fn(**{**args, "h0": torch.zeros(2, 6, 5, dtype=F64)})
    with pytest.raises(ValueError, match="empty"):
        fn(**{k: (v[:, :0] if v.dim() >= 3 and v.shape[1] == 11 else v) for k, v in args.items()})
    with pytest.raises(TypeError, match="bool"):
        fn(**args, reset=torch.zeros(2, 11))
