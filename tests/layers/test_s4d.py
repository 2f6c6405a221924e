"""S4D: layer contract in float64 for every init and discretisation, convolution == an independent
dense recurrence (L up to 4096), kernel formula, bad input, optimizer tags, learning a small task."""

import pytest
import torch

from torchssm.layers import S4D, build_layer
from torchssm.testing import assert_values_and_grads_close, check_layer_contract, first_token_accuracy

F64 = dict(rtol=1e-10, atol=1e-10)


def make(d_model=4, d_state=8, seed=0, **kw):
    torch.manual_seed(seed)
    return S4D(d_model, d_state, **kw).double()


def dense_loop(layer, x, h0=None):
    """The S4D recurrence written out independently: A_bar = exp(dt A) or (1 + dt A/2)/(1 - dt A/2),
    h_t = A_bar h_{t-1} + B_bar x_t, y_t = s Re(C h_t) + D x_t. Returns (y (b, l, H), h_L (b, H, m))."""
    A = -torch.exp(layer.log_A_real) + 1j * layer.A_imag  # (H, m)
    dt = torch.exp(layer.log_dt)[:, None]
    B, C = torch.view_as_complex(layer.B), torch.view_as_complex(layer.C)
    if layer.discretization == "zoh":
        A_bar = torch.exp(dt * A)
        B_bar = (A_bar - 1) / A * B
    else:
        A_bar = (1 + dt * A / 2) / (1 - dt * A / 2)
        B_bar = dt * B / (1 - dt * A / 2)
    h = torch.zeros(x.shape[0], *A.shape, dtype=A.dtype) if h0 is None else h0
    ys = []
    for t in range(x.shape[1]):
        h = A_bar * h + B_bar * x[:, t, :, None]
        ys.append(layer.kernel_scale * (C * h).sum(-1).real + layer.D * x[:, t])
    return torch.stack(ys, 1), h


@pytest.mark.parametrize("init", ["legs", "lin", "inv", "real", "random", "ptd"])
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_contract_float64(init, discretization):
    check_layer_contract(make(init=init, discretization=discretization), length=13, **F64)


def test_contract_float32_relative_to_output_norm():
    layer = S4D(4, 8)
    scale = layer(torch.randn(2, 13, 4)).abs().max().item()
    check_layer_contract(layer, length=13, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_convolution_equals_dense_recurrence_with_state_and_gradients(discretization):
    layer = make(discretization=discretization)
    x = torch.randn(2, 17, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 4, 4, dtype=torch.complex128, requires_grad=True)
    params = [x, h0, *layer.parameters()]
    assert_values_and_grads_close(layer(x, h0, return_state=True), dense_loop(layer, x, h0), params, **F64)


def test_convolution_equals_recurrence_at_L4096():
    layer = make(d_model=2, d_state=8)
    x = torch.randn(1, 4096, 2, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
        y_ref, _ = dense_loop(layer, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-9)


def test_no_nan_at_16k_and_bf16_input():
    layer = S4D(4, 8)
    with torch.no_grad():
        assert torch.isfinite(layer(torch.randn(1, 16384, 4))).all()
        y = layer(torch.randn(2, 64, 4).to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown S4D init 'hippo'"):
        S4D(4, 8, init="hippo")
    with pytest.raises(ValueError, match="even d_state"):
        S4D(4, 7)
    with pytest.raises(ValueError, match="dt_min"):
        S4D(4, 8, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="discretization"):
        S4D(4, 8, discretization="euler")


def test_registry_and_optimizer_tags():
    layer = build_layer("s4d", 8, d_state=4)
    assert isinstance(layer, S4D) and layer.causal
    assert set(layer.optim_overrides) == {"log_dt", "log_A_real", "A_imag", "B"}
    assert all(v == {"lr": 1e-3, "weight_decay": 0.0} for v in layer.optim_overrides.values())
    from torchssm.train.optim import param_groups
    groups = param_groups(layer, lr=1e-2, weight_decay=0.1)
    ssm = [g for g in groups if g["lr"] == 1e-3][0]
    assert sorted(ssm["names"]) == ["A_imag", "B", "log_A_real", "log_dt"] and ssm["weight_decay"] == 0.0


def test_learns_to_remember_the_first_token():
    torch.manual_seed(0)
    assert first_token_accuracy(S4D(16, 16), length=64, steps=30, lr=1e-2) > 0.9


@pytest.mark.slow
def test_learns_to_remember_the_first_token_over_256_steps():
    torch.manual_seed(0)
    assert first_token_accuracy(S4D(32, 16), length=256, steps=60, lr=1e-2) > 0.9
