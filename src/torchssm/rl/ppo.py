"""PPO (Schulman et al. 2017) for recurrent policies over whole trajectories, as in popjaxrl
(``algorithms/ppo_s5.py``, itself PureJaxRL's PPO).

Per iteration: roll out ``num_steps`` steps of ``num_envs`` environments stepping the policy one token at a
time (``policy.step``, the memory carried across iterations and reset at episode starts), compute
advantages with GAE, then ``update_epochs`` passes of ``num_minibatches`` minibatches, each a random subset
of environments with their whole (num_steps,) trajectories, re-run in parallel (``policy.forward`` from the
rollout's initial memory state with ``reset`` at episode starts).

    GAE (Schulman et al. 2016, Eq. 11-16):  delta_t = r_t + gamma V_{t+1} (1 - done_t) - V_t
                                            A_t = delta_t + gamma lambda (1 - done_t) A_{t+1};  R_t = A_t + V_t
    ratio  rho = exp(log pi(a|.) - log pi_old(a|.)),   A normalised per minibatch (mean 0, std 1)
    L_pi   = -mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A))                     (PPO Eq. 7)
    L_V    = 0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))  (clipped value loss)
    L      = L_pi + c_V L_V - c_H mean(entropy)

``done_t`` ends an episode after step t (terminated or truncated, no bootstrap across it, as popjaxrl).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from torchssm.checks import unit_interval
from torchssm.rl.memory import State, index_state, map_state
from torchssm.rl.policy import RecurrentActorCritic


@dataclass
class PPOConfig:
    """PPO hyper-parameters. Defaults: popjaxrl ``run_popgym.py`` (the config of Lu et al. 2023's POPGym
    runs): LR 5e-5, NUM_ENVS 64, NUM_STEPS 1024, TOTAL_TIMESTEPS 15e6, UPDATE_EPOCHS 30,
    NUM_MINIBATCHES 8, GAMMA 0.99, GAE_LAMBDA 1.0, CLIP_EPS 0.2, ENT_COEF 0.0, VF_COEF 1.0,
    MAX_GRAD_NORM 0.5, ANNEAL_LR False; Adam eps 1e-5 (``algorithms/ppo_s5.py``: ``optax.adam(LR, eps=1e-5)``).
    The CPU presets under ``presets/rl/`` shrink num_envs / num_steps / total_steps / update_epochs."""

    lr: float = 5e-5
    num_envs: int = 64
    num_steps: int = 1024
    total_steps: int = 15_000_000
    update_epochs: int = 30
    num_minibatches: int = 8
    gamma: float = 0.99
    gae_lambda: float = 1.0
    clip_eps: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 1.0
    max_grad_norm: float = 0.5
    adam_eps: float = 1e-5
    anneal_lr: bool = False

    def __post_init__(self):
        for name in ("num_envs", "num_steps", "total_steps", "update_epochs", "num_minibatches"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"ppo.{name} must be a positive int, got {v!r}")
        if self.num_envs % self.num_minibatches:
            raise ValueError(
                f"ppo.num_envs={self.num_envs} must be divisible by ppo.num_minibatches="
                f"{self.num_minibatches} (minibatches hold whole trajectories)"
            )
        unit_interval("ppo.gamma", self.gamma, "a discount")
        unit_interval("ppo.gae_lambda", self.gae_lambda, "a trace decay")

    @property
    def num_updates(self) -> int:
        return max(self.total_steps // (self.num_steps * self.num_envs), 1)

    @classmethod
    def from_dict(cls, data: dict) -> PPOConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ppo config key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**data)


# --- the math ---------------------------------------------------------------------------------------
def gae(
    rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over time (dim 0). rewards, values, dones (T, B); last_value (B,)
    = V(s_T). Returns (advantages, returns) (T, B), returns = advantages + values."""
    not_done = 1.0 - dones.to(values.dtype)
    adv = torch.zeros_like(values)
    next_adv = torch.zeros_like(last_value)
    next_value = last_value
    for t in range(values.shape[0] - 1, -1, -1):
        delta = rewards[t] + gamma * next_value * not_done[t] - values[t]
        next_adv = delta + gamma * lam * not_done[t] * next_adv
        adv[t] = next_adv
        next_value = values[t]
    return adv, adv + values


