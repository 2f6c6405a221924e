"""``torchssm plot <figure>``: the LRU article's figures and checkpoint analyses as PNG/SVG files.

torchssm plot smd --out figs/            spring-mass-damper: eigenvalues, damping, ZOH vs bilinear
torchssm plot aa-ab --out figs/          information propagation with low / high / negative damping
torchssm plot ring --r-min 0.4 --r-max 0.9
torchssm plot curves runs/a runs/b       loss and accuracy per epoch of runs, overlaid (--x step)
torchssm plot eigs --checkpoint runs/x   eigenvalues of a trained LRU over the run's own initial ones
torchssm plot impulse --layer lru        impulse responses of a fresh layer, or --checkpoint
torchssm plot hippo                      HiPPO matrices as heat maps
torchssm plot length a.json b.json       accuracy vs test length (JSON of `torchssm length-eval`)
torchssm plot all --out figs/            every figure that needs no checkpoint
"""

from __future__ import annotations

import json
import math
import os

FIGURES = ("smd", "aa-ab", "ring", "curves", "eigs", "impulse", "hippo", "length", "all")


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="analysis figures (eigenvalues, damping demos, impulse responses)")
    p.add_argument("figure", choices=FIGURES)
    p.add_argument("runs", nargs="*", metavar="RUN", help="curves: run dirs (or metrics.jsonl); length: JSON files")
    p.add_argument("--out", default="figures", help="output directory (default: figures/)")
    p.add_argument("--format", default="png", choices=("png", "svg", "pdf"))
    p.add_argument("--r-min", type=float, default=0.4, help="ring init r_min (the article's figure: 0.4)")
    p.add_argument("--r-max", type=float, default=0.9, help="ring init r_max (the article's figure: 0.9)")
    p.add_argument("--max-phase", type=float, default=2 * math.pi, help="ring init max phase (PathX: pi/10)")
    p.add_argument("--n", type=int, default=512, help="number of eigenvalues (ring) / HiPPO size")
    p.add_argument("--checkpoint", help="save_pretrained directory, .safetensors or torch state dict")
    p.add_argument(
        "--init",
        default="run",
        metavar="run|ring|none|CHECKPOINT",
        help="eigs: what to draw as 'before training': run (default: the run's own initial eigenvalues, "
        "rebuilt from its config and train.seed), ring (a fresh draw with --r-min/--r-max/--max-phase), "
        "none, or another checkpoint",
    )
    p.add_argument("--x", default="epoch", choices=("epoch", "step"), help="curves: the x axis")
    p.add_argument(
        "--labels", nargs="+", metavar="NAME", help="curves: legend names of the runs (default: their folders)"
    )
    p.add_argument("--layer", default="lru", help="impulse: registry name of a fresh layer (no --checkpoint)")
    p.add_argument("--d-model", type=int, default=8, help="impulse: width of the fresh layer")
    p.add_argument("--layer-kwargs", default="{}", help="impulse: JSON keyword arguments of the fresh layer")
    p.add_argument("--length", type=int, default=256, help="impulse: response length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-length", type=int, help="length: the training length, drawn as a dashed line")
    p.set_defaults(func=run)


def _model_for_impulse(args):
    import torch

    if args.checkpoint:
        from torchssm.analysis.eigen import load_model

        return load_model(args.checkpoint)
    from torchssm.layers.registry import build_layer

    torch.manual_seed(args.seed)
    return build_layer(args.layer, args.d_model, **json.loads(args.layer_kwargs))


def _metric(key: str, value: float) -> str:
    return f"{100 * value:.2f}%" if key.endswith("_acc") else f"{value:.4f}"


def _eigs_init(args, ring: dict):
    """--init: the run's own initial eigenvalues when the checkpoint is a training run (else none, said so)."""
    from torchssm.analysis.eigen import training_checkpoint

    if args.init == "run":
        if training_checkpoint(args.checkpoint) is not None:
            return "run"
        print(
            f"  {args.checkpoint} is not a training run (no trainer_state.json): drawing the trained eigenvalues "
            "only (--init ring or --init CHECKPOINT to compare)"
        )
        return None
    if args.init == "none":
        return None
    if args.init == "ring":
        return {**ring, "seed": args.seed}
    return args.init


def run(args) -> int:
    from torchssm.analysis import plots

    def out(name):
        return os.path.join(args.out, f"{name}.{args.format}")

    ring = {"r_min": args.r_min, "r_max": args.r_max, "max_phase": args.max_phase}
    todo = ["smd", "aa-ab", "ring", "impulse", "hippo"] if args.figure == "all" else [args.figure]
    if args.runs and args.figure not in ("curves", "length"):
        raise ValueError(f"plot {args.figure} takes no RUN arguments (only curves and length do); got {args.runs}")
    for fig in todo:
        if fig == "smd":
            res = plots.plot_spring_mass_damper(out("spring_mass_damper"))
        elif fig == "aa-ab":
            res = plots.plot_information_propagation(out("aa_vs_ab"))
            for label, sep in res["separation"].items():
                print(f"  {label:17s} |s_aa - s_ab| at t_end = {sep:.3e}")
        elif fig == "ring":
            res = plots.plot_lru_ring(out("lru_ring_init"), n=args.n, seed=args.seed, **ring)
            print(f"  |lambda| in [{res['min_abs']:.4f}, {res['max_abs']:.4f}], max |phase| {res['max_abs_phase']:.4f}")
        elif fig == "curves":
            res = plots.plot_training_curves(out("training_curves"), args.runs, x=args.x, labels=args.labels)
            for label, series in res["curves"].items():
                last = {k: v[1][-1] for k, v in series.items() if k.startswith(("val_", "test_"))}
                print(
                    f"  {label}: "
                    + ", ".join(f"{k} {_metric(k, v)}" for k, v in last.items())
                    + f" (last of {max(len(v[0]) for v in series.values())} {args.x}s)"
                )
        elif fig == "eigs":
            if not args.checkpoint:
                raise ValueError("plot eigs needs --checkpoint PATH (a training run or a saved model)")
            init = _eigs_init(args, ring)
            res = plots.plot_checkpoint_eigenvalues(out("lru_eigenvalues"), args.checkpoint, init)
            for name, s in res["summary"].items():
                b = res["before_summary"].get(name)
                was = f" ({res['before_label']}: [{b['min_abs']:.4f}, {b['max_abs']:.4f}])" if b else ""
                print(
                    f"  {name}: |lambda| in [{s['min_abs']:.4f}, {s['max_abs']:.4f}]{was}, "
                    f"max |phase| {s['max_abs_phase']:.4f}"
                )
        elif fig == "length":
            records = []
            for name in args.runs:
                with open(name) as f:
                    records.append(json.load(f))
            if args.labels:
                if len(args.labels) != len(records):
                    raise ValueError(f"got {len(args.labels)} labels for {len(records)} JSON files")
                for rec, label in zip(records, args.labels):
                    rec["label"] = label
            res = plots.plot_length_generalisation(out("length_generalisation"), records, args.train_length)
            for label, pts in res["curves"].items():
                longest = max((n for n, a in pts if a >= 99.0), default=None)
                reach = f"up to L={longest}" if longest else "at no length"
                print(f"  {label}: {len(pts)} lengths, >= 99% {reach}")
        elif fig == "impulse":
            res = plots.plot_impulse_responses(out("impulse_response"), _model_for_impulse(args), args.length)
        else:
            res = plots.plot_hippo(out("hippo"), n=min(args.n, 64))
        if res["path"] is None:
            print(f"skipped {fig}: {res['skipped']}")
        else:
            print(f"wrote {res['path']}")
    return 0
