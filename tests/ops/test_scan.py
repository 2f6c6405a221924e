"""linear_scan: every backend == the naive loop (outputs and all gradients, float64/complex128),
gradcheck and opcheck on the custom ops, long sequences with |a| near 1, dispatch and bad input."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchssm.ops import linear_scan, linear_scan_naive
from torchssm.ops.backend import resolve_backend
from torchssm.ops.scan import chunked, cpu, function
from torchssm.ops.scan.function import LinearScanFunction, scan_backward_generic

BACKENDS = ["chunked", "cpu"]
DTYPES = [torch.float64, torch.complex128]


def make_inputs(batch, length, dim, dtype, *, a_varies=True, with_h0=True, with_reset=False, radius=0.95, seed=0):
    """Random (a, b, h0, reset) with |a| <= radius; reset has a True at t=0 and t=L-1 to test both ends."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, length, dim) if a_varies else (dim,)
    mag = radius * torch.rand(shape, generator=gen, dtype=torch.float64)
    if dtype.is_complex:
        phase = 6.28 * torch.rand(shape, generator=gen, dtype=torch.float64)
        a = torch.polar(mag, phase).to(dtype)
    else:
        a = (mag * torch.sign(torch.randn(shape, generator=gen, dtype=torch.float64))).to(dtype)
    b = torch.randn(batch, length, dim, generator=gen, dtype=dtype)
    h0 = torch.randn(batch, dim, generator=gen, dtype=dtype) if with_h0 else None
    reset = None
    if with_reset:
        reset = torch.rand(batch, length, generator=gen) < 0.25
        reset[0, 0] = True
        reset[-1, -1] = True
    return a, b, h0, reset


