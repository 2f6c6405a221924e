"""``torchssm vision``: restore (denoise / deblur vs scikit-image), cost (FLOPs and memory vs resolution),
classify (2-D scans vs raster, Hydra / 2-D SSM / ViT), longvq (LongVQ vs the plain SSM),
pretrain (MambaMIM masked pretraining, then fine-tuning with few labels), video (Selective S5).
Presets: src/torchssm/presets/vision/*.yaml."""

from __future__ import annotations

import json
from pathlib import Path


def load_preset(name_or_path) -> dict:
    """A preset by name (presets/vision/<name>.yaml, found by :func:`torchssm.presets.preset_path`) or a YAML path."""
    import yaml

    from torchssm.presets import PRESET_DIR, list_presets, preset_path

    vision = PRESET_DIR / "vision"
    path = Path(name_or_path)
    if not (path.suffix and path.is_file()):
        try:
            path = preset_path(str(name_or_path), vision)
        except ValueError:
            names = list_presets(vision)
            raise FileNotFoundError(
                f"no vision preset {name_or_path!r}; expected a YAML path or one of {names}"
            ) from None
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping")
    return data


def _threads(args) -> None:
    import torch

    torch.set_num_threads(args.threads)


def _run_restore(args) -> int:
    from torchssm.vision.restore import run_restoration

    _threads(args)
    cfg = load_preset(args.preset) if args.preset else {}
    if args.mixer is not None and args.mixer != cfg.get("mixer"):
        cfg.pop("mixer_kwargs", None)  # the preset's kwargs belong to its own mixer
    if args.mixer_kwargs is not None:
        cfg["mixer_kwargs"] = json.loads(args.mixer_kwargs)
    for key in (
        "task",
        "mixer",
        "width",
        "depths",
        "steps",
        "batch",
        "patch",
        "lr",
        "crop",
        "seed",
        "unshuffle",
        "checkpoint_every",
        "train_until",
        "init_from",
    ):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    if args.sigmas:
        cfg["sigmas"] = args.sigmas
    if args.sigma_range:
        cfg["sigma_range"] = tuple(args.sigma_range)
    if args.noise_map:
        cfg["noise_map"] = True
    if args.self_ensemble:
        cfg["self_ensemble"] = True
    cfg.setdefault("task", "denoise")
    res = run_restoration(args.out, **cfg)
    for level, row in res["results"].items():
        print(f"{res['task']} sigma={level}: " + ", ".join(f"{k} {v:.2f} dB" for k, v in row["mean"].items()))
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def _run_cost(args) -> int:
    from torchssm.fileio import atomic_write_json
    from torchssm.vision.cost import cost_table
    from torchssm.vision.restoration import RestorationUNet

    _threads(args)
    models = {name: RestorationUNet(1, args.width, (1, 1, 1), name) for name in args.mixers}
    rows = cost_table(models, args.resolutions)
    for r in rows:
        print(
            f"{r['model']:>14} {r['resolution']:>5}px  {r['gflops']:9.3f} GFLOP  saved {r['saved_mib']:8.1f} MiB  "
            f"attn matrix {r['attn_matrix_mib']:9.1f} MiB  {r['cpu_s']:7.2f} s CPU"
        )
    if args.out:
        atomic_write_json(args.out, rows, indent=2)
    return 0


