"""Resettable sequence memories for recurrent policies: a stack of any causal registered layer, torch.nn
GRU / LSTM, and a windowed Transformer baseline, all behind one interface.

Every memory maps a sequence of embeddings x (b, l, h) to y (b, l, h) and has two modes:

* ``step(x_t, state, reset_t) -> (y_t, state)``: one token (rollouts), O(1) in the length for SSMs and
  RNNs (O(window) for the windowed Transformer). ``reset_t`` (b,) bool replaces the rows' state by the
  initial (zero) state before ``x_t`` is read: a new episode starts at t.
* ``forward(x, state, reset) -> y``: the whole trajectory at once (training). ``reset`` (b, l) bool marks
  episode starts; ``state`` is the state before ``x[:, 0]``. Output t equals what ``step`` returns at t.

A layer whose ``forward`` takes ``reset`` (LRU, Mamba, Mamba-2: the reset sits inside the scan, as in
Lu et al. 2023, Sec. 4 and popjaxrl ``algorithms/s5.py`` ``binary_operator_reset``) gets it directly.
Any other memory (S5, S4D, GRU, LSTM here) runs through :func:`packed_forward`: the trajectory is cut at
the resets into episodes, the episodes are stacked as a padded batch (right padding, which a causal
map never reads), run with a zero state (or the carried state for each row's first piece), and scattered
back. Both give exactly the outputs of ``step`` (``tests/rl/test_memory.py`` checks every memory).

Residual block of the layer stack: x + GLU(mixer(x)) with GLU(u) = W1 g * sigmoid(W2 g), g = gelu(u), the
"full_glu" block of popjaxrl ``algorithms/s5.py`` ``SequenceLayer`` (run_popgym.py sets
S5_ACTIVATION="full_glu", S5_DO_NORM=False, S5_PRENORM=False); ``norm=True`` adds a pre-LayerNorm.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

State = Any  # a tensor or a (nested) tuple/list of tensors, batch first

RNN_MEMORIES = ("gru", "lstm")
WINDOW_TRANSFORMER = "window_transformer"


# --- state trees ------------------------------------------------------------------------------------
def map_state(fn: Callable, *states: State) -> State:
    """Apply ``fn`` to matching tensors of one or more state trees (tuples/lists of tensors)."""
    first = states[0]
    if isinstance(first, (tuple, list)):
        return type(first)(map_state(fn, *parts) for parts in zip(*states))
    return fn(*states)


def reset_state(state: State, fresh: State, reset_t: torch.Tensor) -> State:
    """Rows where ``reset_t`` (b,) is True take ``fresh``'s value; batch is dim 0 of every tensor."""

    def pick(s, f):
        mask = reset_t.to(s.device).view(-1, *([1] * (s.dim() - 1)))
        return torch.where(mask, f.to(s.dtype), s)

    return map_state(pick, state, fresh)


def index_state(state: State, rows: torch.Tensor) -> State:
    """The rows ``rows`` of every tensor of a state tree."""
    return map_state(lambda s: s[rows], state)


def packed_forward(
    run: Callable[[torch.Tensor, State], torch.Tensor],
    initial_state: Callable[[int], State],
    x: torch.Tensor,
    state: State | None,
    reset: torch.Tensor,
) -> torch.Tensor:
    """Run a causal map ``run(x, state) -> y`` with resets by packing episodes as a padded batch.

    x (b, l, h), reset (b, l) bool. Pieces start at t = 0 and at every reset; piece p of row r covers
    x[r, s_p : s_{p+1}]. Its initial state is ``state[r]`` for the first piece of a row that does not
    start with a reset, the fresh state otherwise.
    """
    b, l, h = x.shape
    starts = reset.to(torch.bool).clone()  # (b, l)
    carry = ~starts[:, 0]  # (b,): first piece continues the given state
    starts[:, 0] = True
    piece = torch.cumsum(starts.reshape(-1).to(torch.int64), 0) - 1  # (b*l,) piece index, row-major
    t = torch.arange(l, device=x.device).expand(b, l)
    start_t = torch.cummax(torch.where(starts, t, torch.zeros_like(t)), dim=1).values  # (b, l)
    pos = (t - start_t).reshape(-1)  # (b*l,) position inside the piece
    n_pieces = int(piece[-1]) + 1
    max_len = int(pos.max()) + 1
    xp = x.new_zeros(n_pieces, max_len, h)
    xp[piece, pos] = x.reshape(b * l, h)
    sp = initial_state(n_pieces)
    if state is not None and bool(carry.any()):
        first = piece.view(b, l)[:, 0][carry]  # piece index of each carried row's first piece

        def put(fresh, given):
            fresh = fresh.clone()
            fresh[first] = given[carry].to(fresh.dtype)
            return fresh

        sp = map_state(put, sp, state)
    yp = run(xp, sp)  # (n_pieces, max_len, h)
    return yp[piece, pos].view(b, l, h)


