"""Causal language model over any registered causal layer, with fast generation.

Architecture (Mamba's ``MambaLMHeadModel``: Gu & Dao 2023, Sec. 4.2 / App. E.2; reference
``mamba_ssm/models/mixer_seq_simple.py``), for b batch, l length, h = d_model, V vocabulary:

    x_0 = Embedding(ids)                                      (b, l, h), vocab padded to a multiple of 8
    x_{i+1} = x_i + Mixer_i(RMSNorm_i(x_i))                   pre-norm residual blocks, i < n_layer
             [+ MLP_i(RMSNorm2_i(.)) with d_intermediate > 0: a second residual branch]
    logits = RMSNorm_f(x_N) @ Embedding.weight^T              tied head, (b, l, V)

MLP (``d_intermediate`` = d > 0; mamba_ssm's ``create_block`` / ``GatedMLP``, modules/mlp.py, the channel
mixer a Transformer block has after attention): [y, g] = fc1(x) (h -> 2d), MLP(x) = fc2(y * silu(g))
(d -> h), no biases. mamba_ssm rounds d up to a multiple of 128 (GatedMLP's ``multiple_of``); here d is
taken as given (the converter passes the rounded width). Off by default (the Mamba LM has none).

Defaults and their sources (mamba_ssm ``MambaConfig`` and ``_init_weights``): RMSNorm eps 1e-5, the
residual stream kept in float32 (``residual_in_fp32``), ``pad_vocab_size_multiple=8``, tied embeddings,
embedding ~ N(0, 0.02), Linear biases zero, and each mixer's output projection (``out_proj``, or ``out``
for attention) and each MLP's ``fc2`` re-initialised kaiming-uniform and scaled by 1/sqrt(r n_layer), r = 1
residual branch per block, 2 with an MLP (GPT-2's scheme, Radford et al. 2019, Sec. 2.3). Module names
follow mamba_ssm (``backbone.embedding``, ``backbone.layers.i.norm``, ``backbone.layers.i.mixer``,
``backbone.layers.i.norm2`` / ``mlp.fc1`` / ``mlp.fc2``, ``backbone.norm_f``, ``lm_head``), so its
checkpoints map one to one.

Generation (:meth:`CausalLM.generate`): the prompt runs once in parallel mode (``forward`` with
``return_state=True``), then each new token is one ``step`` of every layer with the carried states:
O(1) work per token for SSMs, O(position) for the Transformer's KV cache. No recomputation.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.base import SSMLayer, check_state_like, parameters_version
from torchssm.layers.registry import build_layer
from torchssm.layers.tags import parameter_tags
from torchssm.models.config import ConfigDict
from torchssm.models.pretrained import PretrainedMixin, register_model_type


@dataclass
class LMConfig(ConfigDict):
    config_name = "LM"  # class attribute (no annotation): not a dataclass field
    layer: str = "mamba"  # any causal layer of the registry
    d_model: int = 256
    n_layer: int = 4
    vocab_size: int = 256  # byte-level tokenizer
    layer_kwargs: dict = field(default_factory=dict)
    pad_vocab_size_multiple: int = 8  # mamba_ssm MambaConfig
    norm_eps: float = 1e-5  # mamba_ssm RMSNorm
    residual_in_fp32: bool = True  # mamba_ssm MambaConfig (the pretrained checkpoints use True)
    tie_embeddings: bool = True
    max_length: int = 1 << 20  # longest prompt + generation accepted by ``generate``
    d_intermediate: int = 0  # hidden width of a gated MLP after each mixer (mamba_ssm MambaConfig); 0: none

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return self.vocab_size if m <= 1 else m * math.ceil(self.vocab_size / m)


def gated_mlp(x: torch.Tensor, fc1: torch.Tensor, fc2: torch.Tensor) -> torch.Tensor:
    """fc2(y * silu(g)) with [y, g] = fc1(x): x (..., h), fc1 (2d, h), fc2 (h, d) -> (..., h)."""
    y, gate = F.linear(x, fc1).chunk(2, dim=-1)  # (..., d) each
    return F.linear(y * F.silu(gate), fc2)


class GatedMLP(nn.Module):
    """mamba_ssm's GatedMLP without biases (module docstring): h -> 2d -> d -> h."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, 2 * hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gated_mlp(x, self.fc1.weight, self.fc2.weight)


