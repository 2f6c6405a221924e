"""torchssm: structured state-space sequence models for PyTorch.

Layers (``torchssm.layers``): LRU, S4, S4D, DSS, S5, Mamba, Mamba-2, Hydra.
Ops (``torchssm.ops``): linear_scan and friends, each with a naive reference and fast backends.
"""

__version__ = "0.1.0"

from torchssm.layers.base import set_debug  # noqa: E402
from torchssm.ops import linear_scan  # noqa: E402


def from_pretrained(path, **kwargs):
    """Rebuild a model saved with ``model.save_pretrained(path)`` (config.json + model.safetensors)."""
    from torchssm.models.pretrained import from_pretrained as _from_pretrained

    return _from_pretrained(path, **kwargs)


__all__ = ["__version__", "from_pretrained", "linear_scan", "set_debug"]
