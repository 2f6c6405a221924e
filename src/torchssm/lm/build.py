"""The model of a language-modelling run: a :class:`~torchssm.models.lm.CausalLM` from the run's ModelConfig.

``torchssm train`` on a task of kind ``"lm"`` (e.g. ``lm_text``) builds Mamba's language-model
architecture (``MambaLMHeadModel``: embedding, ``n_layers`` pre-norm residual blocks ``x + mixer(RMSNorm(x))``,
final RMSNorm, tied head; :mod:`torchssm.models.lm`) around the registered layer ``model.layer`` with
``model.layer_kwargs``, instead of the LRU article's classifier (:class:`~torchssm.models.backbone.DeepSSM`).
So the run's checkpoints are ``torchssm generate`` / ``torchssm.from_pretrained`` language models, and
every layer (Transformer, Mamba, Mamba-2, LRU, S5, the hybrids of :mod:`torchssm.models.hybrid`) is compared
inside the same block. The DeepSSM-only fields (``norm``, ``prenorm``, ``glu``, ``pooling``) do not apply;
``dropout`` > 0 is refused (the LM block has none). With ``task.objective: masked`` the model is the
masked LM of :mod:`torchssm.models.masked_lm` (bidirectional layers, e.g. Hydra). The task's tokenizer is
attached to the model (``model.tokenizer``), so every checkpoint directory holds ``tokenizer.json`` when the
tokenizer is BPE.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from torchssm.data.registry import TaskData
from torchssm.models.config import ModelConfig
from torchssm.models.lm import CausalLM, LMConfig


def lm_config_from_model_config(cfg: ModelConfig) -> LMConfig:
    """ModelConfig (as filled from an ``lm`` task) -> LMConfig of the same layer, width and depth."""
    if cfg.input_kind != "tokens":
        raise ValueError(f"a language model reads token ids; the task gives input_kind={cfg.input_kind!r}")
    if cfg.dropout:
        raise ValueError(f"model.dropout={cfg.dropout}: the language model's blocks have no dropout; set 0")
    return LMConfig(
        layer=cfg.layer,
        d_model=cfg.d_model,
        n_layer=cfg.n_layers,
        vocab_size=cfg.d_output,
        layer_kwargs=dict(cfg.layer_kwargs),
        d_intermediate=cfg.d_intermediate,
    )


def causal_lm_builder(task: TaskData) -> Callable[[ModelConfig], nn.Module]:
    """A ``model_builder`` for the training loop: ModelConfig -> CausalLM (or MaskedLM) with the task's tokenizer."""
    tokenizer = task.extra.get("tokenizer")
    masked = task.extra.get("objective") == "masked"

    def build(cfg: ModelConfig) -> nn.Module:
        if masked:  # BERT's objective over a (bidirectional) layer, e.g. Hydra
            from torchssm.models.masked_lm import MaskedLM, MaskedLMConfig

            lm = lm_config_from_model_config(cfg)
            if lm.d_intermediate:
                raise ValueError("model.d_intermediate: the masked LM's blocks have no MLP; leave it 0")
            model = MaskedLM(
                MaskedLMConfig(
                    layer=lm.layer,
                    d_model=lm.d_model,
                    n_layer=lm.n_layer,
                    vocab_size=lm.vocab_size,
                    layer_kwargs=lm.layer_kwargs,
                )
            )
        else:
            model = CausalLM(lm_config_from_model_config(cfg))
        model.tokenizer = tokenizer  # written beside the weights by save_pretrained (tokenizer.json)
        return model

    return build
