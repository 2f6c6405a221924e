"""Multi-step-ahead forecasting: series, windows, naive and linear baselines, SSM forecasters, MSE/MAE.

Task: from the last C values y_{t-C+1..t} predict the next H values y_{t+1..t+H} (horizon H). Each series is
split in time: the first 70% trains, the next 10% validates, the last 20% tests (a window belongs to the
part that holds its forecast origin t, and its targets never leave that part). Values are standardised with
the training part's mean and std; errors are reported on that scale (so series are comparable), MSE and MAE
averaged over every test window and every step of the horizon.

Predictors (all see only the context window):

* ``last``: y_{t+h} = y_t (the naive forecast, Hyndman & Athanasopoulos, "Forecasting: Principles and
  Practice", 3rd ed., Sec. 5.2);
* ``seasonal``: y_{t+h} = y_{t+h-m(floor((h-1)/m)+1)} with period m (seasonal naive, ibid.);
* ``linear``: a direct linear autoregression, one least-squares map from the C context values (and 1) to the
  H future values (the "direct" multi-step strategy, Ben Taieb et al. 2012; ``torch.linalg.lstsq``);
* neural models from :func:`torchssm.timeseries.fit.build_sequence_model` (``flat:lru``, ``flat:s5``, ``lstm``,
  ...): the context minus its last value in, the last step's H outputs (plus the last value) out (subtracting
  the last value is the instance normalisation of RevIN, Kim et al. 2022, without the scale).

Series (offline: files bundled in the installed ``statsmodels`` and ``sktime`` wheels, read without importing
either package; and the package's generators): see :data:`SERIES`.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from torchssm.data.loaders import TensorDictDataset
from torchssm.timeseries.fit import write_json


@dataclass(frozen=True)
class SeriesSpec:
    package: str  # the wheel holding the file ("statsmodels" | "sktime" | "" for a generator)
    path: str  # file inside the package
    column: str  # value column
    context: int  # C
    horizon: int  # H
    period: int  # m for the seasonal naive forecast (1: none)
    transform: str = ""  # "log" (multiplicative series)
    note: str = ""


SERIES = {
    # Wolf/Zurich yearly sunspot numbers 1700-2008 (statsmodels.datasets.sunspots); ~11-year solar cycle
    "sunspots": SeriesSpec("statsmodels", "statsmodels/datasets/sunspots/sunspots.csv", "SUNACTIVITY", 33, 11, 11),
    # Mauna Loa weekly CO2 1958-2001 (statsmodels.datasets.co2; 59 missing weeks filled linearly); yearly cycle
    "co2": SeriesSpec("statsmodels", "statsmodels/datasets/co2/co2.csv", "co2", 104, 26, 52),
    # US quarterly inflation 1959-2009 (statsmodels.datasets.macrodata, column infl)
    "infl": SeriesSpec("statsmodels", "statsmodels/datasets/macrodata/macrodata.csv", "infl", 16, 4, 4),
    # Box-Jenkins monthly airline passengers 1949-1960 (sktime.datasets.load_airline's file), log scale
    "airline": SeriesSpec("sktime", "sktime/datasets/data/Airline/Airline.csv", "Passengers", 36, 12, 12, "log"),
    # Canadian lynx trappings 1821-1934 (sktime.datasets.load_lynx's file), log scale; ~10-year cycle
    "lynx": SeriesSpec("sktime", "sktime/datasets/data/Lynx/Lynx.csv", "0", 20, 10, 10, "log"),
    # generators: one long simulated IMU trajectory's x velocity at 20 Hz; an Ornstein-Uhlenbeck path at dt = 0.1
    "imu_velocity": SeriesSpec("", "imu", "vx", 40, 10, 1, note="torchssm.timeseries.imu, 60 s, every 10th step"),
    "ou": SeriesSpec("", "ou", "x", 40, 10, 1, note="torchssm.timeseries.irregular.OUProcess, 2000 steps"),
}


def _bundled_file(package: str, path: str) -> Path:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the series file {path} ships with the {package!r} package, which is not installed (pip install {package})"
        ) from None
    file = Path(dist.locate_file(path))
    if not file.exists():
        raise FileNotFoundError(f"{file} not found in the installed {package} {dist.version}")
    return file


def read_csv_column(file, column: str) -> torch.Tensor:
    """One numeric column of a CSV file with a header row (empty cells / 'nan' -> NaN): (n,) float64."""
    with open(file, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{file}: empty CSV file")
    header = [h.strip() for h in rows[0]]
    if column not in header:
        raise ValueError(f"{file}: no column {column!r}; columns are {header}")
    j = header.index(column)
    values = []
    for lineno, row in enumerate(rows[1:], start=2):
        cell = row[j].strip() if j < len(row) else ""
        try:
            values.append(float(cell) if cell not in ("", "NA", "nan", "NaN") else math.nan)
        except ValueError:
            raise ValueError(f"{file}:{lineno}: {column} is not a number: {cell!r}") from None
    return torch.tensor(values, dtype=torch.float64)


def fill_gaps(y: torch.Tensor) -> torch.Tensor:
    """Linear interpolation over NaNs (ends: nearest value)."""
    ok = ~torch.isnan(y)
    if not ok.any():
        raise ValueError("the series has no values")
    t = torch.arange(len(y), dtype=torch.float64)
    idx = torch.searchsorted(t[ok].contiguous(), t).clamp(1, int(ok.sum()) - 1) if ok.sum() > 1 else None
    if idx is None:
        return torch.full_like(y, float(y[ok][0]))
    t0, t1, y0, y1 = t[ok][idx - 1], t[ok][idx], y[ok][idx - 1], y[ok][idx]
    interp = y0 + (y1 - y0) * ((t - t0) / (t1 - t0)).clamp(0, 1)
    return torch.where(ok, y, interp)


def load_series(name: str) -> torch.Tensor:
    """Series ``name`` of :data:`SERIES` as (n,) float64 (transform applied, gaps filled)."""
    if name not in SERIES:
        raise ValueError(f"unknown series {name!r}; expected one of {sorted(SERIES)}")
    spec = SERIES[name]
    if spec.path == "imu":
        from torchssm.timeseries.imu import IMUConfig, simulate

        y = simulate(1, IMUConfig(seconds=60.0), seed=1234)["velocity"][0, ::10, 0]
    elif spec.path == "ou":
        from torchssm.timeseries.irregular import OUProcess

        y = OUProcess().sample(torch.full((1, 2000), 0.1, dtype=torch.float64), seed=1234)[0]
    else:
        y = fill_gaps(read_csv_column(_bundled_file(spec.package, spec.path), spec.column))
    return torch.log(y) if spec.transform == "log" else y


def make_windows(y: torch.Tensor, context: int, horizon: int, fractions=(0.7, 0.1)) -> dict:
    """Standardised windows per split: {"train"|"val"|"test": (x (n, C), target (n, H))} and the scaling."""
    if context < 1 or horizon < 1:
        raise ValueError(f"context and horizon must be >= 1; got {context}, {horizon}")
    n = len(y)
    cut1, cut2 = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    mean, std = float(y[:cut1].mean()), float(y[:cut1].std().clamp_min(1e-12))
    z = (y - mean) / std
    out = {}
    for split, (lo, hi) in {"train": (0, cut1), "val": (cut1, cut2), "test": (cut2, n)}.items():
        # origins t (index of the last context value): context from max(t - C + 1, 0) >= 0, targets in [lo, hi)
        origins = [t for t in range(max(context - 1, lo - 1), hi - horizon) if t + 1 >= lo]
        if not origins:
            raise ValueError(
                f"series of length {n} too short for context {context} and horizon {horizon} in the "
                f"{split} part ({hi - lo} values)"
            )
        idx = torch.tensor(origins)
        x = torch.stack([z[t - context + 1 : t + 1] for t in origins])  # (n_windows, C)
        target = torch.stack([z[t + 1 : t + 1 + horizon] for t in origins])  # (n_windows, H)
        out[split] = (x, target, idx)
    out["scale"] = (mean, std)
    return out


# --- baselines -------------------------------------------------------------------------------------------------
def last_value(x: torch.Tensor, horizon: int) -> torch.Tensor:
    return x[:, -1:].expand(-1, horizon)


def seasonal_naive(x: torch.Tensor, horizon: int, period: int) -> torch.Tensor:
    """y_{t+h} = y_{t+h-m k}, k = floor((h - 1) / m) + 1: the value one (or more) seasons before."""
    if period < 1 or period > x.shape[1]:
        raise ValueError(f"period must be in [1, context={x.shape[1]}]; got {period}")
    h = torch.arange(1, horizon + 1)
    back = h - period * ((h - 1) // period + 1)  # (H,) <= 0: offset from the origin t
    return x[:, x.shape[1] - 1 + back]


class LinearAR:
    """Direct least-squares autoregression: Y (n, H) ~ [X, 1] W, W ((C + 1), H) by ``torch.linalg.lstsq``."""

    def fit(self, x: torch.Tensor, target: torch.Tensor, ridge: float = 1e-6) -> LinearAR:
        a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # (n, C + 1)
        reg = math.sqrt(ridge) * torch.eye(a.shape[1], dtype=x.dtype)
        a = torch.cat([a, reg])  # a tiny ridge keeps short series well-posed
        b = torch.cat([target, torch.zeros(a.shape[1], target.shape[1], dtype=x.dtype)])
        self.W = torch.linalg.lstsq(a, b).solution  # (C + 1, H)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1) @ self.W


def errors(pred: torch.Tensor, target: torch.Tensor) -> dict:
    return {"mse": float((pred - target).square().mean()), "mae": float((pred - target).abs().mean())}


# --- neural forecasters ----------------------------------------------------------------------------------------
def neural_forecast(
    kind: str,
    windows: dict,
    horizon: int,
    *,
    width: int = 32,
    steps: int = 300,
    lr: float = 3e-3,
    seed: int = 0,
    batch_size: int = 32,
):
    """Train ``kind`` (see :func:`torchssm.timeseries.fit.build_sequence_model`) on the training windows; the
    test predictions (n, H)."""
    from torchssm.timeseries.fit import build_sequence_model, fit_regression

    def dataset(split):
        x, target, _ = windows[split]
        last = x[:, -1:]  # (n, 1)
        return TensorDictDataset(inputs=(x - last)[..., None].float(), targets=(target - last).float())

    def loss_of(model, batch):
        return torch.nn.functional.mse_loss(model(batch["inputs"])[:, -1], batch["targets"])

    C = windows["train"][0].shape[1]
    torch.manual_seed(seed)
    model = build_sequence_model(kind, width, d_input=1, d_output=horizon, length=C)
    fit_regression(
        model,
        dataset("train"),
        dataset("val"),
        loss_of,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        eval_every=25,
    )
    model.eval()
    x = windows["test"][0]
    with torch.no_grad():
        out = model((x - x[:, -1:])[..., None].float())[:, -1].double()
    return out + x[:, -1:]


def run(
    series=tuple(SERIES), models=("flat:lru", "flat:s5", "lstm"), *, steps: int = 300, seed: int = 0, out=None
) -> dict:
    """Every baseline and model on every series: {"rows": [{series, method, mse, mae, n_test}, ...]}."""
    torch.set_num_threads(1)
    rows = []
    for name in series:
        spec = SERIES[name]
        w = make_windows(load_series(name), spec.context, spec.horizon)
        x_te, y_te, _ = w["test"]
        preds = {
            "last value": last_value(x_te, spec.horizon),
            "linear AR (least squares)": LinearAR().fit(*w["train"][:2])(x_te),
        }
        if spec.period > 1:
            preds["seasonal naive"] = seasonal_naive(x_te, spec.horizon, spec.period)
        for kind in models:
            preds[kind] = neural_forecast(kind, w, spec.horizon, steps=steps, seed=seed)
        for method, pred in preds.items():
            row = {
                "series": name,
                "method": method,
                "context": spec.context,
                "horizon": spec.horizon,
                "n_test": len(x_te),
                **errors(pred, y_te),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"rows": rows, "steps": steps, "seed": seed, "splits": "70/10/20 in time, train-standardised"}
    if out:
        write_json(out, result)
    return result


def format_table(result: dict) -> str:
    lines = ["| series | C / H | method | test MSE | test MAE | windows |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['series']} | {r['context']} / {r['horizon']} | {r['method']} | {r['mse']:.4f} | "
            f"{r['mae']:.4f} | {r['n_test']} |"
        )
    return "\n".join(lines)
