"""Residual block of the LRU article's deep model (Orvieto et al. 2023, Fig. 1 and App. D; the same
block as S5, Smith et al. 2023, App. B):

    pre-norm:   x + Dropout(GLU(Dropout(GELU(SSM(Norm(x))))))
    post-norm:  Norm(x + Dropout(GLU(Dropout(GELU(SSM(x))))))
    GLU(z) = W1 z * sigmoid(W2 z), one Linear h -> 2h followed by ``F.glu``.

Shapes: b batch, l length, h = d_model. ``mask`` (b, l) bool is true at valid (non-padded) steps.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.base import valid_steps
from torchssm.layers.registry import build_layer


def lengths_to_mask(lengths: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """(b,) valid lengths -> (b, l) bool mask, true where t < lengths (None stays None)."""
    return None if lengths is None else valid_steps(lengths, length)


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over channels of (b, l, h) sequences whose statistics ignore padded steps.

    Without a mask this is exactly ``nn.BatchNorm1d(h)`` over the b*l tokens. With a (b, l) mask
    in training, mean and (biased) variance are taken over the valid tokens only, and the running
    statistics are updated with them (unbiased variance, as ``nn.BatchNorm1d``); all positions are
    then normalised with those statistics. No boolean indexing, so no device sync.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # (b, l, h)
        if mask is None or not self.training:
            return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        out_dtype = x.dtype
        x = x.to(torch.promote_types(x.dtype, self.running_mean.dtype if self.running_mean is not None else x.dtype))
        m = mask[..., None].to(x.dtype)  # (b, l, 1); statistics in >= float32 even for bf16 activations
        count = m.sum().clamp_min(1.0)
        mean = (x * m).sum((0, 1)) / count  # (h,)
        var = (((x - mean) ** 2) * m).sum((0, 1)) / count  # (h,)
        tracked, r_mean, r_var = self.num_batches_tracked, self.running_mean, self.running_var
        if self.track_running_stats and tracked is not None and r_mean is not None and r_var is not None:
            with torch.no_grad():  # (the three buffers exist whenever track_running_stats is set)
                tracked += 1
                mom = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                unbiased = var * count / (count - 1).clamp_min(1.0)
                r_mean.mul_(1 - mom).add_(mom * mean)
                r_var.mul_(1 - mom).add_(mom * unbiased)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y.to(out_dtype)


class _LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class _NoNorm(nn.Identity):
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x


def build_norm(kind: str, d_model: int) -> nn.Module:
    """ "batch" (masked-aware BatchNorm), "layer" (LayerNorm) or "none"; all take (x, mask)."""
    if kind == "batch":
        return MaskedBatchNorm(d_model)
    if kind == "layer":
        return _LayerNorm(d_model)
    if kind == "none":
        return _NoNorm()
    raise ValueError(f"unknown norm {kind!r}; expected one of ['batch', 'layer', 'none']")


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class ResidualBlock(nn.Module):
    """One residual block: norm, SSM layer (by registry name), GELU, dropout, GLU, dropout, skip.

    ``glu=False`` replaces the GLU by a plain Linear h -> h (S4's default output projection).
    ``lengths`` is passed to the SSM layer when its ``forward`` accepts it (bidirectional layers
    need it so padding does not flow backward); causal layers are padding-invariant on valid steps.
    """

    def __init__(
        self,
        layer: str,
        d_model: int,
        layer_kwargs: dict | None = None,
        *,
        norm: str = "batch",
        prenorm: bool = True,
        dropout: float = 0.0,
        glu: bool = True,
    ):
        super().__init__()
        self.prenorm = prenorm
        self.norm = build_norm(norm, d_model)
        self.ssm = build_layer(layer, d_model, **(layer_kwargs or {}))
        self.out = nn.Linear(d_model, 2 * d_model if glu else d_model)
        self.glu = glu
        self.dropout = nn.Dropout(dropout)
        self._ssm_takes_lengths = _accepts(self.ssm.forward, "lengths")

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        state=None,
        *,
        return_state: bool = False,
    ):
        """x (b, l, h) -> (b, l, h); ``mask`` (b, l) is ``lengths_to_mask(lengths, l)`` (computed once).

        ``state``/``return_state``: the SSM layer's carried state (causal layers), as in the layer
        contract; with ``return_state`` the result is ``(y, new_state)``.
        """
        skip = x
        if self.prenorm:
            x = self.norm(x, mask)
        new_state = None
        if state is not None or return_state:
            x, new_state = self.ssm(x, state, return_state=True)
        elif self._ssm_takes_lengths and lengths is not None:
            x = self.ssm(x, lengths=lengths)
        else:
            x = self.ssm(x)
        x = self._after_ssm(x, skip, mask)
        return (x, new_state) if return_state else x

    def step(self, x_t: torch.Tensor, state):
        """One token x_t (b, h) -> (y_t (b, h), new_state) with the SSM layer's ``step`` (norm as in eval)."""
        skip = x_t
        if self.prenorm:
            x_t = self.norm(x_t)
        y_t, new_state = self.ssm.step(x_t, state)
        return self._after_ssm(y_t, skip, None), new_state

    def _after_ssm(self, x: torch.Tensor, skip: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """GELU, dropout, GLU (or Linear), dropout, residual add, post-norm: (..., h) -> (..., h)."""
        x = self.dropout(F.gelu(x))
        x = self.out(x)  # (..., 2h) or (..., h)
        if self.glu:
            x = F.glu(x, dim=-1)  # (..., h)
        x = skip + self.dropout(x)
        if not self.prenorm:
            x = self.norm(x, mask)
        return x
