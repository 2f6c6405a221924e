"""SaShiMi: the multi-scale state-space U-Net of Goel et al. 2022, "It's Raw! Audio Generation with
State-Space Models" (ICML; arXiv:2202.09729), Sec. 3.2 and Fig. 1, as one mixing layer (``layer: sashimi``).

The sequence is pooled down in tiers (a tier of pool p groups p steps into one and widens the features
by ``expand``), modelled by residual SSM blocks at every tier, and pooled back up, with skip connections
between tiers of the same rate. With pools (p_0 .. p_{D-1}), widths h_0 = h, h_{k+1} = expand * h_k, and
x_k (b, l_k, h_k) the input of tier k (x_0 = the layer's input, l_{k+1} = l_k / p_k)::

    down:    x_{k+1} = DownPool_k(x_k)       (b, l_k, h_k) -> groups of p_k steps (b, l_k/p_k, p_k h_k) -> Linear
    center:  y_D = x_D + Stage_D(x_D)
    up:      u_k = UpPool_k(y_{k+1})          Linear h_{k+1} -> p_k h_k, then (b, l_k, h_k), SHIFTED one group later
             v_k = u_k + x_k;   y_k = v_k + Stage_k(v_k)        k = D-1 .. 0
    output:  LayerNorm(y_0)

A Stage is ``n_layers`` x [residual SSM block, residual feed-forward block] at its tier's width: the SSM
block is the deep model's block with LayerNorm, pre-norm and a linear output (x + Dropout(W GELU(SSM(LN
x)))), the feed-forward block x + Dropout(W_2 Dropout(GELU(W_1 LN x))) with W_1: h -> ff * h.
The shift makes the U-Net causal (the paper's Sec. 3.2, "causal pooling"): the up-pooled values of group
g (steps g p .. g p + p - 1) are computed from the pooled step g - 1, which saw inputs before g p only;
the first group gets zeros. So a causal SaShiMi has ``step``: a tier's buffer collects the p steps of the
open group and the up-pooled values of the previous group are handed out one per step (the state
below), and the lower tier steps only when a group completes.

Defaults as the paper's experiments (Sec. 4; the reference implementation's ``Sashimi`` defaults,
state-spaces/s4 models/sashimi/sashimi.py): pools (4, 4), expand 2, ff 2, 8 blocks per tier (``n_layers``),
dropout 0, S4 layers with 64 states. Differences, stated: the reference's non-U-Net variant is the one
built here (no blocks before down-pooling; ``unet=True`` of the reference, blocks on the way down too, is
not built), and any causal registered layer can stand for S4 (``layer``; non-causal layers, e.g.
``layer_kwargs={"bidirectional": True}``, give a non-causal SaShiMi for classification, without ``step``).
Used through the deep model (``model.layer: sashimi``) the whole U-Net sits inside one of the deep model's
residual blocks (norm, GELU, GLU, skip); the paper's model is embedding -> SaShiMi -> linear head.

State (chunked continuation and ``step``): a nested list ``[position (b,) long, [[buffer_k (b, p_k, h_k),
pending_k (b, p_k, h_k), stage_k states] for each tier k], center states]``: position = steps seen by the
layer, buffer_k = the inputs of tier k's open group (its first ``(position // P_k) % p_k`` rows, P_k =
p_0 ... p_{k-1}), pending_k = the up-pooled values that tier k's open group adds. Every row of a batch is
at the same position.
Shapes: b batch, l length, h = d_model, p pool, G groups completed in a call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.base import SSMLayer, out_dtype, to_param_dtype
from torchssm.models.blocks import ResidualBlock


class _FeedForward(nn.Module):
    """SaShiMi's feed-forward block: x + Dropout(W_2 Dropout(GELU(W_1 LayerNorm(x)))), W_1: h -> ff * h."""

    def __init__(self, d_model: int, ff: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.w1 = nn.Linear(d_model, ff * d_model)
        self.w2 = nn.Linear(ff * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., h) -> (..., h): pointwise, so also one step
        return x + self.dropout(self.w2(self.dropout(F.gelu(self.w1(self.norm(x))))))


class _Stage(nn.Module):
    """``n_layers`` x [residual SSM block, residual feed-forward block] at one width."""

    def __init__(self, layer: str, d_model: int, layer_kwargs: dict, n_layers: int, ff: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResidualBlock(layer, d_model, layer_kwargs, norm="layer", prenorm=True, dropout=dropout, glu=False)
            for _ in range(n_layers)
        )
        self.ffs = nn.ModuleList(_FeedForward(d_model, ff, dropout) if ff else nn.Identity() for _ in range(n_layers))

    def residual_blocks(self) -> list[ResidualBlock]:
        """``blocks`` as the type checker should see it (an nn.ModuleList yields nn.Module): the same objects."""
        return cast("list[ResidualBlock]", list(self.blocks))

    def init_state(self, batch: int, device, dtype) -> list:
        return [block.ssm.init_state(batch, device=device, dtype=dtype) for block in self.residual_blocks()]

    def forward(self, x: torch.Tensor, states: list | None, want_state: bool):
        """x (b, n, h) -> (y (b, n, h), new states or None); one step through ``step`` when a state is given."""
        new_states = []
        for i, (block, ff) in enumerate(zip(self.residual_blocks(), self.ffs)):
            state = None if states is None else states[i]
            if state is not None and x.shape[1] == 1:
                y_t, state = block.step(x[:, 0], state)
                x = y_t[:, None]
            elif state is not None or want_state:
                x, state = block(x, state=state, return_state=True)
            else:
                x = block(x)
            x = ff(x)
            new_states.append(state)
        return x, (new_states if want_state else None)


class SaShiMi(SSMLayer):
    """SaShiMi's multi-scale U-Net as one layer (see the module docstring).

    Args:
        d_model: h, the width of the input and output (tier 0).
        pool: the pooling factor of each tier, top to bottom (the paper: 4, 4).
        expand: width factor from one tier to the next (the paper: 2).
        n_layers: residual [SSM, feed-forward] pairs per tier (the paper: 8).
        ff: the feed-forward block's expansion (the paper: 2; 0: no feed-forward blocks).
        layer, layer_kwargs: the registered SSM layer of every block and its arguments, built at each tier's
            width (default S4 with 64 states, as the paper).
        dropout: dropout inside the blocks (the paper: 0).
    """

    def __init__(
        self,
        d_model: int,
        pool: Sequence[int] = (4, 4),
        *,
        expand: int = 2,
        n_layers: int = 8,
        ff: int = 2,
        layer: str = "s4",
        layer_kwargs: dict | None = None,
        dropout: float = 0.0,
    ):
        super().__init__(d_model)
        pool = tuple(pool)
        if not pool or any(not isinstance(p, int) or isinstance(p, bool) or p < 2 for p in pool):
            raise ValueError(f"SaShiMi pool must be a non-empty list of ints >= 2, got {list(pool)}")
        for name, value, low in (("expand", expand, 1), ("n_layers", n_layers, 1), ("ff", ff, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"SaShiMi {name} must be an int >= {low}, got {value!r}")
        self.pool, self.expand, self.n_layers, self.ff = pool, expand, n_layers, ff
        kwargs = {"d_state": 64} if layer_kwargs is None else dict(layer_kwargs)
        widths = [d_model * expand**k for k in range(len(pool) + 1)]  # h_0 .. h_D
        self.down = nn.ModuleList(nn.Linear(p * h, h * expand) for p, h in zip(pool, widths))
        self.up = nn.ModuleList(nn.Linear(h * expand, p * h) for p, h in zip(pool, widths))
        self.stages = nn.ModuleList(_Stage(layer, h, kwargs, n_layers, ff, dropout) for h in widths[:-1])
        self.center = _Stage(layer, widths[-1], kwargs, n_layers, ff, dropout)
        self.norm = nn.LayerNorm(d_model)
        self.widths = widths
        self.causal = all(block.ssm.causal for stage in self._stages() for block in stage.residual_blocks())

    def _stages(self) -> list[_Stage]:
        """The up-path stages (tier 0 .. D-1) and the center, typed."""
        return cast("list[_Stage]", [*self.stages, self.center])

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, pool={list(self.pool)}, expand={self.expand}, n_layers={self.n_layers}"

    def init_state(self, batch: int, device=None, dtype=None) -> list:
        device = next(self.parameters()).device if device is None else device
        dtype = self._param_dtype() if dtype is None else dtype
        tiers = [
            [
                torch.zeros(batch, p, h, device=device, dtype=dtype),  # buffer: the open group's inputs
                torch.zeros(batch, p, h, device=device, dtype=dtype),  # pending: its up-pooled values
                stage.init_state(batch, device, dtype),
            ]
            for p, h, stage in zip(self.pool, self.widths, self._stages())
        ]
        center = self.center.init_state(batch, device, dtype)
        return [torch.zeros(batch, device=device, dtype=torch.long), tiers, center]

    def forward(self, x: torch.Tensor, state=None, *, return_state: bool = False):
        """x (b, l, h) -> y (b, l, h) [, state]; any length, continuing from ``state`` (see the module docstring)."""
        self._check_forward(x, state)
        if state is not None and not self.causal:
            raise ValueError("a non-causal SaShiMi (bidirectional layers) carries no state: call it with state=None")
        y, new_state = self._run(to_param_dtype(self, x), state, return_state)
        y = out_dtype(y, x)
        return (y, new_state) if return_state else y

    def step(self, x_t: torch.Tensor, state):
        """One step x_t (b, h) -> (y_t (b, h), new state): the lower tiers step when a group completes."""
        self._check_step(x_t, state)
        y, new_state = self._run(to_param_dtype(self, x_t)[:, None], state, True)
        return out_dtype(y[:, 0], x_t), new_state

    def _run(self, x: torch.Tensor, state, want_state: bool):
        b, n, _ = x.shape
        want_state = want_state or state is not None  # a carried state goes through every tier
        if want_state and state is None:
            state = self.init_state(b, device=x.device, dtype=x.dtype)
        position = int(state[0][0]) if state is not None and b else 0  # every row is at the same position
        tiers = None if state is None else state[1]  # None: a plain forward from the start, no state kept
        center = None if state is None else state[2]
        y, new_tiers, new_center = self._tier(0, x, position, tiers, center, want_state)
        y = self.norm(y)
        if not want_state:
            return y, None
        return y, [torch.full((b,), position + n, device=x.device, dtype=torch.long), new_tiers, new_center]

    def _tier(self, k: int, x: torch.Tensor, position: int, tiers, center, want_state: bool):
        """Tier k on its n new steps x (b, n, h_k), ``position`` steps seen before them at this tier; ``tiers``:
        the states of tiers k, k+1, ... Returns (y (b, n, h_k), the new states of tiers k, k+1, ..., the center's)."""
        if k == len(self.pool):
            y, center = self.center(x, center, want_state)
            return y + x, [], center
        b, n, h = x.shape
        p = self.pool[k]
        open_steps = position % p  # inputs of the open group already in the buffer
        if tiers is None:  # a plain forward from position 0
            buffer, pending, stage_state = x.new_zeros(b, p, h), x.new_zeros(b, p, h), None
        else:
            buffer, pending, stage_state = tiers[0]
        xb = torch.cat([buffer[:, :open_steps], x], dim=1)  # (b, open_steps + n, h)
        groups = xb.shape[1] // p  # groups completed by this call
        lower_tiers = None if tiers is None else list(tiers[1:])
        if groups:
            z = self.down[k](xb[:, : groups * p].reshape(b, groups, p * h))  # (b, G, h_{k+1})
            y_low, lower_tiers, center = self._tier(k + 1, z, position // p, lower_tiers, center, want_state)
            upsampled = self.up[k](y_low).reshape(b, groups * p, h)  # (b, G p, h): values of the NEXT groups
            values = torch.cat([pending, upsampled], dim=1)  # (b, p + G p, h) from the open group's start
            pending = upsampled[:, -p:]
        else:
            values = pending
        v = values[:, open_steps : open_steps + n] + x  # (b, n, h): up-pooled values + skip
        y, stage_state = self._stages()[k](v, stage_state, want_state)
        y = y + v
        if not want_state:
            return y, [], center
        rest = xb[:, groups * p :]  # (b, r, h), r < p: the new open group
        buffer = torch.cat([rest, rest.new_zeros(b, p - rest.shape[1], h)], dim=1)
        return y, [[buffer, pending, stage_state], *(lower_tiers or [])], center

    @property
    def total_pool(self) -> int:
        """The product of the pools: the steps of one bottom-tier step."""
        return math.prod(self.pool)