def ppo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    clip_eps: float,
    vf_coef: float,
    ent_coef: float,
    normalize_advantages: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped PPO objective of the module docstring; all inputs of one shape. Returns (loss, parts)."""
    if normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = torch.exp(log_prob - old_log_prob)
    policy_loss = -torch.minimum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages).mean()
    value_clipped = old_value + (value - old_value).clamp(-clip_eps, clip_eps)
    value_loss = 0.5 * torch.maximum((value - returns) ** 2, (value_clipped - returns) ** 2).mean()
    ent = entropy.mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * ent
    clip_frac = ((ratio - 1).abs() > clip_eps).to(ratio.dtype).mean()
    return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": ent, "clip_frac": clip_frac}


# --- rollouts ---------------------------------------------------------------------------------------
@dataclass
class Rollout:
    """One iteration's data, batch first: obs (B, T, obs_dim), starts (B, T) bool (memory reset before t),
    actions (B, T[, dim]), log_probs, values, rewards (B, T), dones (B, T) bool (episode ended after t),
    init_state (the memory before t = 0), last_value (B,) = V(s_T)."""

    obs: torch.Tensor
    starts: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    init_state: State
    last_value: torch.Tensor
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)


def sample_action(policy: RecurrentActorCritic, head: torch.Tensor, greedy: bool = False) -> torch.Tensor:
    dist = policy.distribution(head)
    if not greedy:
        return dist.sample()
    return head.argmax(-1) if policy.action_spec.kind == "discrete" else head


class RolloutCollector:
    """Steps a policy through a batched environment (``BatchedEnv``-like: reset, step, num_envs, obs_dim,
    action_spec), carrying observations, memory state and reset flags across calls."""

    def __init__(self, env, policy: RecurrentActorCritic, also_reset_on: str | None = None):
        self.env, self.policy = env, policy
        if env.action_spec != policy.action_spec:
            raise ValueError(
                f"the policy's action space {policy.action_spec} does not match the environment's {env.action_spec}"
            )
        if env.obs_dim != policy.obs_dim:
            raise ValueError(f"the policy expects obs_dim={policy.obs_dim}; the environment gives {env.obs_dim}")
        # memory resets where done (the env's episode / trial ends) or, if given, where info[also_reset_on]
        # is True (the meta-RL ablation resets at every inner episode: also_reset_on="episode_done")
        self.also_reset_on = also_reset_on
        self.restart()

    def restart(self) -> None:
        n = self.env.num_envs
        self.obs = torch.as_tensor(self.env.reset())
        self.starts = torch.ones(n, dtype=torch.bool)
        self.state = self.policy.initial_state(n)

    @torch.no_grad()
    def collect(self, num_steps: int) -> Rollout:
        policy = self.policy
        dtype = next(policy.parameters()).dtype
        init_state = map_state(lambda s: s.clone(), self.state)
        obs, starts, actions, log_probs, values, rewards, dones = [], [], [], [], [], [], []
        ep_returns, ep_lengths = [], []
        for _ in range(num_steps):
            head, value, self.state = policy.step(self.obs, self.state, self.starts)
            action = sample_action(policy, head)
            obs.append(self.obs)
            starts.append(self.starts)
            actions.append(action)
            log_probs.append(policy.distribution(head).log_prob(action))
            values.append(value)
            next_obs, reward, done, info = self.env.step(action.numpy())
            rewards.append(torch.as_tensor(reward, dtype=dtype))
            dones.append(torch.as_tensor(done))
            ep_returns += info["episode_returns"]
            ep_lengths += info["episode_lengths"]
            self.obs = torch.as_tensor(next_obs)
            self.starts = torch.as_tensor(done)
            if self.also_reset_on is not None:
                self.starts = self.starts | torch.as_tensor(info[self.also_reset_on])
        _, last_value, _ = policy.step(self.obs, self.state, self.starts)

        def stack(xs):
            return torch.stack(xs, 1)

        return Rollout(
            stack(obs),
            stack(starts),
            stack(actions),
            stack(log_probs),
            stack(values),
            stack(rewards),
            stack(dones),
            init_state,
            last_value,
            ep_returns,
            ep_lengths,
        )


# --- the update -------------------------------------------------------------------------------------
def ppo_update(
    policy: RecurrentActorCritic,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    cfg: PPOConfig,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """``cfg.update_epochs`` x ``cfg.num_minibatches`` gradient steps on one rollout (module docstring)."""
    adv, returns = gae(
        rollout.rewards.T, rollout.values.T, rollout.dones.T, rollout.last_value, cfg.gamma, cfg.gae_lambda
    )
    adv, returns = adv.T, returns.T  # (B, T)
    n = rollout.obs.shape[0]
    if n % cfg.num_minibatches:
        raise ValueError(f"{n} trajectories cannot be split into {cfg.num_minibatches} equal minibatches")
    size = n // cfg.num_minibatches
    sums: dict[str, float] = {}
    count = 0
    for _ in range(cfg.update_epochs):
        perm = torch.randperm(n, generator=generator)
        for k in range(cfg.num_minibatches):
            rows = perm[k * size : (k + 1) * size]
            head, value = policy(rollout.obs[rows], index_state(rollout.init_state, rows), rollout.starts[rows])
            dist = policy.distribution(head)
            loss, parts = ppo_loss(
                dist.log_prob(rollout.actions[rows]),
                rollout.log_probs[rows],
                adv[rows],
                value,
                rollout.values[rows],
                returns[rows],
                dist.entropy(),
                cfg.clip_eps,
                cfg.vf_coef,
                cfg.ent_coef,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            optimizer.step()
            for key, v in {"loss": loss, "grad_norm": grad_norm, **parts}.items():
                sums[key] = sums.get(key, 0.0) + float(v.detach())
            count += 1
    return {k: v / count for k, v in sums.items()}


def make_optimizer(policy: RecurrentActorCritic, cfg: PPOConfig) -> torch.optim.Adam:
    """Adam(lr, eps=1e-5) over all parameters (popjaxrl: one optax.adam; no per-layer SSM rates)."""
    return torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=cfg.adam_eps)


@torch.no_grad()
def evaluate(policy: RecurrentActorCritic, env, episodes: int, greedy: bool = False) -> dict[str, float]:
    """Mean and standard error of the return of ``episodes`` finished episodes on a fresh batched env."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    obs = torch.as_tensor(env.reset())
    starts = torch.ones(env.num_envs, dtype=torch.bool)
    state = policy.initial_state(env.num_envs)
    returns: list[float] = []
    t0 = time.process_time()
    while len(returns) < episodes:
        head, _, state = policy.step(obs, state, starts)
        obs_np, _, done, info = env.step(sample_action(policy, head, greedy).numpy())
        obs, starts = torch.as_tensor(obs_np), torch.as_tensor(done)
        returns += info["episode_returns"]
    r = np.asarray(returns[:episodes])
    return {
        "mean_return": float(r.mean()),
        "stderr": float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else 0.0,
        "episodes": int(len(r)),
        "cpu_s": time.process_time() - t0,
    }


def config_dict(cfg: PPOConfig) -> dict:
    return asdict(cfg)
