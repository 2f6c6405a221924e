"""Triton scan kernels (ops/scan/gpu.py) == the naive loop in float64: outputs and every gradient.

Runs on CUDA when there is a GPU; otherwise on the CPU under TRITON_INTERPRET=1 (set here, before
Triton is imported; small shapes: the interpreter runs the in-tile scan element by element).
Skipped when Triton is not importable.

Error bounds tested (the kernels compute in float32):
  * float32 / complex64 inputs: max |h - h_ref| <= 2e-6 * max |h_ref| (and the same for every
    gradient) at L <= 40, |a| <= 0.95: float32 rounding grows like eps * min(L, 1/(1-|a|)).
  * bf16 b with float32 a (docs/architecture.md, Numerics: decays stay float32): output float32, the
    same float32 bound against the reference on the bf16-rounded inputs.
  * bf16 a and b: output rounded to bf16, |h - h_ref| <= 2^-8 |h_ref| + 1e-5 max |h_ref|
    elementwise (one round-to-nearest bf16 rounding of a float32-accumulated state; 2^-7 under
    the interpreter, which truncates); a bf16 grad_b is within the same bound.
  * bf16 b, float32 a and state, L = 256 (slow: 1024 and 16384), |a| up to 1 - 1e-4: elementwise
    |h - h_ref| <= 2^-8 S_t + c eps32 T_t against the float64 scan of the unrounded b, with
    S = scan(|a|, |b|), T = scan(|a|, S), c = 2 real / 4 complex (derivation in docs/gpu.md).
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from _triton_common import ptx_stats, triton_device

DEVICE = triton_device()

from torchssm.ops.scan import gpu  # noqa: E402
from torchssm.ops.scan.lru import lru_scan_reference  # noqa: E402
from torchssm.ops.scan.naive import linear_scan_naive  # noqa: E402

TOL = 2e-6  # float32 kernel vs float64 reference, relative to the max of the reference
# One bf16 rounding of a float32 value (8 significant bits): <= 2^-8 relative on the GPU (round to
# nearest even), <= 2^-7 under the interpreter (its float32 -> bf16 cast truncates).
BF16_ULP = 2.0**-7 if gpu.INTERPRET else 2.0**-8


def _wide(t):
    """float64 / complex128 copy (leaf requiring grad) of a float32/bf16/complex64 tensor."""
    if t is None:
        return None
    return t.detach().to(torch.complex128 if t.is_complex() else torch.float64).requires_grad_()


def assert_close_rel(got, want, tol=TOL):
    """|got - want| <= tol * max|want| elementwise, via assert_close (got upcast to want's dtype)."""
    atol = tol * max(want.abs().max().item(), 1e-30)
    torch.testing.assert_close(got.to(want.dtype), want.detach(), rtol=0, atol=atol)


def make(batch, length, dim, *, complex_, invariant, h0=True, reset=True, seed=0):
    """Random float32/complex64 (a, b, h0, reset) with |a| in [0.5, 0.95]; reset hits t=0 and t=L-1."""
    gen = torch.Generator().manual_seed(seed)
    shape = (dim,) if invariant else (batch, length, dim)
    a = 0.5 + 0.45 * torch.rand(shape, generator=gen)
    if complex_:
        a = torch.polar(a, 6.28 * torch.rand(shape, generator=gen))
    else:
        a = a * torch.sign(torch.randn(shape, generator=gen))
    dtype = torch.complex64 if complex_ else torch.float32
    b = torch.randn(batch, length, dim, generator=gen, dtype=dtype)
    h = torch.randn(batch, dim, generator=gen, dtype=dtype) if h0 else None
    r = None
    if reset:
        r = torch.rand(batch, length, generator=gen) < 0.2
        r[0, 0] = r[-1, -1] = True
    move = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    return move(a), move(b), move(h), move(r)


def check_against_naive(a, b, h0, reset, reverse, tol=TOL, chunks=None):
    """Forward and all gradients (a, b, h0) of the kernels vs autograd through the float64 loop."""
    h = gpu.linear_scan_forward(a, b, h0, reverse=reverse, reset=reset, chunks=chunks)
    aw, bw, h0w = _wide(a), _wide(b), _wide(h0)
    ref = linear_scan_naive(aw, bw, h0w, reverse=reverse, reset=reset)  # (B, L, D)
    assert h.shape == ref.shape
    assert_close_rel(h, ref, tol)
    grad_h = torch.randn_like(ref)  # (B, L, D)
    leaves = [t for t in (aw, bw, h0w) if t is not None]
    want = torch.autograd.grad(ref, leaves, grad_h)
    # the argument order of ops/scan/function.py: (a, h, h0, grad_h)
    grad_a, grad_b, grad_h0 = gpu.linear_scan_backward(
        a, h, h0, grad_h.to(h.dtype), reverse=reverse, reset=reset, b=b, chunks=chunks
    )
    got = [grad_a, grad_b] + ([grad_h0] if h0 is not None else [])
    for g, w, x in zip(got, want, (a, b, h0)):
        assert g.shape == x.shape and g.dtype == x.dtype
        assert_close_rel(g, w, BF16_ULP if x.dtype == torch.bfloat16 else tol)  # one bf16 rounding
    if h0 is None:  # gradient with respect to a zero initial state
        h0z = torch.zeros_like(bw[:, 0]).requires_grad_()
        ref0 = linear_scan_naive(aw.detach(), bw.detach(), h0z, reverse=reverse, reset=reset)
        assert_close_rel(grad_h0, torch.autograd.grad(ref0, h0z, grad_h)[0], tol)


# L = 37 is not a multiple of the interpreter's 16-step tile, D = 12 not of its 8 channels. The reverse
# scan with a fixed decay (the fixed-decay and the reverse paths each run by default) is in the slow run.
@pytest.mark.parametrize(
    "reverse,invariant,complex_",
    [
        pytest.param(rev, inv, cplx, marks=[pytest.mark.slow] if rev and inv else [])
        for rev in (False, True)
        for inv in (False, True)
        for cplx in (False, True)
    ],
    ids=[f"{r}-{i}-{c}" for r in ("fwd", "rev") for i in ("a_varies", "a_fixed") for c in ("real", "complex")],
)
def test_matches_naive_with_h0_and_reset(reverse, invariant, complex_):
    a, b, h0, reset = make(2, 37, 12, complex_=complex_, invariant=invariant)
    check_against_naive(a, b, h0, reset, reverse)


# sequence split: 37 steps in 3 chunks of 13 (each one partial tile of the interpreter's 16), all in the slow
# run; by default the split runs in test_lru_scan_matches_reference[rev-split] (reverse, h0, reset) and in
# test_sequence_split_without_h0_and_auto_chunks (complex, 4 chunks)
@pytest.mark.parametrize(
    "complex_,invariant,reverse",
    [
        pytest.param(True, False, False, marks=pytest.mark.slow),
        pytest.param(True, True, True, marks=pytest.mark.slow),
        pytest.param(False, False, True, marks=pytest.mark.slow),
        pytest.param(False, True, False, marks=pytest.mark.slow),
    ],
    ids=["complex-varies-fwd", "complex-fixed-rev", "real-varies-rev", "real-fixed-fwd"],
)
def test_sequence_split_matches_naive(complex_, invariant, reverse):
    a, b, h0, reset = make(2, 37, 12, complex_=complex_, invariant=invariant, seed=4)
    check_against_naive(a, b, h0, reset, reverse, chunks=3)


def test_sequence_split_without_h0_and_auto_chunks():
    a, b, _, _ = make(2, 21, 5, complex_=True, invariant=False, h0=False, reset=False, seed=5)
    check_against_naive(a, b, None, None, reverse=False, chunks=4)
    assert gpu.auto_chunks(8, 4096, 64, torch.device("cpu")) == 1  # the split is a CUDA-only default
    if DEVICE == "cuda":  # a narrow shape is split, a wide one is not
        assert gpu.auto_chunks(8, 4096, 64, torch.device("cuda")) > 1
        assert gpu.auto_chunks(8, 4096, 4096, torch.device("cuda")) == 1


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_without_h0_and_reset(complex_):
    a, b, h0, reset = make(2, 21, 10, complex_=complex_, invariant=False, h0=False, reset=False)
    check_against_naive(a, b, h0, reset, reverse=False)


def test_single_step_and_mixed_real_complex():
    """L = 1; a real decay with complex b and h0 (h complex, grad_a real part only)."""
    a, b, h0, reset = make(3, 1, 5, complex_=True, invariant=False, reset=False)
    check_against_naive(a.abs(), b, h0, reset, reverse=False)
    a, b, h0, reset = make(2, 19, 5, complex_=True, invariant=True, reset=True, seed=1)
    check_against_naive(a.abs(), b, h0.real.contiguous(), reset, reverse=True)


def test_bf16_b_with_float32_decay():
    a, b, h0, reset = make(2, 37, 12, complex_=False, invariant=False)
    b16 = b.bfloat16()
    h = gpu.linear_scan_forward(a, b16, h0, reset=reset)
    assert h.dtype == torch.float32
    check_against_naive(a, b16, h0, reset, reverse=False)


def test_bf16_a_and_b_round_once():
    a, b, h0, reset = make(2, 37, 12, complex_=False, invariant=False)
    a16, b16 = a.bfloat16(), b.bfloat16()
    h = gpu.linear_scan_forward(a16, b16, reset=reset)
    assert h.dtype == torch.bfloat16
    ref = linear_scan_naive(a16.double(), b16.double(), reset=reset)
    torch.testing.assert_close(h.double(), ref, rtol=BF16_ULP, atol=1e-5 * ref.abs().max().item())


def bf16_input_bound(a, b, length):
    """The elementwise bound of docs/gpu.md ("bf16 inputs") for h = scan(a, bf16(b)) with a float32
    state, against the float64 scan of the unrounded b: returns (bound_total, bound_float32_only),
    each (1, L, D) float64, from S = scan(|a|, |b|) and T = scan(|a|, S) = sum_k (k+1) |a|^k |b_{t-k}|:

        |h_t - h_t^ref| <= 2^-8 S_t + c eps32 T_t,   c = 2 (real) or 4 (complex), eps32 = 2^-24.
    """
    S = linear_scan_naive(a.abs().double(), b.abs().double())  # (1, L, D)
    T = linear_scan_naive(a.abs().double(), S)  # (1, L, D)
    f32 = (4 if a.is_complex() else 2) * 2.0**-24 * T
    return 2.0**-8 * S + f32, f32


def _bf16_round(b):
    """bf16 rounding (round to nearest even, by torch) of b's real and imaginary parts, as float32."""
    if b.is_complex():  # there is no bf16 complex dtype: round each part
        return torch.complex(b.real.bfloat16().float(), b.imag.bfloat16().float())
    return b.bfloat16()


@pytest.mark.parametrize(
    "length",
    [256, pytest.param(1024, marks=pytest.mark.slow), pytest.param(16384, marks=pytest.mark.slow)],
    ids=["L256", "L1k", "L16k"],
)  # the bound is derived for any L; the interpreter's time grows with L
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_bf16_input_error_bound(complex_, length):
    """bf16 inputs b, float32 decays |a| in [0.9, 1 - 1e-4] (memory up to 10^4 steps) and state:
    the derived bound holds elementwise against the float64 scan of the unrounded b, and its
    float32 part alone against the float64 scan of the rounded b; no NaN/Inf (D = 8)."""
    dim = 8
    mag = 1 - torch.logspace(-4, -1, dim)  # (D,)
    a = torch.polar(mag, torch.linspace(0.01, 3.0, dim)) if complex_ else mag
    gen = torch.Generator().manual_seed(0)
    b = torch.randn(1, length, dim, generator=gen, dtype=a.dtype)  # (1, L, D)
    b16 = _bf16_round(b)
    h = gpu.linear_scan_forward(a.to(DEVICE), b16.to(DEVICE)).cpu()  # (1, L, D) float32 / complex64
    assert torch.isfinite(torch.view_as_real(h) if complex_ else h).all()
    total, f32 = bf16_input_bound(a, b, length)
    ref = linear_scan_naive(_wide(a).detach(), _wide(b).detach())
    ref16 = linear_scan_naive(_wide(a).detach(), _wide(b16).detach())
    assert ((h.to(ref.dtype) - ref).abs() <= total).all(), ((h.to(ref.dtype) - ref).abs() / total).max()
    assert ((h.to(ref.dtype) - ref16).abs() <= f32).all(), ((h.to(ref.dtype) - ref16).abs() / f32).max()


def test_noncontiguous_and_broadcast_inputs():
    """Channel-strided inputs are copied, batch/time-strided and expanded ones are read in place."""
    a, b, h0, reset = make(2, 23, 6, complex_=True, invariant=False)
    wide = torch.randn(2, 23, 20, dtype=torch.complex64, device=DEVICE)
    b_slice = wide[:, :, 3:9]  # time stride 20, channel stride 1
    b_t = b.transpose(1, 2).contiguous().transpose(1, 2)  # channel stride 23
    a_exp = a[:1].expand(2, -1, -1)  # batch stride 0
    h0_t = h0.t().contiguous().t()  # (B, D) with channel stride B
    for aa, bb, hh in [(a, b_slice, h0), (a, b_t, h0_t), (a_exp, b, h0)]:
        check_against_naive(aa, bb, hh, reset, reverse=False)


def test_bad_inputs():
    a, b, h0, reset = make(2, 5, 4, complex_=False, invariant=False)
    with pytest.raises(TypeError, match="float32, bfloat16, float16 or complex64"):
        gpu.linear_scan_forward(a.double(), b.double())
    with pytest.raises(TypeError, match="complex64"):
        gpu.linear_scan_forward(a, b.to(torch.complex128))
    with pytest.raises(TypeError, match="dtype"):
        gpu.linear_scan_forward(a, b.to(torch.int32))
    with pytest.raises(ValueError, match=r"\(batch, length, dim\)"):
        gpu.linear_scan_forward(a, b[0])
    with pytest.raises(ValueError, match=r"h0 must have shape \(batch, dim\)"):
        gpu.linear_scan_forward(a, b, h0[:, :2])
    with pytest.raises(TypeError, match="bool"):
        gpu.linear_scan_forward(a, b, reset=reset.float())
    with pytest.raises(ValueError, match="shape of h"):
        gpu.linear_scan_backward(a, b, None, b[:, :2])
    with pytest.raises(ValueError, match="chunks must be a positive int"):
        gpu.linear_scan_forward(a, b, chunks=0)


def test_cpu_tensor_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setattr(gpu, "INTERPRET", False)
    a, b, _, _ = make(1, 3, 2, complex_=False, invariant=False)
    with pytest.raises(ValueError, match="CUDA"):
        gpu.linear_scan_forward(a.cpu(), b.cpu())


def test_import_without_triton_raises_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` now raises ImportError
    monkeypatch.delitem(sys.modules, "torchssm.ops.scan.gpu")
    with pytest.raises(ImportError, match=r"pip install 'torchssm\[gpu\]'"):
        importlib.import_module("torchssm.ops.scan.gpu")
    # monkeypatch restores the module afterwards, so later tests keep the imported one


# ---------------------------------------------------------------------------------------------
# fused LRU path
# ---------------------------------------------------------------------------------------------


def _lru_inputs(batch, length, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = 0.5 + 0.45 * torch.rand(n, generator=gen)  # |lambda| in [0.5, 0.95]
    nu_log = torch.log(-torch.log(r))
    theta_log = torch.log(6.28 * torch.rand(n, generator=gen))
    gamma_log = 0.5 * torch.log(1 - r**2)  # log sqrt(1 - |lambda|^2), the LRU paper's normalisation
    bu = torch.randn(batch, length, n, generator=gen, dtype=torch.complex64)
    h0 = torch.randn(batch, n, generator=gen, dtype=torch.complex64)
    reset = torch.rand(batch, length, generator=gen) < 0.2
    return [t.to(DEVICE) for t in (nu_log, theta_log, gamma_log, bu, h0, reset)]


@pytest.mark.parametrize(
    "reverse,chunks",
    [(False, None), pytest.param(True, None, marks=pytest.mark.slow), (True, 2)],
    ids=["fwd", "rev", "rev-split"],
)  # reverse without a split runs by default in test_matches_naive_with_h0_and_reset
def test_lru_scan_matches_reference(reverse, chunks):
    nu_log, theta_log, gamma_log, bu, h0, reset = _lru_inputs(2, 29, 12)
    leaves = [t.clone().requires_grad_() for t in (nu_log, theta_log, gamma_log, bu, h0)]
    h = gpu.lru_scan(*leaves, reverse=reverse, reset=reset, chunks=chunks)
    wide = [_wide(t) for t in (nu_log, theta_log, gamma_log, bu, h0)]
    ref = lru_scan_reference(
        wide[0], wide[1], torch.exp(wide[2]) * wide[3], wide[4], reverse=reverse, reset=reset
    )  # the kernel's in-kernel gamma, applied outside
    assert_close_rel(h, ref)
    grad_h = torch.randn_like(ref)
    want = torch.autograd.grad(ref, wide, grad_h)
    got = torch.autograd.grad(h, leaves, grad_h.to(h.dtype))
    for g, w, x in zip(got, want, leaves):
        assert g.shape == x.shape and g.dtype == x.dtype
        assert_close_rel(g, w, 5 * TOL)  # the (N,) parameter grads sum B*L terms


def test_lru_scan_bad_inputs():
    nu_log, theta_log, gamma_log, bu, h0, reset = _lru_inputs(1, 3, 4)
    with pytest.raises(ValueError, match=r"nu_log must have shape \(N,\)=\(4,\)"):
        gpu.lru_scan(nu_log[:2], theta_log, gamma_log, bu)
    with pytest.raises(TypeError, match="gamma_log must be a real"):
        gpu.lru_scan(nu_log, theta_log, gamma_log.double(), bu)
    with pytest.raises(ValueError, match=r"bu must have shape \(batch, length, N\)"):
        gpu.lru_scan(nu_log, theta_log, gamma_log, bu[0])
    with pytest.raises(TypeError, match="bu has dtype torch.complex128.*complex64"):
        gpu.lru_scan(nu_log, theta_log, gamma_log, bu.to(torch.complex128))


def test_lru_scan_strided_inputs_equal_contiguous():
    """A channel-strided bu and h0 and a strided parameter view give the contiguous result."""
    nu_log, theta_log, gamma_log, bu, h0, reset = _lru_inputs(2, 9, 4, seed=2)
    bu_t = bu.transpose(1, 2).contiguous().transpose(1, 2)  # channel stride 9
    h0_t = h0.t().contiguous().t()  # channel stride 2
    nu_s = torch.stack([nu_log, nu_log], 1)[:, 0]  # stride 2
    assert not (bu_t.is_contiguous() or h0_t.is_contiguous() or nu_s.is_contiguous())
    want = gpu.lru_scan(nu_log, theta_log, gamma_log, bu, h0, reset=reset)
    torch.testing.assert_close(gpu.lru_scan(nu_s, theta_log, gamma_log, bu_t, h0_t, reset=reset), want, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="backend='gpu' dispatches CUDA tensors only")
def test_dispatch_through_linear_scan_function():
    from torchssm.ops.scan.function import scan

    a, b, h0, reset = make(2, 37, 12, complex_=True, invariant=False)
    leaves = [t.clone().requires_grad_() for t in (a, b, h0)]
    h = scan(*leaves, reset=reset, backend="gpu")
    wide = [_wide(t) for t in (a, b, h0)]
    ref = linear_scan_naive(*wide, reset=reset)
    assert_close_rel(h, ref)
    grad_h = torch.randn_like(ref)
    for g, w in zip(torch.autograd.grad(h, leaves, grad_h.to(h.dtype)), torch.autograd.grad(ref, wide, grad_h)):
        assert_close_rel(g, w)


def test_bench_kernels_runs(tmp_path, capsys):
    """`torchssm bench kernels` end to end at a tiny shape (on the CPU: a smoke test, not a timing)."""
    import argparse

    from torchssm.bench import kernels

    parser = argparse.ArgumentParser()
    kernels.add_arguments(parser)
    args = parser.parse_args(
        [
            "--device",
            DEVICE,
            "--shapes",
            "1x8x8",
            "--repeats",
            "1",
            "--no-peers",
            "--ops",
            "--selective-shape",
            "1x4x2x2",
            "--ssd-shape",
            "1x4x1x2x2",
            "--json",
            str(tmp_path / "k.json"),
        ]
    )
    assert kernels.run(args) == 0
    out = capsys.readouterr().out
    for name in (
        "copy (b.clone)",
        "scan fwd",
        "scan bwd",
        "lru fused",
        "lru unfused",
        "vs copy",
        "selective gpu",
        "selective chunked",
        "ssd gpu (recurrent)",
        "ssd chunked (matmul)",
        "ssd gpu (chunked matmul, ieee)",
        "ssd gpu (chunked matmul, tf32)",
    ):
        assert name in out
    assert (tmp_path / "k.json").exists()


_AOT_SCRIPT = r"""
from torchssm.ops.scan import _triton_kernels as K

out = {}
bwd_flags = {"STORE_GH0": True, "HAS_G0": True}
for name, fn, extra in [("fwd", K.scan_fwd_kernel, {}), ("bwd", K.scan_bwd_kernel, bwd_flags)]:
    for mode, cplx, summary in [(0, False, False), (0, True, False), (2, True, False), (1, True, True)]:
        c = dict(BLOCK_L=32, BLOCK_D=64, A_MODE=mode, A_C=cplx and mode == 0, B_C=cplx, H0_C=cplx,
                 COMPLEX=cplx, HAS_H0=True, HAS_RESET=True, REVERSE=mode == 2, SUMMARY=summary, **extra)
        out[f"{name}-{mode}-{cplx}" + ("-summary" if summary else "")] = build(fn, c, {"r_ptr": "*u8"})
from torchssm.ops.selective import gpu as S
sel = dict(HAS_RESET=True, BLOCK_L=64, BLOCK_D=4, NP=16)
out["selective-fwd"] = build(S.selective_fwd_kernel, dict(sel, HAS_H0=True), {"r_ptr": "*u8", "u_ptr": "*bf16"})
out["selective-bwd"] = build(S.selective_bwd_kernel, sel, {"r_ptr": "*u8"})
print(json.dumps({k: {"v4": v.count("ld.global.v4"), "v2": v.count("ld.global.v2"),
                      "local": v.count("st.local")} for k, v in out.items()}))
"""


@pytest.mark.skipif(DEVICE == "cuda", reason="on a GPU the kernels are compiled and run by the other tests")
def test_kernels_compile_for_ampere_without_a_gpu():
    """The real compiler (not the interpreter) lowers the scan kernel variants and the selective
    scan kernels to PTX for sm_80, without register spills, with vectorised global loads in the
    scan (16-byte for float32, 8-byte re/im pairs for complex64)."""
    stats = ptx_stats(_AOT_SCRIPT)
    assert len(stats) == 10
    # no spills to local memory (the LRU variants "-2-" keep libdevice sin/cos's local array, used
    # only by its slow path for |angle| > 1e5, so they are not checked)
    assert all(v["local"] == 0 for k, v in stats.items() if "-2-" not in k), stats
    assert stats["fwd-0-False"]["v4"] > 0 and stats["bwd-0-False"]["v4"] > 0
    assert stats["fwd-0-True"]["v2"] + stats["fwd-0-True"]["v4"] > 0
