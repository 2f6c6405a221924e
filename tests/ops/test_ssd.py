"""SSD (Mamba-2): chunked matmul algorithm == recurrence in float64, outputs and every gradient."""

import pytest
import torch

from torchssm.ops.ssd import segsum, ssd, ssd_chunked, ssd_naive

F64 = torch.float64


def _inputs(b=2, l=13, h=4, p=3, g=2, n=5, seed=0, reset=False, d_per_dim=False):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64)  # noqa: E731
    args = dict(
        x=r(b, l, h, p),
        dt=r(b, l, h),
        A=-torch.rand(h, generator=gen, dtype=F64) * 2 - 0.1,
        B=r(b, l, g, n),
        C=r(b, l, g, n),
        D=r(h, p) if d_per_dim else r(h),
        z=r(b, l, h, p),
        dt_bias=r(h),
        h0=r(b, h, p, n),
    )
    for v in args.values():
        v.requires_grad_(True)
    rst = (torch.rand(b, l, generator=gen) < 0.25) if reset else None
    return args, rst


def _run(fn, args, reset, **kw):
    y, s = fn(**args, dt_softplus=True, return_final_state=True, reset=reset, **kw)
    gen = torch.Generator().manual_seed(7)
    loss = (y * torch.randn(y.shape, generator=gen, dtype=F64)).sum() + (
        s * torch.randn(s.shape, generator=gen, dtype=F64)
    ).sum()
    return y, s, dict(zip(args, torch.autograd.grad(loss, list(args.values()))))


@pytest.mark.parametrize("g", [1, 2, 4])
@pytest.mark.parametrize("chunk_size", [1, 4, 5, 13, 64])
@pytest.mark.parametrize("reset", [False, True])
def test_chunked_matches_naive_outputs_and_all_grads(g, chunk_size, reset):
    args, rst = _inputs(g=g, reset=reset, d_per_dim=(g == 4))
    y0, s0, g0 = _run(ssd_naive, args, rst)
    y1, s1, g1 = _run(ssd_chunked, args, rst, chunk_size=chunk_size)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(s1, s0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=lambda m, k=name: f"grad {k}: {m}")


def test_length_one_and_no_optional_inputs():
    args, _ = _inputs(l=1)
    for k in ("D", "z", "dt_bias", "h0"):
        args[k] = None
    for backend in ("naive", "auto"):
        y, s = ssd(**args, return_final_state=True, backend=backend)
        assert y.shape == (2, 1, 4, 3) and s.shape == (2, 4, 3, 5)
    torch.testing.assert_close(ssd(**args, backend="auto"), ssd(**args, backend="naive"))


def test_segsum_definition():
    a = torch.randn(6, dtype=F64)
    S = segsum(a)
    for i in range(6):
        for j in range(6):
            want = a[j + 1 : i + 1].sum() if j <= i else torch.tensor(float("-inf"), dtype=F64)
            torch.testing.assert_close(S[i, j], want)


def test_float32_close_to_float64():
    args, _ = _inputs(l=40)
    y64 = ssd_naive(**args, dt_softplus=True)
    y32 = ssd_chunked(**{k: v.float() for k, v in args.items()}, dt_softplus=True, chunk_size=16)
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fn", [ssd_naive, ssd_chunked])
def test_bad_inputs_raise(fn):
    args, _ = _inputs()
    with pytest.raises(ValueError, match=r"\(heads,\)"):
        fn(**{**args, "A": torch.zeros(4, 5, dtype=F64)})
    with pytest.raises(ValueError, match="groups dividing"):
        fn(**{**args, "B": torch.zeros(2, 13, 3, 5, dtype=F64), "C": torch.zeros(2, 13, 3, 5, dtype=F64)})
    with pytest.raises(ValueError, match="h0 must have shape"):
        fn(**{**args, "h0": torch.zeros(2, 4, 3, 4, dtype=F64)})
    with pytest.raises(ValueError, match="headdim"):
        fn(**{**args, "x": args["x"][..., 0]})


