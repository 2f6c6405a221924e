"""Triton selective scan (ops/selective/gpu.py) == the naive loop in float64: outputs, final state
and the gradient of every input (u, delta, A, B, C, D, z, delta_bias, h0).

On CUDA when there is a GPU, else on the CPU under TRITON_INTERPRET=1 (set before Triton is
imported; tiny shapes). Bound tested: max error <= 2e-6 (outputs) / 1e-5 (gradients, sums over
l, d and n terms) times the max of the float64 reference.
"""

from __future__ import annotations

import pytest
import torch
from _triton_common import triton_device

DEVICE = triton_device()

from torchssm.ops.selective.gpu import selective_scan_gpu  # noqa: E402
from torchssm.ops.selective.naive import selective_scan_naive  # noqa: E402

ORDER = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _args(x):
    """Positional (u, delta, A, B, C, D, z, delta_bias) and h0, from a dict of inputs."""
    return [x.get(k) for k in ORDER], x.get("h0")


def _close(got, want, tol):
    atol = tol * max(want.abs().max().item(), 1e-30)
    torch.testing.assert_close(got.detach().double(), want.detach(), rtol=0, atol=atol)


def _inputs(b, l, d, n, groups, *, full, seed=0):
    """float32 inputs of the Mamba parameterisation: A = -exp(A_log) (d, n), dt after softplus."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    bc = (b, l, n) if groups is None else (b, l, groups, n)
    x = {"u": r(b, l, d), "delta": r(b, l, d) - 1.0, "A": -torch.exp(0.5 * r(d, n)), "B": r(*bc), "C": r(*bc)}
    if full:
        x.update(D=r(d), z=r(b, l, d), delta_bias=0.1 * r(d), h0=r(b, d, n))
    reset = None
    if full:
        reset = torch.rand(b, l, generator=gen) < 0.2
        reset[0, 0] = reset[-1, -1] = True
    return {k: v.to(DEVICE) for k, v in x.items()}, (reset.to(DEVICE) if reset is not None else None)


@pytest.mark.parametrize(
    "groups,full,n",
    [(None, True, 4), (2, False, 3)],
    ids=["shared-BC-all-options", "grouped-BC-n3-minimal"],
)
def test_matches_naive_outputs_state_and_all_gradients(groups, full, n):
    # L = 19 is not a multiple of the 8-step chunk; n = 3 is padded to 4 in the kernel
    x, reset = _inputs(2, 19, 6, n, groups, full=full)  # chunk_size 12 -> tiles of 8 steps
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    wide = {k: v.double().requires_grad_() for k, v in x.items()}
    args, h0 = _args(leaves)
    y, h_last = selective_scan_gpu(*args, True, h0, reset=reset, return_final_state=True, chunk_size=12)
    args, h0 = _args(wide)
    y_ref, h_ref = selective_scan_naive(*args, True, h0, reset=reset, return_final_state=True)
    _close(y, y_ref, 2e-6)
    _close(h_last, h_ref, 2e-6)
    gen = torch.Generator().manual_seed(1)
    gy, gh = torch.randn(y_ref.shape, generator=gen).double(), torch.randn(h_ref.shape, generator=gen).double()
    names = list(x)
    want = torch.autograd.grad([y_ref, h_ref], [wide[k] for k in names], [gy, gh])
    got = torch.autograd.grad([y, h_last], [leaves[k] for k in names], [gy.float().to(DEVICE), gh.float().to(DEVICE)])
    for k, g, w in zip(names, got, want):
        assert g.shape == x[k].shape, k
        _close(g, w, 1e-5)


def test_bf16_activations_and_output_only_gradient():
    """bf16 u, B, C (float32 state): y in bf16 within one bf16 rounding of the float64 result."""
    x, _ = _inputs(1, 12, 4, 4, None, full=False, seed=2)
    for k in ("u", "B", "C"):
        x[k] = x[k].bfloat16()
    y = selective_scan_gpu(*_args(x)[0], True, chunk_size=8)
    assert y.dtype == torch.bfloat16
    ref = selective_scan_naive(*_args({k: v.double() for k, v in x.items()})[0], True)
    torch.testing.assert_close(y.double(), ref, rtol=2.0**-7, atol=1e-5 * ref.abs().max().item())


def test_kernel_chunk():
    from torchssm.ops.selective.gpu import kernel_chunk

    assert [kernel_chunk(c, 16) for c in (1, 12, 64, 1000)] == [1, 8, 64, 256]
    assert kernel_chunk(64, 128) == 32 and kernel_chunk(64, 100) == 32


def test_bad_inputs():
    x, _ = _inputs(1, 4, 2, 2, None, full=False)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        selective_scan_gpu(*_args({k: v.double() for k, v in x.items()})[0])
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        selective_scan_gpu(*_args(x)[0], chunk_size=0)
    with pytest.raises(ValueError, match=r"A must have shape \(d, n\)"):
        selective_scan_gpu(*_args({**x, "A": x["A"][:1]})[0])


# ---------------------------------------------------------------------------------------------
# SSD (Mamba-2) on the same kernels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d_shape,h,g", [("h", 4, 2), ("hp", 4, 2), ("h", 1, 1)], ids=["D-h", "D-hp", "one-head"])
def test_ssd_matches_naive_outputs_state_and_all_gradients(d_shape, h, g):
    """One head: dt (b, l, 1) broadcast over p is a stride-0 view, which the wrapper must copy."""
    from torchssm.ops.ssd.gpu import ssd_gpu
    from torchssm.ops.ssd.naive import ssd_naive

    b, l, p, n = 2, 13, 2, 3
    gen = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    x = {
        "x": r(b, l, h, p),
        "dt": r(b, l, h) - 1.0,
        "A": -torch.exp(0.5 * r(h)),
        "B": r(b, l, g, n),
        "C": r(b, l, g, n),
        "D": r(h) if d_shape == "h" else r(h, p),
        "z": r(b, l, h, p),
        "dt_bias": 0.1 * r(h),
    }
    h0 = r(b, h, p, n)
    reset = torch.rand(b, l, generator=gen) < 0.2
    x = {k: v.to(DEVICE) for k, v in x.items()}
    h0, reset = h0.to(DEVICE), reset.to(DEVICE)
    leaves = [t.clone().requires_grad_() for t in [*x.values(), h0]]
    wide = [t.double().requires_grad_() for t in [*x.values(), h0]]
    y, s = ssd_gpu(*leaves[:8], True, leaves[8], reset=reset, return_final_state=True, chunk_size=8)
    y_ref, s_ref = ssd_naive(*wide[:8], True, wide[8], reset=reset, return_final_state=True)
    _close(y, y_ref, 2e-6)
    _close(s, s_ref, 2e-6)
    gy, gs = torch.randn_like(y_ref), torch.randn_like(s_ref)
    want = torch.autograd.grad([y_ref, s_ref], wide, [gy, gs])
    got = torch.autograd.grad([y, s], leaves, [gy.float(), gs.float()])
    for name, gg, w, leaf in zip([*x, "h0"], got, want, leaves):
        assert gg.shape == leaf.shape, name
        _close(gg, w, 1e-5)


# ---------------------------------------------------------------------------------------------
# bad input (issue 6): strided inputs are copied, wrong dtypes / devices and a missing Triton refused
# ---------------------------------------------------------------------------------------------


def test_strided_inputs_are_made_contiguous():
    """Mamba slices x, B, C (and dt) out of one projection: every input arrives with a time stride
    wider than its channels, and u here also with a non-unit channel stride; results and gradients
    equal those of the contiguous copies."""
    b, l, d, n = 2, 11, 6, 3
    gen = torch.Generator().manual_seed(7)
    proj = torch.randn(b, l, 2 * d + 2 * n, generator=gen).to(DEVICE)  # (b, l, 2d + 2n)
    u = torch.randn(b, d, l, generator=gen).to(DEVICE).transpose(1, 2)  # (b, l, d), channel stride l
    delta, B, C = proj[..., :d], proj[..., d : d + n], proj[..., d + n : d + 2 * n]
    A = -torch.exp(torch.randn(n, d, generator=gen)).to(DEVICE).t()  # (d, n), transposed
    h0 = torch.randn(b, n, d, generator=gen).to(DEVICE).transpose(1, 2)  # (b, d, n)
    strided = [u, delta, A, B, C]
    assert not any(t.is_contiguous() for t in strided + [h0])
    leaves = [t.detach().requires_grad_() for t in strided + [h0]]
    dense = [t.detach().contiguous().requires_grad_() for t in strided + [h0]]
    ys = [selective_scan_gpu(*v[:5], h0=v[5], return_final_state=True, chunk_size=4) for v in (leaves, dense)]
    for got, want in zip(ys[0], ys[1]):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    gy = torch.randn_like(ys[1][0])
    for g, w in zip(torch.autograd.grad(ys[0][0], leaves, gy), torch.autograd.grad(ys[1][0], dense, gy)):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_cpu_tensors_without_interpreter_are_refused(monkeypatch):
    from torchssm.ops.selective import gpu as sel_gpu

    monkeypatch.setattr(sel_gpu, "INTERPRET", False)
    x, _ = _inputs(1, 4, 2, 2, None, full=False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        selective_scan_gpu(*[t.cpu() for t in _args(x)[0][:5]])


@pytest.mark.parametrize("op", ["selective", "ssd"])
def test_backend_gpu_without_triton_names_the_gpu_extra(monkeypatch, op):
    """backend="gpu" imports the Triton module before it looks at the tensors, so the error a CUDA
    tensor gets without Triton is the one raised here (CPU tensors stand in: there is no GPU)."""
    import sys

    from torchssm.ops import backend, selective, ssd

    module = f"torchssm.ops.{op}.gpu"
    monkeypatch.setattr(backend, "_cache", {})  # the dispatcher imports afresh
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` now raises ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    if op == "ssd":
        monkeypatch.delitem(sys.modules, "torchssm.ops.selective.gpu")  # ssd.gpu imports it
        args = [
            torch.randn(1, 4, 2, 2),
            torch.randn(1, 4, 2),
            -torch.ones(2),
            torch.randn(1, 4, 1, 3),
            torch.randn(1, 4, 1, 3),
        ]
        call = lambda: ssd.ssd(*args, backend="gpu")  # noqa: E731
    else:
        x, _ = _inputs(1, 4, 2, 2, None, full=False)
        call = lambda: selective.selective_scan(*[t.cpu() for t in _args(x)[0][:5]], backend="gpu")  # noqa: E731
    with pytest.raises(ImportError, match=r"pip install 'torchssm\[gpu\]'"):
        call()
