"""S5: layer contract in float64, equality with a plain dense-matrix recurrence (outputs and every
gradient, incl. the initial state), variable step (timescale), step_rescale, bidirectional mode, bad
input, optimizer group, learning a small task."""

import math

import pytest
import torch

from torchssm.layers import S5, build_layer
from torchssm.layers.discretize import discretize_dense
from torchssm.testing import (
    assert_values_and_grads_close,
    check_bad_inputs_raise,
    check_layer_contract,
    first_token_accuracy,
)

F64 = dict(rtol=1e-10, atol=1e-10)


def make(d_model=4, d_state=8, seed=0, **kw):
    torch.manual_seed(seed)
    return S5(d_model, d_state, **kw).double()


def dense_system(layer, seed=1):
    """The layer's SSM as dense matrices in a random basis T: (A (P, P), B (P, H), C (H, P)), with the
    conjugate half written out explicitly when conj_sym (so the readout is plain Re(C h))."""
    lam = torch.complex(layer.Lambda_re, layer.Lambda_im)
    B, C = torch.view_as_complex(layer.B), torch.view_as_complex(layer.C)
    if layer.conj_sym:
        lam, B, C = torch.cat([lam, lam.conj()]), torch.cat([B, B.conj()]), torch.cat([C, C.conj()], 1)
    P = lam.shape[0]
    gen = torch.Generator().manual_seed(seed)
    T = torch.eye(P, dtype=torch.complex128) + 0.1 * torch.randn(P, P, generator=gen, dtype=torch.complex128)
    T_inv = torch.linalg.inv(T)
    return T @ torch.diag(lam) @ T_inv, T @ B, C @ T_inv, T


def dense_loop(layer, x, h0=None):
    A, B, C, T = dense_system(layer)
    dt = layer.step_rescale * torch.exp(layer.log_step)
    if dt.numel() != 1:
        raise AssertionError("dense_loop handles one shared step (dt_global=True)")
    A_bar, B_bar = discretize_dense(dt[0], A, B, layer.discretization)
    h = torch.zeros(x.shape[0], A.shape[0], dtype=A.dtype)
    if h0 is not None:
        h = (torch.cat([h0, h0.conj()], 1) if layer.conj_sym else h0) @ T.T
    ys = []
    for t in range(x.shape[1]):
        h = h @ A_bar.T + x[:, t].to(A.dtype) @ B_bar.T
        ys.append((h @ C.T).real + layer.D * x[:, t])
    return torch.stack(ys, 1)


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(blocks=2),
        dict(conj_sym=False),
        dict(init="ptd", conj_sym=False),
        dict(init="ptd"),
        dict(discretization="bilinear"),
        dict(dt_global=True, clip_eigs=True, step_rescale=2.0),
    ],
    ids=["default", "blocks2", "full", "ptd", "ptd-conj", "bilinear", "global-clip-rescale"],
)
def test_contract_float64(kw):
    check_layer_contract(make(**kw), length=13, **F64)


def test_contract_float32_relative_to_output_norm():
    layer = S5(4, 8)
    scale = layer(torch.randn(2, 13, 4)).abs().max().item()
    check_layer_contract(layer, length=13, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize(
    "kw", [dict(), dict(conj_sym=False), dict(discretization="bilinear")], ids=["conj_sym", "full", "bilinear"]
)
def test_equals_dense_matrix_recurrence_outputs_and_gradients(kw):
    layer = make(dt_global=True, **kw)
    x = torch.randn(2, 11, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, layer.n_complex, dtype=torch.complex128, requires_grad=True)
    assert_values_and_grads_close([layer(x, h0)], [dense_loop(layer, x, h0)], [x, h0, *layer.parameters()], **F64)


def test_timescale_per_step_matches_step_and_step_rescale():
    layer = make()
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    ts = torch.rand(2, 9, dtype=torch.float64) + 0.5
    with torch.no_grad():
        y, final = layer(x, timescale=ts, return_state=True)
        state, ys = layer.init_state(2), []
        for t in range(9):
            y_t, state = layer.step(x[:, t], state, timescale=ts[:, t])
            ys.append(y_t)
        torch.testing.assert_close(torch.stack(ys, 1), y, **F64)
        torch.testing.assert_close(state, final, **F64)
        torch.testing.assert_close(layer(x, timescale=torch.ones(2, 9, dtype=torch.float64)), layer(x), **F64)
        rescaled = make(step_rescale=3.0)
        torch.testing.assert_close(rescaled(x), layer(x, timescale=torch.full((2, 9), 3.0, dtype=torch.float64)), **F64)
    with pytest.raises(ValueError, match=r"timescale must have shape \(2, 9\)"):
        layer(x, timescale=ts[:, :5])


def test_bidirectional_is_forward_plus_reversed_scan():
    layer = make(bidirectional=True)
    assert not layer.causal
    x = torch.randn(2, 7, 4, dtype=torch.float64)
    uni = make(bidirectional=False)
    uni.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "C2"})
    back = make(bidirectional=False)
    back.load_state_dict({**{k: v for k, v in layer.state_dict().items() if k not in ("C", "C2")}, "C": layer.C2})
    with torch.no_grad():
        want = uni(x) + back(x.flip(1)).flip(1) - layer.D * x
        torch.testing.assert_close(layer(x), want, **F64)
    check_bad_inputs_raise(layer)
    with pytest.raises(NotImplementedError):
        layer.step(x[:, 0], layer.init_state(2))
    with pytest.raises(ValueError, match="carries no state"):
        layer(x, return_state=True)