def grads(a, b, h0, reset, *, reverse, backend, seed=1):
    """(h, grad_a, grad_b, grad_h0) of a random linear functional of h through ``backend``."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (a, b, h0)]
    h = linear_scan(*leaves, reverse=reverse, reset=reset, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(h.shape, generator=gen, dtype=h.dtype)
    (h * weight).real.sum().backward()
    return (h.detach(),) + tuple(t.grad if t is not None else None for t in leaves)


def assert_matches_naive(a, b, h0, reset, *, reverse, backend):
    got = grads(a, b, h0, reset, reverse=reverse, backend=backend)
    want = grads(a, b, h0, reset, reverse=reverse, backend="naive")
    for name, g, w in zip(("h", "grad_a", "grad_b", "grad_h0"), got, want):
        if w is None:
            assert g is None, name
        else:
            torch.testing.assert_close(g, w, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("a_varies", [True, False], ids=["a_BLD", "a_D"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize(
    "with_h0,with_reset", [(True, False), (False, False), (True, True)], ids=["h0", "no_h0", "h0_reset"]
)
def test_matches_naive(backend, dtype, a_varies, reverse, with_h0, with_reset):
    # L = 77: not a power of two, and more than two chunks of chunked.CHUNK, so the carry pass runs.
    a, b, h0, reset = make_inputs(3, 77, 5, dtype, a_varies=a_varies, with_h0=with_h0, with_reset=with_reset)
    assert_matches_naive(a, b, h0, reset, reverse=reverse, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("length", [1, 2, 31, 32, 33, 1025])
def test_lengths(backend, length):
    # Chunk boundaries (CHUNK = 32), L = 1, and a two-level recursion of the chunked scan (1025 > 32^2).
    a, b, h0, reset = make_inputs(2, length, 3, torch.complex128, with_reset=True)
    assert_matches_naive(a, b, h0, reset, reverse=False, backend=backend)
    assert_matches_naive(a, b, h0, reset, reverse=True, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wide_dim_uses_channel_blocks(backend):
    # batch 1 with D = 70: the cpu kernel splits D into blocks (one partial block) for the threads.
    a, b, h0, reset = make_inputs(1, 20, 70, torch.complex128, with_reset=True)
    assert_matches_naive(a, b, h0, reset, reverse=False, backend=backend)
    a, b, h0, reset = make_inputs(1, 20, 70, torch.float64, a_varies=False)
    assert_matches_naive(a, b, h0, reset, reverse=True, backend=backend)


@pytest.mark.parametrize("batch,dim", [(1, 70), (5, 3)])
def test_cpu_threaded_jobs(monkeypatch, batch, dim):
    # Small problems run on the calling thread; force the job split over threads: channel blocks
    # of 16 with a partial last block for batch 1, one job per batch row for batch 5.
    monkeypatch.setattr(cpu, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(cpu, "_threads", lambda: 3)
    calls = []
    kernel = cpu._fwd_jobs
    monkeypatch.setattr(cpu, "_fwd_jobs", lambda *args: calls.append(args[-3:]) or kernel(*args))
    for a_varies in (True, False):
        a, b, h0, reset = make_inputs(batch, 20, dim, torch.complex128, a_varies=a_varies, with_reset=True)
        assert_matches_naive(a, b, h0, reset, reverse=False, backend="cpu")
        assert_matches_naive(a, b, h0, reset, reverse=True, backend="cpu")
    n_jobs = 5  # (1, 70): channel blocks of 16 -> 5 jobs; (5, 3): 5 batch rows
    first_call = []  # the job ranges of the first forward call: every job exactly once
    for block, j0, j1 in calls:
        first_call += list(range(j0, j1))
        assert block == (16 if batch == 1 else 3)
        if len(first_call) == n_jobs:
            break
    assert sorted(first_call) == list(range(n_jobs))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_dtypes_promote(backend):
    # real a (float32) with complex b: h is complex128 (promotion), grad_a is real, grad_h0 complex64.
    a, b, _, reset = make_inputs(2, 9, 4, torch.float64, a_varies=False)
    b = torch.randn(2, 9, 4, dtype=torch.complex128)
    h0 = torch.randn(2, 4, dtype=torch.complex64)
    a = a.float()
    got = grads(a, b, h0, reset, reverse=False, backend=backend)
    want = grads(a, b, h0, reset, reverse=False, backend="naive")
    assert got[0].dtype == torch.complex128
    assert got[1].dtype == torch.float32 and got[3].dtype == torch.complex64
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_conj_inputs(backend):
    a, b, h0, _ = make_inputs(2, 11, 6, torch.complex128)
    a_t = a.transpose(0, 2).contiguous().transpose(0, 2)  # same values, permuted strides
    b_conj = b.conj()  # lazy conjugate bit
    h0_slice = torch.randn(2, 12, dtype=torch.complex128)[:, ::2]  # strided
    got = linear_scan(a_t, b_conj, h0_slice, backend=backend)
    torch.testing.assert_close(got, linear_scan_naive(a, b.conj().resolve_conj(), h0_slice))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_matches_float64_reference(backend):
    a, b, h0, reset = make_inputs(2, 300, 8, torch.complex128, with_reset=True)
    want = linear_scan_naive(a, b, h0, reset=reset)
    got = linear_scan(
        a.to(torch.complex64), b.to(torch.complex64), h0.to(torch.complex64), reset=reset, backend=backend
    )
    assert got.dtype == torch.complex64
    torch.testing.assert_close(got.to(torch.complex128), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_cpu_half_inputs_compute_in_float32():
    a, b, _, _ = make_inputs(2, 40, 4, torch.float64, a_varies=False)
    got = cpu.linear_scan_forward(a.bfloat16(), b.bfloat16())
    assert got.dtype == torch.bfloat16
    want = linear_scan_naive(a.bfloat16().double(), b.bfloat16().double())
    torch.testing.assert_close(got.double(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("a_varies", [True, False], ids=["a_BLD", "a_D"])
def test_gradcheck(backend, reverse, a_varies):
    a, b, h0, reset = make_inputs(2, 6, 3, torch.complex128, a_varies=a_varies, with_reset=True, seed=3)
    inputs = tuple(t.requires_grad_() for t in (a, b, h0))
    fn = lambda a, b, h0: LinearScanFunction.apply(a, b, h0, reset, reverse, backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    real = tuple(t.detach().real.clone().requires_grad_() for t in (a, b, h0))
    assert torch.autograd.gradcheck(fn, real)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_custom_ops(backend):
    # torch.library's own checks: schema, fake (meta) kernel, autograd registration, aliasing.
    a, b, h0, reset = make_inputs(2, 5, 3, torch.complex128, with_reset=True)
    h = function.linear_scan_fwd(a, b, h0, reset, False, backend)
    torch.library.opcheck(torch.ops.torchssm.linear_scan_fwd.default, (a, b, h0, reset, False, backend))
    torch.library.opcheck(
        torch.ops.torchssm.linear_scan_bwd.default, (a, h, None, torch.randn_like(h), reset, True, backend)
    )


def test_torch_compile_sees_opaque_ops():
    # aot_eager traces without a C++ compiler; a graph break would raise under fullgraph=True.
    a, b, h0, reset = make_inputs(2, 8, 3, torch.float64, with_reset=True)
    a.requires_grad_()

    @torch.compile(backend="aot_eager", fullgraph=True)
    def f(a, b, h0):
        return linear_scan(a, b, h0, reset=reset, backend="cpu").sum()

    out = f(a, b, h0)
    out.backward()
    a2 = a.detach().clone().requires_grad_()
    linear_scan_naive(a2, b, h0, reset=reset).sum().backward()
    torch.testing.assert_close(out, linear_scan_naive(a, b, h0, reset=reset).sum())
    torch.testing.assert_close(a.grad, a2.grad)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_generic_backward_equals_fused_cpu_backward(reverse):
    # The composition used by backends without a fused backward (chunked, gpu) == cpu's fused kernel.
    for a_varies, reset_on in itertools.product([True, False], [False, True]):
        a, b, h0, reset = make_inputs(2, 19, 4, torch.complex128, a_varies=a_varies, with_reset=reset_on)
        h = linear_scan_naive(a, b, h0, reverse=reverse, reset=reset)
        g = torch.randn_like(h)
        want = cpu.linear_scan_backward(a, h, h0, g, reverse=reverse, reset=reset)
        got = scan_backward_generic(chunked.linear_scan_forward, a, h, h0, g, reverse=reverse, reset=reset)
        for x, y in zip(got, want):
            torch.testing.assert_close(x, y)


def test_long_sequence_near_unit_modulus():
    # L = 16384, |a| = 0.9999: the chunked scan never divides by a cumulative product (which would
    # underflow), so it stays finite and equals the sequential cpu kernel; gradients too.
    length, dim = 16384, 4
    gen = torch.Generator().manual_seed(0)
    a = torch.polar(
        torch.full((dim,), 0.9999, dtype=torch.float64), torch.rand(dim, generator=gen, dtype=torch.float64)
    ).to(torch.complex128)
    a_tv = a.expand(1, length, dim).contiguous()
    b = torch.randn(1, length, dim, generator=gen, dtype=torch.complex128)
    for a_in in (a, a_tv):
        outs = {}
        for backend in BACKENDS:
            a_leaf = a_in.clone().requires_grad_()
            h = linear_scan(a_leaf, b, backend=backend)
            h.abs().sum().backward()
            assert torch.isfinite(torch.view_as_real(h)).all(), backend
            assert torch.isfinite(torch.view_as_real(a_leaf.grad)).all(), backend
            outs[backend] = (h, a_leaf.grad)
        torch.testing.assert_close(outs["chunked"][0], outs["cpu"][0])
        torch.testing.assert_close(outs["chunked"][1], outs["cpu"][1])
    # float32 too: chunked vs cpu at float32 tolerance relative to the state size.
    h32 = {be: linear_scan(a_tv.to(torch.complex64), b.to(torch.complex64), backend=be) for be in BACKENDS}
    scale = h32["cpu"].abs().max().item()
    torch.testing.assert_close(h32["chunked"], h32["cpu"], rtol=1e-3, atol=1e-4 * scale)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 70),
    dim=st.integers(1, 9),
    complex_=st.booleans(),
    a_varies=st.booleans(),
    with_h0=st.booleans(),
    with_reset=st.booleans(),
    reverse=st.booleans(),
    backend=st.sampled_from(BACKENDS),
    seed=st.integers(0, 2**16),
)
def test_property_random_shapes(batch, length, dim, complex_, a_varies, with_h0, with_reset, reverse, backend, seed):
    dtype = torch.complex128 if complex_ else torch.float64
    a, b, h0, reset = make_inputs(
        batch, length, dim, dtype, a_varies=a_varies, with_h0=with_h0, with_reset=with_reset, seed=seed
    )
    assert_matches_naive(a, b, h0, reset, reverse=reverse, backend=backend)


# --- dispatch and bad input -------------------------------------------------------------------------


def test_auto_backend_on_cpu_is_numba():
    assert resolve_backend("auto", torch.zeros(1)) is cpu
    assert resolve_backend("chunked", torch.zeros(1)) is chunked


def test_backend_errors(monkeypatch):
    from torchssm.ops.scan import gpu

    x = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown backend 'fast'.*'auto', 'naive', 'chunked', 'cpu', 'gpu'"):
        resolve_backend("fast", x)
    monkeypatch.setattr(gpu, "INTERPRET", False)  # CPU tensors go to Triton only under its interpreter
    with pytest.raises(ValueError, match="backend='gpu'.*CUDA tensors"):
        resolve_backend("gpu", x)
    with pytest.raises(ValueError, match="backend='cpu'.*CPU tensors"):
        resolve_backend("cpu", torch.zeros(1, device="meta"))
    a, b, _, _ = make_inputs(1, 3, 2, torch.float64)
    with pytest.raises(ValueError, match="unknown backend"):
        linear_scan(a, b, backend="numba")


def test_gpu_dispatch_without_a_gpu(monkeypatch):
    # the dispatcher only reads .device and .dtype, so a stand-in describes a CUDA tensor here.
    from torchssm.ops import backend as backend_module

    cuda32 = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.complex64)
    cuda128 = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.complex128)
    key = "torchssm.ops.scan.gpu"
    monkeypatch.setitem(backend_module._cache, key, ImportError("No module named 'triton'"))
    with pytest.raises(ImportError, match=r"pip install torchssm\[gpu\]"):
        resolve_backend("gpu", cuda32)
    assert resolve_backend("auto", cuda32) is chunked  # no Triton: the plain PyTorch scan
    sentinel = SimpleNamespace(linear_scan_forward=None, INTERPRET=False)
    monkeypatch.setitem(backend_module._cache, key, sentinel)
    assert resolve_backend("auto", cuda32) is sentinel
    assert resolve_backend("auto", cuda128) is chunked  # Triton accumulates in float32: no float64


def test_one_dispatch_table_for_every_op(monkeypatch):
    """The same names mean the same thing in every op: the auto table of ops/backend.py on the CPU, a
    compiled backend the op lacks is refused by name (SSD's chunked form has no numba kernel), CUDA via a stand-in."""
    from torchssm.ops import backend as backend_module
    from torchssm.ops.backend import OPS, choose_backend

    f32, f64 = torch.zeros(1), torch.zeros(1, dtype=torch.float64)
    auto_cpu = {op: (choose_backend(op, "auto", f32), choose_backend(op, "auto", f64)) for op in OPS}
    assert auto_cpu == {
        "linear_scan": ("cpu", "cpu"),
        "lru_scan": ("cpu", "cpu"),
        "selective_scan": ("cpu", "chunked"),
        "ssd": ("cpu", "cpu"),
        "ssd_chunked": ("chunked", "chunked"),
    }
    for op in OPS:
        assert choose_backend(op, "naive", f32) == "naive" and choose_backend(op, "chunked", f32) == "chunked"
    with pytest.raises(ValueError, match="ssd_chunked has no 'cpu' backend.*'auto', 'naive', 'chunked', 'gpu'"):
        choose_backend("ssd_chunked", "cpu", f32)
    with pytest.raises(ValueError, match="unknown op"):
        choose_backend("conv", "auto", f32)
    cuda32 = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float32)
    cuda64 = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float64)
    for op, kernels in OPS.items():
        module, _, function = kernels.gpu.partition(":")
        monkeypatch.setitem(backend_module._cache, module, SimpleNamespace(**{function: None}))
        assert choose_backend(op, "auto", cuda32) == "gpu", op
        assert choose_backend(op, "auto", cuda64) == "chunked", op
    mps = SimpleNamespace(device=torch.device("mps"), dtype=torch.float32)
    assert {choose_backend(op, "auto", mps) for op in OPS} == {"chunked"}


