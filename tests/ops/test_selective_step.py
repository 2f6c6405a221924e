"""Mamba's fused one-token step (numba, ``ops/selective/step.py``) against its plain PyTorch reference."""

import pytest
import torch

from torchssm.ops.selective.step import mamba_step_cpu, mamba_step_naive


def _inputs(dtype, b=3, d=24, n=5, r=4, width=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        a.to(dtype)
        for a in (
            torch.randn(b, 2 * d, generator=g),  # xz
            torch.randn(b, d, width - 1, generator=g),  # conv_state
            torch.randn(b, d, n, generator=g),  # h
            torch.randn(d, width, generator=g),  # w
            torch.randn(d, generator=g),  # conv_bias
            torch.randn(d, r + 2 * n, generator=g) * 0.3,  # wx_t
            torch.randn(r, d, generator=g) * 0.3,  # w_dt_t
            torch.randn(d, generator=g) * 3 - 1,  # b_dt: both softplus branches (pre-activation above 20 too)
            -torch.rand(d, n, generator=g) * 8,  # A < 0
            torch.randn(d, generator=g),  # D
        )
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_step_matches_reference(dtype):
    args = _inputs(dtype)
    args[7][:3] = 25.0  # dt pre-activations above softplus' threshold
    fused, ref = mamba_step_cpu(*args), mamba_step_naive(*args)
    for name, got, want in zip(("y", "conv_state", "h"), fused, ref):
        assert got.dtype == dtype and got.shape == want.shape, name
        torch.testing.assert_close(got, want, msg=name)


def test_fused_step_takes_strided_state_and_is_pure():
    args = list(_inputs(torch.float64, seed=1))
    wide = torch.randn(3, 24, 6, dtype=torch.float64)
    args[1] = wide[..., 2:5]  # a non-contiguous conv buffer, as a slice of a wider window
    args[2] = args[2].transpose(1, 2).contiguous().transpose(1, 2)  # h in another memory order
    before = [a.clone() for a in args]
    fused, ref = mamba_step_cpu(*args), mamba_step_naive(*args)
    for got, want in zip(fused, ref):
        torch.testing.assert_close(got, want)
    for a, b in zip(args, before):
        torch.testing.assert_close(a, b)  # inputs untouched


def test_fused_step_chained_equals_reference_over_many_tokens():
    args = list(_inputs(torch.float64, seed=2))
    s_fused, s_ref = (args[1], args[2]), (args[1], args[2])
    for t in range(20):
        xz = torch.randn(3, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + t))
        y1, *s_fused = mamba_step_cpu(xz, *s_fused, *args[3:])
        y2, *s_ref = mamba_step_naive(xz, *s_ref, *args[3:])
        torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(s_fused[1], s_ref[1])


def test_reference_runs_conv_in_the_parameter_dtype_and_the_recurrence_in_the_state_dtype():
    """Mamba.step_function's path for bf16 parameters: conv / x_proj in bf16, the state update in float32."""
    args = list(_inputs(torch.float64, seed=3))
    for i in (0, 1, 3, 4, 5):  # xz, conv_state, w, conv_bias, wx_t: the parameter dtype
        args[i] = args[i].to(torch.bfloat16)
    for i in (2, 6, 7, 8, 9):  # h, w_dt_t, b_dt, A, D: the state dtype
        args[i] = args[i].to(torch.float32)
    y, conv_state, h = mamba_step_naive(*args)
    assert (y.dtype, conv_state.dtype, h.dtype) == (torch.float32, torch.bfloat16, torch.float32)
    y64, conv64, h64 = mamba_step_naive(*(a.double() for a in args))  # the same (rounded) inputs in float64
    torch.testing.assert_close(conv_state.double(), conv64)
    torch.testing.assert_close(h.double(), h64, atol=0.05, rtol=0.02)  # bf16 conv / x_proj, float32 after
    torch.testing.assert_close(y.double(), y64, atol=0.05, rtol=0.02)
