"""Causal depthwise short convolution (Mamba's ``conv1d`` of width d_conv = 4) with a rolling state.

Math (Gu & Dao 2023, "Mamba", Sec. 3.4 / Fig. 3; reference ``causal_conv1d_ref`` in
Dao-AILab/causal-conv1d), per channel c with kernel w[c, 0..W-1]:

    y_t[c] = bias[c] + sum_{k=0}^{W-1} w[c, k] x_{t-(W-1)+k}[c]

where x at negative times is read from ``state`` (b, d, W-1), the last W-1 inputs seen before
(zeros at the start). The returned state is the last W-1 inputs, so the next call (or ``step``)
continues exactly. With ``reset`` (b, l) bool (packed sequences: a new sequence starts at t), an
input x_s contributes to y_t only if no reset lies in (s, t]: neighbouring sequences never mix, and
the returned buffer holds zeros for inputs older than the last reset.

``causal_conv1d_naive`` (a loop over taps and time) is the reference; ``causal_conv1d`` uses
``F.conv1d`` (no reset) or an unfolded, masked window sum (with reset).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    state: torch.Tensor | None,
    reset: torch.Tensor | None,
) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must have shape (batch, length, channels); got {getattr(x, 'shape', type(x))}")
    b, l, d = x.shape
    if l == 0:
        raise ValueError("x is an empty sequence (length 0); expected shape (batch, length>=1, channels)")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[0] != d or weight.shape[1] < 1:
        raise ValueError(f"weight must have shape (channels, width)=({d}, W); got {tuple(weight.shape)}")
    w = weight.shape[1]
    if bias is not None and tuple(bias.shape) != (d,):
        raise ValueError(f"bias must have shape ({d},); got {tuple(bias.shape)}")
    if state is not None and tuple(state.shape) != (b, d, w - 1):
        raise ValueError(
            f"state must have shape (batch, channels, width-1)=({b}, {d}, {w - 1}); got {tuple(state.shape)}"
        )
    if reset is not None:
        if tuple(reset.shape) != (b, l):
            raise ValueError(f"reset must have shape (batch, length)=({b}, {l}); got {tuple(reset.shape)}")
        if reset.dtype != torch.bool:
            raise TypeError(f"reset must be a bool tensor; got dtype {reset.dtype}")


def _padded(x: torch.Tensor, state: torch.Tensor | None, w: int) -> torch.Tensor:
    """(b, l, d) -> (b, d, W-1+l): the carried inputs then x, channels first."""
    xt = x.transpose(1, 2)  # (b, d, l)
    if state is None:
        return F.pad(xt, (w - 1, 0))
    return torch.cat([state.to(xt.dtype), xt], dim=-1)


def _segments(reset: torch.Tensor, w: int) -> torch.Tensor:
    """(b, l) reset -> (b, W-1+l) segment id of every padded position (carried inputs: segment 0)."""
    return F.pad(torch.cumsum(reset.to(torch.int64), dim=1), (w - 1, 0))


def _new_state(xp: torch.Tensor, seg: torch.Tensor | None, w: int) -> torch.Tensor:
    """Last W-1 padded inputs (b, d, W-1); entries older than the last reset are zeroed."""
    buf = xp[..., xp.shape[-1] - (w - 1) :]
    if seg is not None and w > 1:
        keep = seg[:, -(w - 1) :] == seg[:, -1:]  # (b, W-1)
        buf = buf * keep[:, None, :].to(buf.dtype)
    return buf


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
    *,
    reset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (b, l, d), weight (d, W), bias (d,), state (b, d, W-1) -> (y (b, l, d), new_state (b, d, W-1))."""
    _check(x, weight, bias, state, reset)
    d, w = weight.shape
    xp = _padded(x, state, w)  # (b, d, W-1+l)
    if reset is None:
        y = F.conv1d(xp, weight[:, None, :].to(xp.dtype), None if bias is None else bias.to(xp.dtype), groups=d)
        return y.transpose(1, 2), _new_state(xp, None, w)
    seg = _segments(reset, w)  # (b, W-1+l)
    windows = xp.unfold(-1, w, 1)  # (b, d, l, W): windows[..., t, k] = x_{t-(W-1)+k}
    same = seg.unfold(-1, w, 1) == seg[:, w - 1 :, None]  # (b, l, W): same sequence as x_t
    y = (windows * same[:, None].to(xp.dtype) * weight[:, None, :].to(xp.dtype)).sum(-1)  # (b, d, l)
    if bias is not None:
        y = y + bias.to(y.dtype)[:, None]
    return y.transpose(1, 2), _new_state(xp, seg, w)


def causal_conv1d_naive(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
    *,
    reset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference with the signature of :func:`causal_conv1d`: loops over time and taps."""
    _check(x, weight, bias, state, reset)
    b, l, d = x.shape
    w = weight.shape[1]
    buf = state.to(x.dtype) if state is not None else x.new_zeros(b, d, w - 1)  # (b, d, W-1)
    ys = []
    for t in range(l):
        if reset is not None:
            buf = torch.where(reset[:, t, None, None], torch.zeros_like(buf), buf)
        y_t, buf = causal_conv1d_step(x[:, t], weight, bias, buf)
        ys.append(y_t)
    return torch.stack(ys, dim=1), buf


def causal_conv1d_step(
    x_t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: x_t (b, d), state (b, d, W-1) -> (y_t (b, d), new_state (b, d, W-1)). Pure."""
    window = torch.cat([state.to(x_t.dtype), x_t[:, :, None]], dim=-1)  # (b, d, W)
    y = (window * weight.to(x_t.dtype)).sum(-1)  # (b, d)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y, window[..., 1:]