def _run_classify(args) -> int:
    from torchssm.vision.classify import run_classification

    _threads(args)
    cfg = load_preset(args.preset)
    specs = cfg.pop("models")
    if args.only:
        specs = {k: v for k, v in specs.items() if k in args.only}
    for key in ("steps", "n_images", "seed"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    res = run_classification(args.out, specs, cache=args.cache, **cfg)
    for name, r in res["models"].items():
        print(
            f"{name:>26}: {r['parameters']:7d} params  test acc {r['test_accuracy']:.3f}  "
            f"train acc {r['train_accuracy']:.3f}  {r['train_cpu_s']:.0f} s CPU"
        )
    return 0


def _run_longvq(args) -> int:
    from torchssm.vision.longvq_task import run_longvq_comparison

    _threads(args)
    cfg = load_preset(args.preset)
    for key in ("steps", "seed", "aux_weight"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    res = run_longvq_comparison(args.out, **cfg)
    for name, r in res["models"].items():
        print(
            f"{name:>16}: {r['parameters']:7d} params  test acc {r['test_accuracy']:.3f}  "
            f"test loss {r['test_loss']:.3f}  VQ loss {r['final_aux_loss']:.3f}  {r['train_cpu_s']:.0f} s CPU"
        )
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def _run_pretrain(args) -> int:
    from torchssm.vision.pretrain import run_mim_experiment

    _threads(args)
    cfg = load_preset(args.preset)
    model = cfg.pop("model")
    for key in ("pretrain_steps", "finetune_steps", "label_fraction", "seed", "n_images"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.arms:
        cfg["arms"] = args.arms
    res = run_mim_experiment(args.out, model, cache=args.cache, **cfg)
    for arm, r in res["arms"].items():
        pre = r.get("pretrain")
        extra = f"  pretrain MSE {pre['test_reconstruction_mse']:.4f} ({pre['cpu_s']:.0f} s CPU)" if pre else ""
        print(f"{arm:>10}: test acc {r['test_accuracy']:.3f} with {res['n_labelled']} labels{extra}")
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def _run_video(args) -> int:
    from torchssm.vision.video_task import run_video_experiment

    _threads(args)
    cfg = load_preset(args.preset)
    for key in ("frames", "steps", "pretrain_steps", "seed", "data_dir"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.arms:
        cfg["arms"] = args.arms
    if args.no_throughput:
        cfg["throughput_frames"] = ()
    res = run_video_experiment(args.out, **cfg)
    for arm, r in res["arms"].items():
        print(
            f"{arm:>9}: test acc {r['test_accuracy']:.3f}  kept {r['kept_fraction']:.2f} of the frames  "
            f"event frames kept {r['event_recall']:.2f}"
        )
    for r in res["throughput"]:
        print(f"{r['model']:>26} T={r['frames']:>5}: {r['frames_per_cpu_s']:10.0f} frames per CPU second")
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("vision", help="2-D SSMs: restoration, cost vs resolution, classification")
    sub = parser.add_subparsers(dest="vision_command", required=True)

    restore = sub.add_parser("restore", help="train the U-Net restorer and compare with scikit-image's methods")
    restore.add_argument("--preset", help="name in presets/vision or a YAML path (e.g. denoise_serpent)")
    restore.add_argument("--out", required=True, help="run folder (results.json, model.pt, figure.png)")
    restore.add_argument("--task", choices=("denoise", "deblur"))
    restore.add_argument("--mixer", help="cross_scan | spatial_mamba | s4nd | attention")
    restore.add_argument("--mixer-kwargs", dest="mixer_kwargs", help="JSON, e.g. '{\"d_state\": 1}'")
    for name, typ in (
        ("width", int),
        ("steps", int),
        ("batch", int),
        ("patch", int),
        ("lr", float),
        ("crop", int),
        ("seed", int),
        ("unshuffle", int),
        ("checkpoint-every", int),
        ("train-until", int),
    ):
        restore.add_argument(f"--{name}", type=typ, dest=name.replace("-", "_"))
    restore.add_argument("--depths", type=int, nargs="+", help="blocks per U-Net level, e.g. 1 1 1")
    restore.add_argument("--init-from", dest="init_from", help="model.pt of a run with the same architecture")
    restore.add_argument(
        "--noise-map",
        dest="noise_map",
        action="store_true",
        help="non-blind: give the model the noise level (FFDNet's noise map), as the classical baselines get it",
    )
    restore.add_argument(
        "--sigma-range", dest="sigma_range", type=float, nargs=2, help="training noise levels, U[lo, hi] (0..255)"
    )
    restore.add_argument("--sigmas", type=float, nargs="+", help="noise levels on the 0..255 scale")
    restore.add_argument(
        "--self-ensemble",
        dest="self_ensemble",
        action="store_true",
        help="also report the model's x8 self-ensemble (8 rotations / flips averaged; Timofte et al. 2016)",
    )
    restore.add_argument("--threads", type=int, default=1)
    restore.set_defaults(func=_run_restore)

    cost = sub.add_parser("cost", help="FLOPs / saved activations / CPU time vs resolution, SSM vs attention")
    cost.add_argument("--mixers", nargs="+", default=["cross_scan", "spatial_mamba", "attention"])
    cost.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128])
    cost.add_argument("--width", type=int, default=16)
    cost.add_argument("--out", help="JSON file for the rows")
    cost.add_argument("--threads", type=int, default=1)
    cost.set_defaults(func=_run_cost)

    classify = sub.add_parser("classify", help="train the models of a preset on the same split and budget")
    classify.add_argument("--preset", required=True, help="e.g. pathfinder32_scan_vs_raster, digits_vit_hydra_2d")
    classify.add_argument("--out", required=True, help="run folder (results.json)")
    classify.add_argument("--only", nargs="+", help="train only these models of the preset")
    classify.add_argument("--steps", type=int)
    classify.add_argument("--n-images", dest="n_images", type=int)
    classify.add_argument("--seed", type=int)
    classify.add_argument("--cache", help=".pt file keeping the generated images between runs")
    classify.add_argument("--threads", type=int, default=1)
    classify.set_defaults(func=_run_classify)

    longvq = sub.add_parser("longvq", help="LongVQ (VQ-key attention memory) vs the plain SSM on a long task")
    longvq.add_argument("--preset", default="longvq_mqar", help="name in presets/vision or a YAML path")
    longvq.add_argument("--out", required=True, help="run folder (results.json)")
    longvq.add_argument("--steps", type=int)
    longvq.add_argument("--seed", type=int)
    longvq.add_argument("--aux-weight", dest="aux_weight", type=float, help="weight of the VQ loss (default 1)")
    longvq.add_argument("--threads", type=int, default=1)
    longvq.set_defaults(func=_run_longvq)

    mim = sub.add_parser("pretrain", help="MambaMIM masked pretraining (S6T / mask token), fine-tune with few labels")
    mim.add_argument("--preset", default="mim_digits", help="name in presets/vision or a YAML path")
    mim.add_argument("--out", required=True, help="run folder (results.json)")
    mim.add_argument("--arms", nargs="+", choices=("scratch", "s6t", "mask_token"))
    mim.add_argument("--pretrain-steps", dest="pretrain_steps", type=int)
    mim.add_argument("--finetune-steps", dest="finetune_steps", type=int)
    mim.add_argument("--label-fraction", dest="label_fraction", type=float)
    mim.add_argument("--n-images", dest="n_images", type=int, help="generated Pathfinder images (data: pathfinder)")
    mim.add_argument("--seed", type=int)
    mim.add_argument("--cache", help=".pt file keeping generated Pathfinder images between runs")
    mim.add_argument("--threads", type=int, default=1)
    mim.set_defaults(func=_run_pretrain)

    video = sub.add_parser("video", help="moving-digits clips: Selective S5 (token selection, LSMCL) vs S4, throughput")
    video.add_argument("--preset", default="video_moving_digits", help="name in presets/vision or a YAML path")
    video.add_argument("--out", required=True, help="run folder (results.json)")
    video.add_argument("--arms", nargs="+", choices=("s5", "s5_lsmcl", "s4_all"))
    video.add_argument("--frames", type=int, help="frames per clip")
    video.add_argument("--steps", type=int)
    video.add_argument("--pretrain-steps", dest="pretrain_steps", type=int)
    video.add_argument("--seed", type=int)
    video.add_argument("--data-dir", dest="data_dir", help="where the clip specs are cached")
    video.add_argument("--no-throughput", dest="no_throughput", action="store_true")
    video.add_argument("--threads", type=int, default=1)
    video.set_defaults(func=_run_video)
