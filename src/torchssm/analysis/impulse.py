"""Impulse responses (convolution kernels) of any sequence layer, and HiPPO matrices (pure functions).

For a layer y = f(x) with x, y of shape (b, l, h), feed one unit impulse per input channel at t = 0:

    K[t, o, i] = f(e_i delta_{t=0})[t, o] - f(0)[t, o]        (t < l, o, i < h)

For a linear time-invariant layer (an LRU or S4D with its output map, no nonlinearity) K is exactly its
convolution kernel: y = K * x. For other layers it is the response to that impulse (bias removed).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import torch
from torch import nn

from torchssm.layers.base import SSMLayer


@torch.no_grad()
def impulse_response(layer: nn.Module, length: int = 256, amplitude: float = 1.0) -> torch.Tensor:
    """K (length, h_out, h_in): the layer's response to a unit impulse in each input channel at t = 0."""
    if length < 1:
        raise ValueError(f"length must be >= 1; got {length}")
    d = layer.d_model
    p = next(layer.parameters())
    dtype = p.real.dtype if p.is_complex() else p.dtype
    was_training = layer.training
    layer.eval()
    try:
        x = torch.zeros(d + 1, length, d, dtype=dtype, device=p.device)  # (h_in + 1, l, h): last row = zero input
        x[torch.arange(d), 0, torch.arange(d)] = amplitude
        y = layer(x)  # (h_in + 1, l, h_out)
    finally:
        layer.train(was_training)
    k = (y[:d] - y[d:]) / amplitude  # (h_in, l, h_out)
    return k.permute(1, 2, 0).contiguous()  # (l, h_out, h_in)


def kernel_norms(kernel: torch.Tensor) -> torch.Tensor:
    """||K[t]||_F over time: (l, h_out, h_in) -> (l,), how fast the layer forgets an input."""
    return torch.linalg.matrix_norm(kernel.to(torch.float64))


def sequence_layers(model: nn.Module) -> Iterator[tuple[str, SSMLayer]]:
    """(name, layer) for every SSM-contract layer inside ``model`` (the model itself if it is one)."""
    for name, module in model.named_modules():
        if isinstance(module, SSMLayer):
            yield name or type(module).__name__, module


# HiPPO matrices come from torchssm.layers.init (``hippo(measure, n) -> (A, B)``); looked up at call
# time so the plot degrades to a clear message where that function is absent.
HIPPO_KINDS = ("legs", "legt", "fout")


def hippo_matrices(n: int = 64) -> dict[str, torch.Tensor]:
    """{measure: A (n, n) float64} for HiPPO-LegS, -LegT and -FouT ({} if layers.init has no ``hippo``).

    LegS: A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) on the diagonal (Gu et al. 2020, "HiPPO",
    Theorem 2; S4, Gu et al. 2022, Eq. 2).
    """
    hippo = getattr(importlib.import_module("torchssm.layers.init"), "hippo", None)
    if not callable(hippo):
        return {}
    return {kind: hippo(kind, n)[0].to(torch.float64) for kind in HIPPO_KINDS}
