"""Spatial-Mamba: Xiao, Li, Zhang, Meng, Zhang 2024, "Spatial-Mamba: Effective Visual State Space
Models via Structure-Aware State Fusion" (arXiv 2410.15091), Sec. 3; reference code
github.com/EdwardChasel/Spatial-Mamba (read through a public copy, SigoySema/Pansharpening
``pan-sharpening/model/Spatial-Mamba``; the equation numbers below are UNVERIFIED).

The paper's three stages on an H x W grid read in raster order (t = r W + c, L = H W):

    1. state transition, one unidirectional selective scan (Mamba's S6, Gu & Dao 2023, Eq. 2a):
           h_t = A_bar_t h_{t-1} + B_bar_t u_t,   A_bar_t = exp(dt_t A),  B_bar_t = dt_t B_t      (b, L, d, n)
    2. structure-aware state fusion (SASF): every state is replaced by a weighted sum of the states of
       its 2-D neighbourhood, with dilated depthwise convolutions (3x3 kernels, dilations 1, 3, 5,
       replicate padding, combined by learned scalars alpha_k):
           h^_t = sum_k alpha_k sum_{o in 3x3} W_k[o] h_{(r, c) + dil_k o}
    3. observation equation on the FUSED states:
           y_t = C_t h^_t + D u_t

so the fusion acts on states, not on outputs (a depthwise conv of y would mix C_s h_s with the
neighbour's own C_s; here every neighbour state is read out with the centre's C_t).

Block around it (VMamba's SS2D block, which Spatial-Mamba modifies; Liu et al. 2024 Sec. 4.1):

    x, z = split(in_proj(u)); x = silu(depthwise_conv2d_{d_conv}(x))
    dt, B, C = x_proj(x) (dt through dt_proj, softplus; B, C (b, L, n))
    y = out_proj(LayerNorm(SASF-SSM(x)) * silu(z))

Defaults: d_state = 1 (the reference configs' ``d_state``; UNVERIFIED for every size), d_conv = 3,
expand = 2, dilations (1, 3, 5) with 3x3 kernels and kernels/alpha initialised to ones, as the
reference ``StateFusion`` (UNVERIFIED against the original repository itself); dt, A, D as Mamba
(layers/mamba.py: S4D-Real A, dt log-uniform [1e-3, 1e-1]). ``dilations=()`` turns the fusion off
(then y is exactly Mamba's selective scan output: the ablation and the test reference).

The hidden states h of every step are needed, which the fused selective-scan ops do not return;
:func:`selective_hidden_states` computes them with the linear scan ``torchssm.ops.linear_scan`` on
the (d * n) flattened channels (memory O(b L d n), fine at d_state = 1). API wish for ops/: a
``selective_scan(..., return_states=True)`` or a ``readout=callable`` hook so that the fused kernels
could apply the fusion between the scan and the C readout without materialising h.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.mamba import decay_rate, dt_bias_init
from torchssm.ops import linear_scan
from torchssm.vision.grid import Grid2DLayer, check_image


def selective_hidden_states(
    u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, *, backend: str = "auto"
) -> torch.Tensor:
    """Every hidden state of the S6 recurrence h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t (h_{-1} = 0).

    u, dt (b, l, d) (dt after softplus), A (d, n), B (b, l, n) -> h (b, l, d, n). Then
    ``(h * C[:, :, None]).sum(-1) + D * u`` is ``selective_scan_naive(u, dt, A, B, C, D)``.
    """
    b, l, d = u.shape
    n = A.shape[-1]
    a = torch.exp(dt[..., None] * A)  # (b, l, d, n)
    x = (dt * u)[..., None] * B[:, :, None, :]  # (b, l, d, n)
    return linear_scan(a.reshape(b, l, d * n), x.reshape(b, l, d * n), backend=backend).reshape(b, l, d, n)


class StateFusion(nn.Module):
    """SASF: h^ = sum_k alpha_k dwconv_{3x3, dilation k}(replicate_pad(h)) over (b, channels, H, W)."""

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 3, 5), kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"state fusion kernel_size must be odd; got {kernel_size}")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in dilations):
            raise ValueError(f"dilations must be positive ints; got {tuple(dilations)}")
        self.channels, self.dilations, self.kernel_size = channels, tuple(dilations), kernel_size
        self.weight = nn.Parameter(torch.ones(len(self.dilations), channels, 1, kernel_size, kernel_size))
        self.alpha = nn.Parameter(torch.ones(len(self.dilations)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (b, c, H, W)
        out = 0
        half = self.kernel_size // 2
        for k, dil in enumerate(self.dilations):
            p = half * dil
            # replicate padding needs pad < side for 'reflect' only; replicate works for any size
            hp = F.pad(h, (p, p, p, p), mode="replicate")
            out = out + self.alpha[k] * F.conv2d(hp, self.weight[k], dilation=dil, groups=self.channels)
        return out


class SpatialMamba(Grid2DLayer):
    """The Spatial-Mamba mixer (module docstring). Non-causal; images (b, H, W, d) or raster sequences."""

    optim_overrides = {"A_log": {"weight_decay": 0.0}, "D": {"weight_decay": 0.0}}

    def __init__(
        self,
        d_model: int,
        d_state: int = 1,
        d_conv: int = 3,
        expand: int = 2,
        dt_rank="auto",
        dilations: Sequence[int] = (1, 3, 5),
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        *,
        grid=None,
        backend: str = "auto",
    ):
        super().__init__(d_model, grid)
        for name, v in (("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")
        if d_conv % 2 != 1:
            raise ValueError(f"d_conv must be odd (a centred 2-D conv); got {d_conv}")
        self.d_state, self.d_conv, self.expand, self.backend = d_state, d_conv, expand, backend
        self.d_inner = d = expand * d_model
        self.dt_rank = r = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        n = d_state
        self.in_proj = nn.Linear(d_model, 2 * d, bias=False)
        self.conv2d = nn.Conv2d(d, d, d_conv, padding=d_conv // 2, groups=d)
        self.x_proj = nn.Linear(d, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, d, bias=True)
        std = r**-0.5
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            self.dt_proj.bias.copy_(dt_bias_init(d, dt_min, dt_max, dt_init_floor))
        self.dt_proj.optim_overrides = {"bias": {"weight_decay": 0.0}}
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)))  # (d, n)
        self.D = nn.Parameter(torch.ones(d))
        self.fusion = StateFusion(d * n, dilations) if dilations else None
        self.out_norm = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, d_model, bias=False)

    def extra_repr(self) -> str:
        dil = self.fusion.dilations if self.fusion is not None else ()
        return f"d_model={self.d_model}, d_state={self.d_state}, expand={self.expand}, dilations={dil}"

    def ssm(self, x: torch.Tensor) -> torch.Tensor:
        """x (b, H, W, d) after the conv -> y = C h^ + D x, (b, H, W, d) (stages 1-3)."""
        b, H, W, d = x.shape
        n = self.d_state
        u = x.reshape(b, H * W, d)  # raster order
        dt, B, C = torch.split(self.x_proj(u), [self.dt_rank, n, n], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # (b, L, d)
        A = decay_rate(self.A_log).to(u.dtype)  # (d, n)
        h = selective_hidden_states(u, dt, A, B, backend=self.backend)  # (b, L, d, n)  stage 1
        if self.fusion is not None:  # stage 2 on the states, as a (b, d*n, H, W) image
            grid = h.reshape(b, H, W, d * n).permute(0, 3, 1, 2)
            h = self.fusion(grid).permute(0, 2, 3, 1).reshape(b, H * W, d, n)
        y = (h * C[:, :, None, :]).sum(-1) + self.D * u  # (b, L, d)  stage 3
        return y.reshape(b, H, W, d)

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        """x (b, H, W, h) -> (b, H, W, h)."""
        check_image(x, self.d_model)
        u, z = self.in_proj(x.to(self.in_proj.weight.dtype)).chunk(2, dim=-1)  # (b, H, W, d) each
        u = F.silu(self.conv2d(u.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        y = self.out_norm(self.ssm(u)) * F.silu(z)
        return self.out_proj(y).to(x.dtype)  # the input's dtype (float64 in, float64 out)
