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
    assert {r["impl"] for r in rows if r["op"] == "ssd"} == {"naive", "chunked"}
