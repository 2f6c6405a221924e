"""``torchssm generate``: stream text from a saved language model.

    torchssm generate --checkpoint runs/lm --prompt "Once upon a time" --max-new-tokens 200 \\
        --temperature 0.8 --top-k 40

``--checkpoint`` is a directory written by ``CausalLM.save_pretrained`` (or a mamba_ssm / Hugging Face
Mamba checkpoint directory, converted on load by ``torchssm.from_pretrained``). The prompt is encoded with
the checkpoint's tokenizer (``tokenizer.json`` when present, bytes for a 256-token vocabulary); a model
whose vocabulary is not bytes and that has no tokenizer is refused (its ids are not UTF-8 bytes). Text
is printed as it is produced. Decoding: greedy by default (``--temperature 0``); the stream stops at the
checkpoint's ``eos_token_id`` (``generation_config.json`` / ``config.json``, else the tokenizer's). See
docs/generation.md.
"""

from __future__ import annotations

import sys

import torch


def add_generate_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="model directory (config.json + weights [+ tokenizer.json])")
    p.add_argument("--prompt", required=True, help="prompt text (encoded with the checkpoint's tokenizer)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--ignore-eos", action="store_true", help="generate --max-new-tokens even after an eos token")
    p.add_argument("--compile", action="store_true", help="torch.compile the per-token step (slow first call)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def run_generate(args, out=None) -> int:
    from torchssm import from_pretrained

    out = out or sys.stdout
    model = from_pretrained(args.checkpoint, device=args.device)
    if not hasattr(model, "generate_stream"):
        raise ValueError(f"{args.checkpoint} holds a {type(model).__name__}, not a language model")
    if not args.prompt:
        raise ValueError("--prompt is empty; give at least one character")
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError(
            f"{args.checkpoint} has no tokenizer.json and its vocabulary ({model.config.vocab_size} "
            f"tokens) is not bytes (256): put the model's tokenizer.json in the directory to "
            f"encode the prompt"
        )
    ids = torch.tensor([tok.encode(args.prompt)], dtype=torch.long)
    if ids.shape[1] == 0:
        raise ValueError(f"--prompt {args.prompt!r} encodes to no tokens")
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    decode = tok.stream_decoder()
    eos_ids = set(model.special_tokens()[0])
    out.write(args.prompt)
    for t in model.generate_stream(
        ids,
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.top_p,
        generator=gen,
        ignore_eos=getattr(args, "ignore_eos", False),
        compile=getattr(args, "compile", False),
    ):
        if int(t[0]) in eos_ids:  # the end-of-text token is not printed
            break
        out.write(decode(int(t[0])))
        out.flush()
    out.write("\n")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="stream text from a saved language model")
    add_generate_arguments(p)
    p.set_defaults(func=run_generate)
