"""AdamW with parameter groups built from the layers' own optimizer conventions.

Every module may tag its parameters with ``optim_overrides = {path: {"lr_scale": f} | {"lr": f},
"weight_decay": f}`` (the one tagging mechanism, :mod:`torchssm.layers.tags`; a path names a direct
parameter or a submodule's, e.g. Mamba's ``"dt_proj.bias"``). This is how each paper's recipe is kept
without the optimizer knowing any layer, e.g. the LRU (Orvieto et al. 2023, as in its reference
code): ``nu_log, theta_log, gamma_log, B_re, B_im`` at ``lr * 0.5`` and no weight decay.

Parameters without an override: weight decay ``weight_decay`` for weights, none for biases and
for the affine parameters of normalisation layers (BatchNorm, LayerNorm, GroupNorm, RMSNorm),
the "no bias decay" rule of He et al. 2019 ("Bag of Tricks for Image Classification", Sec. 3.1),
also used by nanoGPT's ``configure_optimizers``: decaying a norm's scale or a bias does not
regularise the function, it only fights the normalisation.

Parameters with the same (lr, weight_decay) share one group; each group records the names of
its parameters under ``"names"`` (for logging and tests).
"""

from __future__ import annotations

import torch
from torch import nn

from torchssm.layers.tags import parameter_tags

NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _resolve(
    module: nn.Module, param_name: str, spec: dict | None, lr: float, weight_decay: float
) -> tuple[float, float]:
    """(lr, weight_decay) of ``module.<param_name>``: its tag ``spec``, else the default rule."""
    default_wd = 0.0 if (isinstance(module, NORM_TYPES) or param_name == "bias") else weight_decay
    if spec is None:
        return lr, default_wd
    p_lr = float(spec["lr"]) if "lr" in spec else lr * float(spec.get("lr_scale", 1.0))
    return p_lr, float(spec.get("weight_decay", default_wd))


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Parameter groups for ``torch.optim`` from the parameter tags and the no-decay rule above."""
    tags = parameter_tags(model)  # id(param) -> (name, spec); raises on a bad tag
    groups: dict[tuple[float, float], dict] = {}
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            spec = tags[id(param)][1] if id(param) in tags else None
            key = _resolve(module, param_name, spec, lr, weight_decay)
            group = groups.setdefault(key, {"params": [], "names": [], "lr": key[0], "weight_decay": key[1]})
            group["params"].append(param)
            group["names"].append(f"{module_name}.{param_name}" if module_name else param_name)
    # A stable order (by first appearance) keeps optimizer state dicts comparable across runs.
    return list(groups.values())


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) over :func:`param_groups`."""
    groups = param_groups(model, lr, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    b1, b2 = betas  # a YAML list or a tuple
    return torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay)
