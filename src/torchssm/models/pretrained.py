"""Save and load trained models the ecosystem's way: a directory with ``config.json`` + ``model.safetensors``.

    model.save_pretrained("runs/mnist1d")          # any model with PretrainedMixin
    model = torchssm.from_pretrained("runs/mnist1d")

``config.json`` is the model's config dict plus ``"model_type"``; the type names a builder
``fn(config_dict) -> nn.Module``. Builders are registered with :func:`register_model_type`
(lazily, by module path), and a type ``t`` not registered is looked up by importing
``torchssm.models.t`` (that module calls ``register_model_type`` on import). Both files are written
atomically (temporary file in the same directory, then ``os.replace``).

Checkpoints of other libraries (e.g. mamba_ssm / Hugging Face Mamba directories) load through
converters that register themselves with :func:`register_converter` (``torchssm.models.convert``
does on import; ``torchssm.models`` imports it), so this module imports no converter.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
from torch import nn

from torchssm.fileio import PathLike, atomic_write

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_META_KEYS = ("model_type", "torchssm_version")

# model_type -> (module, function name) of a builder fn(config_dict) -> nn.Module
_MODEL_TYPES: dict[str, tuple[str, str]] = {
    "deep_ssm": ("torchssm.models.backbone", "build_model_from_dict"),
}


# converters of other libraries' checkpoint directories: (detect(path) -> format name or None, load)
_CONVERTERS: list[tuple[Callable[[PathLike], str | None], Callable[..., nn.Module]]] = []


def register_converter(detect: Callable[[PathLike], str | None], load: Callable[..., nn.Module]) -> None:
    """Let :func:`from_pretrained` load directories for which ``detect(path)`` names a format, by
    ``load(path, device=...)``."""
    if (detect, load) not in _CONVERTERS:
        _CONVERTERS.append((detect, load))


def register_model_type(model_type: str, module: str, builder: str) -> None:
    """Register ``module.builder(config_dict) -> nn.Module`` for configs whose model_type is ``model_type``."""
    _MODEL_TYPES[model_type] = (module, builder)


def _get_builder(model_type: str) -> Callable[[dict], nn.Module]:
    if model_type not in _MODEL_TYPES and re.fullmatch(r"[a-z_][a-z0-9_]*", model_type or ""):
        try:  # convention: torchssm.models.<model_type> registers itself on import
            importlib.import_module(f"torchssm.models.{model_type}")
        except ModuleNotFoundError:
            pass
    if model_type not in _MODEL_TYPES:
        raise ValueError(
            f"unknown model_type {model_type!r} in {CONFIG_NAME}; expected one of "
            f"{sorted(_MODEL_TYPES)} (register others with register_model_type)"
        )
    module, name = _MODEL_TYPES[model_type]
    return getattr(importlib.import_module(module), name)


def save_pretrained(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``config.json`` (``model.config.to_dict()`` + model_type) and ``model.safetensors`` into ``path``
    (and ``model.tokenizer``'s files, e.g. ``tokenizer.json``, when the model carries a tokenizer)."""
    from safetensors.torch import save_model

    from torchssm import __version__

    model_type = getattr(model, "model_type", None)
    config = getattr(model, "config", None)
    if model_type is None or config is None or not hasattr(config, "to_dict"):
        raise TypeError(f"{type(model).__name__} needs a `model_type` and a `config` with to_dict() to be saved")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model_type": model_type, "torchssm_version": __version__, **config.to_dict()}
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"

    def write_config(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(out / CONFIG_NAME, write_config)
    # save_model drops duplicates of shared tensors (tied embeddings) that safetensors cannot store
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_model(model, tmp, metadata={"model_type": model_type}))
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:  # a language model's tokenizer travels with it (tokenizer.json for BPE)
        tokenizer.save(out)
    return out


