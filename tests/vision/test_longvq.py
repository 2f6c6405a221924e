"""LongVQ: the layer contract (step == forward, chunked continuation), the blocked memory form against a
quadratic reference written here from the definition (values and every gradient, float64), the VQ
losses, the fixed-size memory, bad arguments, and the VQ loss reaching the training loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from torchssm.layers.registry import build_layer
from torchssm.models.auxiliary import pop_auxiliary_loss
from torchssm.testing import assert_values_and_grads_close, check_layer_contract
from torchssm.vision.longvq import LongVQ

F64 = torch.float64


def small(**kw):
    torch.manual_seed(0)
    args = {"codebook_size": 6, "d_qk": 4, "window": 3, "ssm_kwargs": {"d_state": 4}, **kw}
    return LongVQ(8, **args).double()


def reference(layer: LongVQ, x: torch.Tensor) -> torch.Tensor:
    """O(l^2) masked softmax attention over all j <= i (module docstring), no memory, no blocks."""
    xs = F.silu(layer.ssm(x))
    u = F.silu(layer.to_u(xs))
    q = u * layer.qk_scale[0] + layer.qk_offset[0]
    k = u * layer.qk_scale[1] + layer.qk_offset[1]
    C = layer.codebook
    codes = torch.cdist(k, C.expand(k.shape[0], -1, -1)).argmin(-1)  # nearest codeword, (b, l)
    k_st = k + (C[codes] - k).detach()
    far_keys = C.detach()[codes]
    n, w = x.shape[1], layer.window
    lag = torch.arange(n)[:, None] - torch.arange(n)
    near = (lag >= 0) & (lag < w)
    scores = torch.where(near, q @ k_st.transpose(1, 2), q @ far_keys.transpose(1, 2)) / math.sqrt(layer.d_qk)
    scores = scores + torch.where(near, layer.rel_bias[lag.clamp(0, w - 1)], 0.0)
    scores = scores.masked_fill(lag < 0, float("-inf"))
    o = torch.softmax(scores, -1) @ F.silu(layer.to_v(x))
    return layer.out(F.silu(layer.to_r(xs)) * o)


def layer_keys(layer: LongVQ, x: torch.Tensor) -> torch.Tensor:
    u = F.silu(layer.to_u(F.silu(layer.ssm(x))))
    return u * layer.qk_scale[1] + layer.qk_offset[1]


def test_contract_with_several_blocks():
    check_layer_contract(small(), length=13)  # 13 tokens = 4 blocks of 3 + 1, memory in use


def test_blocked_memory_form_equals_quadratic_reference_values_and_grads():
    layer = small()
    x = torch.randn(2, 11, 8, dtype=F64, requires_grad=True)
    params = [p for name, p in layer.named_parameters() if name != "codebook"]  # codebook: its own loss only
    assert_values_and_grads_close([layer(x)], [reference(layer, x)], [x, *params])


def test_registered_and_state_is_fixed_size():
    layer = build_layer("longvq", 8, codebook_size=6, d_qk=4, window=3, ssm_kwargs={"d_state": 4}).double()
    for length in (5, 40):
        _, (_, mem_sum, mem_count, win_codes, win_val) = layer(torch.randn(2, length, 8, dtype=F64), return_state=True)
        assert mem_sum.shape == (2, 6, 16) and win_codes.shape == (2, 2) and win_val.shape == (2, 2, 16)
        # every token older than the window is in exactly one memory slot
        torch.testing.assert_close(mem_count.sum(-1), torch.full((2,), length - 2.0, dtype=F64))
        assert bool((win_codes >= 0).all())


def test_vq_losses_and_gradient_to_the_codebook():
    layer = small()
    x = torch.randn(2, 7, 8, dtype=F64)
    k = torch.randn(3, 5, 4, dtype=F64, requires_grad=True)
    codes, k_st, loss = layer.quantize(k)
    nearest = ((k[..., None, :] - layer.codebook) ** 2).sum(-1).argmin(-1)
    assert torch.equal(codes, nearest)
    torch.testing.assert_close(k_st, layer.codebook[codes])
    err = ((k - layer.codebook[codes]) ** 2).mean()
    torch.testing.assert_close(loss, (1 + layer.beta) * err)  # codebook + beta * commitment: same value
    (gk,) = torch.autograd.grad(k_st.sum(), k)
    torch.testing.assert_close(gk, torch.ones_like(k))  # straight-through
    layer(x)  # training mode: the weighted VQ loss is in layer.aux_loss (models/auxiliary.py)
    aux = pop_auxiliary_loss(layer)
    torch.testing.assert_close(aux, layer.vq_weight * layer.quantize(layer_keys(layer, x))[2])
    aux.backward()
    assert layer.aux_loss is None
    layer.eval()
    layer(x)
    assert layer.aux_loss is None  # eval: no auxiliary loss
    assert layer.codebook.grad.abs().sum() > 0 and layer.to_u.weight.grad.abs().sum() > 0


def test_vq_loss_reaches_the_training_loss():
    from torchssm.data.registry import build_task
    from torchssm.vision.longvq_task import build_task_model, train_with_aux

    task = build_task("mqar", seed=0, length=32, vocab_size=40, num_kv_pairs=4, n_train=32, n_val=4, n_test=8)
    model = build_task_model(
        "longvq",
        {"codebook_size": 8, "d_qk": 8, "window": 8, "ssm_kwargs": {"d_state": 4}},
        task.info,
        d_model=16,
        n_layers=1,
    )
    torch.manual_seed(0)
    codebooks = [m for m in model.modules() if isinstance(m, LongVQ)]
    before = codebooks[0].codebook.detach().clone()
    out = train_with_aux(model, task, steps=2, batch=4, lr=1e-2, progress=False)
    assert out["final_aux_loss"] > 0
    # the codebook gets gradient only from the VQ loss: it moved, so the loss was in the optimised total
    assert not torch.equal(codebooks[0].codebook.detach(), before)


def test_bad_arguments():
    with pytest.raises(ValueError, match="causal"):
        LongVQ(8, ssm="hydra", ssm_kwargs={"d_state": 4, "headdim": 4})
    with pytest.raises(ValueError, match="window"):
        LongVQ(8, window=0)
    with pytest.raises(ValueError, match="d_model=8"):
        small()(torch.randn(2, 5, 9, dtype=F64))


def test_torchssm_train_adds_the_vq_loss(tmp_path):
    """`torchssm train` with model.layer longvq logs train_aux_loss (models/auxiliary.py protocol)."""
    from torchssm.train import load_config, train

    cfg = load_config(
        base={
            "task": {
                "name": "mqar",
                "length": 32,
                "vocab_size": 40,
                "num_kv_pairs": 4,
                "n_train": 16,
                "n_val": 4,
                "n_test": 4,
            },
            "model": {
                "layer": "longvq",
                "d_model": 8,
                "n_layers": 1,
                "pooling": "none",
                "layer_kwargs": {"codebook_size": 4, "d_qk": 4, "window": 8, "ssm_kwargs": {"d_state": 4}},
            },
            "train": {
                "epochs": 1,
                "batch_size": 8,
                "out_dir": str(tmp_path / "run"),
                "progress": False,
                "device": "cpu",
                "seed": 0,
            },
        }
    )
    last = train(cfg, data_dir=tmp_path / "data", log=lambda s: None).last
    assert last["train_aux_loss"] > 0
