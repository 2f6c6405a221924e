"""Causal depthwise short conv: fast == loop reference (outputs, every gradient incl. the state),
step == forward, continuation, and reset keeps packed sequences apart."""

import pytest
import torch

from torchssm.ops.shortconv import causal_conv1d, causal_conv1d_naive, causal_conv1d_step

F64 = torch.float64


def _inputs(b=2, l=9, d=5, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    args = dict(
        x=torch.randn(b, l, d, generator=g, dtype=F64),
        weight=torch.randn(d, w, generator=g, dtype=F64),
        bias=torch.randn(d, generator=g, dtype=F64),
        state=torch.randn(b, d, w - 1, generator=g, dtype=F64),
    )
    for v in args.values():
        v.requires_grad_(True)
    return args


@pytest.mark.parametrize("with_reset", [False, True])
@pytest.mark.parametrize("w", [1, 2, 4])
def test_matches_naive_outputs_and_grads(with_reset, w):
    args = _inputs(w=w)
    reset = None
    if with_reset:
        reset = torch.zeros(2, 9, dtype=torch.bool)
        reset[0, 3] = reset[0, 7] = reset[1, 0] = reset[1, 8] = True
    outs = []
    for fn in (causal_conv1d_naive, causal_conv1d):
        y, s = fn(**args, reset=reset)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=F64).view_as(y)).sum() + (s * 1.7).sum()
        outs.append((y, s, torch.autograd.grad(loss, list(args.values()))))
    (y0, s0, g0), (y1, s1, g1) = outs
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(s1, s0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b)


def test_step_and_continuation():
    a = {k: v.detach() for k, v in _inputs().items()}
    y, s = causal_conv1d(**a)
    st = a["state"]
    for t in range(a["x"].shape[1]):
        y_t, st = causal_conv1d_step(a["x"][:, t], a["weight"], a["bias"], st)
        torch.testing.assert_close(y_t, y[:, t])
    torch.testing.assert_close(st, s)
    y1, s1 = causal_conv1d(a["x"][:, :4], a["weight"], a["bias"], a["state"])
    y2, s2 = causal_conv1d(a["x"][:, 4:], a["weight"], a["bias"], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y)
    torch.testing.assert_close(s2, s)


def test_reset_separates_packed_sequences():
    a = {k: v.detach() for k, v in _inputs(b=1, l=8).items()}
    reset = torch.zeros(1, 8, dtype=torch.bool)
    reset[0, 5] = True
    y, s = causal_conv1d(**a, reset=reset)
    y_alone, s_alone = causal_conv1d(a["x"][:, 5:], a["weight"], a["bias"], None)
    torch.testing.assert_close(y[:, 5:], y_alone)
    torch.testing.assert_close(s, s_alone)


def test_bad_inputs():
    a = {k: v.detach() for k, v in _inputs().items()}
    with pytest.raises(ValueError, match=r"\(batch, channels, width-1\)"):
        causal_conv1d(a["x"], a["weight"], a["bias"], a["state"][..., :2])
    with pytest.raises(ValueError, match=r"\(channels, width\)"):
        causal_conv1d(a["x"], a["weight"][:3], a["bias"])
    with pytest.raises(ValueError, match="empty"):
        causal_conv1d(a["x"][:, :0], a["weight"])
