"""Eigenvalues of LRU layers: at ring initialisation and in a trained checkpoint (pure functions).

The LRU's stable exponential parameterisation (Orvieto et al. 2023, "Resurrecting Recurrent Neural
Networks for Long Sequences", Sec. 3.3, Eq. 6):

    lambda = exp(-exp(nu_log) + i exp(theta_log)),   |lambda| = exp(-exp(nu_log)) < 1 always,

and the ring initialisation (Lemma 3.2): |lambda| uniform over the area of the ring
r_min <= |lambda| <= r_max, arg(lambda) ~ U[0, max_phase]. The article's figure uses r_min = 0.4,
r_max = 0.9; the paper restricts the phase to max_phase = pi/10 for PathX (Sec. 3.3, "initialization
of the phase") and uses r_min up to 0.9-0.999 on the long-range tasks (App. D, hyper-parameter tables).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from torchssm.layers.init import lru_ring_init

# The article's ring figure (shared/seeds/000, "Stable exponential parameterization").
ARTICLE_RING = {"r_min": 0.4, "r_max": 0.9, "max_phase": 2 * math.pi}


def lru_eigenvalues(nu_log: torch.Tensor, theta_log: torch.Tensor) -> torch.Tensor:
    """lambda = exp(-exp(nu_log) + i exp(theta_log)): (n,) real parameters -> (n,) complex128."""
    nu_log, theta_log = nu_log.detach().to(torch.float64), theta_log.detach().to(torch.float64)
    return torch.exp(torch.complex(-torch.exp(nu_log), torch.exp(theta_log)))


def ring_init_eigenvalues(
    n: int = 256, r_min: float = 0.4, r_max: float = 0.9, max_phase: float = 2 * math.pi, seed: int = 0
) -> torch.Tensor:
    """Eigenvalues (n,) complex128 drawn by the LRU ring init (:func:`torchssm.layers.init.lru_ring_init`)."""
    gen = torch.Generator().manual_seed(seed)
    nu_log, theta_log = lru_ring_init(n, r_min, r_max, max_phase, generator=gen, dtype=torch.float64)
    return lru_eigenvalues(nu_log, theta_log)


def load_model(path: str | os.PathLike) -> nn.Module:
    """:func:`torchssm.from_pretrained` on a model directory, or on a training run's ``best/`` (else ``last/``)."""
    import torchssm

    path = os.fspath(path)
    for sub in ("", "best", "last"):
        if os.path.exists(os.path.join(path, sub, "config.json")):
            return torchssm.from_pretrained(os.path.join(path, sub))
    raise FileNotFoundError(f"{path!r} has no config.json (nor best/ or last/ checkpoint): not a saved model")


