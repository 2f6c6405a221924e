"""Mamba block (S6 selective SSM): Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces", Sec. 3 and Fig. 3; reference ``mamba_ssm/modules/mamba_simple.py``.

Math (b batch, l length, h = d_model, d = d_inner = expand * h, n = d_state, r = dt_rank):

    x, z   = split(in_proj(u))                          (b, l, d) each
    x      = silu(causal_depthwise_conv1d(x))           width d_conv, rolling state in step mode
    dt, B, C = split(x_proj(x))                         (b, l, r), (b, l, n), (b, l, n)
    dt     = softplus(dt_proj(dt))                      (b, l, d)  (bias = dt bias)
    y      = selective_scan(x, dt, A = -exp(A_log), B, C, D) * silu(z)
    out    = out_proj(y)                                (b, l, h)

Defaults and their sources (paper Sec. 3.6 / App. E.2 and the reference module):
    d_state = 16, d_conv = 4, expand = 2, dt_rank = ceil(h / 16), dt ~ log-uniform [1e-3, 1e-1] with
    floor 1e-4 set through the inverse-softplus bias of dt_proj, dt_proj weight ~ U(-r^-1/2, r^-1/2),
    A = -(1, 2, ..., n) per channel ("S4D-Real", Gu et al. 2022 "On the Parameterization and
    Initialization of Diagonal State Space Models", Sec. 4), D = 1, no biases in the projections.
    Optimizer: no weight decay on A_log, D and the dt bias (``_no_weight_decay`` in the reference).

State (what ``step`` and chunked ``forward`` carry): ``(conv_buffer (b, d, d_conv-1), ssm_state (b, d, n))``.
``step`` runs the very same code as ``forward`` on a length-1 sequence, so the two cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.base import SSMLayer, out_dtype, to_param_dtype
from torchssm.ops.selective import selective_scan
from torchssm.ops.shortconv import causal_conv1d

MambaState = Tuple[torch.Tensor, torch.Tensor]


def dt_bias_init(size: int, dt_min: float = 1e-3, dt_max: float = 1e-1, floor: float = 1e-4,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Bias b with softplus(b) = dt, dt ~ exp(U[log dt_min, log dt_max]) clamped to >= floor.

    Mamba reference (mamba_simple.py): ``inv_dt = dt + log(-expm1(-dt))`` is the inverse of softplus.
    """
    u = torch.rand(size, generator=generator, dtype=torch.float64)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def decay_rate(A_log: torch.Tensor) -> torch.Tensor:
    """A = -exp(A_log), in float32 (float64 when the parameter is float64): never in bf16."""
    return -torch.exp(A_log if A_log.dtype == torch.float64 else A_log.float())


def ssm_state_dtype(dtype: torch.dtype) -> torch.dtype:
    """SSM states stay float32 (float64 in float64 tests), never bf16 (DESIGN.md, Numerics)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class ConvSSMLayer(SSMLayer):
    """Shared contract plumbing of Mamba and Mamba-2: state = (conv_buffer, ssm_state).

    Subclasses implement ``_mix(x, conv_state, ssm_state, reset, backend) -> (y, conv_state, ssm_state)``
    for any length, and ``_ssm_state_shape(batch)``; ``forward`` and ``step`` both call ``_mix``.
    """

    conv_dim: int
    d_conv: int

    def _ssm_state_shape(self, batch: int) -> tuple:
        raise NotImplementedError

    def _mix(self, x, conv_state, ssm_state, reset, backend):
        raise NotImplementedError

    def init_state(self, batch: int, device=None, dtype=None) -> MambaState:
        """Zeros: conv_buffer (b, conv_dim, d_conv-1) in the parameters' dtype, ssm_state in float32/64."""
        dtype = dtype or self._param_dtype()
        device = device if device is not None else self.in_proj.weight.device
        return (torch.zeros(batch, self.conv_dim, self.d_conv - 1, device=device, dtype=dtype),
                torch.zeros(self._ssm_state_shape(batch), device=device, dtype=ssm_state_dtype(dtype)))

    def forward(self, x: torch.Tensor, state: Optional[MambaState] = None, *, return_state: bool = False,
                reset: Optional[torch.Tensor] = None):
        """x (b, l, h) -> y (b, l, h) [, final state]. ``reset`` (b, l) bool: a new sequence starts at t
        (packed batches): both the short conv and the scan stop mixing across it."""
        self._check_forward(x, state)
        conv_state, ssm_state = state if state is not None else (None, None)
        y, conv_state, ssm_state = self._mix(to_param_dtype(self, x), conv_state, ssm_state, reset, self.backend)
        y = out_dtype(y, x)
        if not return_state:
            return y
        return y, (conv_state.to(self._param_dtype()), ssm_state)

    def step(self, x_t: torch.Tensor, state: MambaState):
        """x_t (b, h) -> (y_t (b, h), new_state): the forward code on one token (naive scan: O(1))."""
        self._check_step(x_t, state)
        y, conv_state, ssm_state = self._mix(to_param_dtype(self, x_t)[:, None], state[0], state[1], None, "naive")
        return out_dtype(y[:, 0], x_t), (conv_state.to(self._param_dtype()), ssm_state)


