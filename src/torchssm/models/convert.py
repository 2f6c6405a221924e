"""Load published Mamba / Mamba-2 language models: a ``mamba_ssm`` checkpoint directory
(``config.json`` with ``d_model``/``n_layer``/``ssm_cfg``, weights ``pytorch_model.bin`` or
``model.safetensors``) or a Hugging Face ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` directory
(``config.json`` with ``model_type`` "mamba" / "mamba2", ``model.safetensors`` possibly sharded with
``model.safetensors.index.json``, or ``pytorch_model.bin``) -> :class:`torchssm.models.lm.CausalLM`.

    model = torchssm.from_pretrained("path/to/mamba-130m")          # recognised automatically
    model = torchssm.models.convert.load_converted("path/to/dir")   # the same, explicitly

Parameter names: our LM uses mamba_ssm's module names, so only ``backbone.embeddings`` (Hugging Face)
is renamed to ``backbone.embedding``, and a tied ``lm_head.weight`` is dropped. Mixer parameters have the
same names and shapes in all three (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj; Mamba-2 adds
dt_bias and norm).

The one behavioural difference: Mamba-2's gated RMSNorm. mamba_ssm normalises each of the n_groups
groups of channels separately (``group_size = d_inner / ngroups``); Hugging Face's ``Mamba2`` normalised
over the whole width until huggingface/transformers#40861 ("Support n_groups>1 for mamba2", 2025) made it
group-wise. ``mamba2_norm="auto"`` uses group-wise for mamba_ssm checkpoints and for Hugging Face
checkpoints saved by transformers >= 4.57, whole-width for older ones; pass "grouped" or "whole" to force.
With ngroups = 1 the two are identical.

Config encodings accepted (fixtures in tests/models/fixtures/hf_configs/): transformers 4.39 (the first
Mamba: ``intermediate_size``, ``time_step_rank``), 4.44 (the first Mamba-2: ``time_step_limit`` written as
``[0.0, Infinity]``) and 5.x (non-finite floats written as ``{"__float__": "Infinity"}``). The inverse,
torchssm -> Hugging Face, is :mod:`torchssm.models.hf_export`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from torchssm.fileio import PathLike
from torchssm.models.lm import CausalLM, LMConfig
from torchssm.models.pretrained import register_converter

_HF_GROUPED_NORM_SINCE = (4, 57)  # first transformers release assumed to carry PR #40861


def _read_config(path: PathLike) -> dict | None:
    file = Path(path) / "config.json"
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def detect_format(path: PathLike) -> str | None:
    """ "hf_mamba", "hf_mamba2", "mamba_ssm" or None (not a Mamba checkpoint directory)."""
    cfg = _read_config(path)
    if cfg is None:
        return None
    if cfg.get("model_type") in ("mamba", "mamba2") and "hidden_size" in cfg:
        return "hf_" + cfg["model_type"]
    if "model_type" not in cfg and "d_model" in cfg and "n_layer" in cfg:
        return "mamba_ssm"
    return None


def _version(text: str) -> tuple:
    parts = []
    for p in str(text).split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _json_float(value) -> float:
    """A float as transformers writes it in config.json: a number, ``Infinity`` (read by ``json`` as inf),
    ``"inf"``/``"Infinity"`` strings, or transformers 5.x's ``{"__float__": "Infinity"}`` for non-finite values."""
    if isinstance(value, dict) and set(value) == {"__float__"}:
        value = value["__float__"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # "inf", "Infinity", "-Infinity", "nan", "1e-3"
        except ValueError:
            pass
    raise ValueError(f"expected a number in config.json, got {value!r}")


def lm_config_from(path: PathLike, mamba2_norm: str = "auto") -> LMConfig:
    """Translate the checkpoint's config.json into an :class:`LMConfig` (unsupported options raise)."""
    fmt = detect_format(path)
    if fmt is None:
        raise ValueError(f"{str(path)!r} is not a mamba_ssm or Hugging Face Mamba/Mamba2 checkpoint directory")
    if mamba2_norm not in ("auto", "grouped", "whole"):
        raise ValueError(f"mamba2_norm must be 'auto', 'grouped' or 'whole'; got {mamba2_norm!r}")
    cfg = _read_config(path)
    if cfg is None:  # detect_format has just read it
        raise ValueError(f"{str(path)!r}: config.json could not be read")
    if fmt == "mamba_ssm":
        ssm = dict(cfg.get("ssm_cfg") or {})
        layer = {"Mamba1": "mamba", "Mamba2": "mamba2"}.get(ssm.pop("layer", "Mamba1"))
        if layer is None:
            raise ValueError(f"unsupported ssm_cfg.layer in {path}/config.json (expected Mamba1 or Mamba2)")
        if cfg.get("attn_layer_idx"):
            raise ValueError("hybrid checkpoints (attention layers, attn_layer_idx) are not supported")
        d_intermediate = int(cfg.get("d_intermediate", 0) or 0)
        if d_intermediate:  # mamba_ssm's GatedMLP rounds its width up to a multiple of 128 (modules/mlp.py)
            d_intermediate = -(-d_intermediate // 128) * 128
        if not cfg.get("rms_norm", True):
            raise ValueError("checkpoints with LayerNorm (rms_norm=false) are not supported; Mamba models use RMSNorm")
        for key, ok in (("D_has_hdim", False), ("norm_before_gate", False), ("rmsnorm", True), ("d_ssm", None)):
            if key in ssm and ssm.pop(key) != ok:
                raise ValueError(f"ssm_cfg.{key} != {ok!r} is not supported")
        dt_limit = tuple(_json_float(v) for v in ssm.pop("dt_limit", (0.0, float("inf"))))
        if dt_limit != (0.0, float("inf")):
            raise ValueError(f"ssm_cfg.dt_limit={dt_limit} (dt clamping) is not supported")
        for key in ("use_mem_eff_path", "dt_init", "activation", "layer_idx", "process_group", "sequence_parallel"):
            ssm.pop(key, None)
        if layer == "mamba2":
            if mamba2_norm == "whole":
                d_inner = ssm.get("expand", 2) * cfg["d_model"]
                ssm["norm_group_size"] = d_inner
        return LMConfig(
            layer=layer,
            d_model=cfg["d_model"],
            n_layer=cfg["n_layer"],
            vocab_size=cfg["vocab_size"],
            layer_kwargs=ssm,
            pad_vocab_size_multiple=cfg.get("pad_vocab_size_multiple", 8),
            residual_in_fp32=cfg.get("residual_in_fp32", True),
            tie_embeddings=cfg.get("tie_embeddings", True),
            norm_eps=1e-5,
            d_intermediate=d_intermediate,
        )
    h = cfg["hidden_size"]
    common = dict(
        d_model=h,
        n_layer=cfg["num_hidden_layers"],
        vocab_size=cfg["vocab_size"],
        pad_vocab_size_multiple=1,
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
        residual_in_fp32=cfg.get("residual_in_fp32", True),
        tie_embeddings=cfg.get("tie_word_embeddings", fmt == "hf_mamba"),
    )
    if fmt == "hf_mamba":
        d_inner = cfg.get("intermediate_size", cfg.get("expand", 2) * h)
        if d_inner % h:
            raise ValueError(f"intermediate_size={d_inner} must be a multiple of hidden_size={h}")
        rank = cfg.get("time_step_rank", "auto")
        kw = dict(
            d_state=cfg.get("state_size", 16),
            d_conv=cfg.get("conv_kernel", 4),
            expand=d_inner // h,
            dt_rank=math.ceil(h / 16) if rank == "auto" else int(rank),
            conv_bias=cfg.get("use_conv_bias", True),
            bias=cfg.get("use_bias", False),
        )
        return LMConfig(layer="mamba", layer_kwargs=kw, **common)
    limit = tuple(_json_float(v) for v in cfg.get("time_step_limit", (0.0, float("inf"))))
    if limit != (0.0, float("inf")):
        raise ValueError(f"time_step_limit={limit} (dt clamping) is not supported")
    expand = cfg.get("expand", 2)
    heads, headdim = cfg.get("num_heads"), cfg.get("head_dim", 64)
    if heads is not None and heads * headdim != expand * h:
        raise ValueError(f"num_heads * head_dim = {heads * headdim} must equal expand * hidden_size = {expand * h}")
    if not cfg.get("rms_norm", True):
        raise ValueError("Mamba2 checkpoints without the gated RMSNorm (rms_norm=false) are not supported")
    kw = dict(
        d_state=cfg.get("state_size", 128),
        d_conv=cfg.get("conv_kernel", 4),
        expand=expand,
        headdim=headdim,
        ngroups=cfg.get("n_groups", 1),
        chunk_size=cfg.get("chunk_size", 256),
        conv_bias=cfg.get("use_conv_bias", True),
        bias=cfg.get("use_bias", False),
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
    )
    grouped = mamba2_norm == "grouped" or (
        mamba2_norm == "auto" and _version(cfg.get("transformers_version", "0")) >= _HF_GROUPED_NORM_SINCE
    )
    if not grouped:
        kw["norm_group_size"] = expand * h
    return LMConfig(layer="mamba2", layer_kwargs=kw, **common)


def load_state_dict(path: PathLike) -> dict:
    """All tensors of the checkpoint (safetensors, sharded safetensors, or pytorch_model.bin)."""
    from safetensors.torch import load_file

    p = Path(path)
    if (p / "model.safetensors").is_file():
        return load_file(p / "model.safetensors")
    index = p / "model.safetensors.index.json"
    if index.is_file():
        out = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            out.update(load_file(p / shard))
        return out
    if (p / "pytorch_model.bin").is_file():
        return torch.load(p / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model.safetensors, model.safetensors.index.json or pytorch_model.bin in {str(p)!r}")


def convert_state_dict(sd: dict, config: LMConfig) -> dict:
    """Rename a mamba_ssm / Hugging Face state dict to ours (see the module docstring)."""
    out = {}
    for key, value in sd.items():
        key = key.replace("backbone.embeddings.", "backbone.embedding.")
        if key == "lm_head.weight" and config.tie_embeddings:
            continue
        out[key] = value
    return out


def load_converted(
    path: PathLike, *, device=None, dtype: torch.dtype = torch.float32, mamba2_norm: str = "auto"
) -> CausalLM:
    """Build our :class:`CausalLM` from a mamba_ssm / Hugging Face checkpoint directory (eval mode)."""
    config = lm_config_from(path, mamba2_norm)
    with torch.device("meta"):
        model = CausalLM(config)
    sd = {k: v.to(dtype) for k, v in convert_state_dict(load_state_dict(path), config).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.backbone.embedding.weight
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match the converted config: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    model.eval()
    return model.to(device) if device is not None else model


register_converter(detect_format, load_converted)  # torchssm.from_pretrained loads these directories too
