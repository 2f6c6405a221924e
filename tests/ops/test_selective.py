"""Selective scan (Mamba S6): chunked == naive in float64, outputs and every gradient (incl. h0)."""

import importlib.util
import os

import pytest
import torch

from torchssm.ops.selective import selective_scan, selective_scan_chunked, selective_scan_naive
from torchssm.ops.selective.cpu import selective_scan_cpu

F64 = torch.float64


def _inputs(b=2, l=11, d=6, n=4, groups=None, seed=0, reset=False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    bc = (b, l, n) if groups is None else (b, l, groups, n)
    args = dict(
        u=r(b, l, d), delta=r(b, l, d), A=-torch.rand(d, n, generator=g, dtype=F64) * 2 - 0.1,
        B=r(*bc), C=r(*bc), D=r(d), z=r(b, l, d), delta_bias=r(d), h0=r(b, d, n),
    )
    for v in args.values():
        v.requires_grad_(True)
    rst = (torch.rand(b, l, generator=g) < 0.25) if reset else None
    return args, rst


def _run(fn, args, reset, **kw):
    y, h = fn(**args, delta_softplus=True, return_final_state=True, reset=reset, **kw)
    g = torch.Generator().manual_seed(123)
    loss = (y * torch.randn(y.shape, generator=g, dtype=F64)).sum() + (h * torch.randn(h.shape, generator=g, dtype=F64)).sum()
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
def test_fused_cpu_matches_naive_outputs_and_all_grads(groups, reset):
    args, rst = _inputs(groups=groups, reset=reset)
    y0, h0, g0 = _run(selective_scan_naive, args, rst)
    y1, h1, g1 = _run(selective_scan_cpu, args, rst)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(h1, h0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=lambda m, k=name: f"grad {k}: {m}")


def test_fused_cpu_float32_and_batch_split():
    args, _ = _inputs(b=5, l=30)
    y64, h64 = selective_scan_naive(**args, delta_softplus=True, return_final_state=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # rows split over two threads
    try:
        y32, h32 = selective_scan_cpu(**{k: v.float() for k, v in args.items()}, delta_softplus=True,
                                      return_final_state=True)
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
        torch.testing.assert_close(selective_scan(**args32, backend="gpu"),
                                   selective_scan(**args32, backend="naive"), rtol=1e-5, atol=1e-5)
    else:
        with pytest.raises((ValueError, ImportError)):  # the Triton kernels need CUDA (or the interpreter)
            selective_scan(**args32, backend="gpu")
    y_n = selective_scan(**args, backend="naive")
    torch.testing.assert_close(selective_scan(**args, backend="auto"), y_n)


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
