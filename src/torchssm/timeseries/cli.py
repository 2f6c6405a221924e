"""``torchssm timeseries imu | forecast | irregular``: the HiSS comparison on the simulated IMU, the forecasting
table, and the irregular-sampling table (docs/timeseries.md). Each prints a markdown table and, with ``--out``,
writes the full results as JSON (atomically)."""

from __future__ import annotations

import argparse


def _floats(text: str) -> tuple:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> tuple:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _run_imu(args) -> int:
    from torchssm.timeseries.imu_compare import format_table, run

    r = run(
        args.models,
        budget=args.budget,
        steps=args.steps,
        lrs=args.lrs,
        chunk=args.chunk,
        n_train=args.n_train,
        seconds=args.seconds,
        seed=args.seed,
        data_seed=args.data_seed,
        out=args.out,
        progress=not args.quiet,
    )
    print(format_table(r))
    return 0


def _run_forecast(args) -> int:
    from torchssm.timeseries.forecast import format_table, run

    print(format_table(run(args.series, args.models, steps=args.steps, seed=args.seed, out=args.out)))
    return 0


def _run_irregular(args) -> int:
    from torchssm.timeseries.irregular import format_table, run

    print(format_table(run(steps=args.steps, lrs=args.lrs, seed=args.seed, out=args.out)))
    return 0


def register(subparsers) -> None:
    from torchssm.timeseries.forecast import SERIES
    from torchssm.timeseries.imu_compare import DEFAULT_MODELS

    p = subparsers.add_parser("timeseries", help="HiSS on a simulated IMU, forecasting, irregular sampling")
    sub = p.add_subparsers(dest="timeseries_command", metavar="COMMAND", required=True)

    imu = sub.add_parser("imu", help="HiSS vs flat SSMs, LSTM, Transformer on the simulated IMU (velocity)")
    imu.add_argument(
        "--models",
        type=_names,
        default=DEFAULT_MODELS,
        help=f"comma-separated, from lstm, flat:<layer>, hiss:<low>/<high> (default {','.join(DEFAULT_MODELS)})",
    )
    imu.add_argument("--budget", type=int, default=20000, help="parameter budget per model (default 20000)")
    imu.add_argument("--steps", type=int, default=300, help="optimizer steps per configuration (default 300)")
    imu.add_argument("--lrs", type=_floats, default=(1e-3, 3e-3), help="learning rates tried per model")
    imu.add_argument("--chunk", type=int, default=10, help="HiSS chunk size k; targets at chunk ends (default 10)")
    imu.add_argument("--n-train", type=int, default=512)
    imu.add_argument("--seconds", type=float, default=5.0, help="sequence duration at 200 Hz (default 5 s)")
    imu.add_argument("--seed", type=int, default=0, help="seeds the weights and batch order (default 0)")
    imu.add_argument(
        "--data-seed", type=int, default=0, help="seeds the simulated trajectories, shared by every --seed (default 0)"
    )
    imu.add_argument("--out", help="write the results as JSON here")
    imu.add_argument("--quiet", action="store_true", help="no progress bars")
    imu.set_defaults(func=_run_imu)

    fc = sub.add_parser("forecast", help="multi-step forecasting: naive, seasonal naive, linear AR and SSMs")
    fc.add_argument("--series", type=_names, default=tuple(SERIES), help=f"from {','.join(SERIES)}")
    fc.add_argument("--models", type=_names, default=("flat:lru", "flat:s5", "lstm"))
    fc.add_argument("--steps", type=int, default=300)
    fc.add_argument("--seed", type=int, default=0)
    fc.add_argument("--out")
    fc.set_defaults(func=_run_forecast)

    ir = sub.add_parser("irregular", help="gap-aware vs gap-ignoring SSMs on an irregularly observed oscillator")
    ir.add_argument("--steps", type=int, default=400)
    ir.add_argument("--lrs", type=_floats, default=(1e-3, 3e-3))
    ir.add_argument("--seed", type=int, default=0)
    ir.add_argument("--out")
    ir.set_defaults(func=_run_irregular)
