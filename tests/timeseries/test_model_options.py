"""Architecture options in a compared model's name (``flat:mamba@n_layers=3``, ``hiss:s5/s5@pool=mean``): parsed,
applied to the built model, and bad ones named."""

import pytest
import torch

from torchssm.timeseries.fit import build_sequence_model, count_parameters, split_options, width_for_budget
from torchssm.timeseries.hiss import HiSS
from torchssm.timeseries.imu_compare import best_per_family

KW = dict(d_input=6, d_output=3, length=40, chunk=10)


def test_split_options():
    assert split_options("flat:mamba") == ("flat:mamba", {})
    assert split_options("flat:s5@n_layers=3@dropout=0.1") == ("flat:s5", {"n_layers": 3, "dropout": 0.1})
    assert split_options("hiss:s5/s5@pool=mean@n_low=2") == ("hiss:s5/s5", {"pool": "mean", "n_low": 2})
    assert split_options("lstm@n_layers=1") == ("lstm", {"n_layers": 1})


@pytest.mark.parametrize(
    "kind,match",
    [
        ("flat:s5@width=3", "bad model option 'width=3'"),
        ("flat:s5@n_layers", "bad model option 'n_layers'"),
        ("flat:s5@n_layers=two", "bad value 'two' for option 'n_layers'"),
        ("flat:s5@pool=mean", "option 'pool' does not apply to 'flat:s5'"),
        ("lstm@dropout=0.1", "option 'dropout' does not apply to 'lstm'"),
        ("hiss:s5/s5@pool=max", "bad pool 'max'"),
    ],
)
def test_bad_options_are_named(kind, match):
    with pytest.raises(ValueError, match=match):
        split_options(kind)
    with pytest.raises(ValueError, match=match):  # not hidden behind "no width builds the model"
        width_for_budget(kind, 5000, **KW)


def test_options_reach_the_model():
    flat = build_sequence_model("flat:s5@n_layers=3@dropout=0.25", 16, **KW)
    assert len(flat.blocks) == 3 and flat.config.dropout == 0.25 and flat.config.n_layers == 3
    assert len(build_sequence_model("flat:s5", 16, **KW).blocks) == 2
    hiss = build_sequence_model("hiss:s5/s5@pool=mean@n_low=2@n_layers=1", 16, **KW)
    assert isinstance(hiss, HiSS)
    assert (hiss.config.pool, hiss.config.n_low, hiss.config.n_high) == ("mean", 2, 1)
    assert len(hiss.low.blocks) == 2 and len(hiss.high.blocks) == 1
    assert build_sequence_model("lstm@n_layers=3", 16, **KW).lstm.num_layers == 3
    # mean vs last pooling: same parameters, different outputs
    torch.manual_seed(0)
    last = build_sequence_model("hiss:s5/s5", 16, **KW).eval()
    torch.manual_seed(0)
    mean = build_sequence_model("hiss:s5/s5@pool=mean", 16, **KW).eval()
    x = torch.randn(2, 40, 6)
    assert count_parameters(last) == count_parameters(mean)
    with torch.no_grad():
        assert not torch.allclose(last(x), mean(x))
    # a deeper model at the same budget is narrower
    assert width_for_budget("flat:s5@n_layers=4", 20000, **KW) < width_for_budget("flat:s5", 20000, **KW)


def test_best_per_family_chooses_on_validation():
    rows = [
        {"model": "flat:mamba", "lr": 3e-3, "val_mse": 0.16, "test_mse": 0.17},
        {"model": "flat:mamba@n_layers=3", "lr": 3e-3, "val_mse": 0.15, "test_mse": 0.19},
        {"model": "hiss:s5/s5@pool=mean", "lr": 3e-3, "val_mse": 0.20, "test_mse": 0.10},
        {"model": "hiss:s5/s5", "lr": 1e-3, "val_mse": 0.14, "test_mse": 0.15},
    ]
    best = best_per_family(rows)
    assert best["flat:mamba"]["model"] == "flat:mamba@n_layers=3" and best["flat:mamba"]["configs"] == 2
    assert best["hiss:s5/s5"]["test_mse"] == 0.15  # validation decides, not test
