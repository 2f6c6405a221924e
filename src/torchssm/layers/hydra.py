"""Hydra: bidirectional SSM as a quasiseparable matrix mixer. Hwang, Lahoti, Dao, Gu 2024, "Hydra:
Bidirectional State Space Models Through Generalized Matrix Mixers", Sec. 4 and Eq. (QS); reference
``hydra/modules/hydra.py`` (goombalab/hydra).

Math (h = d_model, d = d_inner = expand * h, nh = d / p heads of p = headdim channels, g groups, n = d_state):

    z, xBC, dt = split(in_proj(u))                  (b, l, d), (b, l, d + 4gn), (b, l, 2nh)
    x, B_f, C_f, B_b, C_b = split(silu(conv(xBC)))  non-causal depthwise conv, width d_conv = 7, "same" padding
    y_f = SSD(x, dt_f, A, B_f, C_f)                 forward scan        (A = -exp(A_log), shared)
    y_b = flip(SSD(flip(x), flip(dt_b), A, flip(B_b), flip(C_b)))        backward scan
    y   = shift(y_f) + flip(shift(flip-side y_b)) + x * (fc_D(x) + D)   shift: y_t <- y_{t-1}, y_0 = 0
    out = out_proj(RMSNorm(y) * silu(z))            gated norm, norm before the gate

Shifting both scans by one position makes their diagonals zero, so the sum is the quasiseparable
matrix (strictly lower part from the forward SSM, strictly upper from the backward one) plus an
input-dependent diagonal ``fc_D(x) + D`` (paper Sec. 4.2). Defaults from the reference module:
d_state = 64, d_conv = 7, expand = 2, headdim = 64, ngroups = 1, A_log = log(1) (A = -1), dt ~ log-uniform
[1e-3, 1e-1] with floor 1e-4 through ``dt_bias``, D = 1, chunk_size = 256, RMSNorm eps 1e-5 over the
whole width. No weight decay on A_log, D, dt_bias. Non-causal: no ``step``, no state.

Padding (``lengths`` (b,) int, right-padded batches): xBC is zeroed past each sequence's end before the
centred conv (the zeros its "same" padding would put there) and x after it, so no padded step reaches a
valid one through the conv or the backward scan; the outputs at valid steps equal those of each sequence
called alone (outputs at padded steps are unspecified).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.base import (
    Device,
    LayerOutput,
    SSMLayer,
    check_lengths,
    out_dtype,
    to_param_dtype,
    valid_steps,
)
from torchssm.layers.conv_ssm import RMSNormGated, decay_rate, head_layout
from torchssm.layers.init import dt_bias_init
from torchssm.ops.ssd import ssd


class Hydra(SSMLayer):
    """Bidirectional (non-causal) Hydra mixer; see the module docstring."""

    causal = False
    optim_overrides = {"A_log": {"weight_decay": 0.0}, "D": {"weight_decay": 0.0}, "dt_bias": {"weight_decay": 0.0}}

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 7,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        norm_eps: float = 1e-5,
        *,
        chunk_size: int = 256,
        backend: str = "auto",
    ):
        super().__init__(d_model)
        self.d_inner = expand * d_model
        self.nheads = head_layout(self.d_inner, headdim, ngroups)
        if d_conv < 1 or d_conv % 2 == 0:
            raise ValueError(f"d_conv must be odd (a centred, length-preserving conv); got {d_conv}")
        self.d_state, self.d_conv, self.headdim, self.ngroups = d_state, d_conv, headdim, ngroups
        self.chunk_size, self.backend = chunk_size, backend
        d, nh, g, n = self.d_inner, self.nheads, ngroups, d_state
        self.conv_dim = d + 4 * g * n
        self.in_proj = nn.Linear(d_model, 2 * d + 4 * g * n + 2 * nh, bias=bias)  # [z, x, B_f, C_f, B_b, C_b, dt]
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim, padding=d_conv // 2, bias=conv_bias
        )
        self.dt_bias = nn.Parameter(dt_bias_init(nh, dt_min, dt_max, dt_init_floor).float())
        self.A_log = nn.Parameter(torch.zeros(nh))  # A = -1 (reference: A = ones, A_log = log(A))
        self.D = nn.Parameter(torch.ones(nh))
        self.fc_D = nn.Linear(d, nh, bias=False)
        self.norm = RMSNormGated(d, eps=norm_eps, norm_before_gate=True)
        self.out_proj = nn.Linear(d, d_model, bias=bias)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, heads={self.nheads}x{self.headdim}, "
            f"ngroups={self.ngroups}, d_conv={self.d_conv}"
        )

    def init_state(self, batch: int, device: Device = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Hydra is non-causal and carries no state: an empty (b, 0) tensor, for generic code only."""
        return torch.zeros(
            batch, 0, device=device if device is not None else self.D.device, dtype=dtype or self._param_dtype()
        )

    def forward(
        self,
        x: torch.Tensor,
        state: torch.Tensor | None = None,
        *,
        return_state: bool = False,
        lengths: torch.Tensor | None = None,
    ) -> LayerOutput:
        """u (b, l, h) -> y (b, l, h); ``lengths`` (b,) int: valid lengths of a right-padded batch."""
        self._check_forward(x, state)
        check_lengths(lengths, x.shape[0])
        if state is not None or return_state:
            raise ValueError("Hydra is bidirectional (non-causal) and has no state: call forward(x)")
        b, l, _ = x.shape
        d, g, n, nh, p = self.d_inner, self.ngroups, self.d_state, self.nheads, self.headdim
        valid = None if lengths is None else valid_steps(lengths, l, x.device)[..., None]  # (b, l, 1)
        u = to_param_dtype(self, x)
        z, xBC, dt = torch.split(self.in_proj(u), [d, self.conv_dim, 2 * nh], dim=-1)
        if valid is not None:
            xBC = xBC * valid  # (b, l, d + 4gn): zero past the end, as the conv's own padding
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2)).transpose(1, 2))  # (b, l, d + 4gn), non-causal
        xs, BC_f, BC_b = torch.split(xBC, [d, 2 * g * n, 2 * g * n], dim=-1)
        if valid is not None:
            xs = xs * valid  # (b, l, d): padded steps add nothing to the backward scan
        # both directions as one batch of 2b sequences: [forward; time-reversed]
        x2 = torch.cat([xs, xs.flip(1)], dim=0)  # (2b, l, d)
        BC2 = torch.cat([BC_f, BC_b.flip(1)], dim=0)  # (2b, l, 2gn)
        dt2 = torch.cat([dt[..., :nh], dt[..., nh:].flip(1)], dim=0)  # (2b, l, nh)
        B2, C2 = BC2.split([g * n, g * n], dim=-1)
        A = decay_rate(self.A_log)  # (nh,)
        y = cast(
            torch.Tensor,
            ssd(
                x2.reshape(2 * b, l, nh, p),
                dt2,
                A,
                B2.reshape(2 * b, l, g, n),
                C2.reshape(2 * b, l, g, n),
                None,
                None,
                self.dt_bias,
                True,
                None,
                chunk_size=self.chunk_size,
                backend=self.backend,
            ),
        )  # y only (no final state)
        y = F.pad(y.reshape(2 * b, l, d)[:, :-1], (0, 0, 1, 0)).to(xs.dtype)  # shift by one, first row zero
        diag = (self.fc_D(xs) + self.D).repeat_interleave(p, dim=-1)  # (b, l, d): input-dependent diagonal
        y = y[:b] + y[b:].flip(1) + xs * diag
        return out_dtype(self.out_proj(self.norm(y, z)), x)
