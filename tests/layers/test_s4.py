"""S4 (DPLR): Cauchy kernel == kernel of the materialised discrete (A_bar, B_bar, C), layer contract in
float64 (incl. kernel doubling and odd kernel lengths), convolution == recurrence up to L=4096, gradients
of the convolution path == a dense loop, bidirectional mode == a forward plus a time-reversed dense
recurrence (values, gradients, kernel doubling, padding), the dt timescale option, bad input, optimizer
tags, learning a small task."""

import pytest
import torch

from torchssm.layers import S4, build_layer
from torchssm.layers.discretize import discretize_dense
from torchssm.layers.init import log_uniform_dt
from torchssm.testing import (
    assert_values_and_grads_close,
    check_bad_inputs_raise,
    check_layer_contract,
    check_step_matches_forward,
    first_token_accuracy,
)

F64 = dict(rtol=1e-9, atol=1e-9)


def make(d_model=3, d_state=8, seed=0, **kw):
    torch.manual_seed(seed)
    return S4(d_model, d_state, **kw).double()


def materialised(layer, readout="C"):
    """The DPLR SSM as explicit full-state matrices, built here from the parameters:
    A = diag(Lambda) - P P^* on [half, conj half], bilinear A_bar/B_bar, C = C~ (I - A_bar^L)^-1
    (C~ = the parameter named ``readout``)."""
    lam = torch.complex(-torch.exp(layer.log_A_real), layer.A_imag)
    full = lambda t: torch.cat([t, t.conj()], -1)  # noqa: E731
    P = full(torch.view_as_complex(layer.P))  # (r, H, n)
    A = torch.diag_embed(full(lam)) - torch.einsum("rhi,rhj->hij", P, P.conj())
    A_bar, B_bar = discretize_dense(
        torch.exp(layer.log_dt), A, full(torch.view_as_complex(layer.B))[..., None], "bilinear"
    )
    n = A.shape[-1]
    A_L = torch.linalg.matrix_power(A_bar, int(layer.kernel_length))
    Ct = full(torch.view_as_complex(getattr(layer, readout)))
    C = torch.linalg.solve((torch.eye(n, dtype=A.dtype) - A_L).mT, Ct[..., None])[..., 0]
    return A_bar, B_bar[..., 0], C


def readout_loop(layer, x, h0=None, *, readout="C", before_update=False):
    """Dense recurrence h_t = A_bar h_{t-1} + B_bar x_t; returns (Re(C h_t) (b, l, H), h_L (b, H, m));
    ``before_update`` reads h_{t-1} instead."""
    A_bar, B_bar, C = materialised(layer, readout)
    h = torch.zeros(x.shape[0], *B_bar.shape, dtype=B_bar.dtype)
    if h0 is not None:
        h = torch.cat([h0, h0.conj()], -1)
    ys = []
    for t in range(x.shape[1]):
        h_new = (A_bar @ h[..., None])[..., 0] + B_bar * x[:, t, :, None]
        ys.append((C * (h if before_update else h_new)).sum(-1).real)
        h = h_new
    return torch.stack(ys, 1), h[..., : layer.n_complex]


def dense_loop(layer, x, h0=None):
    y, h = readout_loop(layer, x, h0)
    return y + layer.D * x, h


def bidirectional_reference(layer, x):
    """Dense recurrence read by C, plus the one over the time-reversed input read by C2 one step before
    each update (anti-causal kernel from lag 1, as state-spaces/s4 FFTConv), plus D x."""
    y_bwd, _ = readout_loop(layer, x.flip(1), readout="C2", before_update=True)
    return readout_loop(layer, x)[0] + y_bwd.flip(1) + layer.D * x


@pytest.mark.parametrize("measure", ["legs", "legt", "fout"])
@pytest.mark.parametrize("l_max", [16, 13])
def test_cauchy_kernel_equals_materialised_kernel(measure, l_max):
    layer = make(measure=measure, l_max=l_max)
    A_bar, B_bar, C = materialised(layer)
    with torch.no_grad():
        K = layer._kernel(torch.view_as_complex(layer.B), torch.view_as_complex(layer.C)[None])[0]  # (H, L)
    want, v = [], B_bar
    for _ in range(l_max):
        want.append((C * v).sum(-1).real)
        v = (A_bar @ v[..., None])[..., 0]
    torch.testing.assert_close(K, torch.stack(want, -1).detach(), **F64)


