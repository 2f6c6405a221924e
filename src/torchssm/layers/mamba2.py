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

State: ``(conv_buffer (b, d + 2gn, d_conv-1), ssm_state (b, nh, p, n))``. ``step`` is a fused one-token
update (:meth:`Mamba2.step_function`), tested equal to ``forward`` in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.base import StepOutput
from torchssm.layers.conv_ssm import (
    ConvSSMLayer,
    MambaState,
    RMSNormGated,
    StepFunction,  # noqa: F401 (re-exported)
    decay_rate,
    head_layout,
    ssm_state_dtype,
    transposed_linear,
)
from torchssm.layers.init import dt_bias_init
from torchssm.ops.shortconv import causal_conv1d
from torchssm.ops.ssd import ssd
from torchssm.ops.ssd.step import ssd_step_cpu, ssd_step_naive


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
        norm_group_size: int | None = None,
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
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, heads={self.nheads}x{self.headdim}, "
            f"ngroups={self.ngroups}, d_conv={self.d_conv}"
        )

    def _ssm_state_shape(self, batch: int) -> tuple:
        return (batch, self.nheads, self.headdim, self.d_state)

    def _mix(
        self,
        u: torch.Tensor,
        conv_state: torch.Tensor | None,
        ssm_state: torch.Tensor | None,
        reset: torch.Tensor | None,
        backend: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, l, _ = u.shape
        d, g, n, nh, p = self.d_inner, self.ngroups, self.d_state, self.nheads, self.headdim
        z, xBC, dt = torch.split(self.in_proj(u), [d, self.conv_dim, nh], dim=-1)
        xBC, conv_state = causal_conv1d(xBC, self.conv1d.weight[:, 0], self.conv1d.bias, conv_state, reset=reset)
        x, B, C = torch.split(F.silu(xBC), [d, g * n, g * n], dim=-1)
        y, ssm_state = ssd(
            x.reshape(b, l, nh, p),
            dt,
            decay_rate(self.A_log),
            B.reshape(b, l, g, n),
            C.reshape(b, l, g, n),
            self.D,
            None,
            self.dt_bias,
            True,
            ssm_state,
            return_final_state=True,
            reset=reset,
            chunk_size=self.chunk_size,
            backend=backend,
        )  # (b, l, nh, p)
        y = self.norm(y.reshape(b, l, d).to(u.dtype), z)
        return self.out_proj(y), conv_state, ssm_state

    def step_function(self) -> StepFunction:
        """Fused one-token step (no checks; A, the conv taps prepared once), the SSD recurrence
        (``ssd_naive``) for one step, per head i with scalar decay:

            z, xBC, dt = in_proj(u);  x, B, C = split(silu(w . [conv_buffer, xBC] + bias))
            dt   = softplus(dt + dt_bias)                          (b, nh)
            s_i  = exp(dt_i A_i) s_i + dt_i x_i B_g(i)^T            (b, nh, p, n), state dtype
            y_i  = s_i C_g(i) + D_i x_i;  out = out_proj(norm(y, z))

        For CPU inference in float32/64 (no gradients, no autocast, not under ``torch.compile``) everything
        between in_proj and out_proj is one numba call, :func:`torchssm.ops.ssd.step.ssd_step_cpu` (same math;
        BENCHMARKS.md, "Mamba-2's fused one-token step"); else its differentiable reference
        :func:`~torchssm.ops.ssd.step.ssd_step_naive`."""
        sdt = ssm_state_dtype(self._param_dtype())
        pdt = self.in_proj.weight.dtype
        w = self.conv1d.weight[:, 0]  # (conv_dim, W)
        conv_bias = self.conv1d.bias if self.conv1d.bias is not None else w.new_zeros(self.conv_dim)  # (conv_dim,)
        A, dt_bias = decay_rate(self.A_log).to(sdt), self.dt_bias.to(sdt)  # (nh,) each
        D = self.D.to(sdt)  # (nh,) or (nh, p)
        D = (D[:, None] if D.dim() == 1 else D).expand(self.nheads, self.headdim).contiguous()  # (nh, p)
        in_proj, out_proj = transposed_linear(self.in_proj), transposed_linear(self.out_proj)
        weights = (w, conv_bias, dt_bias, A, D, self.norm.weight, self.norm.eps, self.norm.group_size, self.ngroups)
        fused = w.device.type == "cpu" and pdt == sdt and pdt in (torch.float32, torch.float64)

        def step(x_t: torch.Tensor, state: MambaState) -> StepOutput:
            conv_state, s = state  # (b, conv_dim, W-1) parameter dtype, (b, nh, p, n) state dtype
            use_fused = fused and not (
                torch.is_grad_enabled() or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling()
            )
            step_op = ssd_step_cpu if use_fused else ssd_step_naive
            y, conv_state, s = step_op(in_proj(x_t.to(pdt)), conv_state, s, *weights)  # y (b, d) parameter dtype
            return out_proj(y).to(x_t.dtype), (conv_state, s)

        return step
