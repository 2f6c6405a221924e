"""Hybrid SSM-attention layers: the Jamba block and SeqBoat's sparsely activated attention.

Both are ordinary registered layers (``layer: jamba`` / ``layer: seqboat``), so they work in the language
model (:mod:`torchssm.models.lm`) and in the deep model (:mod:`torchssm.models.backbone`), with ``step``,
chunked continuation and ``reset`` like every causal layer. Shapes: b batch, l length, h = d_model.

**Jamba block** (Lieber et al. 2024, "Jamba: A Hybrid Transformer-Mamba Language Model", arXiv:2403.19887,
Sec. 2 and Fig. 1): ``n_layers`` pre-norm residual layers; layer i mixes with attention when
``i % attn_every == attn_offset`` and with an SSM (Mamba) otherwise, then applies an MLP that is a
mixture of experts when ``i % moe_every == moe_offset``::

    x <- x + Mixer_i(RMSNorm(x));   x <- x + MLP_i(RMSNorm(x))          i = 0 .. n_layers - 1

The paper's block: l = 8 layers, attention:Mamba = 1:7 (``attn_every=8``, ``attn_offset=4`` as Hugging
Face's ``JambaConfig`` ``attn_layer_period`` / ``attn_layer_offset``), MoE every e = 2 layers
(``expert_layer_period=2``, ``expert_layer_offset=1``) with n = 16 experts and top K = 2. The MLP is
SwiGLU, ``W_down (SiLU(W_gate x) * W_up x)`` (as ``JambaMLP``); the router is a linear map to expert logits,
softmax, then the top-K weights without renormalisation (as ``JambaSparseMoeBlock``; UNVERIFIED against
the paper's text). In training, each MoE layer adds the Switch Transformer's load-balancing loss (Fedus et
al. 2022, "Switch Transformers", JMLR, Sec. 2.2, eq. 4-6), generalised to top-K routing as transformers'
``load_balancing_loss_func`` of Mixtral / Jamba does::

    L_aux = alpha * N * sum_i f_i * P_i,   f_i = (1/T) #{tokens x : i in topK(p(x))},   P_i = (1/T) sum_x p_i(x)

over the T tokens of the batch and N experts (sum_i f_i = K; L_aux = alpha * K when routing is uniform, and
the paper's argument: it is minimised under uniform routing). f is a count, so the gradient reaches the
router through P only. ``moe_aux_coef``
is alpha: default 1e-2, the Switch Transformer's value (Sec. 2.2); transformers' ``JambaConfig`` uses
``router_aux_loss_coef`` = 1e-3 (with ``output_router_logits`` off by default); that the Jamba paper trains with
this loss is UNVERIFIED. The loss reaches ``torchssm train`` through :mod:`torchssm.models.auxiliary` (logged
as ``train_aux_loss``). Differences, stated: attention keeps :class:`~torchssm.layers.attention.SelfAttention`'s
rotary positions (Jamba uses no explicit positions, Sec. 6.4, UNVERIFIED section). The block returns its
last hidden state; inside the LM's own residual ``x + block(RMSNorm(x))`` use ``n_layer`` = the number of
Jamba blocks.

**SeqBoat** (Ren et al. 2023, "Sparse Modular Activation for Efficient Sequence Modeling", NeurIPS,
arXiv:2306.11197, Sec. 3 and Fig. 2; reference code github.com/renll/SeqBoat ``SeqBoatLayer``). With
m = SiLU(SSM(x)) the SSM's output (b, l, h):

    [u_t, hx_t] = W_x m_t + b_x                                  u_t in R^2 (two modules: skip, attention)
    p_t = softmax(u_t / tau),  tau = exp(theta), theta_0 = log sqrt(h)     the latent configurator
    a_t = argmax p_t  (a_t = 1: the attention unit is activated at t),  c_t = max p_t
    z_t, r_t, v_t = split(SiLU(W_m m_t + b_m))                   on activated steps only (compressed)
    q_t = z_t * gamma_0 + beta_0,  k_t = z_t * gamma_1 + beta_1
    o_t = sum_{j activated, rank(t) - rank(j) < w, j <= t} softmax_j(q_t . k_j / sqrt(d_qk)) v_j
    y_t = hx_t + [a_t = 1] c_t W_h (o_t * r_t)

i.e. a Gated Attention Unit (Hua et al. 2022) that runs only on the activated steps, attending over the
last ``window`` activated steps (the paper's working memory), with rotary positions of the original time
steps (the reference code's ``rel_pos_bias="rotary"``, used for its enwik8 LM). The hard decision has no
gradient; the router learns through c_t, the confidence multiplying the attention output. The layer
records the fraction of activated steps of its last forward (``activation_rate``), which the paper reads
as how much attention each layer needs (Sec. 5). Differences, stated: the SSM is any registered causal
layer (default the LRU, which takes ``reset``, standing in for the paper's multi-head EMA), the
residual and pre-norm are the enclosing block's (the reference adds the residual inside, then SiLU), and
attention is softmax (the reference code's LM setting; its default is relu^2). ``reset`` starts a new
document: the SSM restarts and the working memory forgets the earlier steps.
"""

