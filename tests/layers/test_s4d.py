"""S4D: layer contract in float64 for every init and discretisation, convolution == an independent
dense recurrence (L up to 4096), bidirectional mode == a forward plus a time-reversed recurrence (values
and every gradient), padding with lengths, bad input, config path, optimizer tags, learning a small task."""

import pytest
import torch

from torchssm.layers import S4D, build_layer
from torchssm.testing import (
    assert_values_and_grads_close,
    check_bad_inputs_raise,
    check_layer_contract,
    first_token_accuracy,
)

F64 = dict(rtol=1e-10, atol=1e-10)


def make(d_model=4, d_state=8, seed=0, **kw):
    torch.manual_seed(seed)
    return S4D(d_model, d_state, **kw).double()


def _discrete(layer):
    """A_bar = exp(dt A) or (1 + dt A/2)/(1 - dt A/2), and B_bar, each (H, m), written out here."""
    A = -torch.exp(layer.log_A_real) + 1j * layer.A_imag  # (H, m)
    dt = torch.exp(layer.log_dt)[:, None]
    B = torch.view_as_complex(layer.B)
    if layer.discretization == "zoh":
        A_bar = torch.exp(dt * A)
        return A_bar, (A_bar - 1) / A * B
    return (1 + dt * A / 2) / (1 - dt * A / 2), dt * B / (1 - dt * A / 2)


def readout_loop(layer, x, C, h0=None, *, before_update=False):
    """h_t = A_bar h_{t-1} + B_bar x_t; returns (s Re(C h_t) (b, l, H), h_L); ``before_update`` reads h_{t-1}."""
    A_bar, B_bar = _discrete(layer)
    h = torch.zeros(x.shape[0], *A_bar.shape, dtype=A_bar.dtype) if h0 is None else h0
    ys = []
    for t in range(x.shape[1]):
        h_new = A_bar * h + B_bar * x[:, t, :, None]
        ys.append(layer.kernel_scale * (C * (h if before_update else h_new)).sum(-1).real)
        h = h_new
    return torch.stack(ys, 1), h


def dense_loop(layer, x, h0=None):
    """The S4D recurrence written out independently: y_t = s Re(C h_t) + D x_t. Returns (y (b, l, H), h_L (b, H, m))."""
    y, h = readout_loop(layer, x, torch.view_as_complex(layer.C), h0)
    return y + layer.D * x, h


def bidirectional_reference(layer, x):
    """Forward recurrence read by C, plus the recurrence over the time-reversed input read by C2 one step
    before each update (the anti-causal kernel starts at lag 1, as state-spaces/s4 FFTConv), plus D x."""
    y_fwd, _ = readout_loop(layer, x, torch.view_as_complex(layer.C))
    y_bwd, _ = readout_loop(layer, x.flip(1), torch.view_as_complex(layer.C2), before_update=True)
    return y_fwd + y_bwd.flip(1) + layer.D * x


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


def test_bad_arguments_raise_for_dt_and_odd_state():
    for dt_min in (0.0, -1e-3):
        with pytest.raises(ValueError, match="dt_min"):
            S4D(4, 8, dt_min=dt_min)
    assert S4D(4, 7, init="ptd").n_complex == 7  # no conjugate symmetry: odd N is fine
    for d_state in (8.0, 0, -2):
        with pytest.raises(ValueError, match="positive int"):
            S4D(4, d_state)
    with pytest.raises(ValueError, match="positive int"):
        S4D(4, 0, init="ptd")


# --- bidirectional ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("init,discretization", [("legs", "zoh"), ("lin", "bilinear"), ("ptd", "zoh")])
def test_bidirectional_equals_two_recurrences_with_gradients(init, discretization):
    layer = make(init=init, discretization=discretization, bidirectional=True)
    x = torch.randn(2, 11, 4, dtype=torch.float64, requires_grad=True)
    assert_values_and_grads_close([layer(x)], [bidirectional_reference(layer, x)], [x, *layer.parameters()], **F64)


def test_bidirectional_has_no_step_and_no_state():
    layer = make(bidirectional=True)
    assert not layer.causal and {"C", "C2"} <= dict(layer.named_parameters()).keys()
    check_bad_inputs_raise(layer)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="not causal"):
        layer.step(x[:, 0], layer.init_state(2))
    with pytest.raises(ValueError, match="no state"):
        layer(x, layer.init_state(2))
    with pytest.raises(ValueError, match="no state"):
        layer(x, return_state=True)
    with pytest.raises(ValueError, match="lengths"):
        make()(x, return_state=True, lengths=torch.tensor([5, 3]))
    with pytest.raises(TypeError, match="integer"):
        layer(x, lengths=torch.tensor([5.0, 3.0]))


def test_bidirectional_padding_does_not_flow_backward():
    layer = make(bidirectional=True)
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    lengths = torch.tensor([9, 5])
    padded = x.clone()
    padded[1, 5:] = 100.0
    with torch.no_grad():
        y = layer(padded, lengths=lengths)
        torch.testing.assert_close(y[0], layer(x[:1])[0], **F64)
        torch.testing.assert_close(y[1, :5], layer(x[1:, :5])[0], **F64)
        # a causal layer's valid outputs never see the padding, so it ignores lengths
        causal = make()
        torch.testing.assert_close(causal(padded, lengths=lengths)[1, :5], causal(x[1:, :5])[0], **F64)


def test_bidirectional_through_the_config_and_registry():
    from torchssm.models.backbone import build_model
    from torchssm.presets import preset_path
    from torchssm.train.config import load_config

    cfg = load_config(
        preset_path("lra/listops_s4d"), ["model.d_model=8", "model.n_layers=1", "model.layer_kwargs.d_state=4"]
    )
    assert cfg.model.layer_kwargs["bidirectional"] is True  # the state-spaces/s4 LRA configs' setting
    model = build_model(cfg.model)
    assert not model.blocks[0].ssm.causal
    logits = model(torch.randn(3, 10, 1), lengths=torch.tensor([10, 6, 3]))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    assert not build_layer("s4d", 8, d_state=4, bidirectional=True).causal
    assert "bidirectional=True" in repr(build_layer("s4d", 8, d_state=4, bidirectional=True))


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
