"""Triton chunked-matmul SSD (ops/ssd/gpu_chunked.py) == the naive loop (ops/ssd/naive.py) in float64:
output, final state and the gradient of every input (x, dt, A, B, C, D, z, dt_bias, h0) by the
Triton backward kernels, with grouped B/C, resets, h0, lengths that are not a multiple of the
chunk, and gradients of a subset of the inputs; torch.compile(fullgraph=True) and
torch.library.opcheck of the four custom ops.

On CUDA when there is a GPU, else on the CPU under TRITON_INTERPRET=1 (tiny shapes). Bound:
max error <= 2e-6 (output, state) / 1e-5 (gradients) times the max of the float64 reference
(the kernels compute in float32, IEEE dots).
"""

from __future__ import annotations

import pytest
import torch
from _triton_common import ptx_stats, triton_device
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DEVICE = triton_device()

from torchssm.ops.scan.gpu import INTERPRET  # noqa: E402
from torchssm.ops.ssd import ssd  # noqa: E402
from torchssm.ops.ssd.gpu_chunked import ssd_chunked_gpu  # noqa: E402
from torchssm.ops.ssd.naive import ssd_naive  # noqa: E402

NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")


def _close(got, want, tol):
    atol = tol * max(want.abs().max().item(), 1e-30)
    torch.testing.assert_close(got.detach().double().cpu(), want.detach(), rtol=0, atol=atol)