def test_long_sequence_and_bf16_are_finite():
    layer = S5(4, 8)
    with torch.no_grad():
        assert torch.isfinite(layer(torch.randn(1, 16384, 4))).all()
        y = layer(torch.randn(2, 32, 4).to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="even d_state"):
        S5(4, 7)
    with pytest.raises(ValueError, match="divisible"):
        S5(4, 12, blocks=5)
    with pytest.raises(ValueError, match="unknown S5 init"):
        S5(4, 8, init="legs")
    with pytest.raises(ValueError, match="dt_min"):
        S5(4, 8, dt_min=0.5, dt_max=0.1)
    with pytest.raises(ValueError, match="blocks=1"):
        S5(4, 8, init="ptd", blocks=2)


def test_registry_and_optimizer_group():
    layer = build_layer("s5", 8, d_state=4, ssm_lr=2e-3)
    assert layer.optim_overrides == {
        k: {"lr": 2e-3, "weight_decay": 0.0} for k in ("B", "Lambda_re", "Lambda_im", "log_step")
    }
    assert build_layer("s5", 8, d_state=4, dt_global=True).log_step.shape == (1,)
    assert math.isclose(S5(4, 8).n_complex, 4)


@pytest.mark.parametrize(
    "opt_config, log_step_in_group, b_lr, b_wd, step_lr, step_wd",
    [
        ("standard", True, 2e-3, 0.0, 2e-3, 0.0),
        ("BfastandCdecay", True, 1e-2, 0.05, 2e-3, 0.0),
        ("BandCdecay", True, 2e-3, 0.05, 2e-3, 0.0),
        ("standard", False, 2e-3, 0.0, 1e-2, 0.05),
    ],
)
def test_opt_configs_give_the_s5_code_groups(opt_config, log_step_in_group, b_lr, b_wd, step_lr, step_wd):
    """The S5 code's create_train_state groups (lindermanlab/S5 s5/train_helpers.py): (lr, weight decay) of B
    and log_step per opt_config; Lambda is always at ssm_lr without decay, C and D always at the default."""
    from torchssm.train.optim import param_groups

    layer = S5(8, 4, ssm_lr=2e-3, opt_config=opt_config, ssm_group_log_step=log_step_in_group)
    where = {
        name: (g["lr"], g["weight_decay"])
        for g in param_groups(layer, lr=1e-2, weight_decay=0.05)
        for name in g["names"]
    }
    assert where["B"] == (b_lr, b_wd) and where["log_step"] == (step_lr, step_wd)
    assert where["Lambda_re"] == where["Lambda_im"] == (2e-3, 0.0)
    assert where["C"] == where["D"] == (1e-2, 0.05)
    with pytest.raises(ValueError, match="opt_config"):
        S5(8, 4, opt_config="noBCdecay")


def test_learns_to_remember_the_first_token():
    torch.manual_seed(0)
    assert first_token_accuracy(S5(16, 16), length=64, steps=30, lr=1e-2) > 0.9


@pytest.mark.slow
def test_learns_to_remember_the_first_token_over_256_steps():
    torch.manual_seed(0)
    assert first_token_accuracy(S5(32, 16), length=256, steps=60, lr=1e-2) > 0.9
