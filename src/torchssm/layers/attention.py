"""Multi-head self-attention with rotary positions: the Transformer baseline, as an SSM layer.

    q, k, v = split(W_qkv x);  q, k <- RoPE(q, pos), RoPE(k, pos)
    y_t = W_o concat_heads( sum_{j <= t} softmax_j(q_t . k_j / sqrt(d_head)) v_j )      (causal)

Positions are rotary (RoPE; Su et al. 2021, "RoFormer", Sec. 3.4.2: theta_i = 10000^(-2i/d_head)),
not learned: the layer has no parameter tied to a maximum length, so a model trained at length L
can be *evaluated* at 2L..16L (``torchssm bench extrapolation``); ``max_len`` only sizes the KV cache.

To fit the layer contract, the recurrent "state" of attention is its KV cache, preallocated:

    state = (k_cache (b, heads, max_len, d_head), v_cache (b, heads, max_len, d_head), position (b,) long)

``k_cache`` holds keys already rotated to their absolute position; ``position[i]`` is how many
tokens sequence i has seen. ``step`` appends one token and attends over the cache: O(position) work
per token (a Transformer's generation cost grows with the context; an SSM step does not), O(max_len)
memory. ``forward`` with a state (chunked continuation) uses the same cached path as ``step``
(:meth:`SelfAttention._attend_cached`), so the two cannot drift apart.

``step`` is pure (the contract) without copying the cache every token: a state only ever reads the slots
before its ``position``, so the new key/value can be written *in place* at slot ``position`` whenever no
other state has written there yet. Each cache this layer writes records how far it is filled (per
sequence); a call whose ``position`` equals that fill writes in place (O(l) memory traffic, plus the
O(position) read of attention), any other call (a second continuation of the same state, a cache this
layer did not write, e.g. from ``init_state``, or a cache that autograd or ``torch.compile`` tracks)
writes into a copy first (O(max_len), as every call did before). Every state keeps its meaning: the
slots it reads never change. What an older state's tensors hold at and after its own ``position`` may
change (those slots are unused: masked out and overwritten before they are read).

Defaults: ``n_heads=4`` and ``max_len=4096`` are this library's choices for the baseline, not a paper's
values (4096 is the Long Range Arena's Text / Retrieval document length, its longest below Path-X;
Tay et al. 2021, "Long Range Arena", Sec. 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.base import Device, LayerOutput, SSMLayer, StepOutput, check_lengths, out_dtype, to_param_dtype

KVState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

ROPE_BASE = 10000.0  # RoFormer (Su et al. 2021), Eq. 15


def rope_rotate(x: torch.Tensor, positions: torch.Tensor, base: float = ROPE_BASE) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i + d/2}) of ``x`` (b, heads, l, d) by angle positions * base^(-2i/d).

    ``positions`` is (b, l) (integer positions; any dtype). "Rotate-half" layout as in GPT-NeoX/LLaMA.
    """
    d = x.shape[-1]
    half = d // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float64) * 2.0 / d)  # (d/2,)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # (b, l, d/2)
    cos = angles.cos().to(x.dtype)[:, None]  # (b, 1, l, d/2)
    sin = angles.sin().to(x.dtype)[:, None]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


_FILL = "_torchssm_kv_fill"  # attribute of a KV cache written by SelfAttention: (its v_cache, fill (b,) long)


def _mark_filled(k_cache: torch.Tensor, v_cache: torch.Tensor, fill: torch.Tensor) -> None:
    """Record that slots >= ``fill`` of this (k_cache, v_cache) pair are read by no state yet."""
    setattr(k_cache, _FILL, (v_cache, fill.clone()))  # a copy: an in-place edit of a returned position must not move it


