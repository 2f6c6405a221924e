"""``torchssm generate``: stream text from a saved language model.

    torchssm generate --checkpoint runs/lm --prompt "Once upon a time" --max-new-tokens 200 \\
        --temperature 0.8 --top-k 40

``--checkpoint`` is a directory written by ``CausalLM.save_pretrained`` (or a mamba_ssm / Hugging Face
Mamba checkpoint directory, converted on load by ``torchssm.from_pretrained``). Tokens are printed as
they are produced (byte-level tokenizer unless the checkpoint is a converted one, whose ids are
printed as numbers).
"""

from __future__ import annotations

import sys

import torch


def add_generate_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="model directory (config.json + weights)")
    p.add_argument("--prompt", required=True, help="prompt text (byte-level tokens)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def run_generate(args, out=None) -> int:
    from torchssm import from_pretrained
    from torchssm.models.tokenizer import ByteTokenizer

    out = out or sys.stdout
    model = from_pretrained(args.checkpoint, device=args.device)
    if not hasattr(model, "generate_stream"):
        raise ValueError(f"{args.checkpoint} holds a {type(model).__name__}, not a language model")
    tok = ByteTokenizer()
    if not args.prompt:
        raise ValueError("--prompt is empty; give at least one character")
    byte_level = model.config.vocab_size == tok.vocab_size
    ids = torch.tensor([tok.encode(args.prompt)], dtype=torch.long)
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    decode = tok.stream_decoder()
    out.write(args.prompt)
    for t in model.generate_stream(ids, args.max_new_tokens, args.temperature, args.top_k, args.top_p, generator=gen):
        out.write(decode(int(t[0])) if byte_level else f" {int(t[0])}")
        out.flush()
    out.write("\n")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="stream tokens from a saved language model")
    add_generate_arguments(p)
    p.set_defaults(func=run_generate)
