"""Training: experiment configs, optimizer groups, schedules, checkpoints and the loop.

from torchssm.presets import preset_path
from torchssm.train import load_config, train
result = train(load_config(preset_path("mnist1d_lru"), ["train.epochs=2"]))
"""

from torchssm.train.checkpoint import load_checkpoint, read_checkpoint_state, save_checkpoint
from torchssm.train.config import ExperimentConfig, TrainConfig, load_config, model_config_for_task
from torchssm.train.loop import RunResult, TrainingDiverged, evaluate, train
from torchssm.train.optim import build_optimizer, param_groups
from torchssm.train.schedule import WarmupCosine, build_scheduler

__all__ = [
    "ExperimentConfig",
    "RunResult",
    "TrainConfig",
    "TrainingDiverged",
    "WarmupCosine",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "load_checkpoint",
    "load_config",
    "model_config_for_task",
    "param_groups",
    "read_checkpoint_state",
    "save_checkpoint",
    "train",
]
