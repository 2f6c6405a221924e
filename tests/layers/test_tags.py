"""Parameter tags (layers/tags.py), the one way a layer states its optimizer and init conventions:
dotted paths reach a submodule's parameter, the optimizer and the LM's init read the same tags, and a
bad tag is refused by name."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchssm.layers import build_layer
from torchssm.layers.tags import parameter_tags
from torchssm.train.optim import param_groups


def test_mamba_tags_its_dt_bias_through_a_path():
    layer = build_layer("mamba", 8, d_state=4)
    tags = {name: spec for name, spec in parameter_tags(layer).values()}
    assert tags == {
        "A_log": {"weight_decay": 0.0},
        "D": {"weight_decay": 0.0},
        "dt_proj.bias": {"weight_decay": 0.0, "reinit": False},
    }
    assert {name for name, _ in parameter_tags(copy.deepcopy(layer)).values()} == set(tags)  # nothing on params
    by_name = {n: (g["lr"], g["weight_decay"]) for g in param_groups(layer, 1e-3, 0.1) for n in g["names"]}
    assert by_name["dt_proj.bias"] == (1e-3, 0.0) and by_name["A_log"] == (1e-3, 0.0)
    assert by_name["dt_proj.weight"] == (1e-3, 0.1)


def test_lm_init_keeps_a_bias_tagged_reinit_false():
    from torchssm.models.lm import CausalLM, LMConfig

    torch.manual_seed(0)
    lm = CausalLM(LMConfig(d_model=16, n_layer=1, vocab_size=32, layer="mamba", layer_kwargs={"d_state": 4}))
    mixer = lm.backbone.layers[0].mixer
    assert mixer.dt_proj.bias.abs().min() > 0  # the inverse-softplus dt init survives the LM's zeroing
    # softplus(bias) is the dt range of Mamba's init, [1e-3, 1e-1] (floor 1e-4)
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 1e-1 + 1e-9


class _Tagged(nn.Module):
    def __init__(self, overrides):
        super().__init__()
        self.inner = nn.Linear(2, 2)
        self.w = nn.Parameter(torch.ones(2))
        self.optim_overrides = overrides


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (
            {"inner.bogus": {"lr": 1.0}},
            ValueError,
            r"names \['inner.bogus'\].*parameters are \['inner.bias', 'inner.weight', 'w'\]",
        ),
        ({"w": {"reinit": False, "momentum": 0.9}}, ValueError, r"unknown key.*momentum"),
        ({"w": {"lr": 1.0, "lr_scale": 2.0}}, ValueError, "both 'lr' and 'lr_scale'"),
        ({"w": 0.5}, TypeError, "must be a dict"),
    ],
)
def test_bad_tags_are_refused(overrides, error, match):
    with pytest.raises(error, match=match):
        parameter_tags(_Tagged(overrides))


def test_conflicting_tags_of_one_parameter_are_refused():
    outer = _Tagged({"inner.weight": {"lr": 1.0}})
    outer.inner.optim_overrides = {"weight": {"lr": 2.0}}
    with pytest.raises(ValueError, match="tagged twice"):
        parameter_tags(outer)
