"""LongVQ: a gated SSM-attention layer whose keys are vector-quantised, so the distant past is a
fixed-size structured memory (one slot per codeword). Liu et al. 2024, "LongVQ: Long Sequence Modeling
with Vector Quantization on Structured Memory" (IJCAI 2024, arXiv:2404.11163), Sec. 3 and Fig. 2.

What is confirmed from the paper's text (abstract, Sec. 3 summaries and Fig. 2 caption):
* a codebook C of S codewords; each key is replaced by its nearest codeword,
  z_j = argmin_s ||k_j - C_s||^2, k^_j = C_{z_j}, with the straight-through estimator for the gradient;
* attention with quantised keys over a fixed-length memory (linear time), plus a local window whose
  scores carry a relative positional bias (near tokens are told apart, far ones are in the codebook);
* a gated attention unit (MEGA-style: Ma et al. 2023) whose queries/keys come from an embedded SSM.

UNVERIFIED (the full equations could not be read here; choices below follow the work LongVQ builds on):
* the losses: VQ-VAE's codebook loss + beta * commitment loss (van den Oord et al. 2017, Eq. 3; beta 0.25)
  rather than a codebook EMA; the memory layout (window of the last ``window`` tokens exact, older ones
  aggregated per code) follows Transformer-VQ (Lingle 2023, Sec. 3); the gate layout follows MEGA
  (Ma et al. 2023, Eqs. 14-16, single head, shared q/k projection with per-role scale and offset).

Math (b batch, l length, h = d_model, e = d_qk, v = d_value, S = codebook size, w = window):

    x' = silu(SSM(x))                                     (b, l, h)  embedded causal SSM (default S4D)
    u  = silu(W_u x');  q = u * g_q + o_q;  k = u * g_k + o_k   (b, l, e)
    val = silu(W_v x);  r = silu(W_r x')                  (b, l, v)
    k^ = C[argmin_s ||k - C_s||^2]                        (b, l, e)  straight-through: k + sg(k^ - k)
    score(i, j) = q_i . k^_j / sqrt(e) + beta_{i-j}   for 0 <= i - j < w   (k^_j straight-through)
                = q_i . sg(C_{z_j}) / sqrt(e)          for i - j >= w        (a codeword, no gradient)
    o_i = softmax_j(score(i, j)) val_j;   y = W_o (r * o_i)

Tokens with i - j >= w have no bias, so they enter only through their code:
sum_{j: z_j = s} exp(q_i . C_s / sqrt(e)) val_j = exp(q_i . C_s / sqrt(e) + log N_s) * (M_s / N_s) with
N_s the count and M_s the value sum of code s: one memory slot per codeword, O(S) per query. The state
is therefore fixed-size: (SSM state, M (b, S, v), N (b, S), the last w-1 codes and values). ``forward``
runs the attention in blocks of w tokens on top of that memory (linear time in l), and ``step`` is the
same computation on one token, so step == forward and chunked continuation hold exactly.

In training mode a forward sets ``layer.aux_loss`` = ``vq_weight`` * (codebook + beta * commitment loss),
a scalar with its graph (None in eval mode): the auxiliary-loss protocol of :mod:`torchssm.models.auxiliary`,
so ``torchssm train`` (train/epoch.py) adds it to the task loss, and so does ``torchssm vision longvq``.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.base import Device, LayerOutput, SSMLayer, StepOutput


class LongVQ(SSMLayer):
    """Gated SSM + vector-quantised-key attention with a per-code memory (module docstring).

    Args:
        d_model: h.
        codebook_size: S codewords (memory slots). 64 here (UNVERIFIED: the paper's per-task sizes).
        d_qk: e, query/key width. 32 (UNVERIFIED; MEGA uses 64-128 on LRA).
        d_value: v, value / gate width; default 2 h (MEGA's expansion, Ma et al. 2023, Sec. 3.3).
        window: w, tokens seen exactly with a relative bias (and the attention block length). 32.
        beta: commitment loss weight, 0.25 (van den Oord et al. 2017, Sec. 3.2).
        ssm, ssm_kwargs: the embedded causal SSM (any registered causal layer); default "s4d".
        vq_weight: coefficient of the VQ loss in the training loss (``aux_loss``), 1.0 (VQ-VAE's weight
            of its codebook term, van den Oord et al. 2017, Eq. 3).
    """

    causal = True

    def __init__(
        self,
        d_model: int,
        codebook_size: int = 64,
        d_qk: int = 32,
        d_value: int | None = None,
        window: int = 32,
        beta: float = 0.25,
        ssm: str = "s4d",
        ssm_kwargs: dict | None = None,
        vq_weight: float = 1.0,
    ):
        super().__init__(d_model)
        from torchssm.layers.registry import build_layer

        for name, value in (("codebook_size", codebook_size), ("d_qk", d_qk), ("window", window)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.codebook_size, self.d_qk, self.window, self.beta = codebook_size, d_qk, window, float(beta)
        self.vq_weight = float(vq_weight)
        self.d_value = d_value or 2 * d_model
        self.ssm = cast(SSMLayer, build_layer(ssm, d_model, **(ssm_kwargs or {})))
        if not getattr(self.ssm, "causal", False):
            raise ValueError(f"ssm must be a causal layer (LongVQ has step()); {ssm!r} with {ssm_kwargs} is not")
        self.to_u = nn.Linear(d_model, d_qk)
        self.qk_scale = nn.Parameter(torch.ones(2, d_qk) + 0.02 * torch.randn(2, d_qk))  # g_q, g_k
        self.qk_offset = nn.Parameter(torch.zeros(2, d_qk))  # o_q, o_k
        self.to_v = nn.Linear(d_model, self.d_value)
        self.to_r = nn.Linear(d_model, self.d_value)
        self.out = nn.Linear(self.d_value, d_model)
        self.codebook = nn.Parameter(torch.randn(codebook_size, d_qk))  # C (S, e)
        self.rel_bias = nn.Parameter(torch.zeros(window))  # beta_d, d = 0 .. w-1
        self.aux_loss: torch.Tensor | None = None
        self.optim_overrides = {f"ssm.{k}": v for k, v in getattr(self.ssm, "optim_overrides", {}).items()}

    # --- state ------------------------------------------------------------------------------------
    def init_state(self, batch: int, device: Device = None, dtype: torch.dtype | None = None):
        """(ssm state, M (b, S, v) value sums, N (b, S) counts, window codes (b, w-1) long, -1 = empty,
        window values (b, w-1, v))."""
        dtype = dtype or self._param_dtype()
        device = device if device is not None else self.codebook.device
        b, s, p, v = batch, self.codebook_size, self.window - 1, self.d_value
        return (
            self.ssm.init_state(batch, device=device, dtype=dtype),
            torch.zeros(b, s, v, device=device, dtype=dtype),
            torch.zeros(b, s, device=device, dtype=dtype),
            torch.full((b, p), -1, device=device, dtype=torch.long),
            torch.zeros(b, p, v, device=device, dtype=dtype),
        )

    # --- vector quantisation -----------------------------------------------------------------------
    def quantize(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k (..., e) -> (codes (...) long, k^ straight-through (..., e), VQ loss scalar)."""
        C = self.codebook  # (S, e)
        dist = k.pow(2).sum(-1, keepdim=True) - 2 * k @ C.T + C.pow(2).sum(-1)  # (..., S)
        codes = dist.argmin(-1)  # (...)
        k_hat = C[codes]  # (..., e)
        loss = F.mse_loss(k_hat, k.detach()) + self.beta * F.mse_loss(k, k_hat.detach())
        return codes, k + (k_hat - k).detach(), loss

    # --- attention over memory + window -----------------------------------------------------------
    def _attend(self, q, k_st, codes, val, memory):
        """One block: q, k_st (b, n, e), codes (b, n), val (b, n, v); ``memory`` = (M, N, window codes,
        window keys, window values) from before the block. Returns o (b, n, v) and the memory after it."""
        mem_sum, mem_count, win_codes, win_keys, win_val = memory
        b, n, e = q.shape
        p = win_codes.shape[1]
        C = self.codebook.detach()  # the memory's keys are codewords (codebook trained by its loss)
        win_valid = win_codes >= 0  # (b, p)
        all_codes = torch.cat([win_codes, codes], 1)  # (b, p+n)
        keys = torch.cat([win_keys, k_st], 1)  # (b, p+n, e): straight-through within this call
        vals = torch.cat([win_val, val], 1)  # (b, p+n, v)
        scale = 1.0 / math.sqrt(e)
        lag = (torch.arange(n, device=q.device)[:, None] + p) - torch.arange(p + n, device=q.device)  # (n, p+n)
        near = lag < self.window
        # keys beyond the window are codewords (no gradient), as in the memory: the gradient does not
        # depend on where the blocks fall
        dense = torch.where(near, q @ keys.transpose(1, 2), q @ C[all_codes.clamp(min=0)].transpose(1, 2)) * scale
        bias = torch.where(near, self.rel_bias[lag.clamp(0, self.window - 1)], 0.0)
        allowed = (lag >= 0)[None] & torch.cat([win_valid, win_valid.new_ones(b, n)], 1)[:, None, :]
        dense = torch.where(allowed, dense + bias, float("-inf"))
        log_count = torch.where(mem_count > 0, mem_count.clamp(min=1).log(), float("-inf"))  # (b, S)
        mem = q @ C.T * scale + log_count.unsqueeze(1)  # (b, n, S); empty slots: -inf
        weights = torch.softmax(torch.cat([mem, dense], -1), -1)  # (b, n, S+p+n)
        mem_mean = mem_sum / mem_count.clamp(min=1).unsqueeze(-1)  # (b, S, v)
        o = weights[..., : self.codebook_size] @ mem_mean + weights[..., self.codebook_size :] @ vals
        # tokens leaving the window (all but the last p of window + block) fold into the memory
        fold_codes, fold_vals = all_codes[:, :n], vals[:, :n]  # (b, n), (b, n, v)
        onehot = F.one_hot(fold_codes.clamp(min=0), self.codebook_size).to(val.dtype)
        onehot = onehot * (fold_codes >= 0).unsqueeze(-1).to(val.dtype)  # (b, n, S)
        mem_sum = mem_sum + onehot.transpose(1, 2) @ fold_vals
        mem_count = mem_count + onehot.sum(1)
        return o, (mem_sum, mem_count, all_codes[:, n:], keys[:, n:], vals[:, n:])

    # --- contract ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state=None, *, return_state: bool = False) -> LayerOutput:
        self._check_forward(x, state)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        ssm_state, mem_sum, mem_count, win_codes, win_val = state
        xs, ssm_state = self.ssm(x, ssm_state, return_state=True)  # (b, l, h)
        xs = F.silu(xs)
        u = F.silu(self.to_u(xs))  # (b, l, e)
        q = u * self.qk_scale[0] + self.qk_offset[0]
        k = u * self.qk_scale[1] + self.qk_offset[1]
        val = F.silu(self.to_v(x))  # (b, l, v)
        r = F.silu(self.to_r(xs))  # (b, l, v)
        codes, k_st, vq_loss = self.quantize(k)
        self.aux_loss = self.vq_weight * vq_loss if self.training else None  # models/auxiliary.py
        # window keys from an earlier call are codewords (the state keeps codes, not gradients)
        memory = (mem_sum, mem_count, win_codes, self.codebook.detach()[win_codes.clamp(min=0)], win_val)
        outs = []
        for s in range(0, x.shape[1], self.window):  # blocks of w tokens: linear in l
            blk = slice(s, s + self.window)
            o, memory = self._attend(q[:, blk], k_st[:, blk], codes[:, blk], val[:, blk], memory)
            outs.append(o)
        y = self.out(r * torch.cat(outs, 1))  # (b, l, h)
        if return_state:
            mem_sum, mem_count, win_codes, _, win_val = memory
            return y, (ssm_state, mem_sum, mem_count, win_codes, win_val)
        return y

    def step(self, x_t: torch.Tensor, state) -> StepOutput:
        self._check_step(x_t, state)
        y, new_state = self.forward(x_t[:, None], state, return_state=True)
        return y[:, 0], new_state

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, codebook_size={self.codebook_size}, d_qk={self.d_qk}, window={self.window}"