# --- the interface ----------------------------------------------------------------------------------
class Memory(nn.Module):
    """Base class: subclasses implement ``initial_state``, ``_forward(x, state, reset)`` and ``_step``;
    ``native_reset`` says whether ``_forward`` handles ``reset`` itself (else :func:`packed_forward`)."""

    native_reset: bool = False

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model

    def initial_state(self, batch: int, device=None) -> State:
        raise NotImplementedError

    def _forward(self, x: torch.Tensor, state: State | None, reset: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _step(self, x_t: torch.Tensor, state: State):
        raise NotImplementedError

    def _device(self):
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor, state: State | None = None, reset: torch.Tensor | None = None) -> torch.Tensor:
        """x (b, l, h) -> y (b, l, h); ``reset`` (b, l) bool: zero the memory before step t."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (batch, length, {self.d_model}); got {tuple(x.shape)}")
        if reset is not None and tuple(reset.shape) != tuple(x.shape[:2]):
            raise ValueError(f"reset must have shape (batch, length)={tuple(x.shape[:2])}; got {tuple(reset.shape)}")
        if reset is None or self.native_reset:
            return self._forward(x, state, None if reset is None else reset.to(torch.bool))
        return packed_forward(
            lambda xp, sp: self._forward(xp, sp, None),
            lambda n: self.initial_state(n, device=x.device),
            x,
            state,
            reset,
        )

    def step(self, x_t: torch.Tensor, state: State, reset_t: torch.Tensor | None = None):
        """x_t (b, h) -> (y_t (b, h), new state); ``reset_t`` (b,) bool: start from the initial state."""
        if reset_t is not None:
            state = reset_state(state, self.initial_state(x_t.shape[0], device=x_t.device), reset_t.to(torch.bool))
        return self._step(x_t, state)


# --- a stack of registered layers -------------------------------------------------------------------
class GLU(nn.Module):
    """popjaxrl's "full_glu": W1 g * sigmoid(W2 g), g = gelu(u)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.out1 = nn.Linear(d_model, d_model)
        self.out2 = nn.Linear(d_model, d_model)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        g = F.gelu(u)
        return self.out1(g) * torch.sigmoid(self.out2(g))


class LayerMemory(Memory):
    """``n_layers`` residual blocks x + GLU(layer(norm(x))) of one causal registered layer."""

    def __init__(self, layer: str, d_model: int, n_layers: int = 1, norm: bool = False, **layer_kwargs):
        super().__init__(d_model)
        from torchssm.layers import build_layer

        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        self.layer_name = layer
        self.mixers = nn.ModuleList(build_layer(layer, d_model, **layer_kwargs) for _ in range(n_layers))
        if not all(getattr(m, "causal", False) for m in self.mixers):
            raise ValueError(
                f"layer {layer!r} with {layer_kwargs or 'default arguments'} is not causal "
                f"(no O(1) step); "
                f"a recurrent policy needs a causal layer (e.g. lru, s5, s4d, mamba, mamba2)"
            )
        self.norms = nn.ModuleList((nn.LayerNorm(d_model) if norm else nn.Identity()) for _ in range(n_layers))
        self.glus = nn.ModuleList(GLU(d_model) for _ in range(n_layers))
        self.native_reset = all("reset" in inspect.signature(m.forward).parameters for m in self.mixers)

    def initial_state(self, batch: int, device=None) -> list[State]:
        device = self._device() if device is None else device
        return [m.init_state(batch, device=device) for m in self.mixers]

    def _forward(self, x, state, reset):
        kw = {} if reset is None else {"reset": reset}
        for i, (mixer, norm, glu) in enumerate(zip(self.mixers, self.norms, self.glus)):
            y = mixer(norm(x), None if state is None else state[i], **kw)
            x = x + glu(y)
        return x

    def _step(self, x_t, state):
        new_state = []
        for i, (mixer, norm, glu) in enumerate(zip(self.mixers, self.norms, self.glus)):
            y, s = mixer.step(norm(x_t), state[i])
            new_state.append(s)
            x_t = x_t + glu(y)
        return x_t, new_state


