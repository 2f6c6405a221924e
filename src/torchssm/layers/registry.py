"""Layer registry: build any sequence-mixing layer by name (``model.layer=s4d`` in a config).

Entries are resolved lazily (module imported on first use), so a layer whose optional
dependency is missing does not break the others.
"""

from __future__ import annotations

import importlib
from typing import Any

from torchssm.layers.base import SSMLayer

# name -> (module, class name). Causality is a property of the built instance (``layer.causal``):
# e.g. LRU(bidirectional=True) is not causal.
_LAYERS: dict[str, tuple[str, str]] = {
    "lru": ("torchssm.layers.lru", "LRU"),
    "s4": ("torchssm.layers.s4", "S4"),
    "s4d": ("torchssm.layers.s4d", "S4D"),
    "dss": ("torchssm.layers.dss", "DSS"),
    "s5": ("torchssm.layers.s5", "S5"),
    "mamba": ("torchssm.layers.mamba", "Mamba"),
    "mamba2": ("torchssm.layers.mamba2", "Mamba2"),
    "hydra": ("torchssm.layers.hydra", "Hydra"),
    "transformer": ("torchssm.layers.attention", "SelfAttention"),
    "jamba": ("torchssm.models.hybrid", "JambaBlock"),  # hybrid: attention every k SSM layers (+ MoE)
    "seqboat": ("torchssm.models.hybrid", "SeqBoat"),  # hybrid: SSM gating a sparse local attention
    "sashimi": ("torchssm.models.sashimi", "SaShiMi"),  # multi-scale U-Net of SSM blocks (Goel et al. 2022)
    "hiss": ("torchssm.timeseries.hiss", "HiSSLayer"),  # two-level (chunk / sequence) HiSS layer
    # 2-D mixers over raster-ordered H x W grids (grid=(H, W)); docs/vision.md
    "cross_scan": ("torchssm.vision.cross_scan", "CrossScan2D"),
    "spatial_mamba": ("torchssm.vision.spatial_mamba", "SpatialMamba"),
    "s4nd": ("torchssm.vision.s4nd", "S4ND"),
    "longvq": ("torchssm.vision.longvq", "LongVQ"),  # gated SSM + vector-quantised-key attention memory
}


def register_layer(name: str, module: str, class_name: str) -> None:
    """Register a layer class under ``name`` (for user extensions: an :class:`SSMLayer`, the layer contract)."""
    _LAYERS[name] = (module, class_name)


def available_layers() -> list:
    """Names of registered layers whose module imports."""
    out = []
    for name in sorted(_LAYERS):
        try:
            get_layer_class(name)
        except (ImportError, AttributeError):
            continue
        out.append(name)
    return out


def get_layer_class(name: str) -> type:
    if name not in _LAYERS:
        raise ValueError(f"unknown layer {name!r}; expected one of {sorted(_LAYERS)}")
    module, cls = _LAYERS[name]
    return getattr(importlib.import_module(module), cls)


def build_layer(name: str, d_model: int, **kwargs: Any) -> SSMLayer:
    """Instantiate layer ``name`` with width ``d_model`` and its own keyword arguments."""
    cls = get_layer_class(name)
    try:
        return cls(d_model, **kwargs)
    except TypeError as err:
        raise TypeError(f"bad arguments for layer {name!r} ({cls.__name__}): {err}") from err