def load_state_dict(source: str | os.PathLike | nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from a model, a mapping, a ``save_pretrained`` directory, a .safetensors or a torch file.

    Directories (a ``save_pretrained`` / checkpoint directory, or a training run directory, whose
    ``best/`` else ``last/`` is used) go through :func:`torchssm.from_pretrained`; torch files may wrap the state dict
    under "model" or "state_dict" (training checkpoints).
    """
    if isinstance(source, nn.Module):
        return dict(source.state_dict())
    if isinstance(source, Mapping):
        return dict(source)
    path = os.fspath(source)
    if os.path.isdir(path):
        return dict(load_model(path).state_dict())
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r} (expected a directory, .safetensors or torch file)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_state"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            return dict(data[key])
    if not isinstance(data, Mapping):
        raise ValueError(f"{path!r} does not hold a state dict (got {type(data).__name__})")
    return dict(data)


def checkpoint_eigenvalues(source) -> dict[str, torch.Tensor]:
    """{layer prefix: eigenvalues (n,) complex128} for every ``<prefix>nu_log`` / ``<prefix>theta_log`` pair."""
    state = load_state_dict(source)
    out = {}
    for key in sorted(state):
        if key.endswith("nu_log"):
            prefix = key[: -len("nu_log")]
            if prefix + "theta_log" in state:
                out[prefix.rstrip(".") or "lru"] = lru_eigenvalues(state[key], state[prefix + "theta_log"]).flatten()
    if not out:
        raise ValueError("no LRU eigenvalues found: the checkpoint has no '<prefix>nu_log' + '<prefix>theta_log' pair")
    return out


def training_checkpoint(run: str | os.PathLike) -> str | None:
    """A checkpoint directory written by ``torchssm train`` (it has the trainer sidecar) for ``run``:
    ``run`` itself, or a run directory's ``best/``, ``last/`` or newest ``checkpoints/epoch-*``; else None."""
    from torchssm.runs import SIDECAR, SNAPSHOTS, find_checkpoint

    found = find_checkpoint(run)
    if (found / SIDECAR).is_file():
        return os.fspath(found)
    snapshots = sorted(Path(run).glob(f"{SNAPSHOTS}/*/{SIDECAR}"))
    return os.fspath(snapshots[-1].parent) if snapshots else None


def training_state(run: str | os.PathLike) -> dict | None:
    """The trainer sidecar (config, epoch, step, metrics) of :func:`training_checkpoint` ``(run)``, or None."""
    from torchssm.train.checkpoint import read_checkpoint_state

    ckpt = training_checkpoint(run)
    return read_checkpoint_state(ckpt, verify=False) if ckpt is not None else None


def initial_model(run: str | os.PathLike) -> tuple[nn.Module, int]:
    """The model of a training run as it was before its first step, and the seed that made it.

    Rebuilt, not read: the checkpoint's ``config.json`` is the exact model config the training loop
    built (task sizes filled in), and the loop seeds with ``train.seed`` right before building the
    model (:func:`torchssm.train.loop.seed_everything`), so the same seed and builder give the same
    initial weights. The caller's random state is left as it was.
    """
    import random

    import numpy as np

    from torchssm.models import ModelConfig, build_model
    from torchssm.models.pretrained import load_config
    from torchssm.train.config import saved_config
    from torchssm.train.loop import seed_everything

    ckpt = training_checkpoint(run)
    if ckpt is None:
        raise FileNotFoundError(
            f"{os.fspath(run)!r} is not a `torchssm train` run or checkpoint (no "
            "trainer_state.json): its initial weights cannot be rebuilt"
        )
    model_dict = load_config(ckpt)
    if model_dict.get("model_type") != "deep_ssm":
        raise ValueError(
            f"initial weights can be rebuilt for the deep SSM model only, not model_type "
            f"{model_dict.get('model_type')!r}; pass the checkpoint saved before training instead"
        )
    config = ModelConfig.from_dict({k: v for k, v in model_dict.items() if k not in ("model_type", "torchssm_version")})
    seed = int((saved_config(training_state(ckpt)["config"]).get("train") or {}).get("seed", 0))
    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        seed_everything(seed)
        model = build_model(config)
    random.setstate(states[0])
    np.random.set_state(states[1])
    return model, seed


def initial_eigenvalues(run: str | os.PathLike) -> tuple[dict[str, torch.Tensor], int]:
    """({layer prefix: eigenvalues (n,) complex128} of a training run before its first step, train.seed)."""
    model, seed = initial_model(run)
    return checkpoint_eigenvalues(model), seed


def eigenvalue_summary(lam: torch.Tensor) -> dict[str, float]:
    """Magnitude and phase statistics of eigenvalues (n,) complex: the numbers printed next to a plot."""
    mag, phase = lam.abs(), lam.angle().abs()
    return {
        "n": int(lam.numel()),
        "min_abs": float(mag.min()),
        "max_abs": float(mag.max()),
        "mean_abs": float(mag.mean()),
        "max_abs_phase": float(phase.max()),
        # effective memory 1 / (1 - |lambda|): steps until a component decays by ~e
        "max_memory_steps": float(1.0 / (1.0 - mag.max()).clamp_min(1e-12)),
    }