# --- torch.nn RNN baselines -------------------------------------------------------------------------
class RNNMemory(Memory):
    """torch.nn.GRU / LSTM (batch first). State (b, n_layers, h) (LSTM: a (h, c) pair), batch first."""

    def __init__(self, kind: str, d_model: int, n_layers: int = 1):
        super().__init__(d_model)
        if kind not in RNN_MEMORIES:
            raise ValueError(f"unknown RNN {kind!r}; expected one of {list(RNN_MEMORIES)}")
        self.kind, self.n_layers = kind, n_layers
        self.rnn = (nn.GRU if kind == "gru" else nn.LSTM)(d_model, d_model, num_layers=n_layers, batch_first=True)

    def initial_state(self, batch: int, device=None) -> State:
        p = next(self.parameters())
        device = p.device if device is None else device
        z = torch.zeros(batch, self.n_layers, self.d_model, device=device, dtype=p.dtype)
        return z if self.kind == "gru" else (z, z.clone())

    def _to_rnn(self, state):
        return map_state(lambda s: s.transpose(0, 1).contiguous(), state) if state is not None else None

    def _forward(self, x, state, reset):
        h0 = self._to_rnn(state)
        return self.rnn(x, tuple(h0) if isinstance(h0, (tuple, list)) else h0)[0]

    def _step(self, x_t, state):
        h0 = self._to_rnn(state)
        y, h = self.rnn(x_t[:, None], tuple(h0) if isinstance(h0, (tuple, list)) else h0)
        return y[:, 0], map_state(lambda s: s.transpose(0, 1), h if self.kind == "gru" else tuple(h))


