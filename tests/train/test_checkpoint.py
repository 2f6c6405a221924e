"""Checkpoints: round trip (weights, optimizer, scheduler, RNG), atomic saves, clear errors."""

import json
import os
import random

import numpy as np
import pytest
import torch

import torchssm
from torchssm.models import ModelConfig, build_model
from torchssm.train import checkpoint as ckpt
from torchssm.train.optim import build_optimizer
from torchssm.train.schedule import build_scheduler


def small():
    torch.manual_seed(0)
    model = build_model(ModelConfig(layer="lru", d_model=4, n_layers=1, layer_kwargs={"d_state": 4}, d_output=3))
    opt = build_optimizer(model, 1e-2, 0.1)
    sched = build_scheduler(opt, 10, 2)
    loss = model(torch.randn(2, 5, 1)).square().mean()
    loss.backward()
    opt.step(), sched.step()
    return model, opt, sched


def test_round_trip(tmp_path):
    model, opt, sched = small()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = ckpt.save_checkpoint(tmp_path / "last", model, opt, sched, epoch=3, step=7, metrics={"acc": 0.5})
    expected = (random.random(), np.random.rand(), torch.rand(()))
    assert sorted(p.name for p in path.iterdir()) == [ckpt.MODEL_CONFIG, ckpt.WEIGHTS, ckpt.OPTIMIZER, ckpt.SIDECAR]

    model2 = build_model(model.config)
    opt2 = build_optimizer(model2, 1e-2, 0.1)
    sched2 = build_scheduler(opt2, 10, 2)
    state = ckpt.load_checkpoint(path, model2, opt2, sched2, restore_rng=True)
    assert (state["epoch"], state["step"], state["metrics"]) == (3, 7, {"acc": 0.5})
    assert (random.random(), np.random.rand(), torch.rand(())) == expected
    for (n, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)
    assert sched2.state_dict() == sched.state_dict()
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    for k in s1:
        for key in s1[k]:
            torch.testing.assert_close(s1[k][key], s2[k][key], rtol=0, atol=0)
    # a checkpoint directory is also a pretrained directory
    loaded = torchssm.from_pretrained(path)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_failed_save_leaves_previous_checkpoint_and_no_temp_files(tmp_path, monkeypatch):
    model, opt, sched = small()
    path = ckpt.save_checkpoint(tmp_path / "last", model, opt, sched, epoch=1, step=1)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def broken_save(obj, f, *args, **kwargs):  # dies after writing part of the file
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, model, opt, sched, epoch=2, step=2)
    assert sorted(os.listdir(tmp_path)) == ["last"]  # no temporary directory left behind
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # old checkpoint untouched
    assert ckpt.read_checkpoint_state(path)["epoch"] == 1


def test_refuses_non_finite_weights(tmp_path):
    model, opt, sched = small()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        ckpt.save_checkpoint(tmp_path / "last", model, opt, sched, epoch=1, step=1)
    assert not (tmp_path / "last").exists() and os.listdir(tmp_path) == []


def test_missing_and_corrupt_checkpoints_raise_clearly(tmp_path):
    model, opt, sched = small()
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        ckpt.load_checkpoint(tmp_path / "nope", model)
    path = ckpt.save_checkpoint(tmp_path / "last", model, opt, sched, epoch=1, step=1)

    weights = (path / ckpt.WEIGHTS).read_bytes()
    (path / ckpt.WEIGHTS).write_bytes(weights[: len(weights) // 2])  # truncated
    with pytest.raises(ValueError, match="corrupt: model.safetensors does not match"):
        ckpt.load_checkpoint(path, model)
    (path / ckpt.WEIGHTS).write_bytes(weights)

    opt_bytes = (path / ckpt.OPTIMIZER).read_bytes()
    os.unlink(path / ckpt.OPTIMIZER)
    with pytest.raises(ValueError, match="incomplete: optimizer.pt is missing"):
        ckpt.load_checkpoint(path, model, opt)
    (path / ckpt.OPTIMIZER).write_bytes(opt_bytes)

    sidecar = (path / ckpt.SIDECAR).read_text()
    (path / ckpt.SIDECAR).write_text(sidecar[:100])
    with pytest.raises(ValueError, match="trainer_state.json is not valid JSON"):
        ckpt.load_checkpoint(path, model)
    os.unlink(path / ckpt.SIDECAR)
    with pytest.raises(ValueError, match="incomplete: trainer_state.json is missing"):
        ckpt.load_checkpoint(path, model)
    (path / ckpt.SIDECAR).write_text(sidecar)

    # unverified damage inside the files (hash check off) is still reported clearly
    data = json.loads(sidecar)
    (path / ckpt.OPTIMIZER).write_bytes(b"not a pickle")
    data["files"][ckpt.OPTIMIZER] = ckpt._sha256(path / ckpt.OPTIMIZER)
    (path / ckpt.SIDECAR).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="cannot read optimizer.pt"):
        ckpt.load_checkpoint(path, model, opt)

    other = build_model(ModelConfig(layer="lru", d_model=6, n_layers=1, layer_kwargs={"d_state": 4}, d_output=3))
    (path / ckpt.OPTIMIZER).write_bytes(opt_bytes)
    (path / ckpt.SIDECAR).write_text(sidecar)
    with pytest.raises(ValueError, match="does not fit this model.*size mismatch"):
        ckpt.load_checkpoint(path, other)