def test_bench_ops_runs(tmp_path):
    import json

    from torchssm.cli import main

    out = tmp_path / "ops.json"
    assert (
        main(
            [
                "bench",
                "ops",
                "--sel-shapes",
                "1x16x4x2",
                "--ssd-shapes",
                "1x16x2x4x2",
                "--chunk-size",
                "8",
                "--repeats",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["results"]
    assert {r["op"] for r in rows} == {"selective_scan", "ssd"}
    assert {r["impl"] for r in rows if r["op"] == "ssd"} == {"naive", "chunked", "cpu"}


# --- the fused CPU kernel (ops/ssd/cpu.py) ------------------------------------------------------


@pytest.mark.parametrize("g", [1, 2, 4])
@pytest.mark.parametrize("chunk_size", [1, 4, 64])
@pytest.mark.parametrize("reset", [False, True])
def test_cpu_kernel_matches_naive_outputs_and_all_grads(g, chunk_size, reset):
    """Checkpoint interval 1, 4 (not dividing l = 13) and 64 (> l), groups, reset, h0, D, z, dt_bias."""
    args, rst = _inputs(g=g, reset=reset, d_per_dim=(g == 4))
    y0, s0, g0 = _run(ssd_naive, args, rst)
    y1, s1, g1 = _run(ssd, args, rst, chunk_size=chunk_size, backend="cpu")
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(s1, s0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=lambda m, k=name: f"grad {k}: {m}")


def test_cpu_kernel_channel_blocks_and_parallel_jobs(monkeypatch):
    """p = 20 in blocks of 16 (forward and backward), jobs on two threads with partial gB/gC per head split."""
    import torchssm.ops.ssd.cpu as cpu

    monkeypatch.setattr(cpu, "_L1_BYTES", 1)
    monkeypatch.setattr(cpu, "_SCRATCH_BYTES", 1)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_ELEMENTS", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        args, rst = _inputs(b=1, l=11, h=4, p=20, g=2, n=3, reset=True)
        y0, s0, g0 = _run(ssd_naive, args, rst)
        y1, s1, g1 = _run(ssd, args, rst, chunk_size=3, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(s1, s0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=lambda m, k=name: f"grad {k}: {m}")


def test_cpu_kernel_output_only_or_state_only_gradients():
    """The backward with no gradient of the final state (zeros) and with no gradient of y."""
    args, _ = _inputs(l=7)
    for use_y, use_s in ((True, False), (False, True)):
        grads = []
        for backend in ("naive", "cpu"):
            y, s = ssd(**args, dt_softplus=True, return_final_state=True, backend=backend)
            loss = (y.sin().sum() if use_y else 0) + (s.cos().sum() if use_s else 0)
            inputs = [args[k] for k in ("x", "dt", "A", "B", "C", "h0")]
            grads.append(torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True))
        for a, b in zip(*grads):
            torch.testing.assert_close(b, a)


def test_cpu_kernel_float32_and_auto_choice():
    """float32 (polynomial exp in the kernel) within float32 rounding of the float64 reference; "auto"
    takes the kernel on CPU in both dtypes, and method="chunked" still runs the chunked algorithm."""
    from torchssm.ops.backend import choose_backend

    args, rst = _inputs(l=40, reset=True)
    y64 = ssd_naive(**args, dt_softplus=True, reset=rst)
    y32 = ssd(**{k: v.float() for k, v in args.items()}, dt_softplus=True, reset=rst, chunk_size=16, backend="cpu")
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)
    assert choose_backend("ssd", "auto", args["x"]) == "cpu" == choose_backend("ssd", "auto", args["x"].float())
    torch.testing.assert_close(ssd(**args, method="chunked"), ssd_chunked(**args))


def test_cpu_kernel_bad_arguments():
    args, _ = _inputs()
    with pytest.raises(ValueError, match="ssd_chunked has no 'cpu' backend"):  # the kernel is the recurrent form
        ssd(**args, backend="cpu", method="chunked")
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        ssd(**args, backend="cpu", chunk_size=0)
    with pytest.raises(ValueError, match="h0 must have shape"):
        ssd(**{**args, "h0": torch.zeros(2, 4, 3, 4, dtype=F64)}, backend="cpu")
