"""Masked (bidirectional) language model: BERT's objective over a bidirectional layer, e.g. Hydra.

The Hydra paper compares Hydra with BERT as a bidirectional encoder trained with masked language
modelling (Hwang et al. 2024, "Hydra: Bidirectional State Space Models Through Generalized Matrix Mixers",
Sec. 5; UNVERIFIED section). The model, for b batch, l length, h = d_model, V vocabulary:

    x_0 = Embedding(ids)                         (b, l, h); id V is [MASK]
    x_{i+1} = x_i + Mixer_i(RMSNorm_i(x_i))      any registered layer, bidirectional ones included (Hydra)
    logits = RMSNorm_f(x_N) @ Embedding.weight[:V]^T                         tied head, (b, l, V)

Masking (:func:`mask_tokens`, BERT: Devlin et al. 2019, Sec. 3.1 "Task #1: Masked LM"): 15% of the
positions are chosen; of those 80% become [MASK], 10% a random token, 10% stay; the loss is the
cross-entropy at the chosen positions only (targets elsewhere are ``ignore_index`` = -100).

With ``torchssm train`` on ``lm_text`` with ``objective: masked`` the task masks each row once, seeded by
(task seed, row) (BERT's static masking, Sec. A.2 duplicates the data with different masks; one mask
per row here) and :mod:`torchssm.lm.build` builds this model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from torchssm.layers.registry import build_layer
from torchssm.models.config import ConfigDict
from torchssm.models.pretrained import PretrainedMixin, register_model_type

MASK_PROB, MASK_TOKEN_SHARE, RANDOM_TOKEN_SHARE = 0.15, 0.8, 0.1  # BERT, Sec. 3.1


@dataclass
class MaskedLMConfig(ConfigDict):
    config_name = "masked LM"
    layer: str = "hydra"
    d_model: int = 128
    n_layer: int = 4
    vocab_size: int = 256  # without [MASK]; the embedding has vocab_size + 1 rows
    layer_kwargs: dict = field(default_factory=dict)
    norm_eps: float = 1e-5


class MaskedLM(PretrainedMixin, nn.Module):
    """ids (b, l) with [MASK] = vocab_size -> logits (b, l, vocab_size) (see the module docstring)."""

    model_type = "masked_lm"

    def __init__(self, config: MaskedLMConfig):
        super().__init__()
        self.config = config
        self.mask_id = config.vocab_size
        self.embedding = nn.Embedding(config.vocab_size + 1, config.d_model)
        self.norms = nn.ModuleList(nn.RMSNorm(config.d_model, eps=config.norm_eps) for _ in range(config.n_layer))
        self.mixers = nn.ModuleList(
            build_layer(config.layer, config.d_model, **config.layer_kwargs) for _ in range(config.n_layer)
        )
        self.norm_f = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        nn.init.normal_(self.embedding.weight, std=0.02)  # as the causal LM (mamba_ssm's _init_weights)
        with torch.no_grad():
            for mixer in self.mixers:
                proj = getattr(mixer, "out_proj", None)
                if isinstance(proj, nn.Linear):  # GPT-2's 1/sqrt(n_layer) residual scaling
                    proj.weight /= math.sqrt(config.n_layer)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError("input_ids must be a (batch, length) integer tensor of token ids")
        x = self.embedding(input_ids)  # (b, l, h)
        for norm, mixer in zip(self.norms, self.mixers):
            x = x + mixer(norm(x))
        return self.norm_f(x) @ self.embedding.weight[: self.config.vocab_size].T  # (b, l, V)


def mask_tokens(
    ids: torch.Tensor,
    vocab_size: int,
    generator: torch.Generator | None = None,
    mask_prob: float = MASK_PROB,
    ignore_index: int = -100,
):
    """BERT masking of ``ids`` (..., l) -> (inputs with [MASK] = vocab_size, targets: ids at the chosen
    positions, ``ignore_index`` elsewhere). At least one position per row is chosen."""
    u = torch.rand(ids.shape, generator=generator)
    chosen = u < mask_prob
    first = u.argmin(-1, keepdim=True)  # rows where nothing was chosen get their smallest draw
    chosen.scatter_(-1, first, True)
    kind = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(0, vocab_size, ids.shape, generator=generator, dtype=ids.dtype)
    inputs = torch.where(chosen & (kind < MASK_TOKEN_SHARE), torch.full_like(ids, vocab_size), ids)
    inputs = torch.where(
        chosen & (kind >= MASK_TOKEN_SHARE) & (kind < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE), random_ids, inputs
    )
    targets = torch.where(chosen, ids, torch.full_like(ids, ignore_index))
    return inputs, targets


def build_masked_lm_from_dict(data: dict) -> MaskedLM:
    return MaskedLM(MaskedLMConfig.from_dict(data))


register_model_type("masked_lm", "torchssm.models.masked_lm", "build_masked_lm_from_dict")