def _owns_tail(
    k_cache: torch.Tensor, v_cache: torch.Tensor, position: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> bool:
    """Whether the new keys/values may be written in place at ``position``: the pair was written by this layer,
    no other state has filled it past ``position`` (one host sync), and neither autograd (a cache or new key
    it tracks; an in-place write would invalidate saved tensors) nor ``torch.compile`` is involved."""
    if torch.compiler.is_compiling() or k_cache.requires_grad or v_cache.requires_grad:
        return False
    if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
        return False
    if (k_cache.is_inference() or v_cache.is_inference()) and not torch.is_inference_mode_enabled():
        return False  # inference tensors cannot be written outside inference mode
    mark = getattr(k_cache, _FILL, None)
    if mark is None or mark[0] is not v_cache:
        return False
    fill = mark[1]
    return fill.shape == position.shape and fill.device == position.device and bool(torch.equal(fill, position))


class SelfAttention(SSMLayer):
    """Multi-head scaled dot-product self-attention (``F.scaled_dot_product_attention``) with RoPE.

    Args:
        d_model: width h (divisible by ``n_heads``; d_head = h / n_heads must be even for RoPE).
        n_heads: number of heads.
        causal: causal mask (then ``step`` and stateful ``forward`` exist); ``False`` = bidirectional.
        max_len: KV-cache capacity (tokens per sequence) for ``step`` / stateful ``forward``; a plain
            ``forward(x)`` accepts any length.
    """

    def __init__(self, d_model: int, n_heads: int = 4, *, causal: bool = True, max_len: int = 4096):
        super().__init__(d_model)
        if not isinstance(n_heads, int) or n_heads < 1 or d_model % n_heads:
            raise ValueError(f"n_heads must be a positive divisor of d_model={d_model}; got {n_heads!r}")
        if (d_model // n_heads) % 2:
            raise ValueError(f"d_head = d_model / n_heads = {d_model // n_heads} must be even for rotary positions")
        if not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be a positive int; got {max_len!r}")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.causal = bool(causal)
        self.max_len = max_len
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    # --- shared by forward and step ---------------------------------------------------------------
    def _project(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (b, l, h), positions (b, l) -> rotated q, k and v, each (b, heads, l, d_head)."""
        b, l, _ = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return rope_rotate(q, positions), rope_rotate(k, positions), v

    def _merge(self, o: torch.Tensor) -> torch.Tensor:
        """o (b, heads, l, d_head) -> y (b, l, h)."""
        b, _, l, _ = o.shape
        return self.out(o.transpose(1, 2).reshape(b, l, self.d_model))

    def _attend_cached(self, x: torch.Tensor, state: KVState) -> tuple[torch.Tensor, KVState]:
        """Append x (b, l, h) to the KV cache and attend causally over cache + x. Pure: writes in place only
        into a cache that no other state has filled past ``position`` (module docstring), else into a copy.

        Reads ``position.max()`` once (a host sync) to attend only over the filled part of the cache.
        """
        k_cache, v_cache, position = state
        b, l, _ = x.shape
        end = int(position.max()) + l  # filled length after this call (longest sequence in the batch)
        if end > self.max_len:
            raise ValueError(
                f"KV cache overflow: position {end - l} + {l} new tokens > max_len={self.max_len}; "
                f"build SelfAttention(..., max_len>={end})"
            )
        positions = position[:, None] + torch.arange(l, device=x.device)  # (b, l)
        q, k, v = self._project(x, positions)
        index = positions[:, None, :, None].expand(b, self.n_heads, l, self.d_head)  # (b, heads, l, d_head)
        k, v = k.to(k_cache.dtype), v.to(v_cache.dtype)
        new_position = position + l
        if _owns_tail(k_cache, v_cache, position, k, v):
            k_cache.scatter_(2, index, k)  # slots >= position: read by no state (module docstring)
            v_cache.scatter_(2, index, v)
        else:
            k_cache = k_cache.scatter(2, index, k)
            v_cache = v_cache.scatter(2, index, v)
        if not (k_cache.requires_grad or v_cache.requires_grad or torch.compiler.is_compiling()):
            _mark_filled(k_cache, v_cache, new_position)
        keys = torch.arange(end, device=x.device)  # (end,)
        mask = keys[None, None, :] <= positions[:, :, None]  # (b, l, end): key j visible to query t
        o = F.scaled_dot_product_attention(
            q, k_cache[:, :, :end].to(q.dtype), v_cache[:, :, :end].to(q.dtype), attn_mask=mask[:, None]
        )  # (b, heads, l, d_head)
        return self._merge(o), (k_cache, v_cache, new_position)

    # --- contract ---------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        state: KVState | None = None,
        *,
        return_state: bool = False,
        lengths: torch.Tensor | None = None,
    ) -> LayerOutput:
        """x (b, l, h) -> y (b, l, h); with a state, continue the sequences held in the KV cache.

        ``lengths`` (b,) long, for right-padded batches: bidirectional attention ignores keys at
        t >= lengths (so valid outputs do not depend on the padding); causal attention never sees them.
        """
        self._check_forward(x, state)
        y, new_state = self._forward(to_param_dtype(self, x), state, return_state, lengths)
        y = out_dtype(y, x)
        return (y, new_state) if return_state else y

    def _forward(
        self, x: torch.Tensor, state: KVState | None, return_state: bool, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, KVState | None]:
        """forward() on an input already in the parameters' dtype: (y, final state or None)."""
        if not self.causal:
            if state is not None or return_state:
                raise ValueError("bidirectional SelfAttention (causal=False) has no state; call forward(x)")
            positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
            q, k, v = self._project(x, positions)
            mask = None
            if lengths is not None:
                check_lengths(lengths, x.shape[0])
                mask = (positions < lengths[:, None])[:, None, None, :]  # (b, 1, 1, l): valid keys
            return self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), None
        if state is None and not return_state:  # training fast path: SDPA's fused causal kernel
            positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
            q, k, v = self._project(x, positions)
            return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True)), None
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=self._param_dtype())
        return self._attend_cached(x, state)

    def step(self, x_t: torch.Tensor, state: KVState) -> StepOutput:
        """x_t (b, h) -> (y_t (b, h), new_state): one token, attending over the cache."""
        self._check_step(x_t, state)
        y, new_state = self._attend_cached(to_param_dtype(self, x_t)[:, None], state)
        return out_dtype(y[:, 0], x_t), new_state

    def init_state(self, batch: int, device: Device = None, dtype: torch.dtype | None = None) -> KVState:
        """Empty cache: k_cache, v_cache (b, heads, max_len, d_head) zeros, position (b,) zeros (long)."""
        dtype = dtype or self._param_dtype()
        shape = (batch, self.n_heads, self.max_len, self.d_head)
        return (
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(batch, device=device, dtype=torch.long),
        )

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, causal={self.causal}, max_len={self.max_len}"