# --- windowed Transformer baseline ------------------------------------------------------------------
class WindowAttention(nn.Module):
    """Causal multi-head attention over the last ``window`` tokens of the current episode, with a learnt
    relative-position bias per head and offset (T5-style bias, Raffel et al. 2020, Sec. 2.1; no absolute
    positions, so a trained model runs on any length).

    State: the keys and values of the previous window - 1 tokens (b, w-1, heads, d_head) and a (b, w-1)
    validity mask (False before the episode start). The parallel form processes queries in blocks of
    ``window``: block c attends to keys [cw - (w-1), cw + w), O(l w) time and memory.
    """

    def __init__(self, d_model: int, n_heads: int, window: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self.n_heads, self.d_head, self.window = n_heads, d_model // n_heads, window
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rel_bias = nn.Parameter(torch.zeros(n_heads, window))  # bias[head, t - s], 0 <= t - s < window

    def initial_state(self, batch: int, device=None, dtype=None):
        w, hd = self.window - 1, (self.n_heads, self.d_head)
        kv = torch.zeros(batch, w, *hd, device=device, dtype=dtype)
        return kv, kv.clone(), torch.zeros(batch, w, device=device, dtype=torch.bool)

    def forward(self, x: torch.Tensor, state, reset: torch.Tensor | None) -> torch.Tensor:
        b, l, d = x.shape
        W, H, dh = self.window, self.n_heads, self.d_head
        q, k, v = self.qkv(x).view(b, l, 3, H, dh).unbind(2)  # (b, l, H, dh) each
        pk, pv, pvalid = state if state is not None else self.initial_state(b, x.device, x.dtype)
        seg = torch.cumsum(reset.to(torch.int64), 1) if reset is not None else x.new_zeros(b, l, dtype=torch.int64)
        nb = -(-l // W)
        pad = nb * W - l
        # keys: the carried window-1 (segment 0) then x, padded at the end (padded keys: segment -1, valid)
        K = F.pad(torch.cat([pk.to(k.dtype), k], 1), (0, 0, 0, 0, 0, pad))  # (b, W-1+nb*W, H, dh)
        V = F.pad(torch.cat([pv.to(v.dtype), v], 1), (0, 0, 0, 0, 0, pad))
        seg_k = F.pad(torch.cat([seg.new_zeros(b, W - 1), seg], 1), (0, pad), value=-1)  # (b, W-1+nb*W)
        valid_k = F.pad(torch.cat([pvalid, pvalid.new_ones(b, l)], 1), (0, pad), value=True)
        seg_q = F.pad(seg, (0, pad), value=-1).view(b, nb, W)  # (b, nb, W)
        qb = F.pad(q, (0, 0, 0, 0, 0, pad)).view(b, nb, W, H, dh)
        Kb = K.unfold(1, 2 * W - 1, W).permute(0, 1, 4, 2, 3)  # (b, nb, 2W-1, H, dh)
        Vb = V.unfold(1, 2 * W - 1, W).permute(0, 1, 4, 2, 3)
        seg_kb, valid_kb = seg_k.unfold(1, 2 * W - 1, W), valid_k.unfold(1, 2 * W - 1, W)  # (b, nb, 2W-1)
        offset = (torch.arange(W, device=x.device)[:, None] + W - 1) - torch.arange(2 * W - 1, device=x.device)
        in_window = (offset >= 0) & (offset < W)  # (W, 2W-1): query i sees key j
        mask = in_window & (seg_kb[:, :, None, :] == seg_q[..., None]) & valid_kb[:, :, None, :]  # (b, nb, W, 2W-1)
        bias = self.rel_bias[:, offset.clamp(0, W - 1)]  # (H, W, 2W-1)
        scores = torch.einsum("bnqhd,bnkhd->bnhqk", qb, Kb) / math.sqrt(dh) + bias.to(qb.dtype)
        scores = scores.masked_fill(~mask[:, :, None], float("-inf"))
        y = torch.einsum("bnhqk,bnkhd->bnqhd", scores.softmax(-1), Vb)  # (b, nb, W, H, dh)
        return self.out(y.reshape(b, nb * W, d)[:, :l])

    def step(self, x_t: torch.Tensor, state):
        b, d = x_t.shape
        H, dh = self.n_heads, self.d_head
        q, k, v = self.qkv(x_t).view(b, 3, H, dh).unbind(1)  # (b, H, dh)
        pk, pv, pvalid = state
        K = torch.cat([pk.to(k.dtype), k[:, None]], 1)  # (b, W, H, dh)
        V = torch.cat([pv.to(v.dtype), v[:, None]], 1)
        valid = torch.cat([pvalid, pvalid.new_ones(b, 1)], 1)  # (b, W)
        bias = self.rel_bias.flip(-1)  # key j of the window sits W-1-j steps back
        scores = torch.einsum("bhd,bwhd->bhw", q, K) / math.sqrt(dh) + bias.to(q.dtype)
        scores = scores.masked_fill(~valid[:, None], float("-inf"))
        y = torch.einsum("bhw,bwhd->bhd", scores.softmax(-1), V).reshape(b, d)
        return self.out(y), (K[:, 1:], V[:, 1:], valid[:, 1:])


class WindowTransformerMemory(Memory):
    """Pre-norm Transformer blocks x + attn(LN x), x + MLP(LN x) (MLP 4h, GELU) with windowed attention."""

    native_reset = True

    def __init__(self, d_model: int, n_layers: int = 1, n_heads: int = 4, window: int = 64):
        super().__init__(d_model)
        self.attn = nn.ModuleList(WindowAttention(d_model, n_heads, window) for _ in range(n_layers))
        self.ln1 = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
            for _ in range(n_layers)
        )

    def initial_state(self, batch: int, device=None) -> list[State]:
        p = next(self.parameters())
        return [a.initial_state(batch, p.device if device is None else device, p.dtype) for a in self.attn]

    def _forward(self, x, state, reset):
        for i, (attn, ln1, ln2, mlp) in enumerate(zip(self.attn, self.ln1, self.ln2, self.mlp)):
            x = x + attn(ln1(x), None if state is None else state[i], reset)
            x = x + mlp(ln2(x))
        return x

    def _step(self, x_t, state):
        new_state = []
        for i, (attn, ln1, ln2, mlp) in enumerate(zip(self.attn, self.ln1, self.ln2, self.mlp)):
            y, s = attn.step(ln1(x_t), state[i])
            new_state.append(s)
            x_t = x_t + y
            x_t = x_t + mlp(ln2(x_t))
        return x_t, new_state


def available_memories() -> list[str]:
    """Memory names: the causal-capable registered layers, the RNNs and the windowed Transformer."""
    from torchssm.layers import available_layers

    return sorted(set(available_layers()) | set(RNN_MEMORIES) | {WINDOW_TRANSFORMER})


def build_memory(name: str, d_model: int, n_layers: int = 1, **kwargs) -> Memory:
    """A memory by name: 'gru', 'lstm', 'window_transformer' (kwargs n_heads, window) or a registered
    layer (lru, s5, s4d, mamba, mamba2, ...; kwargs go to the layer, plus ``norm``)."""
    if name in RNN_MEMORIES:
        if kwargs:
            raise TypeError(f"memory {name!r} takes no extra arguments; got {sorted(kwargs)}")
        return RNNMemory(name, d_model, n_layers)
    if name == WINDOW_TRANSFORMER:
        return WindowTransformerMemory(d_model, n_layers, **kwargs)
    from torchssm.layers.registry import get_layer_class

    try:
        get_layer_class(name)
    except ValueError:
        raise ValueError(f"unknown memory {name!r}; expected one of {available_memories()}") from None
    return LayerMemory(name, d_model, n_layers, **kwargs)
