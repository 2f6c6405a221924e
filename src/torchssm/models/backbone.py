"""The LRU article's deep model (Orvieto et al. 2023, Fig. 1 / App. D), built from a ModelConfig:

    inputs (b, l, d_input) float  -> Linear d_input -> h         (or (b, l) token ids -> Embedding)
      -> n_layers x ResidualBlock (norm, SSM layer, GELU, dropout, GLU, dropout, skip)   (b, l, h)
      -> final norm (``final_norm``: "none" by default, as the article; "layer" | "batch")   (b, l, h)
      -> pooling: "mean" over valid steps | "last" valid step  (b, h)  | "none" (b, l, h)
      -> Linear h -> d_output                                  logits (b, d_output) or (b, l, d_output)
         (``tie_embeddings``: the Linear's weight is the Embedding's, for token outputs over the input vocabulary)

Paired tasks (LRA Retrieval, Tay et al. 2021, Sec. 3; its ``classifier_head_dual``): the same encoder
and blocks embed both sequences into u and v (b, h), and an MLP reads [u, v, u*v, u-v] (b, 4h):
Linear 4h -> h, GELU, Linear h -> d_output (GELU as in S5's RetrievalDecoder).

Streaming (causal layers only): ``forward(inputs, state=..., return_state=True)`` continues from a
carried state and returns the logits *of the sequence so far* (pooling over every step seen,
through a running sum and count) and the new state; ``step(x_t, state)`` does the same for one
token, with each layer's O(1) ``step``. Chunk after chunk (truncated BPTT) or token after token
(ONNX export), the logits equal those of one call on the whole sequence.

Padding (``lengths`` (b,) int, right-padded batches): causal layers never see later steps, BatchNorm
statistics ignore padded steps (``MaskedBatchNorm``), bidirectional layers receive ``lengths``, and
pooling averages / picks valid steps only, so logits do not depend on the padding.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from torchssm.checks import unit_interval
from torchssm.layers.base import check_state_like
from torchssm.models.blocks import ResidualBlock, build_norm, lengths_to_mask
from torchssm.models.config import ModelConfig
from torchssm.models.pretrained import PretrainedMixin

_POOLINGS = ("mean", "last", "none")
_NORMS = ("batch", "layer", "none")
_INPUT_KINDS = ("real", "tokens")


def _check_config(cfg: ModelConfig) -> None:
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"expected a ModelConfig, got {type(cfg).__name__}")
    for name in ("d_model", "d_input", "d_output"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"model config {name} must be a positive int, got {value!r}")
    if not isinstance(cfg.n_layers, int) or cfg.n_layers < 0:
        raise ValueError(f"model config n_layers must be an int >= 0, got {cfg.n_layers!r}")
    if cfg.pooling not in _POOLINGS:
        raise ValueError(f"model config pooling must be one of {list(_POOLINGS)}, got {cfg.pooling!r}")
    for name in ("norm", "final_norm"):
        if getattr(cfg, name) not in _NORMS:
            raise ValueError(f"model config {name} must be one of {list(_NORMS)}, got {getattr(cfg, name)!r}")
    if cfg.input_kind not in _INPUT_KINDS:
        raise ValueError(f"model config input_kind must be one of {list(_INPUT_KINDS)}, got {cfg.input_kind!r}")
    if cfg.paired and cfg.pooling == "none":
        raise ValueError("a paired (two-tower) model needs pooling 'mean' or 'last', not 'none'")
    if cfg.tie_embeddings and (cfg.input_kind != "tokens" or cfg.paired or cfg.d_input != cfg.d_output):
        raise ValueError(
            "model config tie_embeddings needs token inputs and outputs over one vocabulary (input_kind 'tokens', "
            f"d_input == d_output, not paired); got input_kind={cfg.input_kind!r}, d_input={cfg.d_input}, "
            f"d_output={cfg.d_output}, paired={cfg.paired}"
        )
    if cfg.d_intermediate:
        raise ValueError(
            f"model config d_intermediate={cfg.d_intermediate} is for language models (lm tasks); the deep "
            "model's blocks have their GELU + GLU channel mixing: leave it 0"
        )
    unit_interval("model config dropout", cfg.dropout, "a probability", include_one=False)


class DeepSSM(PretrainedMixin, nn.Module):
    """Encoder, residual SSM blocks, pooling and head (see the module docstring)."""

    model_type = "deep_ssm"

    def __init__(self, config: ModelConfig):
        super().__init__()
        _check_config(config)
        self.config = config
        h = config.d_model
        if config.input_kind == "tokens":
            self.encoder: nn.Module = nn.Embedding(config.d_input, h)
        else:
            self.encoder = nn.Linear(config.d_input, h)
        self.blocks = nn.ModuleList(
            ResidualBlock(
                config.layer,
                h,
                config.layer_kwargs,
                norm=config.norm,
                prenorm=config.prenorm,
                dropout=config.dropout,
                glu=config.glu,
            )
            for _ in range(config.n_layers)
        )
        self.final_norm = build_norm(config.final_norm, h)  # "none": no parameters (old checkpoints load)
        if config.paired:
            self.head: nn.Module = nn.Sequential(nn.Linear(4 * h, h), nn.GELU(), nn.Linear(h, config.d_output))
        else:
            self.head = nn.Linear(h, config.d_output)
        if config.tie_embeddings:  # one (vocab, h) matrix reads tokens in and scores them out, ~ N(0, 0.02)
            # as GPT-2 (Radford et al. 2019) / mamba_ssm's _init_weights / Zoology's LanguageModel, whose
            # tied head has no bias (this one keeps nn.Linear's)
            self.head.weight = cast(nn.Embedding, self.encoder).weight
            nn.init.normal_(self.head.weight, std=0.02)

    def residual_blocks(self) -> list[ResidualBlock]:
        """``blocks`` as the type checker should see it (an nn.ModuleList yields nn.Module): the same object."""
        return cast("list[ResidualBlock]", self.blocks)

    # --- input checks (shapes/dtypes only: no device sync) ----------------------------------------------
    def _check_inputs(self, inputs, lengths, name: str) -> torch.Tensor:
        cfg = self.config
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(inputs).__name__}")
        if cfg.input_kind == "tokens":
            if inputs.dim() != 2 or inputs.is_floating_point() or inputs.is_complex():
                raise ValueError(
                    f"{name} must be integer token ids of shape (batch, length); got "
                    f"dtype {inputs.dtype}, shape {tuple(inputs.shape)}"
                )
        else:
            if inputs.dim() == 2 and cfg.d_input == 1:
                inputs = inputs[..., None]  # (b, l) -> (b, l, 1)
            if inputs.dim() != 3 or inputs.shape[-1] != cfg.d_input:
                raise ValueError(
                    f"{name} must have shape (batch, length, d_input={cfg.d_input}); got {tuple(inputs.shape)}"
                )
            if not inputs.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor (input_kind='real'); got {inputs.dtype}")
        if inputs.shape[1] == 0:
            raise ValueError(f"{name} is an empty sequence (length 0)")
        if lengths is not None:
            if not isinstance(lengths, torch.Tensor) or tuple(lengths.shape) != (inputs.shape[0],):
                shape = tuple(lengths.shape) if isinstance(lengths, torch.Tensor) else type(lengths).__name__
                raise ValueError(f"lengths for {name} must have shape (batch,)=({inputs.shape[0]},); got {shape}")
            if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
                raise TypeError(f"lengths for {name} must be an integer tensor; got dtype {lengths.dtype}")
        return inputs

    # --- model --------------------------------------------------------------------------------------------
    def features(
        self, inputs: torch.Tensor, lengths: torch.Tensor | None = None, *, name: str = "inputs"
    ) -> torch.Tensor:
        """Encoder + blocks + pooling: (b, h) pooled, or (b, l, h) with pooling "none"."""
        inputs = self._check_inputs(inputs, lengths, name)
        length = inputs.shape[1]
        if lengths is not None:
            lengths = lengths.to(inputs.device).clamp(1, length)
        mask = lengths_to_mask(lengths, length)  # (b, l) or None
        x = self.encoder(inputs)  # (b, l, h)
        for block in self.blocks:
            x = block(x, lengths, mask)
        x = self.final_norm(x, mask)  # (b, l, h)
        pooling = self.config.pooling
        if pooling == "none":
            return x
        if pooling == "mean":
            if mask is None:
                return x.mean(dim=1)
            m = mask[..., None].to(x.dtype)  # (b, l, 1)
            return (x * m).sum(dim=1) / m.sum(dim=1)  # (b, h)
        if lengths is None:  # "last"
            return x[:, -1]
        idx = (lengths - 1)[:, None, None].expand(-1, 1, x.shape[-1])  # (b, 1, h)
        return x.gather(1, idx)[:, 0]  # (b, h)

    def forward(
        self,
        inputs: torch.Tensor,
        lengths: torch.Tensor | None = None,
        inputs2: torch.Tensor | None = None,
        lengths2: torch.Tensor | None = None,
        *,
        state: dict | None = None,
        return_state: bool = False,
    ):
        """Logits (b, d_output), or (b, l, d_output) with pooling "none".

        ``lengths`` (b,) int: valid lengths of right-padded ``inputs``. Paired models also take the
        second sequence ``inputs2`` (and its ``lengths2``). ``state``/``return_state``: streaming
        (see the module docstring); returns ``(logits, new_state)`` when ``return_state``.
        """
        if state is not None or return_state:
            if lengths is not None or inputs2 is not None:
                raise ValueError(
                    "streaming (state / return_state) takes unpadded, unpaired inputs: lengths and inputs2 must be None"
                )
            inputs = self._check_inputs(inputs, None, "inputs")
            state = self._stream_state(state, inputs.shape[0], inputs.device)
            x = self.encoder(inputs)  # (b, l, h)
            blocks = []
            for block, s in zip(self.blocks, state["blocks"]):
                x, s = block(x, state=s, return_state=True)
                blocks.append(s)
            x = self.final_norm(x)  # (b, l, h)
            logits, pool_sum, count = self._stream_head(x, state)
            out = logits, {"blocks": blocks, "pool_sum": pool_sum, "count": count}
            return out if return_state else out[0]
        if self.config.paired:
            if inputs2 is None:
                raise ValueError("this paired (two-tower) model needs inputs2, the second sequence")
            u = self.features(inputs, lengths)  # (b, h)
            v = self.features(inputs2, lengths2, name="inputs2")  # (b, h)
            if u.shape[0] != v.shape[0]:
                raise ValueError(f"inputs and inputs2 must have the same batch size; got {u.shape[0]} and {v.shape[0]}")
            return self.head(torch.cat([u, v, u * v, u - v], dim=-1))  # (b, d_output)
        if inputs2 is not None:
            raise ValueError("inputs2 was given but the model is not paired (ModelConfig.paired=False)")
        return self.head(self.features(inputs, lengths))

    def logits_at(self, inputs: torch.Tensor, where: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``forward(inputs, lengths)[where]`` for a per-step model (pooling "none", not paired): the logits
        (n, d_output) of the n steps where ``where`` (b, l) bool is True, in row-major order.

        The head reads each step on its own, so applying it to those steps only gives the same values at a
        fraction of the cost when few steps are scored (MQAR: 16 of 256 with an 8192-way head); the training
        loss uses it for that (:func:`torchssm.train.losses.model_loss_and_correct`).
        """
        if self.config.pooling != "none" or self.config.paired:
            raise ValueError("logits_at needs a per-step model (pooling 'none', not paired)")
        feats = self.features(inputs, lengths)  # (b, l, h)
        if not isinstance(where, torch.Tensor) or where.dtype != torch.bool or where.shape != feats.shape[:2]:
            shape = tuple(where.shape) if isinstance(where, torch.Tensor) else type(where).__name__
            raise ValueError(
                f"where must be a bool tensor of shape (batch, length)={tuple(feats.shape[:2])}; got {shape}"
            )
        return self.head(feats[where])  # (n, d_output)

    # --- streaming (causal layers) ------------------------------------------------------------------------
    def init_state(self, batch: int, device=None, dtype=None) -> dict:
        """The zero streaming state: each block's SSM state, the running pooled sum (b, h) and count (b, 1)."""
        for block in self.residual_blocks():
            if not block.ssm.causal:
                raise ValueError(f"streaming needs causal layers; {type(block.ssm).__name__} is bidirectional")
        if self.config.paired:
            raise ValueError("a paired (two-tower) model has no streaming state")
        dtype = dtype or self.head.weight.dtype
        h = self.config.d_model
        return {
            "blocks": [block.ssm.init_state(batch, device=device, dtype=dtype) for block in self.residual_blocks()],
            "pool_sum": torch.zeros(batch, h, device=device, dtype=dtype),  # (b, h)
            "count": torch.zeros(batch, 1, device=device, dtype=dtype),
        }  # (b, 1)

    def _stream_state(self, state: dict | None, batch: int, device) -> dict:
        template = self.init_state(batch, device="meta")
        if state is None:
            return self.init_state(batch, device=device)
        if not isinstance(state, dict) or set(state) != set(template) or len(state["blocks"]) != len(self.blocks):
            raise ValueError(
                f"state must be a dict with keys {sorted(template)} and {len(self.blocks)} block states, "
                f"from init_state() or forward(..., return_state=True)"
            )
        check_state_like([state["pool_sum"], state["count"]], [template["pool_sum"], template["count"]], "state")
        return state

    def _stream_head(self, x: torch.Tensor, state: dict):
        """x (b, l, h) of the new steps -> (logits of the sequence so far, pool_sum (b, h), count (b, 1))."""
        pool_sum = state["pool_sum"] + x.sum(dim=1).to(state["pool_sum"].dtype)  # (b, h)
        count = state["count"] + x.shape[1]  # (b, 1)
        pooling = self.config.pooling
        if pooling == "none":
            return self.head(x), pool_sum, count  # (b, l, d_output)
        feats = (pool_sum / count).to(x.dtype) if pooling == "mean" else x[:, -1]  # (b, h)
        return self.head(feats), pool_sum, count

    def step(self, x_t: torch.Tensor, state: dict):
        """One token: x_t (b, d_input) real or (b,) token ids -> (logits (b, d_output), new_state).

        The logits are those of the sequence so far (mean/last pooling included); eval mode expected
        (BatchNorm uses its running statistics). Pure, O(1) in the length.
        """
        if not isinstance(x_t, torch.Tensor) or x_t.dim() not in (1, 2):
            raise ValueError(
                f"x_t must have shape (batch, d_input={self.config.d_input}) or (batch,) token ids; "
                f"got {getattr(x_t, 'shape', type(x_t).__name__)}"
            )
        inputs = self._check_inputs(x_t[:, None], None, "x_t")  # (b, 1, m) or (b, 1)
        state = self._stream_state(state, inputs.shape[0], inputs.device)
        x = self.encoder(inputs)[:, 0]  # (b, h)
        blocks = []
        for block, s in zip(self.residual_blocks(), state["blocks"]):
            x, s = block.step(x, s)
            blocks.append(s)
        x = self.final_norm(x[:, None])[:, 0]  # (b, h)
        logits, pool_sum, count = self._stream_head(x[:, None], state)
        logits = logits[:, 0] if self.config.pooling == "none" else logits  # (b, d_output)
        return logits, {"blocks": blocks, "pool_sum": pool_sum, "count": count}


def build_model(cfg: ModelConfig) -> DeepSSM:
    """The deep SSM model of the LRU article for ``cfg`` (layer chosen by registry name)."""
    return DeepSSM(cfg)


def build_model_from_dict(data: dict) -> DeepSSM:
    """Builder used by :func:`torchssm.models.pretrained.from_pretrained` for ``model_type='deep_ssm'``."""
    return DeepSSM(ModelConfig.from_dict(data))
