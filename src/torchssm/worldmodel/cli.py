"""``torchssm world collect | run | speed``: write MiniGrid episodes, then train and evaluate world models with each
backbone on them (docs/worldmodel.md)."""

from __future__ import annotations


def _run_collect(args) -> int:
    from torchssm.worldmodel.envs import collect

    paths = collect(
        args.out,
        args.env,
        episodes=args.episodes,
        policy=args.policy,
        seed=args.seed,
        max_steps=args.max_steps,
        progress=True,
    )
    print(f"wrote {len(paths)} episodes to {args.out}")
    return 0


def _run_eval(args) -> int:
    from torchssm.worldmodel.evaluate import format_tables, run

    backbones = _names(args.backbones)
    print(
        format_tables(
            run(
                args.data,
                backbones=backbones,
                env_name=args.env,
                steps=args.steps,
                context=args.context,
                d_model=args.d_model,
                segment=args.segment,
                speed_contexts=args.speed_contexts,
                end_windows=args.end_windows,
                reward_weight=args.reward_weight,
                reward_fraction=args.reward_fraction,
                seed=args.seed,
                out=args.out,
            )
        )
    )
    return 0


def _run_speed(args) -> int:
    import torch

    from torchssm.timeseries.fit import write_json
    from torchssm.worldmodel.evaluate import imagination_speed
    from torchssm.worldmodel.model import WorldModelConfig

    torch.set_num_threads(1)
    rows = {}
    for bb in args.backbones:
        cfg = WorldModelConfig(backbone=bb, d_model=args.d_model, d_hidden=2 * args.d_model, d_latent=16)
        rows[bb] = imagination_speed(cfg, args.contexts, steps=args.steps)
        print(bb, " ".join(f"ctx {c}: {ms:.2f} ms/step" for c, ms in rows[bb].items()), flush=True)
    if args.out:
        write_json(args.out, {"d_model": args.d_model, "steps": args.steps, "ms_per_step": rows})
    return 0


def _ints(text: str) -> tuple:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _names(text: str) -> tuple:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(subparsers) -> None:
    p = subparsers.add_parser("world", help="world models (S4WM) on MiniGrid: collect episodes, train, evaluate")
    sub = p.add_subparsers(dest="world_command", metavar="COMMAND", required=True)
    c = sub.add_parser("collect", help="write episodes of a random or scripted policy (one .npz each)")
    c.add_argument("out", help="folder for the episode files")
    c.add_argument("--env", default="MiniGrid-MemoryS7-v0")
    c.add_argument("--episodes", type=int, default=100)
    c.add_argument("--policy", default="lookback", choices=("random", "spin", "lookback"))
    c.add_argument("--max-steps", type=int, default=None)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=_run_collect)
    r = sub.add_parser("run", help="train each backbone on DATA/train, evaluate on DATA/test and the real env")
    r.add_argument("data", help="folder with train/ and test/ episode folders")
    r.add_argument("--backbones", default="lru,s4d,mamba,transformer,gru")
    r.add_argument("--env", default="MiniGrid-MemoryS7-v0")
    r.add_argument("--steps", type=int, default=500)
    r.add_argument("--context", type=int, default=16)
    r.add_argument("--d-model", type=int, default=64)
    r.add_argument("--segment", type=int, default=64, help="training / test window length (default 64)")
    r.add_argument(
        "--speed-contexts", type=_ints, default=(64, 256, 1024), help="contexts of the per-step timing ('' for none)"
    )
    r.add_argument(
        "--end-windows",
        action="store_true",
        help="also the window ending on each episode's final frame (where the goal reward is); reward prediction "
        "is only measured with it",
    )
    r.add_argument(
        "--reward-weight", type=float, default=1.0, help="weight of the reward error in the loss (default 1)"
    )
    r.add_argument(
        "--reward-fraction",
        type=float,
        default=0.0,
        help="share of each batch drawn from the windows with a rewarded step (needs --end-windows; default 0: "
        "every window alike)",
    )
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", help="write the results as JSON here")
    r.set_defaults(func=_run_eval)
    sp = sub.add_parser("speed", help="CPU ms per imagined step after long contexts (random weights, 1 thread)")
    sp.add_argument("--backbones", type=_names, default=("lru", "s4d", "mamba", "transformer", "gru"))
    sp.add_argument("--contexts", type=_ints, default=(1024, 4096, 16384))
    sp.add_argument("--d-model", type=int, default=64)
    sp.add_argument("--steps", type=int, default=16, help="imagined steps timed after each context")
    sp.add_argument("--out", help="write the results as JSON here")
    sp.set_defaults(func=_run_speed)
