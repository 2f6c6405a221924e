"""LRU layer: contract, equality with an independent dense-matrix loop (outputs and every gradient),
ring init statistics, bidirectional mode with padding, long sequences, bad input."""

import math

import pytest
import torch

from torchssm.layers import LRU, build_layer
from torchssm.testing import check_bad_inputs_raise, check_layer_contract

F64 = dict(rtol=1e-10, atol=1e-10)


def make(d_model=6, d_state=5, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    kw.setdefault("r_min", 0.5)
    kw.setdefault("r_max", 0.99)
    return LRU(d_model, d_state, **kw).to(dtype)


def dense_reference(layer, x, h0=None, reset=None, reverse=False, C=None):
    """The LRU as written in the paper, with explicit complex matrices and a Python loop.

    Lambda = diag(|lambda| e^{i theta}) built from polar form (not the layer's exp of a complex),
    B = diag(gamma) (B_re + i B_im), h_t = Lambda h_{t-1} + B x_t, returns (Re(C h_t) (b, l, h), h (b, l, n)).
    """
    mod = torch.exp(-torch.exp(layer.nu_log))  # (n,)
    theta = torch.exp(layer.theta_log)  # (n,)
    Lam = torch.diag(torch.polar(mod, theta))  # (n, n) complex
    gamma = torch.exp(layer.gamma_log)
    B = torch.diag(gamma).to(Lam.dtype) @ torch.complex(layer.B_re, layer.B_im)  # (n, h)
    C = torch.complex(layer.C_re, layer.C_im) if C is None else C  # (h, n)
    b, l, _ = x.shape
    h = torch.zeros(b, layer.d_state, dtype=Lam.dtype) if h0 is None else h0
    ys, hs = [None] * l, [None] * l
    for t in range(l - 1, -1, -1) if reverse else range(l):
        if reset is not None:
            h = torch.where(reset[:, t, None], torch.zeros_like(h), h)
        h = h @ Lam.T + x[:, t].to(Lam.dtype) @ B.T  # (b, n)
        hs[t] = h
        ys[t] = (h @ C.T).real  # (b, h)
    return torch.stack(ys, 1), torch.stack(hs, 1)


# --- contract ---------------------------------------------------------------------------------------------
def test_contract_float64():
    check_layer_contract(make(), length=13, **F64)


def test_contract_float32_relative_to_output_norm():
    layer = make(dtype=torch.float32)
    x = torch.randn(2, 13, 6)
    scale = layer(x).abs().max().item()
    check_layer_contract(layer, length=13, rtol=1e-5, atol=1e-5 * scale)


def test_bidirectional_rejects_bad_input_and_has_no_step():
    layer = make(bidirectional=True)
    assert not layer.causal
    check_bad_inputs_raise(layer)
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    with pytest.raises(NotImplementedError):
        layer.step(x[:, 0], layer.init_state(2))
    with pytest.raises(ValueError, match="no state"):
        layer(x, layer.init_state(2))
    with pytest.raises(ValueError, match="no state"):
        layer(x, return_state=True)


def test_state_dtype_follows_parameters():
    assert make(dtype=torch.float32).init_state(3).dtype == torch.complex64
    assert make(dtype=torch.float64).init_state(3).dtype == torch.complex128
    assert make().init_state(3, device="meta").shape == (3, 5)
    assert make().init_state(3, dtype=torch.float32).dtype == torch.complex64


# --- equality with the dense reference: outputs and every gradient ----------------------------------------
@pytest.mark.parametrize("backend", ["auto", "naive", "chunked", "cpu"])
def test_forward_and_all_gradients_match_dense_loop(backend):
    layer = make(d_model=4, d_state=3, backend=backend)
    x = torch.randn(2, 9, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.complex128, requires_grad=True)
    y, hT = layer(x, h0, return_state=True)
    y_ref, h_ref = dense_reference(layer, x, h0)
    y_ref = y_ref + layer.D * x
    torch.testing.assert_close(y, y_ref, **F64)
    torch.testing.assert_close(hT, h_ref[:, -1], **F64)

    w, wh = torch.randn_like(y), torch.randn_like(hT)
    inputs = [x, h0, *layer.parameters()]
    loss = (y * w).sum() + (hT * wh.conj()).real.sum()
    loss_ref = (y_ref * w).sum() + (h_ref[:, -1] * wh.conj()).real.sum()
    grads = torch.autograd.grad(loss, inputs)
    grads_ref = torch.autograd.grad(loss_ref, inputs)
    names = ["x", "h0"] + [n for n, _ in layer.named_parameters()]
    for name, g, g_ref in zip(names, grads, grads_ref):
        torch.testing.assert_close(g, g_ref, **F64, msg=lambda m, name=name: f"grad of {name}: {m}")


def test_reset_restarts_the_state():
    layer = make()
    x = torch.randn(2, 10, 6, dtype=torch.float64)
    reset = torch.zeros(2, 10, dtype=torch.bool)
    reset[0, 4] = reset[1, 7] = True
    y = layer(x, reset=reset)
    y_ref = dense_reference(layer, x, reset=reset)[0] + layer.D * x
    torch.testing.assert_close(y, y_ref, **F64)
    # a reset at t makes y[t:] independent of x[:t]
    torch.testing.assert_close(y[0, 4:], layer(x[:1, 4:])[0], **F64)


def test_gradients_reach_every_parameter():
    for bidirectional in (False, True):
        layer = make(bidirectional=bidirectional, dtype=torch.float32)
        layer(torch.randn(3, 8, 6)).square().sum().backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_float32_matches_float64():
    l64 = make()
    l32 = make(dtype=torch.float32)
    x = torch.randn(2, 50, 6, dtype=torch.float64)
    y64 = l64(x)
    torch.testing.assert_close(l32(x.float()), y64.float(), rtol=1e-4, atol=1e-4 * y64.abs().max().item())


# --- initialisation ------------------------------------------------------------------------------------------
def test_ring_init_statistics():
    torch.manual_seed(0)
    r_min, r_max, max_phase = 0.4, 0.9, math.pi / 10
    layer = LRU(2, 20000, r_min=r_min, r_max=r_max, max_phase=max_phase).double()
    lam = layer.eigenvalues()
    mod2 = lam.abs() ** 2
    assert mod2.min() >= r_min**2 - 1e-12 and mod2.max() <= r_max**2 + 1e-12
    # |lambda|^2 ~ U[r_min^2, r_max^2]: compare deciles with the uniform's (sampling error ~ 0.004)
    probs = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    expected = r_min**2 + probs * (r_max**2 - r_min**2)
    torch.testing.assert_close(torch.quantile(mod2, probs), expected, rtol=0, atol=0.01)
    phase = torch.exp(layer.theta_log)
    assert phase.min() >= 0 and phase.max() <= max_phase
    torch.testing.assert_close(torch.quantile(phase, probs), probs * max_phase, rtol=0, atol=0.01 * max_phase)


def test_default_init_covers_unit_disk_and_matrix_scales():
    torch.manual_seed(0)
    layer = LRU(64, 4096).double()
    assert layer.eigenvalues().abs().max() < 1.0  # stable even at r_max = 1
    torch.testing.assert_close(layer.B_re.var().item(), 1 / (2 * 64), rtol=0.05, atol=0)
    torch.testing.assert_close(layer.B_im.var().item(), 1 / (2 * 64), rtol=0.05, atol=0)
    torch.testing.assert_close(layer.C_re.var().item(), 1 / 4096, rtol=0.05, atol=0)
    torch.testing.assert_close(layer.D.var().item(), 1.0, rtol=0.4, atol=0)


def test_gamma_init_is_normalisation():
    layer = make(d_state=64, r_min=0.0, r_max=1.0)
    lam = layer.eigenvalues()
    torch.testing.assert_close(torch.exp(layer.gamma_log), torch.sqrt(1 - lam.abs() ** 2), rtol=1e-6, atol=1e-12)
    assert torch.isfinite(layer.gamma_log).all()
    assert isinstance(layer.gamma_log, torch.nn.Parameter) and layer.gamma_log.requires_grad


def test_optim_overrides_name_recurrent_parameters():
    layer = make()
    params = dict(layer.named_parameters())
    assert set(layer.optim_overrides) == {"nu_log", "theta_log", "gamma_log", "B_re", "B_im"}
    for name, spec in layer.optim_overrides.items():
        assert name in params and spec == {"lr_scale": 0.5, "weight_decay": 0.0}


# --- bidirectional ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["auto", "chunked"])
def test_bidirectional_equals_forward_plus_reversed(backend):
    layer = make(bidirectional=True, backend=backend)
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    fwd = dense_reference(layer, x)[0]
    bwd = dense_reference(layer, x, reverse=True, C=torch.complex(layer.C2_re, layer.C2_im))[0]
    torch.testing.assert_close(layer(x), fwd + bwd + layer.D * x, **F64)


def test_bidirectional_padding_invariance_with_lengths():
    layer = make(bidirectional=True)
    lengths = torch.tensor([9, 4, 6])
    seqs = [torch.randn(1, int(n), 6, dtype=torch.float64) for n in lengths]
    padded = torch.randn(3, 9, 6, dtype=torch.float64) * 100  # garbage padding
    for i, s in enumerate(seqs):
        padded[i, : s.shape[1]] = s[0]
    y = layer(padded, lengths=lengths)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(y[i, : s.shape[1]], layer(s)[0], **F64)


def test_bidirectional_reset_separates_episodes_in_both_directions():
    layer = make(bidirectional=True)
    x = torch.randn(2, 10, 6, dtype=torch.float64)
    reset = torch.zeros(2, 10, dtype=torch.bool)
    reset[:, 4] = True
    torch.testing.assert_close(layer(x, reset=reset), torch.cat([layer(x[:, :4]), layer(x[:, 4:])], 1), **F64)


def test_causal_lengths_return_last_valid_state():
    layer = make()
    x = torch.randn(2, 8, 6, dtype=torch.float64)
    _, h = layer(x, return_state=True, lengths=torch.tensor([8, 3]))
    torch.testing.assert_close(h[1], layer(x[1:, :3], return_state=True)[1][0], **F64)
    torch.testing.assert_close(h[0], layer(x[:1], return_state=True)[1][0], **F64)


# --- numerics and errors -------------------------------------------------------------------------------------------
def test_long_sequence_is_finite():
    torch.manual_seed(0)
    layer = LRU(4, 8, r_min=0.999, r_max=1.0)
    x = torch.randn(1, 16384, 4)
    y, h = layer(x, return_state=True)
    assert torch.isfinite(y).all() and torch.isfinite(torch.view_as_real(h)).all()
    # |lambda| < 1 and gamma normalisation keep the state O(1) (E|h|^2 = |B x|^2 scale)
    assert y.abs().max() < 100


def test_autocast_bf16_keeps_state_complex64():
    layer = make(dtype=torch.float32)
    x = torch.randn(2, 8, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, h = layer(x.bfloat16(), return_state=True)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.complex64
    assert torch.isfinite(y.float()).all()


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="d_state"):
        LRU(4, 0)
    with pytest.raises(ValueError, match="r_min"):
        LRU(4, 4, r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match="max_phase"):
        LRU(4, 4, max_phase=0.0)
    layer = make()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\(batch,\)"):
        layer(x, lengths=torch.tensor([5]))
    with pytest.raises(TypeError, match="integer"):
        layer(x, lengths=torch.tensor([5.0, 3.0]))
    with pytest.raises(TypeError, match="complex128"):
        layer(x, layer.init_state(2, dtype=torch.float32))
    with pytest.raises(ValueError, match="reset"):
        layer(x, reset=torch.zeros(2, 4, dtype=torch.bool))


def test_registry_builds_lru():
    layer = build_layer("lru", 8, d_state=4, r_min=0.5)
    assert isinstance(layer, LRU) and layer.d_state == 4
    assert build_layer("lru", 8, d_state=4, bidirectional=True).causal is False


def test_docs_examples_run():
    """Every ```python block of docs/lru.md runs (the documentation cannot rot)."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "lru.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) >= 3
    for code in blocks:
        exec(compile(code, str(doc), "exec"), {})


def test_lr_factor_sets_the_recurrent_groups_and_rejects_bad_values():
    """lr_factor (LRU paper App. D.2, per-task values in Tb. 9) scales lambda, B, gamma's learning rate."""
    from torchssm.train.optim import param_groups

    layer = make(lr_factor=0.25)
    groups = {tuple(sorted(g["names"])): (g["lr"], g["weight_decay"]) for g in param_groups(layer, 1e-2, 0.05)}
    assert groups[("B_im", "B_re", "gamma_log", "nu_log", "theta_log")] == (pytest.approx(2.5e-3), 0.0)
    assert groups[("C_im", "C_re", "D")] == (1e-2, 0.05)
    for bad in (0, -0.5, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match=r"lr_factor must be a number in \(0, 1\]"):
            LRU(4, 4, lr_factor=bad)
