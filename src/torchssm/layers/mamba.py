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
``step`` is a fused one-token update (:meth:`Mamba.step_function`: the short conv's one-token window sum,
then h = exp(dt A) h + dt B x, y = C h + D x gated by silu(z); one numba call for CPU inference,
``ops/selective/step.py``), tested equal to ``forward`` in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.base import StepOutput
from torchssm.layers.conv_ssm import (
    ConvSSMLayer,
    MambaState,
    StepFunction,  # noqa: F401  (MambaState: re-exported)
    decay_rate,
    ssm_state_dtype,
    transposed_linear,
)
from torchssm.layers.init import dt_bias_init
from torchssm.ops.selective import selective_scan
from torchssm.ops.selective.step import mamba_step_cpu, mamba_step_naive
from torchssm.ops.shortconv import causal_conv1d


class Mamba(ConvSSMLayer):
    """The Mamba block (see module docstring). ``backend`` is passed to the selective scan."""

    # parameter tags (layers/tags.py): no weight decay on A_log, D and the dt bias (the reference's
    # _no_weight_decay), and the LM's init keeps the dt bias (the reference's _no_reinit)
    optim_overrides = {
        "A_log": {"weight_decay": 0.0},
        "D": {"weight_decay": 0.0},
        "dt_proj.bias": {"weight_decay": 0.0, "reinit": False},
    }

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
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
        std = r**-0.5 * dt_scale
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            self.dt_proj.bias.copy_(dt_bias_init(d, dt_min, dt_max, dt_init_floor))
        A = torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)  # (d, n): S4D-Real
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d))
        self.out_proj = nn.Linear(d, d_model, bias=bias)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"dt_rank={self.dt_rank}"
        )

    def _ssm_state_shape(self, batch: int) -> tuple:
        return (batch, self.d_inner, self.d_state)

    def _ssm_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (b, l, d) after the conv -> raw dt (b, l, d), A (d, n), B (b, l, n), C (b, l, n).

        Discretisation (dt <- softplus(dt + bias), exp(dt A), dt B) happens inside the scan op."""
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = dt @ self.dt_proj.weight.T  # (b, l, d); the bias goes to the scan as delta_bias
        A = decay_rate(self.A_log)  # (d, n)
        return dt, A, B, C

    def _mix(
        self,
        u: torch.Tensor,
        conv_state: torch.Tensor | None,
        ssm_state: torch.Tensor | None,
        reset: torch.Tensor | None,
        backend: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (b, l, d) each
        x, conv_state = causal_conv1d(x, self.conv1d.weight[:, 0], self.conv1d.bias, conv_state, reset=reset)
        x = F.silu(x)
        dt, A, B, C = self._ssm_params(x)
        y, ssm_state = selective_scan(
            x,
            dt,
            A,
            B,
            C,
            self.D,
            z,
            delta_bias=self.dt_proj.bias,
            delta_softplus=True,
            h0=ssm_state,
            return_final_state=True,
            reset=reset,
            chunk_size=self.chunk_size,
            backend=backend,
        )  # (b, l, d)
        return self.out_proj(y.to(u.dtype)), conv_state, ssm_state

    def step_function(self) -> StepFunction:
        """Fused one-token step (no checks; A, the dt projection and the conv taps prepared once):

            x, z = in_proj(u)                       (b, d) each
            x    = silu(w . [conv_buffer, x] + bias) one-token short conv, buffer <- last d_conv-1 inputs
            dt, B, C = x_proj(x);  dt = softplus(dt_proj(dt))       (b, d), (b, n), (b, n)
            h    = exp(dt A) * h + (dt x) B         (b, d, n), in the state dtype (float32 / float64)
            y    = out_proj((C h + D x) * silu(z))

        the selective scan's recurrence (``selective_scan_naive``) for one step. For CPU inference in float32/64
        (no gradients, no autocast, not under ``torch.compile``) everything between in_proj and out_proj is one
        numba call, :func:`torchssm.ops.selective.step.mamba_step_cpu` (same math; a 4-layer d_model-256 LM's
        token takes ~0.7x the CPU time it takes with PyTorch ops, BENCHMARKS.md); else its differentiable reference
        :func:`~torchssm.ops.selective.step.mamba_step_naive` (the same PyTorch ops as before that kernel)."""
        sdt = ssm_state_dtype(self._param_dtype())
        pdt = self.in_proj.weight.dtype
        w = self.conv1d.weight[:, 0]  # (d, W)
        conv_bias = self.conv1d.bias if self.conv1d.bias is not None else w.new_zeros(self.d_inner)  # (d,)
        A = decay_rate(self.A_log).to(sdt)  # (d, n)
        w_dt_t, b_dt = self.dt_proj.weight.t().to(sdt).contiguous(), self.dt_proj.bias.to(sdt)  # (r, d), (d,)
        D = self.D.to(sdt)
        in_proj, out_proj = transposed_linear(self.in_proj), transposed_linear(self.out_proj)
        weights = (w, conv_bias, self.x_proj.weight.t().contiguous(), w_dt_t, b_dt, A, D)  # x_proj: no bias
        fused = w.device.type == "cpu" and pdt == sdt and pdt in (torch.float32, torch.float64)

        # Per token: no input checks (the conv buffer's dtype is the parameters', checked once by the caller), one
        # test of the grad / autocast / compile mode for the fused kernel, else its differentiable reference
        # (conv and x_proj in the parameter dtype, the recurrence in the state dtype).
        def step(x_t: torch.Tensor, state: MambaState) -> StepOutput:
            conv_state, h = state  # (b, d, W-1) parameter dtype, (b, d, n) state dtype
            use_fused = fused and not (
                torch.is_grad_enabled() or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling()
            )
            step_op = mamba_step_cpu if use_fused else mamba_step_naive
            y, conv_state, h = step_op(in_proj(x_t.to(pdt)), conv_state, h, *weights)  # y (b, d) state dtype
            return out_proj(y.to(pdt)).to(x_t.dtype), (conv_state, h)

        return step
