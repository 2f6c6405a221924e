"""Mamba-2's fused one-token step (numba, ``ops/ssd/step.py``) against its plain PyTorch reference."""

import pytest
import torch

from torchssm.layers.mamba2 import Mamba2
from torchssm.ops.ssd.step import ssd_step_cpu, ssd_step_naive


def _inputs(dtype, b=3, nh=4, p=6, g=2, n=5, width=4, group_size=12, seed=0):
    """(zxbcdt, conv_state, s, w, conv_bias, dt_bias, A, D, norm_weight, eps, group_size, ngroups)."""
    gen = torch.Generator().manual_seed(seed)
    d, conv_dim = nh * p, nh * p + 2 * g * n
    tensors = [
        torch.randn(b, 2 * d + 2 * g * n + nh, generator=gen),  # zxbcdt
        torch.randn(b, conv_dim, width - 1, generator=gen),  # conv_state
        torch.randn(b, nh, p, n, generator=gen),  # s
        torch.randn(conv_dim, width, generator=gen) * 0.5,  # w
        torch.randn(conv_dim, generator=gen),  # conv_bias
        torch.randn(nh, generator=gen) * 3 - 1,  # dt_bias: both softplus branches with the entries set below
        -torch.rand(nh, generator=gen) * 8,  # A < 0
        torch.randn(nh, p, generator=gen),  # D
        torch.rand(d, generator=gen) + 0.5,  # norm weight
    ]
    return [t.to(dtype) for t in tensors] + [1e-5, group_size, g]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("g, group_size", [(1, 24), (2, 12)])
def test_fused_step_matches_reference(dtype, g, group_size):
    args = _inputs(dtype, g=g, group_size=group_size)
    args[5][:2] = 25.0  # dt pre-activations above softplus' threshold
    fused, ref = ssd_step_cpu(*args), ssd_step_naive(*args)
    for name, got, want in zip(("y", "conv_state", "s"), fused, ref):
        assert got.dtype == dtype and got.shape == want.shape, name
        torch.testing.assert_close(got, want, msg=name)


def test_fused_step_takes_strided_state_and_is_pure():
    args = _inputs(torch.float64, seed=1)
    wide = torch.randn(3, args[1].shape[1], 6, dtype=torch.float64)
    args[1] = wide[..., 2:5]  # a non-contiguous conv buffer
    args[2] = args[2].transpose(2, 3).contiguous().transpose(2, 3)  # s in another memory order
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    for got, want in zip(ssd_step_cpu(*args), ssd_step_naive(*args)):
        torch.testing.assert_close(got, want)
    for a, b in zip(args, before):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b)  # inputs untouched


def test_fused_step_chained_equals_reference_over_many_tokens():
    args = _inputs(torch.float64, seed=2)
    s_fused = s_ref = (args[1], args[2])
    for t in range(20):
        zx = torch.randn(args[0].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + t))
        y1, *s_fused = ssd_step_cpu(zx, *s_fused, *args[3:])
        y2, *s_ref = ssd_step_naive(zx, *s_ref, *args[3:])
        torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(s_fused[1], s_ref[1])


@pytest.mark.parametrize("ngroups, d_has_hdim", [(1, False), (2, True)])
def test_layer_step_uses_the_fused_kernel_and_equals_forward(monkeypatch, ngroups, d_has_hdim):
    """Mamba2.step_function under no_grad (the fused kernel; counted) unrolled == forward, float64."""
    import torchssm.layers.mamba2 as m2

    torch.manual_seed(0)
    layer = Mamba2(16, d_state=8, headdim=8, ngroups=ngroups, norm_group_size=16).double().eval()
    if d_has_hdim:
        layer.D = torch.nn.Parameter(torch.randn(layer.nheads, layer.headdim, dtype=torch.float64))
    calls = []
    monkeypatch.setattr(m2, "ssd_step_cpu", lambda *a: calls.append(1) or ssd_step_cpu(*a))
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    with torch.no_grad():
        want = layer(x)
        step, state = layer.step_function(), layer.init_state(2)
        outs = []
        for t in range(9):
            y, state = step(x[:, t], state)
            outs.append(y)
    assert len(calls) == 9
    torch.testing.assert_close(torch.stack(outs, 1), want)