from __future__ import annotations

import inspect
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.attention import rope_rotate
from torchssm.layers.base import SSMLayer, out_dtype, to_param_dtype
from torchssm.layers.registry import build_layer


def _takes_reset(layer: nn.Module) -> bool:
    try:
        return "reset" in inspect.signature(layer.forward).parameters
    except (TypeError, ValueError):
        return False


def _call(layer: nn.Module, x: torch.Tensor, state, reset: torch.Tensor | None, strict: bool = False):
    """layer(x, state, return_state=True[, reset=reset]) -> (y, new_state). A layer without ``reset`` gets
    none (``strict``: that is an error instead)."""
    if reset is not None and not _takes_reset(layer):
        if strict:
            raise ValueError(f"{type(layer).__name__} takes no reset; choose a resettable SSM (lru, mamba, mamba2)")
        reset = None
    kw = {} if reset is None else {"reset": reset}
    return layer(x, state, return_state=True, **kw)


# --- MLPs -------------------------------------------------------------------------------------------------
class SwiGLU(nn.Module):
    """W_down (SiLU(W_gate x) * W_up x): (..., h) -> (..., h) (Shazeer 2020; Jamba's MLP)."""

    def __init__(self, d_model: int, d_hidden: int):
        super().__init__()
        self.gate = nn.Linear(d_model, d_hidden, bias=False)
        self.up = nn.Linear(d_model, d_hidden, bias=False)
        self.down = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def expert_load(chosen: torch.Tensor, n_experts: int) -> torch.Tensor:
    """f_i of Switch Transformers eq. 5 for top-K routing: chosen (t, K) expert indices -> (N,) the fraction of
    the t tokens that have expert i among their K (sums to K; a count, so no gradient)."""
    return F.one_hot(chosen, n_experts).sum(dim=1).float().mean(dim=0)


def load_balancing_loss(probs: torch.Tensor, load: torch.Tensor) -> torch.Tensor:
    """N * sum_i f_i P_i (Switch Transformers eq. 4 without alpha; eq. 6: P_i = mean_t probs[t, i]):
    probs (t, N) router softmax, load (N,) :func:`expert_load` -> scalar (K when routing is uniform)."""
    return probs.shape[-1] * (load.to(probs.dtype) * probs.mean(dim=0)).sum()


