"""``torchssm theory <check>``: the reading list's claims, computed and printed as JSON (docs/theory.md).

torchssm theory softmax-rank                 semiseparable rank of softmax vs linear attention vs length
torchssm theory s4d-legs --out figs/x.png    S4D-LegS vs S4-LegS errors vs N (and the figure)
torchssm theory bench-ssd                    CPU time of SSD's recurrent / chunked / attention forms vs L
torchssm theory selectivity --out f.png      Huang et al. (i) Haar vs S4D error vs state, (ii) KEEP n-TH
torchssm theory mqar --kind mamba            Huang et al. (iii): accuracy of an analytical MQAR solution
torchssm theory koopman --out f.png          LRU Koopman autoencoder vs frozen-LRU reservoir (pendulum)
torchssm theory granger                      federated Granger causality vs the centralised oracles (AUROC)
torchssm theory s4d-ablation --out-dir runs/a   S4D init x discretization grid on a preset (trains 10 runs)
"""

from __future__ import annotations

import argparse
import json
import sys

CHECKS = ("softmax-rank", "s4d-legs", "bench-ssd", "selectivity", "mqar", "koopman", "granger", "s4d-ablation")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "theory", help="theory checks: SSD duality, HiPPO bases, selectivity, Koopman LRU, federated Granger"
    )
    p.add_argument("check", choices=CHECKS)
    p.add_argument("--lengths", type=int, nargs="+", help="softmax-rank / bench-ssd: sequence lengths")
    p.add_argument("--sizes", type=int, nargs="+", help="s4d-legs: state sizes N; selectivity: state sizes")
    p.add_argument("--out", help="s4d-legs / selectivity / koopman: write the figure here (.png/.svg/.pdf)")
    p.add_argument("--repeats", type=int, default=3, help="bench-ssd: interleaved rounds (median reported)")
    p.add_argument("--kind", choices=("mamba", "mamba2", "s4d"), default="mamba", help="mqar: which mixer")
    p.add_argument("--vocab-size", type=int, default=512, help="mqar: vocabulary (keys V/2, values V/2)")
    p.add_argument("--length", type=int, default=256, help="mqar: sequence length")
    p.add_argument("--pairs", type=int, default=16, help="mqar: key-value pairs")
    p.add_argument("--examples", type=int, default=64, help="mqar: test sequences")
    p.add_argument(
        "--noise", action="store_true", help="mqar: random filler tokens (Zoology's function default; its Fig. 2: none)"
    )
    p.add_argument("--backend", default="cpu", help="mqar: scan backend of the layer")
    p.add_argument("--key-dim", type=int, help="mqar (mamba): random key codes of this size instead of one-hot")
    p.add_argument("--steps", type=int, default=3000, help="koopman: Adam steps per model")
    p.add_argument("--snr", type=float, nargs="+", default=[-10.0, -5.0, 0.0, 10.0], help="granger: SNRs (dB)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="granger: instances per SNR")
    p.add_argument("--preset", default="synthetic/copying_s4d", help="s4d-ablation: preset (layer s4d) or YAML path")
    p.add_argument("--inits", nargs="+", help="s4d-ablation: S4D inits (default legs inv lin real random)")
    p.add_argument("--discretizations", nargs="+", help="s4d-ablation: zoh and/or bilinear (default both)")
    p.add_argument("--out-dir", default="runs/s4d_ablation", help="s4d-ablation: one run directory per cell here")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], help="s4d-ablation: key.sub=value for every run"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    if args.check == "softmax-rank":
        from torchssm.theory.duality import softmax_rank_growth

        rows = softmax_rank_growth(args.lengths or (8, 16, 32, 64, 128))
    elif args.check == "s4d-legs":
        from torchssm.theory.hippo import plot_s4d_legs_error, s4d_legs_error_curve

        sizes = args.sizes or [16, 32, 64, 128, 256, 512]
        rows = plot_s4d_legs_error(args.out, sizes)["rows"] if args.out else s4d_legs_error_curve(sizes)
    elif args.check == "bench-ssd":
        from torchssm.theory.bench import ssd_forms_cpu_time

        rows = ssd_forms_cpu_time(args.lengths or (128, 256, 512, 1024, 2048), repeats=args.repeats)
    elif args.check == "selectivity":
        from torchssm.theory.selectivity import haar_vs_s4d, plot_selectivity

        rows = haar_vs_s4d(sizes=args.sizes or (4, 8, 16, 32, 64, 128, 256))
        if args.out:
            recall = plot_selectivity(args.out, rows)["recall"]
            rows = rows + [{"keep_nth_recall_mse": recall}]
    elif args.check == "mqar":
        from torchssm.theory.selectivity import mqar_accuracy

        rows = [
            mqar_accuracy(
                args.kind,
                vocab_size=args.vocab_size,
                length=args.length,
                num_kv_pairs=args.pairs,
                examples=args.examples,
                batch=4,
                random_non_queries=args.noise,
                backend=args.backend,
                key_dim=args.key_dim,
            )
        ]
    elif args.check == "koopman":
        from torchssm.theory.koopman import KoopmanConfig, koopman_experiment, plot_koopman

        result = koopman_experiment(KoopmanConfig(steps=args.steps))
        if args.out:
            plot_koopman(args.out, result)
        lam = result["eigenvalues"]
        rows = result["rows"] + [
            {"cpu_s": result["cpu_s"], "eigenvalues_abs": lam.abs().tolist(), "eigenvalues_angle": lam.angle().tolist()}
        ]
    elif args.check == "s4d-ablation":
        from torchssm.theory.ablation import DISCRETIZATIONS, S4D_INITS, s4d_ablation

        rows = s4d_ablation(
            args.out_dir,
            preset=args.preset,
            inits=args.inits or S4D_INITS,
            discretizations=args.discretizations or DISCRETIZATIONS,
            overrides=args.overrides,
            log=lambda msg: print(msg, file=sys.stderr),
        )["rows"]
    else:
        from torchssm.analysis.granger import GrangerExperiment, granger_experiment

        rows = granger_experiment(GrangerExperiment(snr_db=tuple(args.snr), seeds=tuple(args.seeds)))
    for row in rows:
        print(json.dumps(row))
    return 0
