"""Export a torchssm Mamba / Mamba-2 language model as a Hugging Face ``MambaForCausalLM`` /
``Mamba2ForCausalLM`` directory (``config.json`` + ``model.safetensors`` [+ tokenizer files]).

    from torchssm.models.hf_export import save_hf
    save_hf(model, "out/")                                   # a CausalLM with layer "mamba" or "mamba2"
    transformers.AutoModelForCausalLM.from_pretrained("out/")  # same logits (tests/models/test_hf_export.py)

The inverse of :mod:`torchssm.models.convert`: parameter names are mamba_ssm's, which Hugging Face's Mamba
classes share, except ``backbone.embedding`` -> ``backbone.embeddings``; a tied head is left out of the
weights (``tie_word_embeddings`` ties it again on load). The embedding has ``padded_vocab_size`` rows, so
the exported ``vocab_size`` is the padded one (the extra logits are never sampled by our tokenizers).

What Hugging Face's classes cannot express is refused with a one-line ``ValueError``: any other layer,
LayerNorm blocks, a Mamba-2 gated-norm epsilon that differs from the block norms' (``layer_norm_epsilon``
is both there), and a whole-width gated norm with ``ngroups > 1`` (transformers normalises per group since
huggingface/transformers#40861, which the written ``transformers_version`` >= 4.57 tells our converter).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from torchssm.fileio import PathLike, atomic_write, atomic_write_text
from torchssm.models.lm import CausalLM

if TYPE_CHECKING:
    from torchssm.layers.mamba import Mamba
    from torchssm.layers.mamba2 import Mamba2

_GROUPED_NORM_VERSION = "4.57.0"  # the first transformers release with the group-wise Mamba-2 norm (convert.py)


def _transformers_version() -> str:
    try:
        import transformers

        version = transformers.__version__
    except ImportError:
        return _GROUPED_NORM_VERSION
    from torchssm.models.convert import _version

    return version if _version(version) >= _version(_GROUPED_NORM_VERSION) else _GROUPED_NORM_VERSION


def hf_config(model: CausalLM) -> dict:
    """The Hugging Face ``config.json`` dict of ``model`` (see the module docstring for what is refused)."""
    if not isinstance(model, CausalLM):
        raise TypeError(f"save_hf exports a torchssm CausalLM; got {type(model).__name__}")
    cfg = model.config
    if cfg.layer not in ("mamba", "mamba2"):
        raise ValueError(f"Hugging Face has Mamba and Mamba-2 language models only; this LM's layer is {cfg.layer!r}")
    if cfg.d_intermediate:
        raise ValueError(
            f"Hugging Face's Mamba / Mamba-2 models have no MLP; this LM has one (d_intermediate={cfg.d_intermediate})"
        )
    mixer = cast("Mamba | Mamba2", model.backbone.blocks()[0].mixer)  # cfg.layer, checked above
    eos = getattr(getattr(model, "tokenizer", None), "eos_token_id", None)
    common = {
        "vocab_size": cfg.padded_vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layer,
        "state_size": mixer.d_state,
        "expand": mixer.expand,
        "conv_kernel": mixer.d_conv,
        "use_bias": mixer.in_proj.bias is not None,
        "use_conv_bias": mixer.conv1d.bias is not None,
        "layer_norm_epsilon": cfg.norm_eps,
        "residual_in_fp32": cfg.residual_in_fp32,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "use_cache": True,
        "bos_token_id": eos if eos is not None else 0,
        "eos_token_id": eos if eos is not None else 0,
        "pad_token_id": eos if eos is not None else 0,
        "transformers_version": _transformers_version(),
    }
    if cfg.layer == "mamba":
        return {
            "architectures": ["MambaForCausalLM"],
            "model_type": "mamba",
            **common,
            "intermediate_size": mixer.d_inner,
            "time_step_rank": mixer.dt_rank,
        }
    mixer = cast("Mamba2", mixer)
    norm = mixer.norm
    if norm.eps != cfg.norm_eps:
        raise ValueError(
            f"the Mamba-2 gated norm's eps ({norm.eps}) differs from the block norms' ({cfg.norm_eps}); "
            f"Hugging Face's Mamba2 uses layer_norm_epsilon for both"
        )
    if norm.group_size != mixer.d_inner // mixer.ngroups and mixer.ngroups > 1:
        raise ValueError(
            f"a whole-width gated norm with ngroups={mixer.ngroups} > 1 cannot be exported: "
            f"transformers >= 4.57 normalises each of the n_groups groups"
        )
    if norm.norm_before_gate:
        raise ValueError("norm_before_gate=True has no Hugging Face Mamba2 equivalent")
    return {
        "architectures": ["Mamba2ForCausalLM"],
        "model_type": "mamba2",
        **common,
        "num_heads": mixer.nheads,
        "head_dim": mixer.headdim,
        "n_groups": mixer.ngroups,
        "chunk_size": mixer.chunk_size,
        "rms_norm": True,
        "time_step_limit": [0.0, float("inf")],
        "time_step_rank": max(1, cfg.d_model // 16),
    }  # unused by the Mamba2 mixer, written as transformers does


def hf_state_dict(model: CausalLM) -> dict:
    """Our parameter names -> Hugging Face's (contiguous CPU tensors; the tied head left out)."""
    out = {}
    for key, value in model.state_dict().items():
        if key == "lm_head.weight" and model.config.tie_embeddings:
            continue
        out[key.replace("backbone.embedding.", "backbone.embeddings.")] = value.detach().cpu().contiguous()
    return out


def save_hf(model: CausalLM, path: PathLike) -> Path:
    """Write ``path/config.json`` and ``path/model.safetensors`` (atomically; and the tokenizer's files)."""
    from safetensors.torch import save_file

    config = hf_config(model)
    state = hf_state_dict(model)
    dtypes = {v.dtype for v in state.values()}
    config["torch_dtype"] = str(next(iter(dtypes))).removeprefix("torch.") if len(dtypes) == 1 else "float32"
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write(out / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write_text(out / "config.json", text)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save(out)
    return out


def export_hf_command(args) -> int:
    """``torchssm export-hf CHECKPOINT OUT``."""
    import torchssm

    model = torchssm.from_pretrained(args.checkpoint, dtype=torch.float32)
    save_hf(model, args.out)
    print(f"wrote a Hugging Face {hf_config(model)['architectures'][0]} directory to {args.out}")
    return 0