class MixtureOfExperts(nn.Module):
    """Top-k routed SwiGLU experts: y = sum_{e in topk(p)} p_e SwiGLU_e(x), p = softmax(W_r x) (per token).

    In training mode the forward sets ``aux_loss`` = ``aux_coef`` * :func:`load_balancing_loss` (read and
    cleared by :func:`torchssm.models.auxiliary.pop_auxiliary_loss`); ``load`` (N,) is the fraction of
    tokens routed to each expert in the last forward (sums to top_k).
    """

    def __init__(self, d_model: int, d_hidden: int, n_experts: int, top_k: int, aux_coef: float = 1e-2):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"MoE top_k must be in [1, n_experts={n_experts}]; got {top_k}")
        if not aux_coef >= 0:
            raise ValueError(f"MoE aux_coef (the load-balancing loss weight alpha) must be >= 0; got {aux_coef!r}")
        self.top_k, self.aux_coef = top_k, float(aux_coef)
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d_model, d_hidden) for _ in range(n_experts))
        self.aux_loss: torch.Tensor | None = None
        self.load: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (t, h)
        probs = torch.softmax(self.router(flat).float(), dim=-1)  # (t, n_experts)
        weight, chosen = torch.topk(probs, self.top_k, dim=-1)  # (t, k)
        if self.training and flat.shape[0] > 0:
            self.load = expert_load(chosen, probs.shape[-1])  # (N,)
            self.aux_loss = self.aux_coef * load_balancing_loss(probs, self.load) if self.aux_coef > 0 else None
        else:
            self.aux_loss = None
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero(chosen == e, as_tuple=True)  # tokens routed to expert e
            if token.numel():
                out.index_add_(0, token, expert(flat[token]) * weight[token, slot, None].to(flat.dtype))
        return out.reshape(x.shape)


# --- Jamba ------------------------------------------------------------------------------------------------
class JambaBlock(SSMLayer):
    """A Jamba block of ``n_layers`` residual (mixer, MLP) layers (see the module docstring).

    Args:
        d_model: width h.
        n_layers: layers in the block (Jamba: 8).
        attn_every, attn_offset: layer i is attention when ``i % attn_every == attn_offset`` (Jamba: 8, 4).
        ssm, ssm_kwargs: the registered causal layer of the other layers (Jamba: Mamba) and its arguments.
        attn_kwargs: :class:`~torchssm.layers.attention.SelfAttention` arguments (n_heads, max_len).
        mlp_expand: MLP hidden width / h (0: no MLP). n_experts: 0 = dense MLPs, else MoE on the layers with
            ``i % moe_every == moe_offset`` (Jamba: 16 experts, every 2nd layer from 1), top ``top_k`` (2).
        moe_aux_coef: alpha of the MoE layers' load-balancing loss (1e-2, Switch Transformers Sec. 2.2;
            0 = none; see the module docstring).
        norm_eps: RMSNorm epsilon (1e-5 as the LM's, UNVERIFIED for Jamba; its config uses 1e-6).
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int = 8,
        *,
        attn_every: int = 8,
        attn_offset: int = 4,
        ssm: str = "mamba",
        ssm_kwargs: dict | None = None,
        attn_kwargs: dict | None = None,
        mlp_expand: float = 2.0,
        n_experts: int = 0,
        top_k: int = 2,
        moe_every: int = 2,
        moe_offset: int = 1,
        moe_aux_coef: float = 1e-2,
        norm_eps: float = 1e-5,
    ):
        super().__init__(d_model)
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int; got {n_layers!r}")
        if attn_every < 1 or not 0 <= attn_offset < attn_every:
            raise ValueError(f"need attn_every >= 1 and 0 <= attn_offset < attn_every; got {attn_every}, {attn_offset}")
        self.kinds = ["attention" if i % attn_every == attn_offset else ssm for i in range(n_layers)]
        self.mixers = nn.ModuleList()
        for kind in self.kinds:
            kw = dict(attn_kwargs or {}) if kind == "attention" else dict(ssm_kwargs or {})
            mixer = build_layer("transformer" if kind == "attention" else kind, d_model, **kw)
            if not getattr(mixer, "causal", False):
                raise ValueError(f"Jamba layer {kind!r} is not causal")
            self.mixers.append(mixer)
        self.mixer_norms = nn.ModuleList(nn.RMSNorm(d_model, eps=norm_eps) for _ in range(n_layers))
        hidden = int(round(mlp_expand * d_model))
        self.mlps = nn.ModuleList()
        for i in range(n_layers):
            if hidden == 0:
                self.mlps.append(nn.Identity())
            elif n_experts > 0 and i % moe_every == moe_offset:
                self.mlps.append(MixtureOfExperts(d_model, hidden, n_experts, top_k, aux_coef=moe_aux_coef))
            else:
                self.mlps.append(SwiGLU(d_model, hidden))
        self.mlp_norms = nn.ModuleList(nn.RMSNorm(d_model, eps=norm_eps) for _ in range(n_layers))
        self._has_mlp = hidden > 0

    def _mixer_list(self) -> list[SSMLayer]:
        """``mixers`` as the type checker should see it (an nn.ModuleList yields nn.Module): the same object."""
        return cast("list[SSMLayer]", self.mixers)

    def init_state(self, batch: int, device=None, dtype=None) -> list:
        return [m.init_state(batch, device=device, dtype=dtype) for m in self._mixer_list()]

    def _layer_mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlps[i](self.mlp_norms[i](x)) if self._has_mlp else x

    def forward(
        self,
        x: torch.Tensor,
        state: list | None = None,
        *,
        return_state: bool = False,
        reset: torch.Tensor | None = None,
    ):
        """x (b, l, h) -> y (b, l, h) [, per-layer states]; ``reset`` (b, l) goes to the SSM layers that take it."""
        self._check_forward(x, state)
        h = to_param_dtype(self, x)
        new_states = []
        for i, mixer in enumerate(self.mixers):
            s = None if state is None else state[i]
            out, s = _call(mixer, self.mixer_norms[i](h), s, reset)
            new_states.append(s)
            h = self._layer_mlp(i, h + out)
        y = out_dtype(h, x)
        return (y, new_states) if return_state else y

    def step(self, x_t: torch.Tensor, state: list):
        """x_t (b, h) -> (y_t (b, h), new states): each layer's ``step``."""
        self._check_step(x_t, state)
        h = to_param_dtype(self, x_t)
        new_states = []
        for i, mixer in enumerate(self._mixer_list()):
            out, s = mixer.step(self.mixer_norms[i](h), state[i])
            new_states.append(s)
            h = self._layer_mlp(i, h + out)
        return out_dtype(h, x_t), new_states

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, layers={self.kinds}"


