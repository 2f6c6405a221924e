"""``torchssm theory <check>``: the reading list's claims, computed and printed as JSON (docs/theory.md).

torchssm theory softmax-rank                 semiseparable rank of softmax vs linear attention vs length
torchssm theory s4d-legs --out figs/x.png    S4D-LegS vs S4-LegS errors vs N (and the figure)
torchssm theory bench-ssd                    CPU time of SSD's recurrent / chunked / attention forms vs L
"""

from __future__ import annotations

import argparse
import json

CHECKS = ("softmax-rank", "s4d-legs", "bench-ssd")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("theory", help="theory checks: SSD duality, HiPPO bases, S4D-LegS convergence")
    p.add_argument("check", choices=CHECKS)
    p.add_argument("--lengths", type=int, nargs="+", help="softmax-rank / bench-ssd: sequence lengths")
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512], help="s4d-legs: state sizes N")
    p.add_argument("--out", help="s4d-legs: write the figure here (.png/.svg/.pdf)")
    p.add_argument("--repeats", type=int, default=3, help="bench-ssd: interleaved rounds (median reported)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    if args.check == "softmax-rank":
        from torchssm.theory.duality import softmax_rank_growth

        rows = softmax_rank_growth(args.lengths or (8, 16, 32, 64, 128))
    elif args.check == "s4d-legs":
        from torchssm.theory.hippo import plot_s4d_legs_error, s4d_legs_error_curve

        rows = plot_s4d_legs_error(args.out, args.sizes)["rows"] if args.out else s4d_legs_error_curve(args.sizes)
    else:
        from torchssm.theory.bench import ssd_forms_cpu_time

        rows = ssd_forms_cpu_time(args.lengths or (128, 256, 512, 1024, 2048), repeats=args.repeats)
    for row in rows:
        print(json.dumps(row))
    return 0