@pytest.mark.parametrize("measure", ["legs", "legt", "fout"])
@pytest.mark.parametrize("l_max", [16, 13, 4])  # 4: the contract's length-13 input doubles the kernel
def test_contract_float64(measure, l_max):
    check_layer_contract(make(measure=measure, l_max=l_max), length=13, **F64)


def test_contract_float32_relative_to_output_norm():
    layer = S4(3, 8, l_max=16)
    scale = layer(torch.randn(2, 13, 3)).abs().max().item()
    check_layer_contract(layer, length=13, rtol=1e-4, atol=1e-4 * scale)


def test_convolution_path_gradients_equal_dense_loop():
    layer = make(l_max=16)
    x = torch.randn(2, 11, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, 4, dtype=torch.complex128, requires_grad=True)
    params = [x, h0, *layer.parameters()]
    assert_values_and_grads_close(layer(x, h0, return_state=True), dense_loop(layer, x, h0), params, **F64)


def test_convolution_equals_recurrence_at_L4096():
    layer = make(d_model=2, l_max=4096)
    check_step_matches_forward(layer, torch.randn(1, 4096, 2, dtype=torch.float64), rtol=1e-8, atol=1e-8)


def test_kernel_doubling_keeps_the_function():
    layer = make(l_max=8)
    x = torch.randn(1, 20, 3, dtype=torch.float64)
    with torch.no_grad():
        state, ys = layer.init_state(1), []
        for t in range(20):  # recurrence with C converted at kernel length 8
            y_t, state = layer.step(x[:, t], state)
            ys.append(y_t)
        y = layer(x)  # doubles 8 -> 16 -> 32
    assert int(layer.kernel_length) == 32
    torch.testing.assert_close(y, torch.stack(ys, 1), **F64)
    assert "kernel_length" in layer.state_dict()


@pytest.mark.parametrize("measure", ["legs", "legt"])
def test_bidirectional_equals_two_dense_recurrences_with_gradients(measure):
    layer = make(measure=measure, l_max=12, bidirectional=True)
    assert not layer.causal and "bidirectional=True" in repr(layer)
    x = torch.randn(2, 12, 3, dtype=torch.float64, requires_grad=True)
    assert_values_and_grads_close([layer(x)], [bidirectional_reference(layer, x)], [x, *layer.parameters()], **F64)


def test_bidirectional_kernel_doubling_padding_and_no_step():
    layer = make(l_max=8, bidirectional=True)
    x = torch.randn(2, 13, 3, dtype=torch.float64)
    with torch.no_grad():
        want = bidirectional_reference(layer, x)  # C and C2 converted at kernel length 8
        padded = x.clone()
        padded[1, 9:] = 50.0
        y = layer(padded, lengths=torch.tensor([13, 9]))  # doubles 8 -> 16, C~ and C~2 both follow
        torch.testing.assert_close(y[0], want[0], **F64)
        torch.testing.assert_close(y[1, :9], bidirectional_reference(layer, x[1:, :9])[0], **F64)
    assert int(layer.kernel_length) == 16
    check_bad_inputs_raise(layer)
    with pytest.raises(NotImplementedError, match="not causal"):
        layer.step(x[:, 0], layer.init_state(2))
    with pytest.raises(ValueError, match="no state"):
        layer(x, layer.init_state(2))