class Mamba(ConvSSMLayer):
    """The Mamba block (see module docstring). ``backend`` is passed to the selective scan."""

    # optim_overrides name a module's *direct* parameters; the dt bias is tagged on dt_proj itself.
    optim_overrides = {"A_log": {"weight_decay": 0.0}, "D": {"weight_decay": 0.0}}

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank="auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        dt_scale: float = 1.0,
        conv_bias: bool = True,
        bias: bool = False,
        *,
        chunk_size: int = 64,
        backend: str = "auto",
    ):
        super().__init__(d_model)
        for name, v in (("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")
        self.d_state, self.d_conv, self.expand = d_state, d_conv, expand
        self.d_inner = self.conv_dim = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.chunk_size, self.backend = chunk_size, backend
        d, n, r = self.d_inner, d_state, self.dt_rank

        self.in_proj = nn.Linear(d_model, 2 * d, bias=bias)
        self.conv1d = nn.Conv1d(d, d, kernel_size=d_conv, groups=d, bias=conv_bias)  # weight (d, 1, d_conv)
        self.x_proj = nn.Linear(d, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, d, bias=True)
        std = r ** -0.5 * dt_scale
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            self.dt_proj.bias.copy_(dt_bias_init(d, dt_min, dt_max, dt_init_floor))
        self.dt_proj.bias._no_reinit = True  # the LM's init leaves it alone (as the reference does)
        self.dt_proj.optim_overrides = {"bias": {"weight_decay": 0.0}}  # reference: _no_weight_decay
        A = torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)  # (d, n): S4D-Real
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d))
        self.out_proj = nn.Linear(d, d_model, bias=bias)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
                f"dt_rank={self.dt_rank}")

    def _ssm_state_shape(self, batch: int) -> tuple:
        return (batch, self.d_inner, self.d_state)

    def _ssm_params(self, x: torch.Tensor):
        """x (b, l, d) after the conv -> raw dt (b, l, d), A (d, n), B (b, l, n), C (b, l, n).

        Discretisation (dt <- softplus(dt + bias), exp(dt A), dt B) happens inside the scan op."""
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = dt @ self.dt_proj.weight.T  # (b, l, d); the bias goes to the scan as delta_bias
        A = decay_rate(self.A_log)  # (d, n)
        return dt, A, B, C

    def _mix(self, u, conv_state, ssm_state, reset, backend):
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (b, l, d) each
        x, conv_state = causal_conv1d(x, self.conv1d.weight[:, 0], self.conv1d.bias, conv_state, reset=reset)
        x = F.silu(x)
        dt, A, B, C = self._ssm_params(x)
        y, ssm_state = selective_scan(x, dt, A, B, C, self.D, z, delta_bias=self.dt_proj.bias, delta_softplus=True,
                                      h0=ssm_state, return_final_state=True, reset=reset,
                                      chunk_size=self.chunk_size, backend=backend)  # (b, l, d)
        return self.out_proj(y.to(u.dtype)), conv_state, ssm_state
