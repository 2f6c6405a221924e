"""``torchssm tokenizer train``, ``torchssm lm eval`` and ``torchssm lm export-hf``.

    torchssm tokenizer train --files "docs/**/*.md" --vocab-size 4096 --out tok/   # default: the stdlib source
    torchssm lm eval runs/lm/stdlib_mamba/best --context-factor 4 --rows 32         # bpb, ppl by position
    torchssm lm export-hf runs/lm/stdlib_mamba/best hf_out/                          # transformers can load it
    torchssm lm plot runs/a/best/lm_eval.json runs/b/best/lm_eval.json --out ppl.png # perplexity by position

``lm eval`` rebuilds the run's ``lm_text`` task from the config in its checkpoint (its own corpus, split and
tokenizer) with validation rows of ``context-factor`` x the training context, scores them in one parallel
pass per batch, and writes ``lm_eval.json`` beside the checkpoint (atomically; with the loss at every
position, which ``lm plot`` draws); SeqBoat layers add their activation rates.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _run_tokenizer_train(args) -> int:
    from torchssm.data.text import find_files
    from torchssm.models.tokenizer import train_bpe

    files, root = find_files(args.files)
    tok = train_bpe(files, args.vocab_size, min_frequency=args.min_frequency, show_progress=sys.stderr.isatty())
    tok.save(args.out)
    print(
        f"trained a byte-level BPE tokenizer of {tok.vocab_size} tokens on {len(files)} files under {root}; "
        f"wrote {Path(args.out) / 'tokenizer.json'}"
    )
    return 0


def run_lm_eval(args) -> int:
    import torch

    import torchssm
    from torchssm.data.registry import build_task
    from torchssm.lm.evaluate import loss_by_position, summarize
    from torchssm.models.hybrid import activation_rates
    from torchssm.train.reload import read_run_config

    torch.set_num_threads(args.threads)
    checkpoint, _, config = read_run_config(args.checkpoint)  # the config in the checkpoint's sidecar
    if config.task_name != "lm_text":
        raise ValueError(f"lm eval needs an lm_text run; {checkpoint} trained task {config.task_name!r}")
    task_cfg = dict(config.task_options)
    context = int(task_cfg.get("context", 512))
    task_cfg.update(eval_context=context * args.context_factor, eval_rows=args.rows)
    task = build_task(config.task_name, data_dir=args.data_dir, **task_cfg)
    split = task.val if args.split == "val" else task.test
    model = torchssm.from_pretrained(checkpoint, device=args.device)
    curve = loss_by_position(model, split, args.batch_size, args.device)
    out = summarize(curve, context, split.bytes_per_token)
    out.update(split=args.split, rows=len(split), checkpoint=str(checkpoint), activation_rates=activation_rates(model))
    out["loss_by_position"] = [round(float(v), 5) for v in curve]  # nats, for `torchssm lm plot`
    text = json.dumps(out, indent=1)
    from torchssm.fileio import atomic_write_text

    atomic_write_text(checkpoint / "lm_eval.json", text)
    print(
        f"{args.split}: bits/byte {out['bpb']:.4f} within the training context ({context}), "
        f"{out['bpb_all']:.4f} over {out['eval_context']} positions; perplexity by position:"
    )
    for b in out["by_position"]:
        print(f"  [{b['from']:>6}, {b['to']:>6})  ppl {b['ppl']:8.3f}  bpb {b['bpb']:.4f}")
    for layer, rate in out["activation_rates"].items():
        print(f"  SeqBoat {layer}: attention active on {100 * rate:.1f}% of steps")
    return 0


def _run_lm_plot(args) -> int:
    from torchssm.analysis.plots import plot_perplexity_by_position

    records = []
    for i, path in enumerate(args.evals):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; give lm_eval.json files written by `torchssm lm eval`")
        rec = json.loads(path.read_text())
        rec["label"] = args.labels[i] if args.labels and i < len(args.labels) else path.parent.parent.name
        records.append(rec)
    res = plot_perplexity_by_position(args.out, records, bucket=args.bucket)
    print(f"wrote {res['path']}")
    return 0


def register(subparsers) -> None:
    t = subparsers.add_parser("tokenizer", help="train a byte-level BPE tokenizer (tokenizer.json)")
    tsub = t.add_subparsers(dest="tokenizer_command", metavar="COMMAND", required=True)
    tr = tsub.add_parser("train", help="train on text files (default: the Python stdlib source)")
    tr.add_argument("--files", nargs="*", default=None, help="folders, files or globs (default: the stdlib .py files)")
    tr.add_argument("--vocab-size", type=int, default=4096)
    tr.add_argument("--min-frequency", type=int, default=2)
    tr.add_argument("--out", required=True, help="directory for tokenizer.json and tokenizer_config.json")
    tr.set_defaults(func=_run_tokenizer_train)

    lm = subparsers.add_parser("lm", help="language-model evaluation (bits per byte, perplexity by position)")
    lsub = lm.add_subparsers(dest="lm_command", metavar="COMMAND", required=True)
    ev = lsub.add_parser("eval", help="evaluate an lm_text checkpoint at longer contexts")
    ev.add_argument("checkpoint", help="a checkpoint directory of an lm_text run (e.g. runs/x/best)")
    ev.add_argument("--context-factor", type=int, default=4, help="evaluation rows = this x the training context")
    ev.add_argument("--rows", type=int, default=32, help="validation rows scored (0: all)")
    ev.add_argument("--split", choices=("val", "test"), default="val")
    ev.add_argument("--batch-size", type=int, default=4)
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--threads", type=int, default=1)
    ev.set_defaults(func=run_lm_eval)
    pl = lsub.add_parser("plot", help="perplexity by position of lm_eval.json files, one line per model")
    pl.add_argument("evals", nargs="+", help="lm_eval.json files (torchssm lm eval)")
    pl.add_argument("--out", required=True, help="figure path (.png, .svg or .pdf)")
    pl.add_argument("--labels", nargs="*", default=None, help="line labels (default: the run folder names)")
    pl.add_argument("--bucket", type=int, default=64, help="positions averaged per point")
    pl.set_defaults(func=_run_lm_plot)
    ex = lsub.add_parser(
        "export-hf", help="save a Mamba / Mamba-2 LM as a Hugging Face MambaForCausalLM / Mamba2ForCausalLM directory"
    )
    ex.add_argument("checkpoint", help="a torchssm LM directory (save_pretrained / torchssm train checkpoint)")
    ex.add_argument("out", help="the Hugging Face directory to write")
    ex.set_defaults(func=_run_export_hf)


def _run_export_hf(args) -> int:
    from torchssm.models.hf_export import export_hf_command

    return export_hf_command(args)