# --- SeqBoat ----------------------------------------------------------------------------------------------
class SeqBoat(SSMLayer):
    """SSM + sparsely activated local gated attention (see the module docstring).

    Args:
        d_model: width h.
        ssm, ssm_kwargs: the registered causal SSM; default the LRU with 64 states (a diagonal linear
            recurrence with ``reset``, standing in for the paper's multi-head damped EMA).
        d_qk: query/key width (the reference SeqBoatModel's d_qk = 96; 64 here for small models, UNVERIFIED).
        expand: value width / h (the reference: hdim = 2 h).
        window: working-memory size w in activated steps (the reference SeqBoatModel's mem_size = 128).
        init_temp_scale: tau_0 = init_temp_scale * sqrt(h) (the reference's LatentConfigurator, 1.0).

    State: (ssm state, keys (b, w, d_qk) rotated, values (b, w, e), valid (b, w) bool, activated so far
    (b,) long, steps so far (b,) long); the working memory holds the last w activated steps, oldest first.
    """

    def __init__(
        self,
        d_model: int,
        *,
        ssm: str = "lru",
        ssm_kwargs: dict | None = None,
        d_qk: int = 64,
        expand: float = 2.0,
        window: int = 128,
        init_temp_scale: float = 1.0,
    ):
        super().__init__(d_model)
        if d_qk < 2 or d_qk % 2:
            raise ValueError(f"d_qk must be an even int >= 2 (rotary positions); got {d_qk!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int; got {window!r}")
        kw = dict(ssm_kwargs) if ssm_kwargs is not None else ({"d_state": 64} if ssm == "lru" else {})
        self.ssm = build_layer(ssm, d_model, **kw)
        if not getattr(self.ssm, "causal", False):
            raise ValueError(f"SeqBoat's SSM {ssm!r} must be causal")
        self.d_qk, self.d_v, self.window = d_qk, int(round(expand * d_model)), window
        self.x_proj = nn.Linear(d_model, 2 + d_model)  # [u (2 module logits), hx (h)]
        self.m_proj = nn.Linear(d_model, d_qk + 2 * self.d_v)  # [z, r, v]
        self.gamma = nn.Parameter(torch.empty(2, d_qk))
        self.beta = nn.Parameter(torch.zeros(2, d_qk))
        self.out_proj = nn.Linear(self.d_v, d_model)
        self.log_temp = nn.Parameter(torch.tensor([math.log(init_temp_scale * math.sqrt(d_model))]))
        for lin in (self.x_proj, self.m_proj, self.out_proj):  # the reference's truncated normal, std 0.02
            nn.init.trunc_normal_(lin.weight, std=0.02, a=-0.04, b=0.04)
            nn.init.zeros_(lin.bias)
        nn.init.trunc_normal_(self.gamma, std=0.02, a=-0.04, b=0.04)
        self.activation_rate: float | None = None  # fraction of activated steps in the last forward

    def init_state(self, batch: int, device=None, dtype=None):
        dtype = dtype or self._param_dtype()
        w = self.window
        return (
            self.ssm.init_state(batch, device=device, dtype=dtype),
            torch.zeros(batch, w, self.d_qk, device=device, dtype=dtype),
            torch.zeros(batch, w, self.d_v, device=device, dtype=dtype),
            torch.zeros(batch, w, device=device, dtype=torch.bool),
            torch.zeros(batch, device=device, dtype=torch.long),
            torch.zeros(batch, device=device, dtype=torch.long),
        )

    def forward(self, x: torch.Tensor, state=None, *, return_state: bool = False, reset: torch.Tensor | None = None):
        """x (b, l, h) -> y (b, l, h) [, state]; ``reset`` (b, l) bool: a new document starts at t."""
        self._check_forward(x, state)
        y, new_state = self._forward(to_param_dtype(self, x), state, reset)
        y = out_dtype(y, x)
        return (y, new_state) if return_state else y

    def step(self, x_t: torch.Tensor, state):
        """One token: the forward of a length-1 sequence (same code path, so step == forward exactly)."""
        self._check_step(x_t, state)
        y, new_state = self._forward(to_param_dtype(self, x_t)[:, None], state, None)
        return out_dtype(y[:, 0], x_t), new_state

    def _forward(self, x: torch.Tensor, state, reset: torch.Tensor | None):
        b, l, _ = x.shape
        if state is None:
            state = self.init_state(b, device=x.device, dtype=x.dtype)
        ssm_state, k_mem, v_mem, valid_mem, n_active, n_steps = state
        m, ssm_state = _call(self.ssm, x, ssm_state, reset, strict=True)
        m = F.silu(m)  # (b, l, h)
        u, hx = self.x_proj(m).split([2, self.d_model], dim=-1)  # (b, l, 2), (b, l, h)
        probs = torch.softmax(u.float() / self.log_temp.exp().float(), dim=-1).to(m.dtype)  # (b, l, 2)
        conf, choice = probs.max(dim=-1)  # (b, l)
        active = choice == 1  # (b, l) the attention unit runs here
        if l > 1:  # one host sync per forward (single steps leave the rate of the last forward)
            self.activation_rate = float(active.float().mean())

        # compress: the activated steps of each row, in order, padded to the longest row
        rank_in_chunk = torch.cumsum(active.long(), dim=1) - 1  # (b, l) 0-based rank among activated
        n_new = active.sum(dim=1)  # (b,)
        width = max(int(n_new.max()), 1)
        slot = torch.where(active, rank_in_chunk, torch.full_like(rank_in_chunk, width))  # inactive -> dump slot
        positions = n_steps[:, None] + torch.arange(l, device=x.device)  # (b, l) absolute time steps
        segment = torch.cumsum(reset.long(), dim=1) if reset is not None else torch.zeros_like(positions)

        def compress(t: torch.Tensor) -> torch.Tensor:  # (b, l, ...) -> (b, width, ...)
            out = t.new_zeros((b, width + 1) + t.shape[2:])
            index = slot.view(b, l, *([1] * (t.dim() - 2))).expand_as(t)
            return out.scatter(1, index, t)[:, :width]

        z, r, v = F.silu(self.m_proj(compress(m))).split([self.d_qk, self.d_v, self.d_v], dim=-1)
        q = z * self.gamma[0] + self.beta[0]  # (b, width, d_qk)
        k = z * self.gamma[1] + self.beta[1]
        pos_c = compress(positions)  # (b, width)
        q = rope_rotate(q[:, None], pos_c)[:, 0]
        k = rope_rotate(k[:, None], pos_c)[:, 0]
        valid_new = torch.arange(width, device=x.device)[None] < n_new[:, None]  # (b, width)
        seg_c = compress(segment)  # (b, width)

        # keys: the working memory (ranks n_active - w .. n_active - 1, segment 0) then the new activated steps
        w = self.window
        keys = torch.cat([k_mem, k], dim=1)  # (b, w + width, d_qk)
        values = torch.cat([v_mem, v], dim=1)  # (b, w + width, e)
        key_valid = torch.cat([valid_mem, valid_new], dim=1)  # (b, w + width)
        key_rank = torch.cat(
            [
                n_active[:, None] - w + torch.arange(w, device=x.device),
                n_active[:, None] + torch.arange(width, device=x.device),
            ],
            dim=1,
        )
        key_seg = torch.cat([torch.zeros_like(valid_mem, dtype=torch.long), seg_c], dim=1)
        q_rank = n_active[:, None] + torch.arange(width, device=x.device)  # (b, width)
        visible = (
            key_valid[:, None, :]
            & (key_rank[:, None, :] <= q_rank[:, :, None])
            & (q_rank[:, :, None] - key_rank[:, None, :] < w)
            & (key_seg[:, None, :] == seg_c[:, :, None])
        )  # (b, width, w + width)
        visible = visible | ~valid_new[:, :, None]  # padded queries attend anywhere (their output is dropped)
        o = F.scaled_dot_product_attention(q[:, None], keys[:, None], values[:, None], attn_mask=visible[:, None])[
            :, 0
        ]  # (b, width, e)
        h_c = self.out_proj(o * r)  # (b, width, h)
        h = torch.gather(
            torch.cat([h_c, h_c.new_zeros(b, 1, self.d_model)], dim=1), 1, slot[..., None].expand(b, l, self.d_model)
        )  # (b, l, h), zero where not activated
        y = hx + h * (conf * active)[..., None]

        # the new working memory: the last w valid keys by rank (a document start empties it)
        keep = key_valid & (key_seg == segment[:, -1:])
        order = torch.where(keep, key_rank, torch.full_like(key_rank, -(1 << 40)))
        top = torch.topk(order, w, dim=1).indices.flip(1)  # (b, w): oldest first
        k_mem = torch.gather(keys, 1, top[..., None].expand(b, w, self.d_qk))
        v_mem = torch.gather(values, 1, top[..., None].expand(b, w, self.d_v))
        valid_mem = torch.gather(keep, 1, top)
        new_state = (ssm_state, k_mem, v_mem, valid_mem, n_active + n_new, n_steps + l)
        return y, new_state


def activation_rates(model: nn.Module) -> dict:
    """{module name: fraction of activated steps in its last forward} of every SeqBoat layer in ``model``."""
    return {
        name: m.activation_rate
        for name, m in model.named_modules()
        if isinstance(m, SeqBoat) and m.activation_rate is not None
    }
