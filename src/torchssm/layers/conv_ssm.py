"""The base of the Mamba family (Mamba, Mamba-2; Hydra shares its pieces): a short depthwise
convolution followed by an input-dependent SSM, with state ``(conv_buffer, ssm_state)``.

    ConvSSMLayer   the layer contract (init_state / forward / step) over a subclass's
                   ``_mix(x, conv_state, ssm_state, reset, backend)``; ``step`` runs the subclass's
                   fused one-token update (``step_function``; by default ``_mix`` on a length-1
                   sequence), tested equal to ``forward`` in float64
    decay_rate     A = -exp(A_log), never in bf16
    ssm_state_dtype  SSM states stay float32 (float64 in float64 tests)
    head_layout, RMSNormGated   Mamba-2's heads and gated RMSNorm (also Hydra's)

Symbols as in docs/architecture.md (d = d_inner channels, n = d_state, nh heads of p = headdim).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from torchssm.layers.base import Device, LayerOutput, SSMLayer, StepFunction, StepOutput, out_dtype, to_param_dtype
from torchssm.ops.common import rms_norm_gated

MambaState = tuple[torch.Tensor, torch.Tensor]  # (conv_buffer (b, conv_dim, d_conv-1), ssm_state)


def decay_rate(A_log: torch.Tensor) -> torch.Tensor:
    """A = -exp(A_log), in float32 (float64 when the parameter is float64): never in bf16."""
    return -torch.exp(A_log if A_log.dtype == torch.float64 else A_log.float())


def ssm_state_dtype(dtype: torch.dtype) -> torch.dtype:
    """SSM states stay float32 (float64 in float64 tests), never bf16 (docs/architecture.md, Numerics)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class ConvSSMLayer(SSMLayer):
    """Shared contract plumbing of Mamba and Mamba-2: state = (conv_buffer, ssm_state).

    Subclasses implement ``_mix(x, conv_state, ssm_state, reset, backend) -> (y, conv_state, ssm_state)``
    for any length, and ``_ssm_state_shape(batch)``; ``forward`` and ``step`` both call ``_mix``.
    """

    conv_dim: int
    d_conv: int
    in_proj: nn.Linear
    backend: str

    def _ssm_state_shape(self, batch: int) -> tuple:
        raise NotImplementedError

    def _mix(
        self,
        x: torch.Tensor,
        conv_state: torch.Tensor | None,
        ssm_state: torch.Tensor | None,
        reset: torch.Tensor | None,
        backend: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def init_state(self, batch: int, device: Device = None, dtype: torch.dtype | None = None) -> MambaState:
        """Zeros: conv_buffer (b, conv_dim, d_conv-1) in the parameters' dtype, ssm_state in float32/64."""
        dtype = dtype or self._param_dtype()
        device = device if device is not None else self.in_proj.weight.device
        return (
            torch.zeros(batch, self.conv_dim, self.d_conv - 1, device=device, dtype=dtype),
            torch.zeros(self._ssm_state_shape(batch), device=device, dtype=ssm_state_dtype(dtype)),
        )

    def forward(
        self,
        x: torch.Tensor,
        state: MambaState | None = None,
        *,
        return_state: bool = False,
        reset: torch.Tensor | None = None,
    ) -> LayerOutput:
        """x (b, l, h) -> y (b, l, h) [, final state]. ``reset`` (b, l) bool: a new sequence starts at t
        (packed batches): both the short conv and the scan stop mixing across it."""
        self._check_forward(x, state)
        if reset is None and (fast := self._one_token_forward(x, state, return_state)) is not None:
            return fast  # streaming: the kept fused one-token update (about a fifth of the scan's CPU, BENCHMARKS.md)
        conv_state, ssm_state = state if state is not None else (None, None)
        y, conv_state, ssm_state = self._mix(to_param_dtype(self, x), conv_state, ssm_state, reset, self.backend)
        y = out_dtype(y, x)
        if not return_state:
            return y
        return y, (conv_state.to(self._param_dtype()), ssm_state)

    def step(self, x_t: torch.Tensor, state: MambaState) -> StepOutput:
        """x_t (b, h) -> (y_t (b, h), new_state): one token, O(1) (:meth:`step_function`). Pure."""
        self._check_step(x_t, state)
        return self._derived_once("step_function", self.step_function)(x_t, state)

    def step_function(self) -> StepFunction:
        """The one-token step without input checks, for a generation loop that checked the state once.
        Weights derived from the parameters (e.g. A = -exp(A_log)) are computed here, once: the function
        is valid while the parameters do not change. Default: the forward code on a length-1 sequence;
        Mamba and Mamba-2 override it with a fused one-token update."""

        def step(x_t: torch.Tensor, state: MambaState) -> StepOutput:
            y, conv_state, ssm_state = self._mix(to_param_dtype(self, x_t)[:, None], state[0], state[1], None, "naive")
            return out_dtype(y[:, 0], x_t), (conv_state.to(self._param_dtype()), ssm_state)

        return step


def transposed_linear(linear: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """``linear`` as ``x @ W^T (+ bias)`` with W^T copied contiguous once: at batch 1 (a matrix-vector
    product) this runs ~1.4x faster on CPU than ``F.linear``'s transposed-weight GEMM (measured, torch 2.13,
    1 thread, 256 -> 1024). For one-token steps; the copy lives as long as the returned function."""
    wt, bias = linear.weight.t().contiguous(), linear.bias  # (in, out)
    if bias is None:
        return lambda x: x @ wt
    return lambda x: torch.addmm(bias, x, wt) if x.dim() == 2 else x @ wt + bias


def head_layout(d_inner: int, headdim: int, ngroups: int) -> int:
    """Number of heads d_inner / headdim, checking that headdim divides d_inner and ngroups the heads."""
    if headdim < 1 or d_inner % headdim:
        raise ValueError(f"headdim={headdim} must divide d_inner = expand * d_model = {d_inner}")
    if ngroups < 1 or (d_inner // headdim) % ngroups:
        raise ValueError(f"ngroups={ngroups} must divide the number of heads {d_inner // headdim}")
    return d_inner // headdim


class RMSNormGated(nn.Module):
    """Gated RMSNorm of mamba_ssm, ``rms_norm_gated`` (torchssm.ops.common) with a learned weight (d,):

        norm_before_gate=False:  out = rmsnorm(x * silu(z)) * weight
        norm_before_gate=True:   out = rmsnorm(x) * weight * silu(z)

    with the mean of squares taken over groups of ``group_size`` channels (default: all of them).
    Computed in float32 (or float64), returned in x's dtype."""

    def __init__(self, d: int, eps: float = 1e-5, *, group_size: int | None = None, norm_before_gate: bool = False):
        super().__init__()
        group_size = d if group_size is None else group_size
        if d % group_size:
            raise ValueError(f"norm group_size={group_size} must divide the width {d}")
        self.eps, self.group_size, self.norm_before_gate = eps, group_size, norm_before_gate
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:  # (..., d)
        return rms_norm_gated(x, z, self.weight, self.eps, self.group_size, self.norm_before_gate)


__all__ = [
    "ConvSSMLayer",
    "MambaState",
    "RMSNormGated",
    "StepFunction",
    "decay_rate",
    "head_layout",
    "ssm_state_dtype",
    "transposed_linear",
]
