"""``torchssm rl``: envs | presets | train | eval | table | bench | meta-eval | meta-plot.

torchssm rl envs                                     # the POPGym environments
torchssm rl train --preset repeat_previous_easy --model lru --out runs/rl/rpe_lru [--set ppo.lr=1e-3] [--resume]
torchssm rl eval --checkpoint runs/rl/rpe_lru [--episodes 100]
torchssm rl bench --lengths 256 1024 4096 --out bench.json --plot bench.png
torchssm rl meta-eval --checkpoint runs/rl/meta_s0 runs/rl/meta_s1 --trials 100 --out m.json --plot meta.png
torchssm rl meta-plot train.json heldout.json ablation.json --labels train held-out ablation --out meta.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _run_envs(args) -> int:
    from torchssm.rl.envs import ISSUE_ENVS, available_envs, base_envs

    names = available_envs()
    print("\n".join(names))
    print(f"# {len(names)} POPGym environments; the issue's set: {', '.join(ISSUE_ENVS)} (x Easy/Medium/Hard)")
    print(f"# base classes taking constructor arguments (env_kwargs, meta entries): {', '.join(base_envs())}")
    return 0


def _run_presets(args) -> int:
    from torchssm.rl.train import list_presets

    envs, models = list_presets()
    print("environments (--preset): " + " ".join(envs))
    print("models (--model): " + " ".join(models))
    return 0


def _run_train(args) -> int:
    from torchssm.rl.train import load_rl_config, train

    cfg = load_rl_config(args.preset, args.config, args.set or (), model=args.model)
    row = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, max_iterations=args.iterations)
    print(json.dumps(row))
    return 0


def _run_eval(args) -> int:
    from torchssm.rl.train import evaluate_run

    result = evaluate_run(args.checkpoint, args.episodes, seed=args.seed, greedy=args.greedy, env_name=args.env)
    print(json.dumps(result))
    return 0


def _run_table(args) -> int:
    from torchssm.rl.table import run_table

    result = run_table(
        args.envs,
        args.models,
        args.seeds,
        args.out,
        iterations=args.iterations,
        episodes=args.episodes,
        overrides=args.set or (),
        progress=not args.no_progress,
    )
    print(result["markdown"])
    return 0


def _run_bench(args) -> int:
    from torchssm.rl.bench import bench_ppo_update, plot_bench

    result = bench_ppo_update(
        args.memories,
        args.lengths,
        target_params=args.params,
        batch=args.batch,
        repeats=args.repeats,
        episode_length=args.episode_length,
        out=args.out,
    )
    print(result["markdown"])
    if args.plot:
        plot_bench(result, args.plot)
    return 0


def _run_meta_eval(args) -> int:
    from torchssm.fileio import atomic_write_json
    from torchssm.rl.meta import evaluate_meta, plot_meta, pool_results

    kwargs = dict(trials=args.trials, heldout=args.heldout, reset_each_episode=args.reset_each_episode)
    # checkpoint k plays the trials of seed + k: pooled seeds see different tasks, not the same 100 again
    results = [evaluate_meta(ckpt, seed=args.seed + k, **kwargs) for k, ckpt in enumerate(args.checkpoint)]
    result = results[0] if len(results) == 1 else pool_results(results)
    for res in results if len(results) > 1 else []:
        print(json.dumps({k: res[k] for k in ("checkpoint", "mean_per_episode", "last_minus_first", "ci95")}))
    print(json.dumps({k: v for k, v in result.items() if k not in ("returns", "per_run")}))
    if args.out:
        atomic_write_json(args.out, result)
    if args.plot:
        plot_meta([result], args.plot)
    return 0


def _run_meta_plot(args) -> int:
    from torchssm.rl.meta import plot_meta

    results = []
    for path in map(Path, args.results):
        if not path.is_file():
            raise FileNotFoundError(f"no meta-eval result at {path} (write one with torchssm rl meta-eval --out)")
        results.append(json.loads(path.read_text()))
    print(plot_meta(results, args.out, labels=args.labels))
    return 0


def register(subparsers) -> None:
    rl = subparsers.add_parser(
        "rl",
        help="in-context RL with resettable SSMs on POPGym (PPO)",
        description="Recurrent PPO on the POPGym suite and the meta-RL task (Lu et al. 2023).",
    )
    sub = rl.add_subparsers(dest="rl_command", metavar="RL_COMMAND")
    rl.set_defaults(func=lambda args: (rl.print_help(), 2)[1])

    p = sub.add_parser("envs", help="list the POPGym environments")
    p.set_defaults(func=_run_envs)
    p = sub.add_parser("presets", help="list the RL presets")
    p.set_defaults(func=_run_presets)

    p = sub.add_parser("train", help="train a recurrent PPO agent")
    p.add_argument("--preset", help="a preset name (torchssm rl presets)")
    p.add_argument("--config", help="a YAML config file")
    p.add_argument("--model", help="a model preset (torchssm rl presets): replaces the config's model section")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. ppo.lr=1e-3 (repeatable)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--iterations", type=int, help="stop after this many PPO iterations (default: ppo.total_steps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)

    p = sub.add_parser("eval", help="evaluate a trained run on fresh episodes")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    p.add_argument("--episodes", type=int, help="episodes (default: run.eval_episodes)")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    p.add_argument("--env", help="evaluate on another POPGym env with the same spaces")
    p.set_defaults(func=_run_eval)

    p = sub.add_parser("table", help="train + evaluate env presets x model presets x seeds; reward table")
    p.add_argument("--envs", nargs="+", required=True, help="environment presets")
    p.add_argument("--models", nargs="+", default=["lru", "s5", "mamba", "gru"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--iterations", type=int, help="PPO iterations per run (default: ppo.total_steps)")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per run")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--out", required=True, help="directory of the runs and table.json / table.md")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_table)

    p = sub.add_parser("bench", help="CPU time of one PPO update per memory and trajectory length")
    p.add_argument("--memories", nargs="+", default=["s5", "lru", "mamba", "gru", "lstm", "window_transformer"])
    p.add_argument("--lengths", nargs="+", type=int, default=[256, 1024, 4096, 8192])
    p.add_argument("--params", type=int, default=100_000, help="target memory parameter count (equalised)")
    p.add_argument("--batch", type=int, default=8, help="trajectories per minibatch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--episode-length", type=int, help="reset every that many steps (default: one episode)")
    p.add_argument("--out", help="JSON results file")
    p.add_argument("--plot", help="figure path (.png/.svg)")
    p.set_defaults(func=_run_bench)

    p = sub.add_parser("meta-eval", help="return per episode index within meta-RL trials")
    p.add_argument("--checkpoint", required=True, nargs="+", help="run(s); several (e.g. seeds) are pooled")
    p.add_argument("--trials", type=int, default=100, help="fresh trials per checkpoint")
    p.add_argument("--heldout", action="store_true", help="the held-out environments")
    p.add_argument(
        "--reset-each-episode",
        action="store_true",
        help="ablation: reset the memory at every episode (not only between trials)",
    )
    p.add_argument("--seed", type=int, default=777, help="evaluation seed of the first checkpoint (k-th: seed + k)")
    p.add_argument("--out", help="JSON results file")
    p.add_argument("--plot", help="figure of return vs episode index")
    p.set_defaults(func=_run_meta_eval)

    p = sub.add_parser("meta-plot", help="overlay meta-eval results: return vs episode index within a trial")
    p.add_argument("results", nargs="+", help="JSON files of torchssm rl meta-eval --out")
    p.add_argument("--labels", nargs="+", help="one legend label per result")
    p.add_argument("--out", required=True, help="figure path (.png/.svg)")
    p.set_defaults(func=_run_meta_plot)


def main(argv=None) -> int:  # pragma: no cover - convenience
    parser = argparse.ArgumentParser(prog="torchssm")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
