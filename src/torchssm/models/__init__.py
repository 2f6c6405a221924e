"""Models: the LRU article's deep SSM (encoder, residual blocks, pooling, head) and save/load.

from torchssm.models import ModelConfig, build_model
model = build_model(ModelConfig(layer="lru", d_model=64, layer_kwargs={"d_state": 64}))
model.save_pretrained("out/")  ->  torchssm.from_pretrained("out/")
"""

from torchssm.models import convert as _convert  # noqa: F401  (registers the Mamba checkpoint converter)
from torchssm.models.backbone import DeepSSM, build_model
from torchssm.models.blocks import MaskedBatchNorm, ResidualBlock
from torchssm.models.config import ModelConfig
from torchssm.models.pretrained import (
    PretrainedMixin,
    from_pretrained,
    register_converter,
    register_model_type,
    save_pretrained,
)

__all__ = [
    "DeepSSM",
    "MaskedBatchNorm",
    "ModelConfig",
    "PretrainedMixin",
    "ResidualBlock",
    "build_model",
    "from_pretrained",
    "register_converter",
    "register_model_type",
    "save_pretrained",
]
