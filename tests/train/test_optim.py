"""Optimizer groups: the LRU's recurrent parameters at lr * 0.5 without weight decay, no decay on
norms and biases, explicit overrides, clear errors for bad overrides."""

import pytest
import torch
from torch import nn

from torchssm.models import ModelConfig, build_model
from torchssm.train.optim import build_optimizer, param_groups

LRU_RECURRENT = {"nu_log", "theta_log", "gamma_log", "B_re", "B_im"}


def groups_by_name(opt):
    return {name: (g["lr"], g["weight_decay"]) for g in opt.param_groups for name in g["names"]}


def test_lru_model_groups():
    model = build_model(ModelConfig(layer="lru", d_model=8, n_layers=2, layer_kwargs={"d_state": 4}, norm="batch"))
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    by_name = groups_by_name(opt)
    assert set(by_name) == {n for n, _ in model.named_parameters()}  # every parameter exactly once
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    seen_recurrent = set()
    for name, (lr, wd) in by_name.items():
        leaf = name.rsplit(".", 1)[-1]
        module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if leaf in LRU_RECURRENT:
            seen_recurrent.add(leaf)
            assert (lr, wd) == (pytest.approx(5e-4), 0.0), name  # LRU paper: lr * 0.5, no weight decay
        elif leaf == "bias" or isinstance(module, (nn.BatchNorm1d, nn.LayerNorm)):
            assert (lr, wd) == (1e-3, 0.0), name
        else:
            assert (lr, wd) == (1e-3, 0.05), name
    assert seen_recurrent == LRU_RECURRENT


class Tagged(nn.Module):
    def __init__(self, overrides):
        super().__init__()
        self.a = nn.Parameter(torch.ones(3, 3))
        self.b = nn.Parameter(torch.ones(3))
        self.optim_overrides = overrides


def test_absolute_lr_and_weight_decay_override():
    model = nn.Sequential(Tagged({"a": {"lr": 0.1}, "b": {"lr_scale": 2.0, "weight_decay": 0.3}}), nn.Linear(3, 3))
    by_name = groups_by_name(build_optimizer(model, lr=1e-2, weight_decay=0.01))
    assert by_name["0.a"] == (0.1, 0.01)
    assert by_name["0.b"] == (pytest.approx(2e-2), 0.3)
    assert by_name["1.weight"] == (1e-2, 0.01) and by_name["1.bias"] == (1e-2, 0.0)


def test_shared_and_frozen_parameters():
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin, lin, nn.Linear(2, 2))
    model[2].weight.requires_grad_(False)
    groups = param_groups(model, 1e-3, 0.1)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == 3  # shared once, frozen left out


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"zz": {"lr_scale": 0.5}}, r"names \['zz'\].*parameters are \['a', 'b'\]"),
        ({"a": {"lr": 1.0, "lr_scale": 0.5}}, "both 'lr' and 'lr_scale'"),
        ({"a": {"learning_rate": 1.0}}, r"unknown key.*learning_rate"),
    ],
)
def test_bad_overrides(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_optimizer(Tagged(overrides), lr=1e-3)


def test_no_trainable_parameters():
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(nn.ReLU(), lr=1e-3)