@pytest.mark.parametrize("backend", ["naive", "chunked", "cpu"])
@pytest.mark.parametrize("reverse", [False, True])
def test_lru_scan_op_matches_reference_outputs_and_every_gradient(backend, reverse):
    """The LRU op (ops/scan/lru.py) on each CPU backend == its reference, float64: x and the gradients of
    nu_log, theta_log, bu and h0."""
    from torchssm.ops.scan.lru import lru_lambda, lru_scan, lru_scan_reference

    gen = torch.Generator().manual_seed(3)
    n = 5
    r = 0.5 + 0.45 * torch.rand(n, generator=gen, dtype=torch.float64)
    params = [torch.log(-torch.log(r)), torch.log(6.28 * torch.rand(n, generator=gen, dtype=torch.float64))]
    bu = torch.randn(2, 17, n, generator=gen, dtype=torch.complex128)
    h0 = torch.randn(2, n, generator=gen, dtype=torch.complex128)
    reset = torch.rand(2, 17, generator=gen) < 0.2
    reset[0, 0] = True
    leaves = [t.clone().requires_grad_() for t in (*params, bu, h0)]
    wide = [t.clone().requires_grad_() for t in (*params, bu, h0)]
    x = lru_scan(*leaves, reverse=reverse, reset=reset, backend=backend)
    ref = lru_scan_reference(*wide, reverse=reverse, reset=reset)
    torch.testing.assert_close(x, ref)
    lam = lru_lambda(*params)
    torch.testing.assert_close(lam.abs(), r)  # |lambda| = exp(-exp(nu_log)) = r
    grad_x = torch.randn(ref.shape, generator=gen, dtype=ref.dtype)
    for name, g, w in zip(
        ("nu_log", "theta_log", "bu", "h0"),
        torch.autograd.grad(x, leaves, grad_x),
        torch.autograd.grad(ref, wide, grad_x),
    ):
        torch.testing.assert_close(g, w, msg=name)


