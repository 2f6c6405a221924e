"""Mamba-2 block (SSD): Dao & Gu 2024, "Transformers are SSMs: Generalized Models and Efficient
Algorithms Through Structured State Space Duality", Sec. 7 and Fig. 6; reference
``mamba_ssm/modules/mamba2.py`` (and ``mamba2_simple.py``).

Math (h = d_model, d = d_inner = expand * h, nh = d / p heads of p = headdim channels, g groups, n = d_state):

    z, xBC, dt = split(in_proj(u))                         (b, l, d), (b, l, d + 2gn), (b, l, nh)
    x, B, C    = split(silu(causal_depthwise_conv1d(xBC))) one short conv over [x, B, C]
    y          = SSD(x (b, l, nh, p), dt, A = -exp(A_log) (nh,), B, C (b, l, g, n), D (nh,), dt_bias)
    y          = RMSNorm_grouped(y * silu(z)) * weight     gated norm, gate before the norm (norm_before_gate=False)
    out        = out_proj(y)

Defaults (reference Mamba2 module; paper Sec. 7 / App. D): d_state = 128, d_conv = 4, expand = 2,
headdim = 64, ngroups = 1, A ~ U[1, 16] (A_init_range), dt ~ log-uniform [1e-3, 1e-1] with floor 1e-4
through the inverse-softplus ``dt_bias``, D = 1, chunk_size = 256, RMSNorm eps 1e-5 with group size
d / ngroups (mamba_ssm; Hugging Face's Mamba2 normalises over all of d: ``norm_group_size=d_inner``).
No weight decay on A_log, D, dt_bias.

State: ``(conv_buffer (b, d + 2gn, d_conv-1), ssm_state (b, nh, p, n))``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.conv_ssm import ConvSSMLayer, RMSNormGated, decay_rate, head_layout  # noqa: F401 (re-exported)
from torchssm.layers.init import dt_bias_init
from torchssm.ops.shortconv import causal_conv1d
from torchssm.ops.ssd import ssd


class Mamba2(ConvSSMLayer):
    """The Mamba-2 block (see module docstring). ``backend="naive"`` uses the SSD recurrence."""

    optim_overrides = {"A_log": {"weight_decay": 0.0}, "D": {"weight_decay": 0.0}, "dt_bias": {"weight_decay": 0.0}}

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        A_init_range: Sequence[float] = (1.0, 16.0),
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        norm_eps: float = 1e-5,
        norm_group_size: Optional[int] = None,
        *,
        chunk_size: int = 256,
        backend: str = "auto",
    ):
        super().__init__(d_model)
        self.d_inner = expand * d_model
        self.nheads = head_layout(self.d_inner, headdim, ngroups)
        self.d_state, self.d_conv, self.expand, self.headdim, self.ngroups = d_state, d_conv, expand, headdim, ngroups
        self.chunk_size, self.backend = chunk_size, backend
        d, nh, g, n = self.d_inner, self.nheads, ngroups, d_state
        self.conv_dim = d + 2 * g * n
        self.in_proj = nn.Linear(d_model, 2 * d + 2 * g * n + nh, bias=bias)  # [z, x, B, C, dt]
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim, bias=conv_bias)
        self.dt_bias = nn.Parameter(dt_bias_init(nh, dt_min, dt_max, dt_init_floor).float())
        lo, hi = A_init_range
        self.A_log = nn.Parameter(torch.log(torch.empty(nh).uniform_(lo, hi)))
        self.D = nn.Parameter(torch.ones(nh))
        self.norm = RMSNormGated(d, eps=norm_eps, group_size=norm_group_size or d // g, norm_before_gate=False)
        self.out_proj = nn.Linear(d, d_model, bias=bias)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, heads={self.nheads}x{self.headdim}, "
                f"ngroups={self.ngroups}, d_conv={self.d_conv}")

    def _ssm_state_shape(self, batch: int) -> tuple:
        return (batch, self.nheads, self.headdim, self.d_state)

    def _mix(self, u: torch.Tensor, conv_state: Optional[torch.Tensor], ssm_state: Optional[torch.Tensor], reset: Optional[torch.Tensor],
             backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, l, _ = u.shape
        d, g, n, nh, p = self.d_inner, self.ngroups, self.d_state, self.nheads, self.headdim
        z, xBC, dt = torch.split(self.in_proj(u), [d, self.conv_dim, nh], dim=-1)
        xBC, conv_state = causal_conv1d(xBC, self.conv1d.weight[:, 0], self.conv1d.bias, conv_state, reset=reset)
        x, B, C = torch.split(F.silu(xBC), [d, g * n, g * n], dim=-1)
        y, ssm_state = ssd(x.reshape(b, l, nh, p), dt, decay_rate(self.A_log), B.reshape(b, l, g, n), C.reshape(b, l, g, n),
                           self.D, None, self.dt_bias, True, ssm_state, return_final_state=True, reset=reset,
                           chunk_size=self.chunk_size, backend=backend)  # (b, l, nh, p)
        y = self.norm(y.reshape(b, l, d).to(u.dtype), z)
        return self.out_proj(y), conv_state, ssm_state
