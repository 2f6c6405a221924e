"""DSS (exp and softmax): layer contract in float64, kernels == the paper's formulas, convolution ==
recurrence (exp up to L=4096; softmax at its normalisation length l_max), positive Re(Lambda) in
softmax, bidirectional mode == both paper kernels convolved (values and gradients), bad input, optimizer
tags, learning a small task."""

import pytest
import torch

from torchssm.layers import DSS, build_layer
from torchssm.ops.conv import conv_naive
from torchssm.testing import (
    assert_values_and_grads_close,
    check_layer_contract,
    check_step_matches_forward,
    first_token_accuracy,
)

F64 = dict(rtol=1e-10, atol=1e-10)


def make(d_model=4, d_state=8, seed=0, **kw):
    torch.manual_seed(seed)
    return DSS(d_model, d_state, **kw).double()


def paper_kernel(layer, length, W=None):
    """[DSS] Sec. 3.2 written out with an explicit (H, m, L) matrix P = dt Lambda l (W: the layer's W by default)."""
    lam = layer._lambda()  # (m,)
    dt = torch.exp(layer.log_dt)[:, None, None]  # (H, 1, 1)
    l = torch.arange(length, dtype=torch.float64)
    P = dt * lam[None, :, None] * l  # (H, m, L)
    W = torch.view_as_complex(layer.W if W is None else W)[..., None]  # (H, m, 1)
    if layer.version == "exp":
        return (W * (torch.exp(dt * lam[None, :, None]) - 1) / lam[None, :, None] * torch.exp(P)).sum(1).real
    softmax = torch.exp(P) / torch.exp(P).sum(-1, keepdim=True)  # complex softmax over l (float64: no overflow here)
    return (W / lam[None, :, None] * softmax).sum(1).real


def _kernel_of(layer, length):
    """The layer's convolution kernel, read off its response to a unit impulse."""
    x = torch.zeros(1, length, layer.d_model, dtype=torch.float64)
    x[:, 0] = 1.0
    with torch.no_grad():
        return (layer(x)[0] - layer.D * x[0]).T  # (H, L)


@pytest.mark.parametrize("version", ["exp", "softmax"])
def test_contract_float64(version):
    check_layer_contract(make(version=version, l_max=13), length=13, **F64)


@pytest.mark.parametrize("version", ["exp", "softmax"])
def test_kernel_matches_the_paper_formula(version):
    layer = make(version=version, l_max=20)
    torch.testing.assert_close(_kernel_of(layer, 20), paper_kernel(layer, 20).detach(), **F64)


def test_softmax_with_positive_real_parts_is_stable_and_matches_recurrence():
    layer = make(d_model=3, version="softmax", l_max=64)
    with torch.no_grad():
        layer.Lambda_re[:2] = 3.0  # Re(Lambda dt) * l_max up to ~190: exp would overflow in float32
        layer.log_dt.fill_(0.0)
    torch.testing.assert_close(_kernel_of(layer, 64), paper_kernel(layer, 64).detach(), **F64)
    f32 = DSS(3, 8, version="softmax", l_max=4096)
    with torch.no_grad():
        f32.Lambda_re[:2] = 3.0
        assert torch.isfinite(f32(torch.randn(1, 4096, 3))).all()
        y = f32(torch.randn(2, 64, 3).to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    check_layer_contract(make(d_model=3, version="softmax", l_max=13), length=13, **F64)


def test_exp_convolution_equals_recurrence_at_L4096():
    layer = make(d_model=2, version="exp")
    check_step_matches_forward(layer, torch.randn(1, 4096, 2, dtype=torch.float64), rtol=1e-9, atol=1e-9)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown DSS version"):
        DSS(4, 8, version="relu")
    with pytest.raises(ValueError, match="l_max"):
        DSS(4, 8, version="softmax")
    with pytest.raises(ValueError, match="even"):
        DSS(4, 9)
    with pytest.raises(ValueError, match="dt_min"):
        DSS(4, 8, dt_min=1.0, dt_max=0.1)
    with pytest.raises(ValueError, match="shorter than the input length 20"):
        DSS(4, 8, version="softmax", l_max=16)(torch.randn(1, 20, 4))


def test_bad_arguments_raise_for_non_positive_dt_and_non_int_sizes():
    for dt_min in (0.0, -0.01):
        with pytest.raises(ValueError, match="dt_min"):
            DSS(4, 8, dt_min=dt_min)
    for l_max in (0, 12.5, True):
        with pytest.raises(ValueError, match="int l_max"):
            DSS(4, 8, version="softmax", l_max=l_max)
    for d_state in (8.0, 0):
        with pytest.raises(ValueError, match="positive int"):
            DSS(4, d_state)


@pytest.mark.parametrize("version", ["exp", "softmax"])
def test_bidirectional_equals_paper_kernels_convolved_both_ways_with_gradients(version):
    """K from W forward, K2 from W2 on the time-reversed input one step away (ops.conv.conv_naive's
    explicit Toeplitz sum): values and the gradient of every parameter."""
    layer = make(version=version, l_max=12, bidirectional=True)
    assert not layer.causal and set(dict(layer.named_parameters())) >= {"W", "W2"}
    x = torch.randn(2, 12, 4, dtype=torch.float64, requires_grad=True)
    want = conv_naive(x, paper_kernel(layer, 12), paper_kernel(layer, 12, layer.W2)) + layer.D * x
    assert_values_and_grads_close([layer(x)], [want], [x, *layer.parameters()], **F64)
    with pytest.raises(NotImplementedError, match="not causal"):
        layer.step(x[:, 0], layer.init_state(2))
    with pytest.raises(ValueError, match="no state"):
        layer(x, return_state=True)


def test_registry_and_optimizer_tags():
    layer = build_layer("dss", 8, d_state=4, version="softmax", l_max=32)
    assert set(layer.optim_overrides) == {"Lambda_re", "Lambda_im", "log_dt"}
    assert set(build_layer("dss", 8, d_state=4).optim_overrides) == {"Lambda_log_neg_re", "Lambda_im", "log_dt"}


def test_learns_to_remember_the_first_token():
    torch.manual_seed(0)
    assert first_token_accuracy(DSS(16, 16), length=64, steps=30, lr=1e-2) > 0.9


@pytest.mark.slow
def test_learns_to_remember_the_first_token_over_256_steps():
    torch.manual_seed(0)
    assert first_token_accuracy(DSS(32, 16), length=256, steps=60, lr=1e-2) > 0.9
