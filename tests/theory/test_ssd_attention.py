"""SSD's masked-attention (dual) form == the recurrence == the chunked algorithm, float64, every gradient."""

import pytest
import torch

from torchssm.ops.ssd import ssd, ssd_attention, ssd_chunked, ssd_naive
from torchssm.ops.ssd.attention import ssd_mask
from torchssm.theory.duality import semiseparable_rank

F64 = torch.float64


def _inputs(b=2, l=11, h=4, p=3, g=2, n=5, seed=0, reset=False):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64)  # noqa: E731
    args = dict(
        x=r(b, l, h, p),
        dt=r(b, l, h),
        A=-torch.rand(h, generator=gen, dtype=F64) * 2 - 0.1,
        B=r(b, l, g, n),
        C=r(b, l, g, n),
        D=r(h),
        z=r(b, l, h, p),
        dt_bias=r(h),
        h0=r(b, h, p, n),
    )
    for v in args.values():
        v.requires_grad_(True)
    return args, ((torch.rand(b, l, generator=gen) < 0.25) if reset else None)


def _run(fn, args, reset, **kw):
    y, s = fn(**args, dt_softplus=True, return_final_state=True, reset=reset, **kw)
    gen = torch.Generator().manual_seed(7)
    loss = (y * torch.randn(y.shape, generator=gen, dtype=F64)).sum()
    loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=F64)).sum()
    return y, s, dict(zip(args, torch.autograd.grad(loss, list(args.values()))))


@pytest.mark.parametrize("g", [1, 2])
@pytest.mark.parametrize("reset", [False, True])
def test_attention_form_equals_recurrent_and_chunked(g, reset):
    args, rst = _inputs(g=g, reset=reset)
    y0, s0, g0 = _run(ssd_naive, args, rst)
    y1, s1, g1 = _run(ssd_attention, args, rst)
    y2, s2, _ = _run(ssd_chunked, args, rst, chunk_size=4)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(s1, s0)
    torch.testing.assert_close(y2, y1)
    torch.testing.assert_close(s2, s1)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=lambda m, k=name: f"grad {k}: {m}")


def test_dispatch_and_optional_inputs():
    args, _ = _inputs(l=6)
    plain = {k: v.detach() for k, v in args.items() if k in ("x", "dt", "A", "B", "C")}
    torch.testing.assert_close(ssd(**plain, method="attention"), ssd_naive(**plain))
    with pytest.raises(ValueError, match="attention"):
        ssd(**plain, method="attention", backend="naive")


def test_mask_is_one_semiseparable_and_the_attention_matrix_has_rank_n():
    gen = torch.Generator().manual_seed(1)
    dt = torch.rand(1, 16, 1, generator=gen, dtype=F64)
    mask = ssd_mask(dt, torch.tensor([-0.7], dtype=F64))[0, 0]  # (l, l)
    assert semiseparable_rank(mask) == 1
    B, C = torch.randn(2, 16, 3, generator=gen, dtype=F64)
    assert semiseparable_rank((C @ B.T) * mask) == 3  # N-semiseparable with N = d_state