def _inputs(b, l, h, p, g, n, *, full=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    x = {
        "x": r(b, l, h, p),
        "dt": r(b, l, h) - 1.0,
        "A": -torch.exp(0.5 * r(h)),
        "B": r(b, l, g, n),
        "C": r(b, l, g, n),
    }
    if full:
        x.update(D=r(h, p), z=r(b, l, h, p), dt_bias=0.1 * r(h))
    h0 = r(b, h, p, n) if full else None
    reset = None
    if full:
        reset = torch.rand(b, l, generator=gen) < 0.15
        reset[0, 0] = reset[-1, -1] = True
    return x, h0, reset


def _check(x, h0, reset, chunk_size, method_call=None):
    dev = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    leaves = {k: dev(v).requires_grad_() for k, v in x.items()}
    wide = {k: v.double().requires_grad_() for k, v in x.items()}
    h0_l = dev(h0).requires_grad_() if h0 is not None else None
    h0_w = h0.double().requires_grad_() if h0 is not None else None
    args = [leaves.get(k) for k in NAMES]
    call = method_call or (lambda *a, **k: ssd_chunked_gpu(*a, **k))
    y, s = call(*args, True, h0_l, reset=dev(reset), return_final_state=True, chunk_size=chunk_size)
    y_ref, s_ref = ssd_naive(*[wide.get(k) for k in NAMES], True, h0_w, reset=reset, return_final_state=True)
    assert y.dtype == torch.float32 and y.shape == y_ref.shape and s.shape == s_ref.shape
    _close(y, y_ref, 2e-6)
    _close(s, s_ref, 2e-6)
    gen = torch.Generator().manual_seed(1)
    gy, gs = torch.randn(y_ref.shape, generator=gen).double(), torch.randn(s_ref.shape, generator=gen).double()
    names = list(x) + (["h0"] if h0 is not None else [])
    got = torch.autograd.grad(
        [y, s], [*leaves.values()] + ([h0_l] if h0 is not None else []), [gy.float().to(DEVICE), gs.float().to(DEVICE)]
    )
    want = torch.autograd.grad([y_ref, s_ref], [*wide.values()] + ([h0_w] if h0 is not None else []), [gy, gs])
    for name, g_, w in zip(names, got, want):
        assert g_.shape == w.shape, name
        _close(g_, w, 1e-5)


# l = 21 with chunks of 8 (last chunk partial, 5 steps), or of 21 / 32 (one chunk, padded tile)
@pytest.mark.parametrize(
    "h,g,chunk_size",
    [(4, 2, 8), (2, 1, 32), (3, 3, 5)],
    ids=["grouped-chunk8", "shared-BC-one-chunk", "per-head-BC-chunk5"],
)
def test_matches_naive_output_state_and_every_gradient(h, g, chunk_size):
    x, h0, reset = _inputs(2, 21, h, 3, g, 5, seed=h)
    _check(x, h0, reset, chunk_size)


def test_minimal_inputs_without_h0_reset_d_z():
    x, h0, reset = _inputs(1, 11, 2, 2, 1, 3, full=False, seed=5)
    _check(x, h0, reset, 4)


def test_dispatch_through_ssd_method_chunked():
    x, h0, reset = _inputs(1, 9, 2, 2, 1, 3, seed=6)
    _check(x, h0, reset, 4, method_call=lambda *a, **k: ssd(*a, **k, backend="gpu", method="chunked"))


class _OpLog(torch.utils._python_dispatch.TorchDispatchMode):
    """Names of the ops dispatched while active (to see which backward kernels run)."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        return func(*args, **(kwargs or {}))


# which inputs require grad, which outputs the loss uses, which Triton backward ops must then run
@pytest.mark.parametrize(
    "wants,outputs,bwd_ops",
    [
        (("x", "h0", "D"), "both", {"state", "scan"}),
        (("C",), "y", {"scan"}),  # nothing before the chunk-state op needs a gradient
        pytest.param(("h0",), "y", {"scan"}, marks=pytest.mark.slow),  # h0 reaches y through the carried state
        # (the same backward ops as C-only: in the slow run)
        (("A", "dt_bias", "dt", "B"), "state", {"state"}),  # y unused: the chunk-scan backward is skipped
    ],
    ids=["x-h0-D", "C-only", "h0-only", "decay-B-final-state-only"],
)
def test_partial_gradients_run_only_the_needed_triton_backward(wants, outputs, bwd_ops):
    """Gradients of a subset of the inputs (D of shape (h,)) match the float64 loop, the others
    stay None, and the backward runs the Triton backward ops (torchssm::ssd_chunk_*_bwd) of exactly
    the custom ops that had an input needing a gradient, not a PyTorch recomputation."""
    x, h0, reset = _inputs(1, 11, 4, 2, 2, 3, seed=11)
    x["D"] = x["D"][:, 0].contiguous()  # (h,)
    full = dict(x, h0=h0)
    wide = {k: v.double().requires_grad_(k in wants) for k, v in full.items()}
    leaves = {k: v.to(DEVICE).requires_grad_(k in wants) for k, v in full.items()}
    kw = dict(reset=reset, return_final_state=True, chunk_size=4)
    y, s = ssd_chunked_gpu(*[leaves[k] for k in NAMES], True, leaves["h0"], **dict(kw, reset=reset.to(DEVICE)))
    y_ref, s_ref = ssd_naive(*[wide[k] for k in NAMES], True, wide["h0"], **kw)
    gen = torch.Generator().manual_seed(2)
    pairs = [(y, y_ref), (s, s_ref)] if outputs == "both" else [(y, y_ref)] if outputs == "y" else [(s, s_ref)]
    grads = [torch.randn(r.shape, generator=gen).double() for _, r in pairs]
    with _OpLog() as log:
        torch.autograd.backward([o for o, _ in pairs], [gr.float().to(DEVICE) for gr in grads])
    torch.autograd.backward([r for _, r in pairs], grads)
    ran = {k for k in ("state", "scan") if f"torchssm::ssd_chunk_{k}_bwd" in log.names}
    assert ran == bwd_ops, log.names
    assert not any("ssd_chunked" in name for name in log.names), log.names
    for k in full:
        if k in wants:
            _close(leaves[k].grad, wide[k].grad, 1e-5)
        else:
            assert leaves[k].grad is None, k


def test_strided_x():
    """x as a slice of a wider projection (time stride > h p) gives the contiguous result."""
    x, h0, reset = _inputs(2, 10, 2, 4, 1, 3, seed=7)
    args = {k: v.to(DEVICE) for k, v in x.items()}
    wide = torch.randn(2, 10, 2, 6, device=DEVICE)
    wide[..., :4] = args["x"]
    strided = wide[..., :4]
    assert not strided.is_contiguous()
    kw = dict(reset=reset.to(DEVICE), chunk_size=4)
    y = ssd_chunked_gpu(*[args[k] for k in NAMES], True, h0.to(DEVICE), **kw)
    y_s = ssd_chunked_gpu(*[dict(args, x=strided)[k] for k in NAMES], True, h0.to(DEVICE), **kw)
    torch.testing.assert_close(y_s, y, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_16bit_inputs_within_the_rounding_bound(dtype):
    """16-bit x, B, C (h0 float32): the dots take 16-bit operands (tensor cores on a GPU). The rounded
    operands are dt x, the decay-weighted dt x of the chunk state, the masked scores and the
    carried state (x, B, C are exact): each term of y carries at most 3 roundings, so
    |y - y_ref| <= 4 u |y|_abs, with u = 2^-8 (bf16; 2^-7 under the interpreter, which truncates),
    2^-11 (fp16), and |y|_abs the same SSD on |x|, |B|, |C|, |h0| (the sum of the terms' moduli)."""
    x, h0, reset = _inputs(2, 19, 2, 4, 1, 3, full=False, seed=8)
    h0 = torch.randn(2, 2, 4, 3, generator=torch.Generator().manual_seed(3))
    x["dt"] = torch.nn.functional.softplus(x["dt"])
    low = {k: (v.to(dtype) if k in ("x", "B", "C") else v) for k, v in x.items()}
    y = ssd_chunked_gpu(*[low[k].to(DEVICE) for k in NAMES[:5]], h0=h0.to(DEVICE), chunk_size=8)
    assert y.dtype == dtype
    wide = [low[k].double() for k in NAMES[:5]]
    ref = ssd_naive(*wide, h0=h0.double())
    absref = ssd_naive(wide[0].abs(), wide[1], wide[2], wide[3].abs(), wide[4].abs(), h0=h0.double().abs())
    u = {torch.bfloat16: 2.0**-7 if INTERPRET else 2.0**-8, torch.float16: 2.0**-11}[dtype]
    err = (y.double().cpu() - ref).abs()
    out_round = u * ref.abs()  # the final rounding of y to the 16-bit output dtype
    assert (err <= 4 * u * absref + out_round + 1e-6).all(), (err / (4 * u * absref + out_round)).max()


@pytest.mark.parametrize(
    "dtype", [torch.bfloat16, pytest.param(torch.float16, marks=pytest.mark.slow)], ids=["bf16", "fp16"]
)  # the same kernels and bound; fp16 in the slow run
def test_16bit_gradients_within_an_empirical_bound(dtype):
    """The backward kernels with 16-bit dot operands (x, B, C in dtype; h0 float32): every gradient
    within 8 u max|grad| of the float64 loop on the same rounded inputs (u as above). Empirical,
    not derived: measured 1.1-1.2 u (bf16, interpreter) and 0.9-1.7 u (fp16) on these inputs."""
    x, _, _ = _inputs(2, 19, 2, 4, 1, 3, full=False, seed=8)
    x["dt"] = torch.nn.functional.softplus(x["dt"])
    x["h0"] = torch.randn(2, 2, 4, 3, generator=torch.Generator().manual_seed(3))
    low = {k: (v.to(dtype) if k in ("x", "B", "C") else v) for k, v in x.items()}
    names = [*NAMES[:5], "h0"]
    wide = [low[k].double().requires_grad_() for k in names]
    leaves = [low[k].to(DEVICE).requires_grad_() for k in names]
    y, s = ssd_chunked_gpu(*leaves[:5], h0=leaves[5], chunk_size=8, return_final_state=True)
    y_ref, s_ref = ssd_naive(*wide[:5], h0=wide[5], return_final_state=True)
    gen = torch.Generator().manual_seed(1)
    gy, gs = torch.randn(y_ref.shape, generator=gen).to(dtype), torch.randn(s_ref.shape, generator=gen)
    got = torch.autograd.grad([y, s], leaves, [gy.to(DEVICE), gs.to(DEVICE)])
    want = torch.autograd.grad([y_ref, s_ref], wide, [gy.double(), gs.double()])
    u = {torch.bfloat16: 2.0**-7 if INTERPRET else 2.0**-8, torch.float16: 2.0**-11}[dtype]
    for name, g_, w in zip(names, got, want):
        assert g_.dtype == low[name].dtype, name
        _close(g_, w, 8 * u)


def test_bad_inputs():
    x, _, _ = _inputs(1, 4, 2, 2, 1, 2, full=False)
    args = [x.get(k) for k in NAMES]
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        ssd_chunked_gpu(*[a.double() if a is not None else None for a in args])
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        ssd_chunked_gpu(*args, chunk_size=0)
    with pytest.raises(ValueError, match=r"A must have shape \(heads,\)"):
        ssd_chunked_gpu(*[x["A"][:1] if k == "A" else a for k, a in zip(NAMES, args)])
    with pytest.raises(ValueError, match="unknown method"):
        ssd(*args, backend="gpu", method="matmul")
    with pytest.raises(ValueError, match="backend='naive' has only the recurrent form"):
        ssd(*args, backend="naive", method="chunked")
    with pytest.raises(ValueError, match="unknown backend"):
        ssd(*args, backend="triton")


def test_torch_compile_fullgraph_forward_and_backward():
    """torch.compile(fullgraph=True, backend="aot_eager") captures the whole op in one graph: the
    kernels are torch.library custom ops with registered autograd (their backward is the
    torchssm::ssd_chunk_*_bwd custom ops) and linear_scan is one too, so nothing breaks the graph.
    Output, final state and the gradients of a subset of the inputs equal eager's."""
    x, h0, reset = _inputs(1, 10, 2, 2, 1, 3, seed=9)
    args = {k: v.to(DEVICE).requires_grad_(k in ("x", "A", "B", "z")) for k, v in x.items()}
    h0 = h0.to(DEVICE).requires_grad_()
    wants = [args["x"], args["A"], args["B"], args["z"], h0]

    def fn(*a):
        return ssd_chunked_gpu(*a, True, h0, reset=reset.to(DEVICE), chunk_size=4, return_final_state=True)

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    (y, s), (y_e, s_e) = compiled(*[args[k] for k in NAMES]), fn(*[args[k] for k in NAMES])
    torch.testing.assert_close(y, y_e)
    torch.testing.assert_close(s, s_e)
    gen = torch.Generator().manual_seed(4)
    gy, gs = torch.randn(y.shape, generator=gen).to(DEVICE), torch.randn(s.shape, generator=gen).to(DEVICE)
    got = torch.autograd.grad([y, s], wants, [gy, gs])
    want = torch.autograd.grad([y_e, s_e], wants, [gy, gs])
    for g_, w in zip(got, want):
        torch.testing.assert_close(g_, w)


def _op_samples():
    """Tiny sample arguments of the four custom ops: l = 6 in chunks of 4 (one partial), 2 heads
    sharing B/C, a reset inside chunk 0."""
    from torchssm.ops.ssd.chunked import chunk_decays

    gen = torch.Generator().manual_seed(12)
    r = lambda *s: torch.randn(*s, generator=gen).to(DEVICE)  # noqa: E731
    b, l, h, p, g, n = 1, 6, 2, 2, 1, 3
    reset = torch.zeros(b, l, dtype=torch.bool, device=DEVICE)
    reset[0, 2] = True
    _, c, _, _, a_cum, seg = chunk_decays(
        torch.rand(b, l, h, generator=gen).to(DEVICE), -torch.rand(h).to(DEVICE), reset, 4
    )
    X, B, C, carried = r(b, l, h, p), r(b, l, g, n), r(b, l, g, n), r(b, c, h, p, n)
    a_cum, seg = a_cum.contiguous(), seg.to(torch.int32).contiguous()
    grad = lambda t: t.clone().requires_grad_()  # noqa: E731
    ops = torch.ops.torchssm
    return {
        "chunk_state": (ops.ssd_chunk_state, (grad(X), grad(B), grad(a_cum), seg, "ieee")),
        "chunk_state_bwd": (ops.ssd_chunk_state_bwd, (X, B, a_cum, None, r(b, c, h, p, n), "ieee")),
        "chunk_scan": (ops.ssd_chunk_scan, (grad(X), grad(B), grad(C), grad(a_cum), seg, grad(carried), "ieee")),
        "chunk_scan_bwd": (ops.ssd_chunk_scan_bwd, (X, B, C, a_cum, seg, carried, r(b, l, h, p), "ieee")),
    }


@pytest.mark.parametrize("name", ["chunk_state", "chunk_state_bwd", "chunk_scan", "chunk_scan_bwd"])
def test_custom_ops_pass_opcheck(name):
    """torch.library.opcheck: schema, fake (meta) impl vs the real output, autograd registration,
    and AOT dispatch (static and dynamic shapes) of each torchssm::ssd_chunk_* op."""
    op, args = _op_samples()[name]
    torch.library.opcheck(op, args)


_AOT_SCRIPT = r"""
import sys
from torchssm.ops.ssd import gpu_chunked as K

kernels = {"fwd": [("state", K.ssd_chunk_state_kernel), ("scan", K.ssd_chunk_scan_kernel)],
           "bwd": [("state_bwd", K.ssd_chunk_state_bwd_kernel), ("scan_bwd", K.ssd_chunk_scan_bwd_kernel)]}
out = {}
for prec in sys.argv[2].split(","):  # Mamba-2's sizes: chunk 64, head dim 64, state 128
    consts = dict(HAS_RESET=True, PRECISION=prec, CHUNK=64, BLOCK_P=64, NP=128)
    for name, fn in kernels[sys.argv[1]]:
        ptx = build(fn, consts, {"seg_ptr": "*i32"})
        out[f"{name}-{prec}"] = {"mma": ptx.count("mma.sync"), "local": ptx.count("st.local")}
print(json.dumps(out))
"""


@pytest.mark.skipif(DEVICE == "cuda", reason="on a GPU the kernels are compiled and run by the other tests")
@pytest.mark.parametrize(
    "which,precisions",
    [
        ("fwd", "ieee,bf16"),
        pytest.param("fwd", "tf32", marks=pytest.mark.slow),
        pytest.param("bwd", "tf32,bf16", marks=pytest.mark.slow),
    ],
)
def test_kernels_compile_for_ampere_without_a_gpu(which, precisions):
    """The real compiler lowers the kernels to PTX for sm_80 at Mamba-2's tile sizes (backward:
    all of p = 64 in one program) without register spills; with TF32 or bf16 operands the dots
    become tensor-core mma instructions, with IEEE float32 ones they do not. (The backward with
    IEEE float32 dots is not compiled here: its FMA-expanded dots take minutes to compile.)"""
    stats = ptx_stats(_AOT_SCRIPT, which, precisions)
    assert all(v["local"] == 0 for v in stats.values()), stats
    for k, v in stats.items():
        assert (v["mma"] == 0) if k.endswith("ieee") else (v["mma"] > 0), stats


@pytest.mark.slow
@settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    b=st.integers(1, 2),
    l=st.integers(1, 12),
    heads=st.sampled_from([1, 2, 4]),
    groups=st.sampled_from([1, 2]),
    p=st.integers(1, 5),
    n=st.integers(1, 5),
    chunk=st.integers(1, 7),
    with_h0=st.booleans(),
    with_reset=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fuzz_shapes_match_naive(b, l, heads, groups, p, n, chunk, with_h0, with_reset, seed):
    """Random small shapes (chunk of 1, p = n = 1, l < chunk, grouped B/C) against the float64 loop:
    output, final state and the gradients of x, dt, A, B, C (and h0)."""
    groups = min(groups, heads)
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    args = [
        r(b, l, heads, p),
        r(b, l, heads),
        -torch.rand(heads, generator=gen) - 0.1,
        r(b, l, groups, n),
        r(b, l, groups, n),
    ]
    h0 = r(b, heads, p, n) if with_h0 else None
    reset = (torch.rand(b, l, generator=gen) < 0.3) if with_reset else None
    dev = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    wide = [t.double().requires_grad_() for t in args + ([h0] if with_h0 else [])]
    leaves = [t.to(DEVICE).requires_grad_() for t in args + ([h0] if with_h0 else [])]
    y, s = ssd_chunked_gpu(
        *leaves[:5],
        None,
        None,
        None,
        True,
        leaves[5] if with_h0 else None,
        reset=dev(reset),
        return_final_state=True,
        chunk_size=chunk,
    )
    y_ref, s_ref = ssd_naive(
        *wide[:5], None, None, None, True, wide[5] if with_h0 else None, reset=reset, return_final_state=True
    )
    _close(y, y_ref, 2e-6)
    _close(s, s_ref, 2e-6)
    gy, gs = torch.randn(y_ref.shape, generator=gen).double(), torch.randn(s_ref.shape, generator=gen).double()
    got = torch.autograd.grad([y, s], leaves, [gy.float().to(DEVICE), gs.float().to(DEVICE)])
    want = torch.autograd.grad([y_ref, s_ref], wide, [gy, gs])
    for g_, w in zip(got, want):
        _close(g_, w, 1e-5)
