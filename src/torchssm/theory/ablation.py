"""S4D's initialisation x discretisation ablation: one preset trained once per (init, discretization).

Gu, Gupta, Goel & Re 2022, "On the Parameterization and Initialization of Diagonal State Space Models"
([S4D]) compare the diagonal initialisations S4D-LegS, S4D-Inv, S4D-Lin, S4D-Real and a random-imaginary
baseline ([S4D] Sec. 4 and Table 2; this library's ``layers/init.py: diagonal_init``) and the ZOH vs
bilinear discretisations ([S4D] Sec. 3.2; ``layers/s4d.py``) with everything else fixed. The task and
model sizes of the paper's ablation runs are UNVERIFIED here (not found in the sources searchable from
this project); :func:`s4d_ablation` runs the same grid on any preset whose layer is ``s4d``, by default
``synthetic/copying_s4d`` (the copying task, delay 100: a CPU-sized memory task).

Each run is an ordinary ``torchssm train`` run (its own directory ``<out_dir>/<init>_<discretization>``,
metrics and checkpoints); the summary ``<out_dir>/ablation.json`` (written atomically after every run, so
an interrupted grid keeps the finished rows) holds per run the final test accuracy, the best-validation
epoch's test accuracy and the CPU seconds of the run (``time.process_time``: all threads of this process);
``<out_dir>/ablation.md`` is its table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

S4D_INITS = ("legs", "inv", "lin", "real", "random")
DISCRETIZATIONS = ("zoh", "bilinear")
DEFAULT_PRESET = "synthetic/copying_s4d"


def _choices(values: Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    values = list(values)
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise ValueError(f"{what} must be a non-empty list from {list(allowed)}; got {values}")
    return values


def s4d_ablation(
    out_dir: str | Path,
    *,
    preset: str = DEFAULT_PRESET,
    inits: Sequence[str] = S4D_INITS,
    discretizations: Sequence[str] = DISCRETIZATIONS,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> dict:
    """Train ``preset`` once per (init, discretization), other settings unchanged; returns the summary.

    ``preset`` is a preset name or a YAML path; ``overrides`` are ``--set`` strings applied to every run
    (e.g. ``train.epochs=2``). Raises ValueError when the preset's layer is not ``s4d``.
    """
    from torchssm.fileio import atomic_write_json, atomic_write_text
    from torchssm.presets import preset_path
    from torchssm.train.config import load_config
    from torchssm.train.loop import train

    inits = _choices(inits, S4D_INITS, "inits")
    discretizations = _choices(discretizations, DISCRETIZATIONS, "discretizations")
    path = Path(preset) if Path(preset).is_file() else preset_path(preset)
    out_dir = Path(out_dir)
    summary: dict = {"preset": str(preset), "overrides": list(overrides), "rows": []}
    for init in inits:
        for disc in discretizations:
            name = f"{init}_{disc}"
            cfg = load_config(
                path,
                [
                    *overrides,
                    f"model.layer_kwargs.init={init}",
                    f"model.layer_kwargs.discretization={disc}",
                    f"train.out_dir={(out_dir / name).as_posix()}",
                ],
            )
            if cfg.model.layer != "s4d":
                raise ValueError(
                    f"the S4D ablation needs a preset with model.layer s4d; {preset!r} has {cfg.model.layer!r}"
                )
            log(f"s4d ablation: {name}")
            cpu0 = time.process_time()
            result = train(cfg, log=log)
            cpu_s = time.process_time() - cpu0
            best = result.best or {}
            summary["rows"].append(
                {
                    "init": init,
                    "discretization": disc,
                    "test_acc": result.last.get("test_acc"),
                    "test_loss": result.last.get("test_loss"),
                    "best_val_acc": best.get("val_acc"),
                    "test_acc_at_best_val": best.get("test_acc"),
                    "epochs": result.epochs_done,
                    "cpu_s": round(cpu_s, 2),
                    "run_dir": (out_dir / name).as_posix(),
                }
            )
            atomic_write_json(out_dir / "ablation.json", summary, indent=2)
    table = summary["table"] = ablation_table(summary["rows"])
    atomic_write_text(out_dir / "ablation.md", table + "\n")
    return summary


def ablation_table(rows: Sequence[dict]) -> str:
    """A markdown table: one line per init, one column per discretization (final test accuracy, CPU-s)."""
    discs = list(dict.fromkeys(r["discretization"] for r in rows))
    inits = list(dict.fromkeys(r["init"] for r in rows))
    cell = {(r["init"], r["discretization"]): r for r in rows}
    lines = ["| init | " + " | ".join(f"{d} test acc (CPU-s)" for d in discs) + " |", "|---" * (len(discs) + 1) + "|"]
    for init in inits:
        cells = []
        for d in discs:
            r = cell.get((init, d))
            if r is None or r["test_acc"] is None:
                cells.append("-")
            else:
                cells.append(f"{100 * r['test_acc']:.1f}% ({r['cpu_s']:.0f})")
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["DISCRETIZATIONS", "S4D_INITS", "ablation_table", "s4d_ablation"]
