"""In-context reinforcement learning with resettable sequence models on POPGym (Lu et al. 2023).

* :mod:`torchssm.rl.envs`: the POPGym suite (``popgym`` package), flattened and batched;
* :mod:`torchssm.rl.memory`: resettable memories (any causal registered layer, GRU, LSTM, windowed
  Transformer) with an O(1) ``step`` and a parallel ``forward`` with ``reset``;
* :mod:`torchssm.rl.policy`: the recurrent actor-critic;
* :mod:`torchssm.rl.ppo`: GAE, the clipped PPO loss, rollouts and updates over whole trajectories;
* :mod:`torchssm.rl.train`: configs, presets, training with checkpoints and resume, evaluation;
* :mod:`torchssm.rl.meta`: the meta-RL task (random environment + random projections per trial);
* :mod:`torchssm.rl.bench`: PPO update time per memory and trajectory length.
"""

from torchssm.rl.envs import ActionSpec, BatchedEnv, available_envs, make_env
from torchssm.rl.memory import Memory, available_memories, build_memory
from torchssm.rl.policy import RecurrentActorCritic
from torchssm.rl.ppo import PPOConfig, RolloutCollector, evaluate, gae, ppo_loss, ppo_update

__all__ = [
    "ActionSpec",
    "BatchedEnv",
    "Memory",
    "PPOConfig",
    "RecurrentActorCritic",
    "RolloutCollector",
    "available_envs",
    "available_memories",
    "build_memory",
    "evaluate",
    "gae",
    "make_env",
    "ppo_loss",
    "ppo_update",
]