def test_long_sequence_and_bf16_are_finite():
    layer = S4(2, 8, l_max=16384)
    with torch.no_grad():
        assert torch.isfinite(layer(torch.randn(1, 16384, 2))).all()
        y = layer(torch.randn(2, 64, 2).to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown S4 measure 'legx'"):
        S4(3, 8, measure="legx")
    with pytest.raises(ValueError, match="even"):
        S4(3, 9)
    with pytest.raises(ValueError, match="dt_min"):
        S4(3, 8, dt_min=0.2, dt_max=0.1)
    with pytest.raises(ValueError, match="l_max"):
        S4(3, 8, l_max=0)


def test_bad_arguments_raise_for_non_positive_dt():
    for dt_min in (0.0, -1e-3):
        with pytest.raises(ValueError, match="dt_min"):
            S4(3, 8, dt_min=dt_min)
    with pytest.raises(ValueError, match="dt_max"):
        S4(3, 8, dt_max=0.0, dt_scale_to_length=True)
    with pytest.raises(ValueError, match="positive int"):
        S4(3, 8.0)


def test_dt_scale_to_length_draws_dt_from_the_length_range(monkeypatch):
    """S4 draws log dt with log_uniform_dt over dt_range_for_length(l_max) (opt-in) or [dt_min, dt_max]."""
    import torchssm.layers.s4 as s4_module

    calls = []

    def recording(size, dt_min, dt_max):
        calls.append((size, dt_min, dt_max))
        return log_uniform_dt(size, dt_min, dt_max)

    monkeypatch.setattr(s4_module, "log_uniform_dt", recording)
    S4(16, 8, l_max=4096, dt_min=2e-3, dt_max=0.05)
    layer = S4(256, 8, l_max=4096, dt_scale_to_length=True)
    assert calls == [(16, 2e-3, 0.05), (256, 1 / 4096, 0.1)]
    memory = torch.exp(-layer.log_dt.double())  # 1/dt (H,): memory lengths in steps
    assert memory.min() >= 10 * (1 - 1e-6) and memory.max() <= 4096 * (1 + 1e-6)
    assert memory.max() > 2048  # reaches beyond the default range's 1000 steps, towards L


def test_registry_and_optimizer_tags():
    layer = build_layer("s4", 4, d_state=4)
    assert set(layer.optim_overrides) == {"log_dt", "log_A_real", "A_imag", "P", "B"}
    assert all(v == {"lr": 1e-3, "weight_decay": 0.0} for v in layer.optim_overrides.values())


def test_learns_to_remember_the_first_token():
    torch.manual_seed(0)
    assert first_token_accuracy(S4(16, 16, l_max=64), length=64, steps=30, lr=1e-2) > 0.9


@pytest.mark.slow
def test_learns_to_remember_the_first_token_over_256_steps():
    torch.manual_seed(0)
    assert first_token_accuracy(S4(32, 16, l_max=256), length=256, steps=60, lr=1e-2) > 0.9


def test_step_cache_follows_parameter_updates():
    layer = make(l_max=16)
    x_t, state = torch.randn(2, 3, dtype=torch.float64), layer.init_state(2) + 0.1
    with torch.no_grad():
        y1, _ = layer.step(x_t, state)
        layer.C.mul_(2.0)  # C = C~ (I - A_bar^L)^-1 is linear in C~
        y2, _ = layer.step(x_t, state)
    torch.testing.assert_close(y2 - layer.D * x_t, 2 * (y1 - layer.D * x_t), **F64)


def test_loaded_kernel_length_is_the_one_used():
    """L is a buffer (saved) and a plain int (read by the code): load_state_dict updates both, so a fresh
    L = 8 layer loaded from one whose L doubled to 32 computes the same forward and step."""
    trained = make(l_max=8)
    x = torch.randn(2, 20, 3, dtype=torch.float64)  # (b, l, H)
    with torch.no_grad():
        want = trained(x)  # doubles 8 -> 32
    fresh = make(l_max=8, seed=1)
    fresh.load_state_dict(trained.state_dict())
    assert fresh._kernel_length == 32 and "kernel_length=32" in repr(fresh)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), want, **F64)
    assert fresh._kernel_length == 32  # no further doubling: C~ is the trained one at L = 32
    check_step_matches_forward(fresh, x, **F64)
    bad = dict(trained.state_dict(), kernel_length=torch.tensor(0))
    with pytest.raises(ValueError, match="kernel_length must be a positive int"):
        fresh.load_state_dict(bad)


def test_step_traces_with_torch_export():
    """torch.export traces ``step`` (the int kernel length; the step cache is bypassed while tracing,
    so no traced tensor is cached) and the traced step equals the eager one."""
    layer = make(l_max=8).eval()

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x_t, state):
            return self.layer.step(x_t, state)

    x_t, state = torch.randn(2, 3, dtype=torch.float64), layer.init_state(2) + 0.1  # (b, H), (b, H, m)
    with torch.no_grad():
        traced = torch.export.export(Step(), (x_t, state), strict=False).module()
        assert "_derived" not in layer.__dict__
        for got, want in zip(traced(x_t, state), layer.step(x_t, state)):
            torch.testing.assert_close(got, want, **F64)