class Block(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm2(x)) when the block has an MLP (pre-norm residuals, as
    mamba_ssm's ``Block``)."""

    def __init__(self, mixer: SSMLayer, d_model: int, eps: float, d_intermediate: int = 0):
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=eps)
        self.mixer = mixer
        self.norm2 = nn.RMSNorm(d_model, eps=eps) if d_intermediate else None
        self.mlp = GatedMLP(d_model, d_intermediate) if d_intermediate else None

    def add_mlp(self, residual: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """residual + mlp(norm2(residual)) (the MLP in ``dtype``); the residual itself without an MLP."""
        if self.mlp is None or self.norm2 is None:
            return residual
        return residual + self.mlp(self.norm2(residual.to(dtype))).to(residual.dtype)


class Backbone(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(
            Block(
                build_layer(cfg.layer, cfg.d_model, **cfg.layer_kwargs), cfg.d_model, cfg.norm_eps, cfg.d_intermediate
            )
            for _ in range(cfg.n_layer)
        )
        self.norm_f = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)

    def blocks(self) -> list[Block]:
        """``layers`` as the type checker should see it (an nn.ModuleList yields nn.Module): the same object."""
        return cast("list[Block]", self.layers)


class CausalLM(PretrainedMixin, nn.Module):
    """Language model ``ids (b, l) -> logits (b, l, vocab_size)`` (see the module docstring)."""

    model_type = "lm"

    def __init__(self, config: LMConfig):
        super().__init__()
        if not isinstance(config, LMConfig):
            raise TypeError(f"expected an LMConfig, got {type(config).__name__}")
        for name in ("d_model", "n_layer", "vocab_size", "max_length"):
            v = getattr(config, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"LM config {name} must be a positive int, got {v!r}")
        if (
            isinstance(config.d_intermediate, bool)
            or not isinstance(config.d_intermediate, int)
            or config.d_intermediate < 0
        ):
            raise ValueError(f"LM config d_intermediate must be an int >= 0 (0: no MLP), got {config.d_intermediate!r}")
        self.config = config
        self.backbone = Backbone(config)
        for block in self.backbone.blocks():
            if not getattr(block.mixer, "causal", False):
                raise ValueError(f"layer {config.layer!r} is not causal: a language model needs a causal layer")
        # packed documents (``reset``) need mixers that restart their state (LRU, Mamba, Mamba-2, SeqBoat, Jamba)
        self._takes_reset = all(
            "reset" in inspect.signature(blk.mixer.forward).parameters for blk in self.backbone.blocks()
        )
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        self._init_weights()
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    def __getstate__(self) -> dict:
        """Pickling (``torch.save(model)``, ``copy.deepcopy``) leaves out the compiled-step cache of
        :meth:`_step_function`: a compiled local function cannot be pickled, and a copy compiles its own."""
        state = dict(super().__getstate__())
        state.pop("_compiled_step", None)
        return state

    @torch.no_grad()
    def _init_weights(self) -> None:
        """mamba_ssm ``_init_weights`` (mixer_seq_simple.py), n_residuals_per_layer = 1, or 2 with an MLP."""
        tags = parameter_tags(self)  # a layer's "reinit": False keeps its own init (Mamba's dt bias)
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.bias is not None:
                if tags.get(id(module.bias), ("", {}))[1].get("reinit", True):
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        residual_branches = (2 if self.config.d_intermediate else 1) * self.config.n_layer
        for block in self.backbone.blocks():
            projections = [getattr(block.mixer, name, None) for name in ("out_proj", "out")]
            proj = next((p for p in projections if isinstance(p, nn.Linear)), None)
            for out in (proj, None if block.mlp is None else block.mlp.fc2):
                if out is not None:
                    nn.init.kaiming_uniform_(out.weight, a=math.sqrt(5))
                    out.weight /= math.sqrt(residual_branches)

    # --- parallel mode -------------------------------------------------------------------------------
    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual stream: at least float32 with ``residual_in_fp32`` (float64 stays float64)."""
        return x.to(torch.promote_types(x.dtype, torch.float32)) if self.config.residual_in_fp32 else x

    def _check_ids(self, ids: torch.Tensor, name: str = "input_ids") -> None:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise ValueError(
                f"{name} must be a (batch, length) tensor of token ids; got "
                f"{tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__}"
            )
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor; got dtype {ids.dtype}")
        if ids.shape[1] == 0:
            raise ValueError(f"{name} is empty (length 0); expected shape (batch, length>=1)")

    def init_state(self, batch: int, device=None, dtype=None) -> list:
        """One zero state per layer."""
        return [blk.mixer.init_state(batch, device=device, dtype=dtype) for blk in self.backbone.blocks()]

    def _check_state(self, state, batch: int) -> None:
        if not isinstance(state, (list, tuple)) or len(state) != len(self.backbone.layers):
            raise ValueError(
                f"state must be a list of {len(self.backbone.layers)} per-layer states (from this "
                f"model's init_state or forward(..., return_state=True)); got "
                f"{type(state).__name__} of length {len(state) if isinstance(state, (list, tuple)) else '-'}"
            )
        for i, (s, blk) in enumerate(zip(state, self.backbone.blocks())):
            check_state_like(s, blk.mixer.init_state(batch, device="meta"), name=f"state[{i}]")

    def forward(
        self,
        input_ids: torch.Tensor,
        state: list | None = None,
        *,
        return_state: bool = False,
        reset: torch.Tensor | None = None,
    ):
        """ids (b, l) -> logits (b, l, vocab_size) [, new per-layer states]. ``reset`` (b, l) bool marks
        where a new document starts in a packed row (passed to layers that accept it)."""
        self._check_ids(input_ids)
        if state is not None:
            self._check_state(state, input_ids.shape[0])
        if reset is not None and not self._takes_reset:
            raise ValueError(
                f"layer {self.config.layer!r} has no resettable state, so packed documents cannot be "
                f"separated: pass no reset (lm_text: task.document_resets=false)"
            )
        x = self.backbone.embedding(input_ids)  # (b, l, h)
        residual = self._residual(x)
        new_states = []
        for i, blk in enumerate(self.backbone.blocks()):
            kw = {} if reset is None else {"reset": reset}
            s = None if state is None else state[i]
            out = blk.mixer(blk.norm(residual.to(x.dtype)), s, return_state=return_state, **kw)
            if return_state:
                out, s = out
                new_states.append(s)
            residual = blk.add_mlp(residual + out.to(residual.dtype), x.dtype)
        logits = self.lm_head(self.backbone.norm_f(residual.to(x.dtype)))[..., : self.config.vocab_size]
        return (logits, new_states) if return_state else logits

    # --- recurrent mode ------------------------------------------------------------------------------
    def step(self, token_ids: torch.Tensor, state: list):
        """One token per sequence: ids (b,) -> (logits (b, vocab_size), new_state). Pure, O(1) for SSMs."""
        if not isinstance(token_ids, torch.Tensor) or token_ids.dim() != 1:
            raise ValueError(
                f"token_ids must have shape (batch,); got "
                f"{tuple(token_ids.shape) if isinstance(token_ids, torch.Tensor) else type(token_ids)}"
            )
        self._check_state(state, token_ids.shape[0])
        x = self.backbone.embedding(token_ids)  # (b, h)
        residual = self._residual(x)
        new_states = []
        for blk, s in zip(self.backbone.blocks(), state):
            out, s = blk.mixer.step(blk.norm(residual.to(x.dtype)), s)
            new_states.append(s)
            residual = blk.add_mlp(residual + out.to(residual.dtype), x.dtype)
        logits = self.lm_head(self.backbone.norm_f(residual.to(x.dtype)))[..., : self.config.vocab_size]
        return logits, new_states

    # --- generation ----------------------------------------------------------------------------------
    @staticmethod
    def sample(
        logits: torch.Tensor,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """logits (b, V) -> ids (b,). temperature 0 = greedy; top_k keeps the k largest; top_p keeps the
        smallest set whose probability reaches p (nucleus sampling, Holtzman et al. 2020, Sec. 3.1)."""
        if temperature == 0:
            return logits.argmax(-1)
        logits = logits.float() / temperature
        if top_k is not None and top_k < logits.shape[-1]:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (b, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p is not None and top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
            drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already >= p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]

    # Decoding defaults (what :meth:`generate` does with no options): greedy (temperature 0), as Hugging
    # Face's ``generate`` without ``do_sample``; stop a row at ``eos_token_id`` (the model's, see below).
    eos_token_id: int | list[int] | None = None  # from_pretrained sets it from the checkpoint (load_generation_config)
    pad_token_id: int | None = None

    def special_tokens(self, eos_token_id=None, pad_token_id=None) -> tuple[list[int], int]:
        """(eos ids, pad id) for generation. eos: the argument, else ``self.eos_token_id`` (a checkpoint's
        config.json), else ``self.tokenizer.eos_token_id``, else none. pad: the argument, else
        ``self.pad_token_id``, else the first eos (Hugging Face's fallback), else 0."""
        eos = eos_token_id if eos_token_id is not None else self.eos_token_id
        if eos is None:
            eos = getattr(getattr(self, "tokenizer", None), "eos_token_id", None)
        eos_ids = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
        pad = pad_token_id if pad_token_id is not None else self.pad_token_id
        pad = int(pad) if pad is not None else (eos_ids[0] if eos_ids else 0)
        for name, v in [("eos_token_id", e) for e in eos_ids] + [("pad_token_id", pad)]:
            if not 0 <= v < self.config.vocab_size:
                raise ValueError(f"{name} must be a token id in [0, {self.config.vocab_size}); got {v}")
        return eos_ids, pad

    def _batch_prompts(self, prompt_ids, attention_mask, pad: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prompts -> (ids (b, l) left-padded, mask (b, l) bool or None when every row is full length).

        ``prompt_ids``: (l,) / (b, l) tensor or (nested) list; a list of rows of different lengths is
        left-padded with ``pad``. ``attention_mask`` (b, l): 1 for prompt tokens, 0 for left padding."""
        mask = None
        ragged = isinstance(prompt_ids, (list, tuple)) and len(prompt_ids) > 0
        if ragged and all(isinstance(r, (list, tuple)) for r in prompt_ids):
            if attention_mask is not None:
                raise ValueError("attention_mask is only for a (batch, length) tensor; a list of rows is padded here")
            if any(len(r) == 0 for r in prompt_ids):
                raise ValueError("prompt_ids has an empty row; every prompt needs at least one token")
            width = max(len(r) for r in prompt_ids)
            if any(len(r) != width for r in prompt_ids):
                mask = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in prompt_ids])
                prompt_ids = [[pad] * (width - len(r)) + list(r) for r in prompt_ids]
        if isinstance(prompt_ids, (list, tuple)):
            prompt_ids = torch.tensor(prompt_ids, dtype=torch.long)
        if isinstance(prompt_ids, torch.Tensor) and prompt_ids.dim() == 1:
            prompt_ids = prompt_ids[None]
        self._check_ids(prompt_ids, "prompt_ids")
        if attention_mask is not None:
            m = torch.as_tensor(attention_mask)
            if tuple(m.shape) != tuple(prompt_ids.shape):
                raise ValueError(
                    f"attention_mask must have the prompt's shape {tuple(prompt_ids.shape)}; got {tuple(m.shape)}"
                )
            m = m.to(device=prompt_ids.device).bool()
            if not bool(m[:, -1].all()) or bool((m[:, 1:] < m[:, :-1]).any()):
                raise ValueError(
                    "attention_mask must be left padding: 0s then 1s in each row, ending with a prompt token"
                )
            mask = None if bool(m.all()) else m
        return prompt_ids, mask

    def _check_generate(
        self, prompt_ids, max_new_tokens, temperature, top_k, top_p, attention_mask=None, pad: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        prompt_ids, mask = self._batch_prompts(prompt_ids, attention_mask, pad)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0; got {max_new_tokens!r}")
        total = prompt_ids.shape[1] + max_new_tokens
        if total > self.config.max_length:
            raise ValueError(
                f"prompt ({prompt_ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) = {total} "
                f"exceeds the model's max_length={self.config.max_length}"
            )
        lo, hi = int(prompt_ids.min()), int(prompt_ids.max())  # one sync, before generation starts
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(
                f"prompt_ids must be token ids in [0, {self.config.vocab_size}); got values in [{lo}, {hi}]"
            )
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0; got {temperature}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None; got {top_k!r}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None; got {top_p!r}")
        device = self.lm_head.weight.device
        return prompt_ids.to(device), None if mask is None else mask.to(device)

    def _prefill(self, prompt: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, list]:
        """Prompt (b, l) in parallel mode -> (last logits (b, V), states). Left-padded rows (mask) restart the
        state at their first prompt token (``reset``), so the padding leaves no trace: exact, one pass."""
        if mask is None:
            logits, state = self(prompt, return_state=True)
            return logits[:, -1], state
        if not self._takes_reset:
            raise ValueError(
                f"prompts of different lengths in one batch need a layer with a resettable state "
                f"(mamba, mamba2, lru); {self.config.layer!r} has none: call generate(), which runs "
                f"such rows one at a time, or batch prompts of equal length"
            )
        first = mask & ~F.pad(mask[:, :-1], (1, 0))  # (b, l): the first prompt token of each row
        logits, state = self(prompt, return_state=True, reset=first)
        return logits[:, -1], state

    @torch.no_grad()
    def generate_stream(
        self,
        prompt_ids,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        *,
        generator: torch.Generator | None = None,
        eos_token_id=None,
        pad_token_id: int | None = None,
        ignore_eos: bool = False,
        attention_mask=None,
        compile: bool = False,
    ) -> Iterator[torch.Tensor]:
        """Yield the new token ids (b,) one position at a time: the prompt in parallel mode, then ``step``.

        Default decoding: greedy (``temperature=0``); ``temperature > 0`` samples (with ``top_k`` /
        ``top_p``). Per-row stopping: a row that has produced an eos token yields ``pad`` from then on
        (:meth:`special_tokens`), and the stream ends when every row is done or after ``max_new_tokens``.
        ``ignore_eos=True`` always produces ``max_new_tokens``. Prompts of different lengths: a list of rows,
        or a left-padded tensor with ``attention_mask`` (layers with resettable state).

        ``compile=True`` runs the per-token step through ``torch.compile(dynamic=False)``: the first call
        for a batch size compiles (~20 s on a CPU), later ones reuse it while the parameters are unchanged;
        measured ~2x faster per token than eager on CPU at batch 1 (BENCHMARKS.md)."""
        eos_ids, pad = self.special_tokens(eos_token_id, pad_token_id)
        prompt, mask = self._check_generate(prompt_ids, max_new_tokens, temperature, top_k, top_p, attention_mask, pad)
        if max_new_tokens == 0:
            return
        eos = None if ignore_eos or not eos_ids else torch.tensor(eos_ids, device=prompt.device)
        logits, state = self._prefill(prompt, mask)
        step = self._step_function(prompt.shape[0], state, compile)  # checks once, then the unchecked fast step
        done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
        for i in range(max_new_tokens):
            tok = self.sample(logits, temperature, top_k, top_p, generator)
            if eos is not None:
                tok = tok.masked_fill(done, pad)
                done = done | torch.isin(tok, eos)
            yield tok
            if i + 1 == max_new_tokens or (eos is not None and bool(done.all())):  # one host sync per token
                return
            logits, state = step(tok, state)

    def generate(
        self,
        prompt_ids,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        *,
        generator: torch.Generator | None = None,
        eos_token_id=None,
        pad_token_id: int | None = None,
        ignore_eos: bool = False,
        attention_mask=None,
        compile: bool = False,
    ) -> torch.Tensor:
        """prompt_ids (b, l) or (l,) or a list of rows -> (b, l + new) ids: the prompt (left-padded with ``pad``
        when rows differ in length) followed by the generated tokens; finished rows are padded and ``new``
        stops at the last row's eos. Options as :meth:`generate_stream` (default: greedy)."""
        kw = dict(
            generator=generator,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            ignore_eos=ignore_eos,
            compile=compile,
        )
        _, pad = self.special_tokens(eos_token_id, pad_token_id)
        prompt, mask = self._check_generate(prompt_ids, max_new_tokens, temperature, top_k, top_p, attention_mask, pad)
        if mask is not None and not self._takes_reset:  # no resettable state: run the rows one at a time
            rows = [
                self.generate(prompt[r][mask[r]], max_new_tokens, temperature, top_k, top_p, **kw)[0]
                for r in range(prompt.shape[0])
            ]
            new = max(len(r) - int(m.sum()) for r, m in zip(rows, mask))
            return torch.stack(
                [
                    torch.cat(
                        [
                            torch.full((prompt.shape[1] - int(m.sum()),), pad, device=prompt.device),
                            r,
                            torch.full((new - (len(r) - int(m.sum())),), pad, device=prompt.device),
                        ]
                    )
                    for r, m in zip(rows, mask)
                ]
            )
        out: list[torch.Tensor] = list(
            self.generate_stream(prompt, max_new_tokens, temperature, top_k, top_p, attention_mask=mask, **kw)
        )
        return torch.cat([prompt] + [t[:, None] for t in out], dim=1)

    def _step_function(self, batch: int, state: list, compile: bool = False):
        """The per-token step of a generation loop, ``(ids (b,), state) -> (logits (b, V), state)``, equal to
        :meth:`step`: the state is checked once here, and each layer's ``step_function`` (derived weights
        prepared once; fused for Mamba / Mamba-2; the checked ``step`` by default) runs without per-token checks.
        ``compile``: the function through ``torch.compile(dynamic=False)``, cached on the model for this batch
        size while no parameter has changed (:func:`~torchssm.layers.base.parameters_version`)."""
        self._check_state(state, batch)
        if compile:
            key = (batch, *parameters_version(self))
            cached = getattr(self, "_compiled_step", None)
            if cached is None or cached[0] != key:
                self._compiled_step = (key, torch.compile(self._step_function(batch, state), dynamic=False))
            return self._compiled_step[1]
        layers = [  # each mixer's step_function: its one-token update with derived weights (or its checked step)
            (blk.norm.weight, blk.norm.eps, blk.mixer.step_function(), _mlp_weights(blk))
            for blk in self.backbone.blocks()
        ]
        emb, head = self.backbone.embedding.weight, self.lm_head.weight
        head_t = head.t().contiguous() if head.numel() <= 1 << 24 else None  # faster at batch 1 (transposed_linear)
        norm_f, vocab, width = self.backbone.norm_f, self.config.vocab_size, (self.config.d_model,)
        fp32_residual = self.config.residual_in_fp32

        def step(token_ids: torch.Tensor, state: list):
            x = F.embedding(token_ids, emb)  # (b, h)
            residual = x.to(torch.promote_types(x.dtype, torch.float32)) if fp32_residual else x
            new_states = []
            for (w, eps, mix, mlp), s in zip(layers, state):
                out, s = mix(F.rms_norm(residual.to(x.dtype), width, w, eps), s)
                new_states.append(s)
                residual = residual + out.to(residual.dtype)
                if mlp is not None:
                    w2, eps2, fc1, fc2 = mlp
                    h2 = F.rms_norm(residual.to(x.dtype), width, w2, eps2)
                    residual = residual + gated_mlp(h2, fc1, fc2).to(residual.dtype)
            h = F.rms_norm(residual.to(x.dtype), width, norm_f.weight, norm_f.eps)
            return (h @ head_t if head_t is not None else F.linear(h, head))[..., :vocab], new_states

        return step


def _mlp_weights(block: Block) -> tuple | None:
    """(norm2 weight, norm2 eps, fc1, fc2) of a block's MLP, for the fused step; None without one."""
    if block.mlp is None or block.norm2 is None:
        return None
    return block.norm2.weight, block.norm2.eps, block.mlp.fc1.weight, block.mlp.fc2.weight


def build_lm(config: LMConfig) -> CausalLM:
    return CausalLM(config)


def build_lm_from_dict(data: dict) -> CausalLM:
    """Builder registered for ``model_type = "lm"`` (``torchssm.from_pretrained``)."""
    return CausalLM(LMConfig.from_dict(data))


register_model_type("lm", "torchssm.models.lm", "build_lm_from_dict")
