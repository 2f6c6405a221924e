"""AdamW with parameter groups built from the layers' own optimizer conventions.

Every module may declare ``optim_overrides = {param_name: {"lr_scale": f} | {"lr": f},
"weight_decay": f}`` for its *direct* parameters (class or instance attribute; see
:class:`torchssm.layers.base.SSMLayer`). This is how each paper's recipe is kept without the
optimizer knowing any layer, e.g. the LRU (Orvieto et al. 2023, as in its reference code):
``nu_log, theta_log, gamma_log, B_re, B_im`` at ``lr * 0.5`` and no weight decay.

Parameters without an override: weight decay ``weight_decay`` for weights, none for biases and
for the affine parameters of normalisation layers (BatchNorm, LayerNorm, GroupNorm, RMSNorm),
the "no bias decay" rule of He et al. 2019 ("Bag of Tricks for Image Classification", Sec. 3.1),
also used by nanoGPT's ``configure_optimizers``: decaying a norm's scale or a bias does not
regularise the function, it only fights the normalisation.

Parameters with the same (lr, weight_decay) share one group; each group records the names of
its parameters under ``"names"`` (for logging and tests).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

NORM_TYPES: Tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

_OVERRIDE_KEYS = {"lr", "lr_scale", "weight_decay"}


def _resolve(module: nn.Module, module_name: str, param_name: str, lr: float, weight_decay: float) -> Tuple[float, float]:
    """(lr, weight_decay) of ``module.<param_name>``: the module's override, else the default rule."""
    default_wd = 0.0 if (isinstance(module, NORM_TYPES) or param_name == "bias") else weight_decay
    overrides = getattr(module, "optim_overrides", None) or {}
    spec = overrides.get(param_name)
    if spec is None:
        return lr, default_wd
    full = f"{module_name}.{param_name}" if module_name else param_name
    unknown = set(spec) - _OVERRIDE_KEYS
    if unknown:
        raise ValueError(f"optim_overrides[{param_name!r}] of {type(module).__name__} has unknown key(s) "
                         f"{sorted(unknown)}; expected some of {sorted(_OVERRIDE_KEYS)}")
    if "lr" in spec and "lr_scale" in spec:
        raise ValueError(f"optim_overrides for {full} sets both 'lr' and 'lr_scale'; use one")
    p_lr = float(spec["lr"]) if "lr" in spec else lr * float(spec.get("lr_scale", 1.0))
    return p_lr, float(spec.get("weight_decay", default_wd))


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> List[Dict]:
    """Parameter groups for ``torch.optim`` from ``optim_overrides`` and the no-decay rule above."""
    groups: Dict[Tuple[float, float], Dict] = {}
    seen = set()
    for module_name, module in model.named_modules():
        overrides = getattr(module, "optim_overrides", None) or {}
        own = dict(module.named_parameters(recurse=False))
        missing = sorted(set(overrides) - set(own))
        if missing:
            raise ValueError(f"{type(module).__name__}.optim_overrides names {missing}, which are not parameters "
                             f"of the module; its parameters are {sorted(own)}")
        for param_name, param in own.items():
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            key = _resolve(module, module_name, param_name, lr, weight_decay)
            group = groups.setdefault(key, {"params": [], "names": [], "lr": key[0], "weight_decay": key[1]})
            group["params"].append(param)
            group["names"].append(f"{module_name}.{param_name}" if module_name else param_name)
    # A stable order (by first appearance) keeps optimizer state dicts comparable across runs.
    return list(groups.values())


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0,
                    betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) over :func:`param_groups`."""
    groups = param_groups(model, lr, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
