"""Recurrent actor-critic: encoder -> resettable memory -> actor and critic heads.

The architecture of popjaxrl's ``ActorCriticS5`` (``algorithms/ppo_s5.py``), which is also POPGym's PPO
baseline shape (``popgym/baselines/ppo.py``: a 128-wide LeakyReLU pre-processor, the memory, then
two-layer 128-wide LeakyReLU actor and critic):

    e_t  = lrelu(W_e2 lrelu(W_e1 o_t))                      (obs_dim -> 128 -> d_model)
    m_t  = memory(e_{<=t}), reset at episode starts           (d_model)
    pi_t = Categorical(logits = W_a3 lrelu(W_a2 lrelu(W_a1 m_t)))   or  Normal(mean_t, exp(log_std))
    V_t  = W_v3 lrelu(W_v2 lrelu(W_v1 m_t))

Initialisation as popjaxrl: orthogonal weights with gains sqrt(2) (encoder), 2 (hidden heads), 0.01
(action logits / means), 1.0 (value), zero biases; ``log_std`` = 0 for continuous actions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchssm.rl.envs import ActionSpec
from torchssm.rl.memory import Memory, State, build_memory


def _linear(d_in: int, d_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp_head(d_in: int, hidden: int, d_out: int, out_gain: float) -> nn.Sequential:
    return nn.Sequential(
        _linear(d_in, hidden, 2.0),
        nn.LeakyReLU(),
        _linear(hidden, hidden, 2.0),
        nn.LeakyReLU(),
        _linear(hidden, d_out, out_gain),
    )


class RecurrentActorCritic(nn.Module):
    """Actor-critic around a :class:`~torchssm.rl.memory.Memory` (module docstring).

    Args:
        obs_dim: observation size; action_spec: what the actor outputs (:class:`ActionSpec`).
        memory: a memory name (``build_memory``) or a built :class:`Memory`.
        d_model: memory width (popjaxrl: S5_D_MODEL = 256; smaller presets here for CPU runs).
        n_layers: memory blocks (popjaxrl: S5_N_LAYERS = 4).
        hidden: width of the encoder and head MLPs (128 in popjaxrl and POPGym's baseline).
        memory_kwargs: passed to ``build_memory`` (e.g. ``{"d_state": 64}``).
    """

    def __init__(
        self,
        obs_dim: int,
        action_spec: ActionSpec,
        memory="lru",
        d_model: int = 64,
        n_layers: int = 1,
        hidden: int = 128,
        memory_kwargs: dict | None = None,
    ):
        super().__init__()
        if not isinstance(action_spec, ActionSpec):
            raise TypeError(f"action_spec must be an ActionSpec, got {type(action_spec).__name__}")
        self.obs_dim, self.action_spec = int(obs_dim), action_spec
        self.encoder = nn.Sequential(
            _linear(obs_dim, hidden, math.sqrt(2)),
            nn.LeakyReLU(),
            _linear(hidden, d_model, math.sqrt(2)),
            nn.LeakyReLU(),
        )
        self.memory = (
            memory if isinstance(memory, Memory) else build_memory(memory, d_model, n_layers, **(memory_kwargs or {}))
        )
        if self.memory.d_model != d_model:
            raise ValueError(f"memory width {self.memory.d_model} != d_model {d_model}")
        self.actor = _mlp_head(d_model, hidden, action_spec.size, 0.01)
        self.critic = _mlp_head(d_model, hidden, 1, 1.0)
        if action_spec.kind == "continuous":
            self.log_std = nn.Parameter(torch.zeros(action_spec.dim))

    def initial_state(self, batch: int, device=None) -> State:
        return self.memory.initial_state(batch, device=device)

    def _check_obs(self, obs: torch.Tensor, dims: int) -> None:
        want = "(batch, obs_dim)" if dims == 2 else "(batch, length, obs_dim)"
        if obs.dim() != dims or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"observations must have shape {want} with obs_dim={self.obs_dim}; got {tuple(obs.shape)}")

    def _param_dtype(self):
        return next(self.parameters()).dtype

    def step(self, obs_t: torch.Tensor, state: State, reset_t: torch.Tensor | None = None):
        """obs_t (b, obs_dim) -> (head (b, A), value (b,), new state): one environment step."""
        self._check_obs(obs_t, 2)
        m, state = self.memory.step(self.encoder(obs_t.to(self._param_dtype())), state, reset_t)
        return self.actor(m), self.critic(m)[..., 0], state

    def forward(self, obs: torch.Tensor, state: State | None = None, reset: torch.Tensor | None = None):
        """obs (b, l, obs_dim) -> (head (b, l, A), value (b, l)): whole trajectories, parallel memory."""
        self._check_obs(obs, 3)
        m = self.memory(self.encoder(obs.to(self._param_dtype())), state, reset)
        return self.actor(m), self.critic(m)[..., 0]

    def distribution(self, head: torch.Tensor) -> torch.distributions.Distribution:
        """The action distribution of head outputs (..., A): Categorical(logits) or a diagonal Normal."""
        if self.action_spec.kind == "discrete":
            return torch.distributions.Categorical(logits=head)
        std = self.log_std.exp().expand_as(head)
        return torch.distributions.Independent(torch.distributions.Normal(head, std), 1)