def test_lru_scan_op_bad_inputs():
    from torchssm.ops.scan.lru import lru_scan

    p = torch.zeros(3)
    with pytest.raises(ValueError, match=r"theta_log must have shape \(N,\)=\(3,\)"):
        lru_scan(p, torch.zeros(2), torch.zeros(1, 4, 3, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"bu must have shape \(batch, length, N\)"):
        lru_scan(p, p, torch.zeros(4, 3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="nu_log must be a real floating-point tensor"):
        lru_scan(p.to(torch.complex64), p, torch.zeros(1, 4, 3, dtype=torch.complex64))


@pytest.mark.parametrize("backend", ["naive", "chunked", "cpu"])
def test_bad_inputs_raise(backend):
    a, b, h0, _ = make_inputs(2, 5, 3, torch.float64)
    cases = [
        (dict(b=b[0]), ValueError, r"b must have shape \(batch, length, dim\)"),
        (dict(b=b[:, :0]), ValueError, "empty sequence"),
        (dict(a=a[:, :, :2]), ValueError, r"a must have shape \(batch, length, dim\)=\(2, 5, 3\) or \(dim,\)=\(3,\)"),
        (dict(a=torch.rand(4, dtype=torch.float64)), ValueError, r"\(dim,\)=\(3,\)"),
        (dict(h0=h0[:, :2]), ValueError, r"h0 must have shape \(batch, dim\)=\(2, 3\)"),
        (
            dict(reset=torch.zeros(2, 4, dtype=torch.bool)),
            ValueError,
            r"reset must have shape \(batch, length\)=\(2, 5\)",
        ),
        (dict(reset=torch.zeros(2, 5)), TypeError, "reset must be a bool tensor"),
        (dict(b=b.long()), TypeError, "b must be a floating-point or complex tensor"),
    ]
    for override, err, match in cases:
        kwargs = dict(a=a, b=b, h0=h0, reset=None) | override
        with pytest.raises(err, match=match):
            linear_scan(kwargs["a"], kwargs["b"], kwargs["h0"], reset=kwargs["reset"], backend=backend)
