"""Truncated BPTT: the forward values (loss) equal full back-propagation's; gradients equal full
BPTT's when the chunk covers the sequence, and otherwise stop at chunk boundaries exactly (input
gradients of each chunk are those of its own loss); ``torchssm train --tbptt-chunk`` runs."""

import pytest
import torch
import yaml

from torchssm.cli import main as cli_main
from torchssm.data.registry import TaskInfo
from torchssm.models import build_model
from torchssm.models.config import ModelConfig
from torchssm.train.loop import loss_and_correct
from torchssm.train.tbptt import tbptt_backward

B, L, M, C = 3, 10, 2, 4  # batch, length, input channels, classes


def setup(layer, pooling, kind):
    torch.manual_seed(0)
    kwargs = {"mamba": {}}.get(layer, {"d_state": 4})
    model = build_model(
        ModelConfig(
            layer=layer,
            d_model=8,
            n_layers=2,
            d_input=M,
            d_output=C,
            norm="layer",
            pooling=pooling,
            layer_kwargs=kwargs,
        )
    ).double()
    info = TaskInfo(name="t", d_input=M, d_output=C, length=L, kind=kind)
    x = torch.randn(B, L, M, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, C, (B, L) if kind == "seq2seq" else (B,))
    if kind == "seq2seq":
        targets[0, 2:5] = info.ignore_index  # uneven counts per chunk
    return model, info, {"inputs": x, "targets": targets}


def full_loss(model, info, batch, upto=None):
    out = model(batch["inputs"])
    tgt = batch["targets"]
    if upto is not None:  # only the targets in steps [upto[0], upto[1]) count, normalised by the batch count
        valid = (tgt != info.ignore_index).sum()
        mask = torch.zeros_like(tgt, dtype=torch.bool)
        mask[:, upto[0] : upto[1]] = True
        tgt = tgt.masked_fill(~mask, info.ignore_index)
        loss, _, _ = loss_and_correct(out, tgt, info)
        return loss * (tgt != info.ignore_index).sum() / valid
    return loss_and_correct(out, tgt, info)[0]


def grads(model, x):
    out = [p.grad.clone() for p in model.parameters()] + [x.grad.clone()]
    model.zero_grad(set_to_none=True)
    x.grad = None
    return out


@pytest.mark.parametrize("layer", ["lru", "mamba"])
@pytest.mark.parametrize("pooling,kind", [("none", "seq2seq"), ("mean", "classification"), ("last", "classification")])
def test_loss_equals_full_bptt_and_gradients_when_chunk_covers(layer, pooling, kind):
    model, info, batch = setup(layer, pooling, kind)
    ref = full_loss(model, info, batch)
    ref.backward()
    g_full = grads(model, batch["inputs"])
    for chunk in (3, 4, L):
        loss, _ = tbptt_backward(model, batch, info, chunk)
        torch.testing.assert_close(loss.to(ref.dtype), ref.detach(), rtol=1e-12, atol=1e-12)
        g = grads(model, batch["inputs"])
        if chunk == L:
            for a, b in zip(g, g_full):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer", ["lru", "mamba"])
def test_per_step_gradients_stop_at_chunk_boundaries(layer):
    model, info, batch = setup(layer, "none", "seq2seq")
    x, chunk = batch["inputs"], 4
    tbptt_backward(model, batch, info, chunk)
    g_x = x.grad.clone()
    x.grad = None
    for s in range(0, L, chunk):  # chunk c's inputs get exactly the gradient of chunk c's own loss
        ref = torch.autograd.grad(full_loss(model, info, batch, upto=(s, s + chunk)), x)[0]
        torch.testing.assert_close(g_x[:, s : s + chunk], ref[:, s : s + chunk], rtol=1e-10, atol=1e-12)


def test_pooled_gradient_flows_through_the_last_chunk_only():
    model, info, batch = setup("lru", "mean", "classification")
    x = batch["inputs"]
    tbptt_backward(model, batch, info, 4)
    g_x = x.grad.clone()
    x.grad = None
    ref = torch.autograd.grad(full_loss(model, info, batch), x)[0]
    assert (g_x[:, :8] == 0).all()
    torch.testing.assert_close(g_x[:, 8:], ref[:, 8:], rtol=1e-10, atol=1e-12)


def test_bad_use_raises_clearly():
    model, info, batch = setup("lru", "mean", "classification")
    with pytest.raises(ValueError, match="unpadded"):
        tbptt_backward(model, {**batch, "lengths": torch.full((B,), L)}, info, 4)
    with pytest.raises(ValueError, match="positive int"):
        tbptt_backward(model, batch, info, 0)


def test_cli_tbptt_chunk(tmp_path):
    cfg = {
        "task": {"name": "adding", "length": 12, "n_train": 32, "n_val": 8, "n_test": 8},
        "model": {"layer": "lru", "d_model": 8, "n_layers": 1, "norm": "layer", "layer_kwargs": {"d_state": 4}},
        "train": {
            "epochs": 1,
            "batch_size": 16,
            "lr": 1e-2,
            "progress": False,
            "device": "cpu",
            "out_dir": str(tmp_path / "run"),
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main(["train", "--config", str(path), "--tbptt-chunk", "5", "--data-dir", str(tmp_path / "data")]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["tbptt_chunk"] == 5
