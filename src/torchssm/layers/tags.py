"""Parameter tags: the one way a layer states its paper's per-parameter training conventions.

A module declares ``optim_overrides = {path: spec}`` (a class attribute, or set in ``__init__`` when it
depends on arguments), where ``path`` names one of its parameters relative to it, a direct one
(``"A_log"``) or a submodule's (``"dt_proj.bias"``), and ``spec`` holds some of:

    "lr": float            absolute learning rate (S4/S4D/DSS/S5: 1e-3 for the SSM parameters)
    "lr_scale": float      factor on the optimizer's learning rate (LRU: 0.5); not together with "lr"
    "weight_decay": float  (0.0 for A, B, dt and the like in every paper here)
    "reinit": False        a model-wide init (the LM's mamba_ssm init) leaves the parameter's own init
                           alone (Mamba's dt bias, an inverse softplus of the dt range)

Readers: :func:`torchssm.train.optim.param_groups` (lr, lr_scale, weight_decay) and
:class:`torchssm.models.lm.CausalLM`'s init (reinit), both through :func:`parameter_tags`. Nothing
is stored on the parameters themselves, so tags survive ``deepcopy``, ``.to()`` and wrappers.
"""

from __future__ import annotations

from typing import Any

from torch import nn

TAG_KEYS = ("lr", "lr_scale", "weight_decay", "reinit")


def _check_spec(module: nn.Module, path: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        raise TypeError(f"optim_overrides[{path!r}] of {type(module).__name__} must be a dict; got {spec!r}")
    unknown = set(spec) - set(TAG_KEYS)
    if unknown:
        raise ValueError(
            f"optim_overrides[{path!r}] of {type(module).__name__} has unknown key(s) "
            f"{sorted(unknown)}; expected some of {sorted(TAG_KEYS)}"
        )
    if "lr" in spec and "lr_scale" in spec:
        raise ValueError(f"optim_overrides for {type(module).__name__}.{path} sets both 'lr' and 'lr_scale'; use one")


def parameter_tags(model: nn.Module) -> dict[int, tuple[str, dict[str, Any]]]:
    """``id(parameter) -> (its name in model, its spec)`` for every parameter some module of ``model`` tags.

    Raises ValueError for a path that is not a parameter of its module, an unknown key, "lr" with
    "lr_scale", or two modules giving one parameter different specs.
    """
    tags: dict[int, tuple[str, dict[str, Any]]] = {}
    for module_name, module in model.named_modules():
        overrides = getattr(module, "optim_overrides", None) or {}
        if not overrides:
            continue
        own = dict(module.named_parameters(remove_duplicate=False))
        missing = sorted(set(overrides) - set(own))
        if missing:
            raise ValueError(
                f"{type(module).__name__}.optim_overrides names {missing}, which are not parameters "
                f"of the module; its parameters are {sorted(own)}"
            )
        for path, spec in overrides.items():
            _check_spec(module, path, spec)
            param = own[path]
            name = f"{module_name}.{path}" if module_name else path
            if id(param) in tags and tags[id(param)][1] != spec:
                raise ValueError(
                    f"parameter {name} is tagged twice with different specs: {tags[id(param)][1]} and {spec}"
                )
            tags.setdefault(id(param), (name, dict(spec)))
    return tags


__all__ = ["TAG_KEYS", "parameter_tags"]
