"""Initialisers for SSM parameters: small pure functions returning tensors.

Ring init (LRU): Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences", Lemma 3.2: sampling |lambda|^2 ~ U[r_min^2, r_max^2] and arg(lambda) ~ U[0, max_phase]
gives eigenvalues uniform over the ring's area.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch


def lru_ring_init(
    n: int,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    *,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sample n eigenvalues uniformly on the ring r_min <= |lambda| <= r_max, 0 <= arg < max_phase.

    Returns ``(nu_log, theta_log)`` of shape (n,), the LRU's exponential parameterisation
    lambda = exp(-exp(nu_log) + i exp(theta_log)):
        u1, u2 ~ U[0, 1];  nu = -1/2 log(u1 (r_max^2 - r_min^2) + r_min^2);  theta = max_phase u2.
    """
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"ring init needs 0 <= r_min < r_max <= 1; got r_min={r_min}, r_max={r_max}")
    if not 0.0 < max_phase <= 2 * math.pi:
        raise ValueError(f"max_phase must be in (0, 2*pi]; got {max_phase}")
    u1 = torch.rand(n, generator=generator, dtype=torch.float64)
    u2 = torch.rand(n, generator=generator, dtype=torch.float64)
    # clamps keep nu_log finite at the edges: |lambda| = 0 (r_min = 0) and |lambda| = 1 (r_max = 1)
    nu = (-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2).clamp_min(-1e30)).clamp_min(1e-12)
    theta = (max_phase * u2).clamp_min(1e-12)
    return torch.log(nu).to(dtype), torch.log(theta).to(dtype)
