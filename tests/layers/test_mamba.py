"""Mamba (S6) layer: contract in float64 (step == forward, continuation incl. the conv buffer,
purity, bad inputs), reset on packed sequences, init values from the paper, optimizer tags."""

import math

import pytest
import torch
import torch.nn.functional as F
from _selective_common import (
    check_backends_agree_with_grads,
    check_bf16_autocast,
    check_conv_buffer_is_carried,
    check_float32_step,
    check_one_token_chunks_take_the_step,
    check_reset_separates_packed,
)

from torchssm.layers.mamba import Mamba
from torchssm.layers.registry import build_layer
from torchssm.testing import check_layer_contract, check_step_matches_forward


@pytest.fixture
def layer():
    torch.manual_seed(0)
    return Mamba(16, d_state=4, chunk_size=5).double()  # chunk 5 does not divide L = 12


def test_contract_float64(layer):
    check_layer_contract(layer, length=12)


def test_length_one(layer):
    check_step_matches_forward(layer, length=1)


def test_conv_buffer_carried(layer):
    check_conv_buffer_is_carried(layer, 16)


def test_reset_separates_packed_sequences(layer):
    check_reset_separates_packed(layer, 16)


def test_one_token_chunks_take_the_cached_step(layer):
    check_one_token_chunks_take_the_step(layer, 16)


def test_naive_and_fast_backends_agree_with_grads():
    check_backends_agree_with_grads(lambda be: Mamba(16, d_state=4, chunk_size=4, backend=be), 16)


def test_float32_step_matches_forward():
    torch.manual_seed(1)
    check_float32_step(Mamba(16, d_state=8), 16)


def test_bf16_autocast_keeps_state_float32():
    torch.manual_seed(2)
    check_bf16_autocast(Mamba(16, d_state=8), 16)


def test_init_follows_reference():
    torch.manual_seed(0)
    m = Mamba(40)
    assert m.dt_rank == math.ceil(40 / 16) and m.d_inner == 80 and m.d_state == 16 and m.d_conv == 4
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6
    torch.testing.assert_close(-torch.exp(m.A_log[3]), -torch.arange(1, 17, dtype=torch.float32))
    torch.testing.assert_close(m.D, torch.ones(80))
    from torchssm.train.optim import param_groups

    no_decay = {n for g in param_groups(m, lr=1e-3, weight_decay=0.1) if g["weight_decay"] == 0.0 for n in g["names"]}
    assert {"A_log", "D", "dt_proj.bias"} <= no_decay and "in_proj.weight" not in no_decay


def test_registry_builds_it():
    assert isinstance(build_layer("mamba", 8, d_state=4), Mamba)
    assert Mamba.causal


def test_bad_arguments():
    with pytest.raises(ValueError, match="d_state"):
        Mamba(8, d_state=0)


@pytest.mark.slow
def test_learns_selective_copying():
    """Mamba, Sec. 3.1 / Table 1 task at a CPU size (L = 32, 4 tokens to recall, vocabulary 8);
    measured 0.99 accuracy after 600 steps (~3 min on a shared 2-core CPU)."""
    from _selective_common import train_lm_on

    from torchssm.data.synthetic.copying import copying_example

    acc = train_lm_on(
        "mamba",
        {"d_state": 16},
        lambda g: copying_example(g, length=32, n_tokens=4, vocab_size=8, selective=True),
        vocab=8,
        steps=600,
    )
    assert acc > 0.9, acc


@pytest.mark.slow
def test_learns_induction_heads():
    """Mamba, Sec. 4.1.2 task at a CPU size (L = 64, vocabulary 8)."""
    from _selective_common import train_lm_on

    from torchssm.data.synthetic.recall import induction_example

    acc = train_lm_on(
        "mamba", {"d_state": 16}, lambda g: induction_example(g, length=64, vocab_size=8), vocab=8, steps=400
    )
    assert acc > 0.9, acc


def test_step_without_conv_bias_matches_forward():
    torch.manual_seed(3)
    check_step_matches_forward(Mamba(16, d_state=4, conv_bias=False).double(), length=6)


def test_step_with_gradients_on_uses_differentiable_ops():
    torch.manual_seed(4)
    m = Mamba(16, d_state=4).double()
    x, state = torch.randn(2, 16, dtype=torch.float64), m.init_state(2, dtype=torch.float64)
    y_grad, (conv_g, h_g) = m.step(x, state)  # gradients on: the PyTorch ops
    y_grad.sum().backward()
    assert m.in_proj.weight.grad is not None and m.A_log.grad is not None
    with torch.no_grad():
        y_fused, (conv_f, h_f) = m.step(x, state)  # inference: the fused CPU kernel
    torch.testing.assert_close(y_fused, y_grad.detach())
    torch.testing.assert_close(h_f, h_g.detach())
    torch.testing.assert_close(conv_f, conv_g.detach())
