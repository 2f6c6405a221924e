"""Forecasting: bundled series load offline, windows never leak across splits, baselines are what they say."""

import pytest
import torch

from torchssm.timeseries.forecast import (
    SERIES,
    LinearAR,
    errors,
    fill_gaps,
    last_value,
    load_series,
    make_windows,
    neural_forecast,
    read_csv_column,
    seasonal_naive,
)


@pytest.mark.parametrize("name", ["sunspots", "co2", "infl", "airline", "lynx"])
def test_bundled_series_load(name):
    y = load_series(name)
    assert y.dim() == 1 and len(y) > 100 and torch.isfinite(y).all()


def test_known_values():
    assert load_series("sunspots")[0] == 5.0  # 1700: 5 (statsmodels sunspots.csv)
    assert abs(float(load_series("airline")[0].exp()) - 112.0) < 1e-9  # 1949-01: 112 passengers


def test_windows_respect_splits():
    y = torch.arange(100, dtype=torch.float64)
    w = make_windows(y, 10, 5)
    mean, std = w["scale"]
    for split, (lo, hi) in {"train": (0, 70), "val": (70, 80), "test": (80, 100)}.items():
        x, target, origin = w[split]
        t = target * std + mean
        assert float(t.min()) >= lo and float(t.max()) < hi  # targets stay in their part
        torch.testing.assert_close(x[:, -1] * std + mean, origin.double())  # the context ends at the origin
    with pytest.raises(ValueError, match="too short"):
        make_windows(torch.arange(20.0), 10, 5)


def test_baselines():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    torch.testing.assert_close(last_value(x, 3), torch.tensor([[6.0, 6.0, 6.0]]))
    # period 4: y_{t+1} = y_{t-3} = 3, y_{t+2} = 4, ..., y_{t+5} = y_{t-3} again (two seasons back)
    torch.testing.assert_close(seasonal_naive(x, 5, 4), torch.tensor([[3.0, 4.0, 5.0, 6.0, 3.0]]))
    with pytest.raises(ValueError, match="period"):
        seasonal_naive(x, 2, 7)
    # an exact AR(2) process is recovered by the least-squares direct forecaster
    y = torch.zeros(300, dtype=torch.float64)
    y[:2] = torch.tensor([1.0, 0.5])
    for t in range(2, 300):
        y[t] = 1.6 * y[t - 1] - 0.9 * y[t - 2] + 0.1
    w = make_windows(y, 8, 3)
    ar = LinearAR().fit(*w["train"][:2])
    assert errors(ar(w["test"][0]), w["test"][1])["mse"] < 1e-8


def test_csv_reader_errors_and_gaps(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("t,v\n1,1.0\n2,\n3,3.0\n")
    torch.testing.assert_close(fill_gaps(read_csv_column(f, "v")), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="no column 'w'"):
        read_csv_column(f, "w")
    f.write_text("t,v\n1,abc\n")
    with pytest.raises(ValueError, match="not a number"):
        read_csv_column(f, "v")
    with pytest.raises(ValueError, match="unknown series"):
        load_series("nope")


def test_neural_forecaster_beats_zero_on_a_sine():
    t = torch.arange(400, dtype=torch.float64)
    y = torch.sin(2 * torch.pi * t / 25)
    w = make_windows(y, 30, 5)
    pred = neural_forecast("flat:lru", w, 5, width=16, steps=60)
    assert pred.shape == w["test"][1].shape
    assert errors(pred, w["test"][1])["mse"] < 0.5 * float(w["test"][1].square().mean())


def test_series_table_complete():
    assert {"sunspots", "co2", "infl", "airline", "lynx", "imu_velocity", "ou"} <= set(SERIES)
