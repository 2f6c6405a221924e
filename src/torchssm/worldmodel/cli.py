"""``torchssm world collect | run``: write MiniGrid episodes, then train and evaluate world models with each
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

    backbones = tuple(b.strip() for b in args.backbones.split(",") if b.strip())
    print(
        format_tables(
            run(
                args.data,
                backbones=backbones,
                env_name=args.env,
                steps=args.steps,
                context=args.context,
                d_model=args.d_model,
                seed=args.seed,
                out=args.out,
            )
        )
    )
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("world", help="world models (S4WM) on MiniGrid: collect episodes, train, evaluate")
    sub = p.add_subparsers(dest="world_command", metavar="COMMAND", required=True)
    c = sub.add_parser("collect", help="write episodes of a random or scripted policy (one .npz each)")
    c.add_argument("out", help="folder for the episode files")
    c.add_argument("--env", default="MiniGrid-MemoryS7-v0")
    c.add_argument("--episodes", type=int, default=100)
    c.add_argument("--policy", default="spin", choices=("random", "spin"))
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
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", help="write the results as JSON here")
    r.set_defaults(func=_run_eval)
