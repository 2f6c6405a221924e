"""Model configuration (a dataclass, as in nanoGPT): the deep SSM architecture of the LRU article.

    inputs (b, l, d_input) -> encoder (linear M -> H, or embedding for tokens)
      -> n_layers x [norm -> SSM layer -> GELU -> dropout -> GLU -> dropout -> + skip]
      -> final_norm (none by default)
      -> pooling (mean over valid steps, or last) -> linear head -> logits

Defaults follow the LRU paper (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for
Long Sequences", Sec. 3 and App. D): pre-norm residual blocks with GELU + GLU, BatchNorm on
the LRA image/MNIST tasks; the MNIST-1D values in the preset mnist1d_lru
(src/torchssm/presets/mnist1d_lru.yaml) were tuned here.
"""

from __future__ import annotations

from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, ClassVar


class ConfigDict:
    """``to_dict`` / ``from_dict`` for a config dataclass; unknown keys are an error naming the valid ones."""

    config_name = "model"  # used in error messages
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # subclasses are dataclasses (for the type checker)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.config_name} config key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**data)


@dataclass
class ModelConfig(ConfigDict):
    layer: str = "lru"  # registry name (torchssm.layers.registry)
    d_model: int = 64  # H: width of the residual stream
    n_layers: int = 2  # N residual blocks
    layer_kwargs: dict = field(default_factory=dict)  # passed to the layer, e.g. {"d_state": 64, "r_min": 0.5}
    norm: str = "batch"  # "batch" | "layer" | "none"
    prenorm: bool = True  # norm before the SSM (pre-norm) or after the residual add (post-norm)
    dropout: float = 0.0
    glu: bool = True  # GLU after the SSM's GELU, as in the LRU/S5 blocks
    pooling: str = "mean"  # "mean" (masked by lengths) | "last" | "none" (per-token head)
    # norm after the last block, before pooling and head: "none" (the LRU article's model, Fig. 1) | "layer" |
    # "batch". A pre-norm stack leaves its residual stream unnormalised; GPT-2 (Radford et al. 2019, Sec. 2.3)
    # and Mamba's reference model (mamba_ssm MixerModel.norm_f) add a final norm there
    final_norm: str = "none"
    # language models only (lm tasks, torchssm.lm.build): a gated MLP of this width after each mixer of the
    # CausalLM (LMConfig.d_intermediate, mamba_ssm's); 0: none. The deep model refuses it (its blocks have a GLU)
    d_intermediate: int = 0
    # Filled from the task (TaskInfo) when the model is built for one:
    d_input: int = 1
    d_output: int = 10
    input_kind: str = "real"  # "real" (linear encoder) | "tokens" (embedding)
    paired: bool = False  # two-tower model for paired tasks (LRA Retrieval)
    tie_embeddings: bool = False  # tokens in and out over one vocabulary: the head's weight is the embedding's
