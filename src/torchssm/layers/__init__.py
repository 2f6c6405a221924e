"""Sequence-mixing layers. Classes are importable lazily: ``from torchssm.layers import LRU``."""

from torchssm.layers.base import SSMLayer
from torchssm.layers.registry import available_layers, build_layer, get_layer_class, register_layer

_CLASS_TO_NAME = {
    "LRU": "lru",
    "S4": "s4",
    "S4D": "s4d",
    "DSS": "dss",
    "S5": "s5",
    "Mamba": "mamba",
    "Mamba2": "mamba2",
    "Hydra": "hydra",
    "SelfAttention": "transformer",
}


def __getattr__(attr: str) -> type:
    if attr in _CLASS_TO_NAME:
        return get_layer_class(_CLASS_TO_NAME[attr])
    raise AttributeError(f"module 'torchssm.layers' has no attribute {attr!r}")


__all__ = ["SSMLayer", "available_layers", "build_layer", "get_layer_class", "register_layer", *_CLASS_TO_NAME]
