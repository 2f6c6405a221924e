"""``torchssm rl table``: train every (env preset, model preset, seed), evaluate each on fresh episodes, and
write the reward table (JSON + Markdown). Finished runs (an ``eval.json`` in their directory) are reused,
so an interrupted table resumes where it stopped.

    torchssm rl table --envs repeat_previous_easy count_recall_easy --models lru s5 mamba gru \\
        --seeds 0 1 2 --iterations 100 --out runs/rl/table
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from torchssm.fileio import atomic_write_json, atomic_write_text
from torchssm.rl.train import evaluate_run, load_rl_config, train


def run_table(
    envs: Sequence[str],
    models: Sequence[str],
    seeds: Sequence[int],
    out: str,
    iterations: int | None = None,
    episodes: int = 100,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> dict:
    root = Path(out)
    rows: list[dict] = []
    for env in envs:
        for model in models:
            for seed in seeds:
                run = root / f"{env}__{model}__s{seed}"
                if (run / "eval.json").is_file():
                    result = json.loads((run / "eval.json").read_text())
                else:
                    cfg = load_rl_config(env, model=model, overrides=[*overrides, f"seed={seed}"])
                    resume = (run / "last").exists()
                    train(cfg, run, resume=resume, progress=progress, max_iterations=iterations)
                    result = evaluate_run(run, episodes)
                metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
                rows.append(
                    {
                        "env": env,
                        "model": model,
                        "seed": seed,
                        "eval_return": result["mean_return"],
                        "eval_stderr": result["stderr"],
                        "env_steps": metrics[-1]["env_steps"],
                        "train_cpu_s": metrics[-1]["cpu_s"],
                    }
                )
                _write(root, rows, models)
    return {"rows": rows, "markdown": _markdown(rows, models)}


def _markdown(rows: list[dict], models: Sequence[str]) -> str:
    """env x model: mean eval return over seeds (+- std over seeds when > 1 seed), env steps, CPU s per run."""
    envs = list(dict.fromkeys(r["env"] for r in rows))
    lines = [
        "| env | " + " | ".join(models) + " | env steps / run | CPU s / run (mean) |",
        "|---|" + "---|" * (len(models) + 2),
    ]
    for env in envs:
        cells, steps, cpu = [], set(), []
        for model in models:
            vals = [r["eval_return"] for r in rows if r["env"] == env and r["model"] == model]
            cpu += [r["train_cpu_s"] for r in rows if r["env"] == env and r["model"] == model]
            steps |= {r["env_steps"] for r in rows if r["env"] == env and r["model"] == model}
            if not vals:
                cells.append("-")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.3f}")
            else:
                cells.append(f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f} (n={len(vals)})")
        lines.append(
            f"| {env} | " + " | ".join(cells) + f" | {'/'.join(map(str, sorted(steps)))} | {statistics.mean(cpu):.0f} |"
            if cpu
            else f"| {env} | " + " | ".join(cells) + " | - | - |"
        )
    return "\n".join(lines) + "\n"


def _write(root: Path, rows: list[dict], models: Sequence[str]) -> None:
    atomic_write_json(root / "table.json", rows, indent=1)
    atomic_write_text(root / "table.md", _markdown(rows, models))
