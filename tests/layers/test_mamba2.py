"""Mamba-2 (SSD) layer: contract in float64 with n_groups > 1 and a chunk not dividing L, reset,
backends, init values, gated RMSNorm grouping."""

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

from torchssm.layers.mamba2 import Mamba2, RMSNormGated
from torchssm.layers.registry import build_layer
from torchssm.testing import check_layer_contract, check_step_matches_forward


def _layer(**kw):
    torch.manual_seed(0)
    return Mamba2(16, d_state=4, headdim=8, ngroups=2, chunk_size=5, **kw).double()


def test_contract_float64():
    check_layer_contract(_layer(), length=12)


def test_length_one():
    check_step_matches_forward(_layer(), length=1)


def test_conv_buffer_carried():
    check_conv_buffer_is_carried(_layer(), 16)


def test_reset_separates_packed_sequences():
    check_reset_separates_packed(_layer(), 16)


def test_one_token_chunks_take_the_cached_step():
    check_one_token_chunks_take_the_step(_layer(), 16)


def test_naive_and_chunked_agree_with_grads():
    check_backends_agree_with_grads(
        lambda be: Mamba2(16, d_state=4, headdim=4, ngroups=4, chunk_size=4, backend=be), 16, length=10
    )


def test_float32_step_matches_forward():
    torch.manual_seed(1)
    check_float32_step(Mamba2(16, d_state=8, headdim=8, chunk_size=8), 16)


def test_bf16_autocast_keeps_state_float32():
    torch.manual_seed(2)
    check_bf16_autocast(Mamba2(16, d_state=8, headdim=8, chunk_size=16), 16)


def test_init_follows_reference():
    torch.manual_seed(0)
    m = Mamba2(64)
    assert (m.d_state, m.headdim, m.nheads, m.ngroups, m.chunk_size) == (128, 64, 2, 1, 256)
    A = torch.exp(m.A_log)
    assert A.min() >= 1 and A.max() <= 16
    dt = F.softplus(m.dt_bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6
    from torchssm.train.optim import param_groups

    no_decay = {n for g in param_groups(m, lr=1e-3, weight_decay=0.1) if g["weight_decay"] == 0.0 for n in g["names"]}
    assert {"A_log", "D", "dt_bias"} <= no_decay and "in_proj.weight" not in no_decay


def test_gated_rmsnorm_groups():
    x, z = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    norm = RMSNormGated(8, eps=0.0, group_size=4).double()
    g = (x * F.silu(z)).view(3, 2, 4)
    want = (g / g.pow(2).mean(-1, keepdim=True).sqrt()).view(3, 8)
    torch.testing.assert_close(norm(x, z), want)
    whole = RMSNormGated(8, eps=0.0, norm_before_gate=True).double()
    torch.testing.assert_close(whole(x, z), x / x.pow(2).mean(-1, keepdim=True).sqrt() * F.silu(z))


def test_registry_and_bad_arguments():
    assert isinstance(build_layer("mamba2", 16, d_state=4, headdim=8), Mamba2)
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(16, headdim=7)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2(16, headdim=8, ngroups=3)


def test_cu_seqlens_packing():
    from torchssm.ops.selective import reset_from_cu_seqlens

    reset = reset_from_cu_seqlens(torch.tensor([0, 3, 7, 10]))
    assert reset.tolist() == [[True, False, False, True, False, False, False, True, False, False]]
    m = _layer()
    x = torch.randn(1, 10, 16, dtype=torch.float64)
    with torch.no_grad():
        packed = m(x, reset=reset)
        torch.testing.assert_close(packed[:, 3:7], m(x[:, 3:7]))
