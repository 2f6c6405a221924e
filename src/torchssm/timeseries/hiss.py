"""Hierarchical state-space models (HiSS): Bhirangi et al. 2024, "Hierarchical State Space Models for
Continuous Sequence-to-Sequence Modeling" (ICML; https://hiss-csp.github.io), Sec. 4 and Fig. 4.

A sensor stream x (b, L, m) is cut into L/k chunks of k steps. A low-level SSM runs *within* each chunk
(all chunks in parallel, as one batch of b * L/k sequences of length k, each from a zero state), its
output at the chunk's last step (or the mean over the chunk) is the chunk feature, and a high-level SSM
runs over the L/k chunk features:

    f_c = pool_j  Low(x[c k : (c + 1) k])_j        (b, L/k, h_low -> d_feature)   c = 0 .. L/k - 1
    y_c = High(f_0, ..., f_c)                       (b, L/k, d_output)             one prediction per chunk

HiSS predicts at the chunk rate (the paper's targets are sampled at the lower rate); ``output="step"``
repeats each chunk's prediction over its k steps (this upsampling looks ahead inside a chunk).

Two forms here, both built from registered layers (:func:`torchssm.layers.build_layer`) at either level:

* :class:`HiSS`: the sequence-to-sequence model of the paper, each level a stack of the package's residual
  blocks (:class:`torchssm.models.backbone.DeepSSM`);
* :class:`HiSSLayer`: a causal mixing layer with the layer contract (registered as ``"hiss"``):
  ``y_t = Low_t + g_{c(t) - 1}`` where Low_t is the low-level output at t inside its chunk and
  g_{c-1} the high-level output after the previous *complete* chunk, so y_t depends on x_<=t only and
  ``step`` is O(1): (low state, high state, g, position inside the chunk) is the whole state.

A length that k does not divide is an error unless a padding rule says what to do (``pad="zeros"``: right-
pad with zeros, ``pad="drop"``: drop the incomplete last chunk); the layer's ``tail="stream"`` keeps an
incomplete chunk in the carried state instead.

Shapes: b batch, L length, k chunk, c chunk index, m input features, h width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from torchssm.layers.base import SSMLayer
from torchssm.layers.registry import build_layer
from torchssm.models.backbone import DeepSSM
from torchssm.models.config import ConfigDict, ModelConfig

PADS = ("error", "zeros", "drop")
POOLS = ("last", "mean")
OUTPUTS = ("chunk", "step")


def chunk_count(length: int, chunk: int, pad: str = "error") -> int:
    """Number of chunks of ``chunk`` steps in ``length`` steps under the padding rule ``pad``."""
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if pad not in PADS:
        raise ValueError(f"unknown pad rule {pad!r}; expected one of {list(PADS)}")
    if length % chunk == 0:
        return length // chunk
    if pad == "error":
        raise ValueError(
            f"chunk size k={chunk} does not divide the length L={length}; pass a length that is a "
            f"multiple of {chunk} or a padding rule pad='zeros' (right-pad) or pad='drop' "
            f"(drop the last {length % chunk} steps)"
        )
    return -(-length // chunk) if pad == "zeros" else length // chunk


def to_chunks(x: torch.Tensor, chunk: int, pad: str = "error") -> torch.Tensor:
    """(b, L, m) -> (b, L/k, k, m), with ``pad`` deciding what happens when k does not divide L."""
    b, length, m = x.shape
    n = chunk_count(length, chunk, pad)
    if n * chunk > length:  # pad == "zeros"
        x = torch.cat([x, x.new_zeros(b, n * chunk - length, m)], dim=1)
    return x[:, : n * chunk].reshape(b, n, chunk, m)


@dataclass
class HiSSConfig(ConfigDict):
    """HiSS architecture (Bhirangi et al. 2024, Sec. 4). The paper's grid is over chunk sizes and the SSM type
    at each level (S4 / Mamba / LSTM low, S4 / Mamba high; its App. B tables, UNVERIFIED which is best here)."""

    config_name = "hiss"
    d_input: int = 6
    d_output: int = 3
    chunk: int = 10  # k
    low_layer: str = "lru"
    low_kwargs: dict = field(default_factory=dict)
    d_low: int = 32
    n_low: int = 1
    high_layer: str = "lru"
    high_kwargs: dict = field(default_factory=dict)
    d_high: int = 32
    n_high: int = 2
    pool: str = "last"  # chunk feature: the low-level output at the chunk's last step, or the chunk mean
    output: str = "chunk"  # one prediction per chunk, or "step" (repeated over the chunk's k steps)
    pad: str = "error"  # what to do when k does not divide L (see chunk_count)
    norm: str = "layer"


class HiSS(nn.Module):
    """The HiSS sequence-to-sequence model: (b, L, d_input) -> (b, L/k, d_output) (or (b, L', d_output))."""

    def __init__(self, config: HiSSConfig):
        super().__init__()
        if not isinstance(config, HiSSConfig):
            raise TypeError(f"expected a HiSSConfig, got {type(config).__name__}")
        if config.pool not in POOLS:
            raise ValueError(f"unknown pool {config.pool!r}; expected one of {list(POOLS)}")
        if config.output not in OUTPUTS:
            raise ValueError(f"unknown output {config.output!r}; expected one of {list(OUTPUTS)}")
        chunk_count(config.chunk, config.chunk, config.pad)  # validates chunk and pad
        self.config = config
        # low level: input features -> one feature vector (d_high) per chunk
        self.low = DeepSSM(
            ModelConfig(
                layer=config.low_layer,
                layer_kwargs=dict(config.low_kwargs),
                d_model=config.d_low,
                n_layers=config.n_low,
                norm=config.norm,
                pooling=config.pool,
                d_input=config.d_input,
                d_output=config.d_high,
            )
        )
        # high level: chunk features -> one prediction per chunk
        self.high = DeepSSM(
            ModelConfig(
                layer=config.high_layer,
                layer_kwargs=dict(config.high_kwargs),
                d_model=config.d_high,
                n_layers=config.n_high,
                norm=config.norm,
                pooling="none",
                d_input=config.d_high,
                d_output=config.d_output,
            )
        )

    def chunk_features(self, x: torch.Tensor) -> torch.Tensor:
        """(b, L, d_input) -> (b, L/k, d_high): every chunk through the low level at once."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.config.d_input:
            raise ValueError(
                f"inputs must have shape (batch, length, d_input={self.config.d_input}); got "
                f"{tuple(getattr(x, 'shape', ()))}"
            )
        chunks = to_chunks(x, self.config.chunk, self.config.pad)  # (b, n, k, m)
        b, n, k, m = chunks.shape
        return self.low(chunks.reshape(b * n, k, m)).reshape(b, n, -1)  # (b, n, d_high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.high(self.chunk_features(x))  # (b, n, d_output)
        if self.config.output == "step":
            y = y.repeat_interleave(self.config.chunk, dim=1)[:, : x.shape[1]]  # (b, L', d_output)
        return y


class HiSSLayer(SSMLayer):
    """Causal two-level layer with the layer contract (see the module docstring).

    Args:
        d_model: h, input and output width of both levels.
        chunk: k, the chunk size.
        low, high: registry names of the low- and high-level layers (any causal registered layer).
        low_kwargs, high_kwargs: their keyword arguments.
        tail: ``"error"`` (default): a call whose steps do not end on a chunk boundary raises;
            ``"stream"``: the incomplete chunk is carried in the state (streaming, chunked continuation).
    State: one flat tuple (the low state's tensors, the high state's tensors, g (b, h) the high-level output
    after the last complete chunk, position (b,) long: the steps of the current chunk seen so far).
    """

    def __init__(
        self,
        d_model: int,
        chunk: int = 8,
        *,
        low: str = "lru",
        high: str = "lru",
        low_kwargs: dict | None = None,
        high_kwargs: dict | None = None,
        tail: str = "error",
    ):
        super().__init__(d_model)
        chunk_count(chunk, chunk)
        if tail not in ("error", "stream"):
            raise ValueError(f"unknown tail rule {tail!r}; expected 'error' or 'stream'")
        self.chunk, self.tail = chunk, tail
        self.low = build_layer(low, d_model, **(low_kwargs or {}))
        self.high = build_layer(high, d_model, **(high_kwargs or {}))
        for name, layer in (("low", self.low), ("high", self.high)):
            if not layer.causal:
                raise ValueError(f"HiSSLayer needs causal layers; the {name} level {type(layer).__name__} is not")
        self._low_tuple = isinstance(self.low.init_state(1, device="meta"), tuple)
        self._high_tuple = isinstance(self.high.init_state(1, device="meta"), tuple)
        self._n_low = len(self.low.init_state(1, device="meta")) if self._low_tuple else 1
        # the two levels keep their own optim_overrides (read per module by torchssm.train.optim)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, chunk={self.chunk}, tail={self.tail!r}"

    def init_state(self, batch: int, device=None, dtype=None):
        device = next(self.parameters()).device if device is None else device
        dtype = self._param_dtype() if dtype is None else dtype
        return self._pack(
            self.low.init_state(batch, device=device, dtype=dtype),
            self.high.init_state(batch, device=device, dtype=dtype),
            torch.zeros(batch, self.d_model, device=device, dtype=dtype),  # g (b, h)
            torch.zeros(batch, device=device, dtype=torch.long),
        )  # position in the chunk (b,)

    def _pack(self, low_s, high_s, g, position) -> tuple:
        """One flat tuple of tensors (torchssm.testing perturbs states one tuple level deep)."""
        low = tuple(low_s) if self._low_tuple else (low_s,)
        high = tuple(high_s) if self._high_tuple else (high_s,)
        return (*low, *high, g, position)

    def _unpack(self, state):
        low, high = state[: self._n_low], state[self._n_low : -2]
        return (
            tuple(low) if self._low_tuple else low[0],
            tuple(high) if self._high_tuple else high[0],
            state[-2],
            state[-1],
        )

    def _check_tail(self, position: int, length: int) -> None:
        if self.tail == "error" and (position + length) % self.chunk:
            raise ValueError(
                f"chunk size k={self.chunk} does not divide the steps seen ({position} + {length}); "
                f"pass lengths that end on a chunk boundary or build the layer with tail='stream'"
            )

    def forward(self, x: torch.Tensor, state=None, *, return_state: bool = False):
        """x (b, L, h) -> y (b, L, h): the head of an open chunk, the complete chunks in parallel, the tail."""
        self._check_forward(x, state)
        b, length, h = x.shape
        k = self.chunk
        if state is None:
            state = self.init_state(b, device=x.device)
        low_s, high_s, g, position = self._unpack(state)
        pos = int(position[0]) if b else 0  # every row of a batch is at the same position
        self._check_tail(pos, length)
        outs = []
        t = 0
        if pos:  # finish the open chunk
            n = min(k - pos, length)
            u, low_s = self.low(x[:, :n], low_s, return_state=True)  # (b, n, h)
            outs.append(u + g[:, None])
            t, pos = n, pos + n
            if pos == k:
                g, high_s = self.high.step(u[:, -1], high_s)
                low_s, pos = self.low.init_state(b, device=x.device), 0
        n_full = (length - t) // k
        if n_full:  # complete chunks: the low level over all of them at once, the high level over their ends
            u = self.low(x[:, t : t + n_full * k].reshape(b * n_full, k, h)).reshape(b, n_full, k, h)
            gs, high_s = self.high(u[:, :, -1], high_s, return_state=True)  # (b, n_full, h)
            g_before = torch.cat([g[:, None], gs[:, :-1]], dim=1)  # (b, n_full, h): output of the previous chunk
            outs.append((u + g_before[:, :, None]).reshape(b, n_full * k, h))
            g, t = gs[:, -1], t + n_full * k
        if t < length:  # open a new chunk
            u, low_s = self.low(x[:, t:], low_s, return_state=True)
            outs.append(u + g[:, None])
            pos = length - t
        y = torch.cat(outs, dim=1)
        if not return_state:
            return y
        return y, self._pack(low_s, high_s, g, torch.full((b,), pos, device=x.device, dtype=torch.long))

    def step(self, x_t: torch.Tensor, state):
        """One step x_t (b, h) -> (y_t (b, h), new state); the high level steps when a chunk completes."""
        self._check_step(x_t, state)
        low_s, high_s, g, position = self._unpack(state)
        u, low_s = self.low.step(x_t, low_s)
        y = u + g
        position = position + 1
        if int(position[0]) == self.chunk:
            g, high_s = self.high.step(u, high_s)
            low_s = self.low.init_state(x_t.shape[0], device=x_t.device)
            position = torch.zeros_like(position)
        return y, self._pack(low_s, high_s, g, position)