def load_config(path: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a saved model directory (with its "model_type")."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {str(path)!r}: expected a directory written by save_pretrained")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON (corrupt config): {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError(f"{file} must be a JSON object with a string 'model_type'")
    return data


LAYOUTS = (
    "a torchssm directory (config.json with model_type + model.safetensors, written by save_pretrained "
    "or torchssm train)",
    "a Hugging Face MambaForCausalLM / Mamba2ForCausalLM directory (config.json with model_type 'mamba' / "
    "'mamba2' + model.safetensors [.index.json] or pytorch_model.bin)",
    "a mamba_ssm checkpoint directory (config.json with d_model, n_layer, ssm_cfg + pytorch_model.bin)",
)


def _check_directory(path) -> None:
    """A one-line error naming the accepted layouts when ``path`` is no local directory (e.g. a hub id)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return
    if p.exists():
        why = f"{str(path)!r} is a file, not a model directory"
    elif re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", str(path)):
        why = (
            f"{str(path)!r} is not a local directory (a Hugging Face hub id? torchssm downloads nothing: "
            f"download it first, e.g. `huggingface-cli download {path} --local-dir DIR`, and pass DIR)"
        )
    else:
        why = f"no directory {str(path)!r}"
    raise FileNotFoundError(why + "; expected one of: " + "; ".join(LAYOUTS))


def load_generation_config(path: str | os.PathLike) -> dict:
    """``{"eos_token_id": ..., "pad_token_id": ...}`` of a checkpoint directory: ``generation_config.json``
    (Hugging Face) first, then ``config.json``; keys absent or null are left out."""
    found: dict = {}
    for name in ("config.json", "generation_config.json"):  # the latter wins, as in transformers
        f = Path(path) / name
        if f.is_file():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as err:
                raise ValueError(f"{f} is not valid JSON: {err}") from None
            found.update({k: data[k] for k in ("eos_token_id", "pad_token_id") if data.get(k) is not None})
    return found


def _attach_tokenizer(model: nn.Module, path) -> None:
    """``model.tokenizer``: the directory's tokenizer.json (+ tokenizer_config.json), or bytes for vocab 256."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is None and not (Path(path) / "tokenizer.json").is_file():
        return
    from torchssm.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(path, vocab)
    if tokenizer is not None and vocab is not None and tokenizer.vocab_size > vocab:
        raise ValueError(
            f"{path}/tokenizer.json has {tokenizer.vocab_size} tokens but the model's vocabulary "
            f"has {vocab}: the tokenizer does not belong to this model"
        )
    model.tokenizer = tokenizer


def _attach_generation_config(model: nn.Module, path: str | os.PathLike) -> None:
    """A language model's ``eos_token_id`` / ``pad_token_id`` from the directory (:func:`load_generation_config`)."""
    if hasattr(model, "special_tokens"):
        for key, value in load_generation_config(path).items():
            setattr(model, key, value)


def from_pretrained(
    path: str | os.PathLike, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> nn.Module:
    """Rebuild the model saved in ``path`` and load its weights (strict: every tensor must match), in eval mode.

    ``path``: one of :data:`LAYOUTS` (other libraries' directories go through the registered converters).
    ``device`` / ``dtype``: where and in which floating dtype the weights end up (default: as saved, on the
    CPU; converted checkpoints default to float32). A language model gets ``model.tokenizer``: the
    directory's ``tokenizer.json`` (with ``tokenizer_config.json``'s eos token) when present, the byte
    tokenizer for a 256-token vocabulary, else None; and ``eos_token_id`` / ``pad_token_id`` from the
    directory's ``generation_config.json`` / ``config.json`` when they name them.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    _check_directory(path)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype (e.g. torch.float32); got {dtype!r}")
    for detect, load in _CONVERTERS:  # e.g. a mamba_ssm / Hugging Face Mamba(2) checkpoint: convert on load
        if detect(path) is not None:
            model = load(path, device=device, dtype=dtype or torch.float32)
            _attach_tokenizer(model, path)
            _attach_generation_config(model, path)
            return model
    data = load_config(path)
    builder = _get_builder(data["model_type"])
    config = {k: v for k, v in data.items() if k not in _META_KEYS}
    model = builder(config)
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {str(path)!r}: expected a directory written by save_pretrained")
    try:
        missing, unexpected = load_model(model, weights, strict=False)
    except SafetensorError as err:
        raise ValueError(f"{weights} is not a valid safetensors file (corrupt or truncated): {err}") from err
    except RuntimeError as err:  # shape mismatch
        raise ValueError(f"{CONFIG_NAME} does not match the weights in {weights}: {err}") from err
    if missing or unexpected:
        raise ValueError(
            f"{CONFIG_NAME} does not match the weights in {weights}: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    model.eval()
    _attach_tokenizer(model, path)
    _attach_generation_config(model, path)
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device) if device is not None else model


class PretrainedMixin:
    """Adds ``save_pretrained(dir)`` to a model with ``model_type`` and ``config`` (with ``to_dict``)."""

    model_type: str = ""

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        return save_pretrained(cast(nn.Module, self), path)  # mixed into nn.Module subclasses only
