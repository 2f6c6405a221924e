"""LRU(backend="gpu") runs the fused Triton LRU op (ops.scan.gpu.lru_scan: lambda and gamma built
in-kernel) and equals LRU(backend="naive") in float32 against float64, outputs and the gradient
of every parameter, the input and the initial state, in every mode the layer has (state, reset,
lengths, bidirectional). On CUDA when there is a GPU, else on the CPU under TRITON_INTERPRET=1.

Bound: max error <= 2e-6 (outputs, state) / 2e-5 (gradients: the (n,) and (n, h) parameter
gradients sum B*L terms) times the max of the float64 reference.
"""

from __future__ import annotations

import copy
import os
from types import SimpleNamespace

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from torchssm.layers import LRU  # noqa: E402
from torchssm.ops.scan import gpu  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and not gpu.INTERPRET:
    pytest.skip("Triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)


def _close(got, want, tol):
    atol = tol * max(want.abs().max().item(), 1e-30)
    torch.testing.assert_close(got.detach().to(want.dtype), want.detach(), rtol=0, atol=atol)


def _pair(bidirectional=False):
    torch.manual_seed(0)
    ref = LRU(4, 6, r_min=0.5, r_max=0.95, bidirectional=bidirectional, backend="naive").double()
    fast = copy.deepcopy(ref).float().to(DEVICE)
    fast.backend = "gpu"
    return fast, ref


@pytest.mark.parametrize("mode", ["state-reset", "bidirectional-lengths-reset"])
def test_gpu_layer_matches_naive_outputs_and_every_gradient(mode, monkeypatch):
    bidirectional = mode.startswith("bidirectional")
    fast, ref = _pair(bidirectional)
    calls = []
    monkeypatch.setattr(gpu, "lru_scan", lambda *a, _f=gpu.lru_scan, **k: calls.append(k) or _f(*a, **k))
    gen = torch.Generator().manual_seed(1)
    b, l = 2, 19
    x = torch.randn(b, l, 4, generator=gen)
    reset = torch.rand(b, l, generator=gen) < 0.2
    reset[0, 0] = True
    h0 = torch.randn(b, 6, generator=gen, dtype=torch.complex64)
    lengths = torch.tensor([l, 11]) if bidirectional else None
    x32, x64 = x.to(DEVICE).requires_grad_(), x.double().requires_grad_()
    kw = dict(reset=reset, lengths=lengths)
    if bidirectional:
        y, y_ref = fast(x32, reset=reset.to(DEVICE), lengths=lengths.to(DEVICE)), ref(x64, **kw)
        outs, outs_ref, leaves, leaves_ref = [y], [y_ref], [x32], [x64]
    else:
        s32, s64 = h0.to(DEVICE).requires_grad_(), h0.to(torch.complex128).requires_grad_()
        y, hT = fast(x32, s32, return_state=True, reset=reset.to(DEVICE))
        y_ref, hT_ref = ref(x64, s64, return_state=True, **kw)
        _close(hT, hT_ref, 2e-6)
        outs, outs_ref, leaves, leaves_ref = [y, hT], [y_ref, hT_ref], [x32, s32], [x64, s64]
    assert [k["reverse"] for k in calls] == ([False, True] if bidirectional else [False])  # fused path ran
    _close(y, y_ref, 2e-6)
    grads_out = [torch.randn_like(o) for o in outs_ref]
    names = ["x"] + (["state"] if not bidirectional else []) + [n for n, _ in ref.named_parameters()]
    grads_fast = [g.to(o.dtype).to(DEVICE) for g, o in zip(grads_out, outs)]
    got = torch.autograd.grad(outs, leaves + list(fast.parameters()), grads_fast)
    want = torch.autograd.grad(outs_ref, leaves_ref + list(ref.parameters()), grads_out)
    for name, g, w in zip(names, got, want):
        assert g.shape == w.shape, name
        _close(g, w, 2e-5)


def test_step_unrolled_matches_gpu_forward():
    fast, _ = _pair()
    x = torch.randn(2, 9, 4, device=DEVICE)
    y, hT = fast(x, return_state=True)
    state = fast.init_state(2)
    for t in range(9):
        y_t, state = fast.step(x[:, t], state)
        _close(y_t, y[:, t], 2e-6)
    _close(state, hT, 2e-6)


def test_backend_resolution(monkeypatch):
    """Which LRU scan runs is the dispatcher's choice (ops/backend.py, op "lru_scan"): "gpu" on CPU
    tensors only under the interpreter; on CUDA "auto" is the fused kernel except for float64 (a
    stand-in describes a CUDA tensor: only .device/.dtype are read)."""
    from torchssm.ops import backend as backend_module
    from torchssm.ops.backend import choose_backend

    cpu64 = torch.zeros(1, dtype=torch.complex64)
    assert choose_backend("lru_scan", "gpu", cpu64) == "gpu"  # TRITON_INTERPRET=1
    assert choose_backend("lru_scan", "auto", cpu64) == "cpu"
    assert choose_backend("lru_scan", "chunked", cpu64) == "chunked"
    with pytest.raises(ValueError, match="unknown backend"):
        LRU(4, 3, backend="triton")
    monkeypatch.setattr(gpu, "INTERPRET", False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        LRU(4, 3, backend="gpu")(torch.randn(1, 3, 4))

    monkeypatch.setattr(backend_module, "_cache", {})
    cuda64 = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.complex64)
    cuda128 = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.complex128)
    assert choose_backend("lru_scan", "auto", cuda64) == "gpu"
    assert choose_backend("lru_scan", "auto", cuda128) == "chunked"  # float64: the chunked scan
    monkeypatch.setitem(backend_module._cache, "torchssm.ops.scan.gpu", ImportError("No module named 'triton'"))
    assert choose_backend("lru_scan", "auto", cuda64) == "chunked"
    with pytest.raises(ImportError, match=r"pip install torchssm\[gpu\]"):
        choose_backend("lru_scan", "gpu", cuda64)


def test_float64_parameters_are_refused_with_a_clear_message():
    layer = LRU(4, 3, backend="gpu").double()
    with pytest.raises(TypeError, match="float32.*backend='cpu' or 'chunked'"):
        layer(torch.randn(1, 3, 4, dtype=torch.float64))


def test_torch_compile_fullgraph_sees_opaque_ops():
    """The fused path is two torch.library custom ops (torchssm::lru_scan_fwd / _bwd): torch.compile
    captures the layer in one graph (aot_eager: no C++ compiler needed) with the same output and
    gradients as eager."""
    fast, _ = _pair(bidirectional=True)
    x = torch.randn(2, 9, 4, device=DEVICE, requires_grad=True)
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    y_eager = fast(x)
    torch.testing.assert_close(y, y_eager)
    gy = torch.randn_like(y)
    leaves = [x, *fast.parameters()]
    for g, w in zip(torch.autograd.grad(y, leaves, gy), torch.autograd.grad(y_eager, leaves, gy)):
        torch.testing.assert_close(g, w)
