"""The meta-RL task of Lu et al. 2023 (Sec. 5.3: "a randomly-sampled environment, combined with a
randomly-sampled linear projection of the environment's observations and actions"), on POPGym
environments with discrete actions.

A *trial* is ``episodes_per_trial`` episodes in a row of one environment seen through one projection:

* the environment is drawn uniformly from ``train_envs`` (or ``heldout_envs`` for the out-of-distribution
  evaluation) for each trial;
* observations: the flattened observation o (d_env,) is mapped to Q o with Q (obs_dim, d_env) a random
  matrix with orthonormal columns (QR of a Gaussian matrix), new per trial;
* actions: the agent chooses among ``num_actions`` actions; a random permutation P, new per trial, maps
  agent action a to environment action P(a) mod n_env. A permutation matrix is the orthogonal linear map
  that keeps one-hot actions one-hot, the discrete counterpart of the paper's random action projection.

The agent observes [Q o_t, one-hot of its previous action, previous reward r, sign(r), first-step flag]
(RL^2's inputs, Duan et al. 2016, Sec. 2.2; popjaxrl ``envs/environments/meta_cartpole.py`` also feeds the
previous action and the episode-done flag; sign(r) is added here because POPGym's per-step rewards are tiny,
+-1/episode length). ``done`` marks the end of a trial: PPO's advantages and the
memory reset only there, so what the agent learnt in the trial's earlier episodes (which action does what)
can raise the return of later ones. The ablation resets the memory at every episode instead
(``also_reset_on="episode_done"`` in :class:`~torchssm.rl.ppo.RolloutCollector`; ``meta.reset_each_episode``).

Limitations (stated, not hidden): discrete actions only (Pendulum is left out), POPGym environments
only; Lu et al. used continuous-control environments on accelerators with far larger budgets.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from torchssm.fileio import atomic_write
from torchssm.rl.envs import ActionSpec, make_env


@dataclass
class MetaConfig:
    train_envs: list[str] = field(default_factory=lambda: ["RepeatFirstEasy", "PositionOnlyCartPoleEasy"])
    heldout_envs: list[str] = field(default_factory=lambda: ["NoisyPositionOnlyCartPoleEasy"])
    episodes_per_trial: int = 4
    obs_dim: int = 16  # projected observation size (>= every env's flattened observation)
    num_actions: int = 4  # the agent's actions (>= every env's)
    project_obs: bool = True
    permute_actions: bool = True
    reset_each_episode: bool = False  # the ablation: memory reset at every episode, not only per trial

    def __post_init__(self):
        if not self.train_envs:
            raise ValueError("meta.train_envs must name at least one environment")
        if self.episodes_per_trial < 1:
            raise ValueError(f"meta.episodes_per_trial must be >= 1, got {self.episodes_per_trial}")

    @classmethod
    def from_dict(cls, data: dict) -> MetaConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data or {}) - known)
        if unknown:
            raise ValueError(f"unknown meta config key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**(data or {}))


class _Trial:
    """One copy's current trial: environment, projection Q, permutation P, episode counters."""

    def __init__(self, name: str, env, Q: np.ndarray | None, perm: np.ndarray):
        self.name, self.env, self.Q, self.perm = name, env, Q, perm
        self.episode, self.episode_return, self.returns = 0, 0.0, []


class MetaEnv:
    """``num_envs`` copies of the meta-RL task (module docstring), with the ``BatchedEnv`` interface.

    ``info`` of ``step``: ``episode_returns`` / ``episode_lengths`` (inner episodes that ended),
    ``episode_done`` (n,) bool, and ``trials``: the finished trials as ``(env name, [return per episode])``.
    """

    def __init__(self, cfg: MetaConfig, num_envs: int, seed: int = 0, heldout: bool = False):
        self.cfg, self.num_envs = cfg, num_envs
        self.names = list(cfg.heldout_envs if heldout else cfg.train_envs)
        if not self.names:
            raise ValueError("meta.heldout_envs is empty: no held-out environments to evaluate on")
        self._envs: list[dict[str, object]] = [{} for _ in range(num_envs)]
        for name in set(cfg.train_envs) | set(cfg.heldout_envs):
            env = make_env(name, memory_wrappers=False)
            d_env = int(np.prod(env.observation_space.shape))
            spec = ActionSpec.from_space(env.action_space, name)
            if spec.kind != "discrete":
                raise ValueError(f"meta-RL environments need discrete actions; {name} has {env.action_space}")
            if spec.n > cfg.num_actions:
                raise ValueError(f"{name} has {spec.n} actions > meta.num_actions={cfg.num_actions}")
            if d_env > cfg.obs_dim:
                raise ValueError(f"{name} has {d_env}-dim observations > meta.obs_dim={cfg.obs_dim}")
        self.obs_dim = cfg.obs_dim + cfg.num_actions + 3
        self.action_spec = ActionSpec("discrete", n=cfg.num_actions)
        self.seed = seed
        self._rngs = [np.random.default_rng(seed + 7919 * i) for i in range(num_envs)]
        self._trials: list[_Trial | None] = [None] * num_envs

    def _env(self, i: int, name: str):
        if name not in self._envs[i]:
            self._envs[i][name] = make_env(name, memory_wrappers=False)
        return self._envs[i][name]

    def _new_trial(self, i: int) -> _Trial:
        rng, cfg = self._rngs[i], self.cfg
        name = self.names[int(rng.integers(len(self.names)))]
        env = self._env(i, name)
        d_env = int(np.prod(env.observation_space.shape))
        Q = None
        if cfg.project_obs:
            Q, r = np.linalg.qr(rng.standard_normal((cfg.obs_dim, d_env)))
            Q = Q * np.sign(np.diag(r))  # a uniformly random orthonormal frame (Mezzadri 2007)
        perm = rng.permutation(cfg.num_actions) if cfg.permute_actions else np.arange(cfg.num_actions)
        return _Trial(name, env, Q, perm)

    def _observe(self, trial: _Trial, o, prev_action: int, prev_reward: float, first: bool) -> np.ndarray:
        o = np.asarray(o, dtype=np.float64).reshape(-1)
        x = np.zeros(self.obs_dim, dtype=np.float32)
        if trial.Q is not None:
            x[: self.cfg.obs_dim] = trial.Q @ o
        else:
            x[: o.shape[0]] = o
        if prev_action >= 0:
            x[self.cfg.obs_dim + prev_action] = 1.0
        x[-3], x[-2], x[-1] = prev_reward, np.sign(prev_reward), float(first)
        return x

    def _reset_episode(self, i: int) -> np.ndarray:
        trial = self._trials[i]
        o, _ = trial.env.reset(seed=int(self._rngs[i].integers(2**31)))
        return o

    def reset(self) -> np.ndarray:
        out = []
        for i in range(self.num_envs):
            self._trials[i] = self._new_trial(i)
            out.append(self._observe(self._trials[i], self._reset_episode(i), -1, 0.0, True))
        return np.stack(out)

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        a = np.asarray(actions.detach().cpu() if hasattr(actions, "detach") else actions)
        if a.shape != (self.num_envs,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"meta task: expected ({self.num_envs},) integer actions in [0, {self.cfg.num_actions}); "
                f"got {a.dtype} array of shape {a.shape}"
            )
        obs = np.empty((self.num_envs, self.obs_dim), dtype=np.float32)
        reward = np.zeros(self.num_envs, dtype=np.float32)
        trial_done = np.zeros(self.num_envs, dtype=bool)
        episode_done = np.zeros(self.num_envs, dtype=bool)
        info: dict = {"episode_returns": [], "episode_lengths": [], "trials": []}
        for i in range(self.num_envs):
            trial = self._trials[i]
            n_env = trial.env.action_space.n
            o, r, terminated, truncated, _ = trial.env.step(int(trial.perm[int(a[i])]) % n_env)
            reward[i] = r
            trial.episode_return += float(r)
            first = False
            if terminated or truncated:
                episode_done[i], first = True, True
                trial.returns.append(trial.episode_return)
                info["episode_returns"].append(trial.episode_return)
                info["episode_lengths"].append(0)
                trial.episode_return = 0.0
                trial.episode += 1
                if trial.episode >= self.cfg.episodes_per_trial:
                    trial_done[i] = True
                    info["trials"].append((trial.name, list(trial.returns)))
                    self._trials[i] = trial = self._new_trial(i)
                    obs[i] = self._observe(trial, self._reset_episode(i), -1, 0.0, True)
                    continue
                o = self._reset_episode(i)
            obs[i] = self._observe(trial, o, int(a[i]), float(r), first)
        info["episode_done"] = episode_done
        return obs, reward, trial_done, info


# --- evaluation: return per episode index within trials -------------------------------------------------
@torch.no_grad()
def run_trials(policy, env: MetaEnv, trials: int, reset_each_episode: bool = False) -> list[tuple[str, list[float]]]:
    """Play until ``trials`` trials have finished; returns (env name, returns of its episodes) per trial."""
    obs = torch.as_tensor(env.reset())
    starts = torch.ones(env.num_envs, dtype=torch.bool)
    state = policy.initial_state(env.num_envs)
    done_trials: list[tuple[str, list[float]]] = []
    while len(done_trials) < trials:
        head, _, state = policy.step(obs, state, starts)
        action = policy.distribution(head).sample()
        obs_np, _, done, info = env.step(action.numpy())
        obs = torch.as_tensor(obs_np)
        starts = torch.as_tensor(done) | (torch.as_tensor(info["episode_done"]) if reset_each_episode else False)
        done_trials += info["trials"]
    return done_trials[:trials]


def episode_stats(returns: np.ndarray) -> dict:
    """returns (trials, episodes): mean per episode index and the paired difference (last index - first)
    with a normal 95% confidence interval."""
    mean = returns.mean(0)
    diff = returns[:, -1] - returns[:, 0]
    half = 1.96 * diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return {
        "mean_per_episode": mean.tolist(),
        "last_minus_first": float(diff.mean()),
        "ci95": [float(diff.mean() - half), float(diff.mean() + half)],
    }


def evaluate_meta(
    checkpoint: str,
    trials: int = 100,
    heldout: bool = False,
    seed: int = 777,
    reset_each_episode: bool = False,
    num_envs: int = 16,
    out: str | None = None,
) -> dict:
    """Return per episode index over ``trials`` fresh trials of a meta-RL run (training or held-out envs)."""
    from torchssm.rl.train import load_policy

    policy, cfg, state = load_policy(checkpoint)
    if cfg.meta is None:
        raise ValueError(f"{checkpoint} is not a meta-RL run (its config has no meta: section)")
    env = MetaEnv(MetaConfig.from_dict(cfg.meta), num_envs, seed=seed, heldout=heldout)
    played = run_trials(policy, env, trials, reset_each_episode=reset_each_episode)
    returns = np.asarray([r for _, r in played])  # (trials, episodes)
    result = {
        "checkpoint": str(checkpoint),
        "memory": cfg.model.memory,
        "heldout": heldout,
        "reset_each_episode": reset_each_episode,
        "trials": trials,
        "seed": seed,
        "trained_reset_each_episode": MetaConfig.from_dict(cfg.meta).reset_each_episode,
        "envs": sorted({n for n, _ in played}),
        **episode_stats(returns),
        "returns": returns.tolist(),
    }
    if out:
        atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result)))
    return result


def plot_meta(results: Sequence[dict], path: str, labels: Sequence[str] | None = None) -> str:
    """Mean return (+- 95% CI over trials) vs episode index within a trial, one line per result."""
    from torchssm.analysis.plots import new_figure, save_figure

    fig, (ax,) = new_figure()
    for k, res in enumerate(results):
        r = np.asarray(res["returns"])
        x = np.arange(1, r.shape[1] + 1)
        half = 1.96 * r.std(0, ddof=1) / np.sqrt(r.shape[0])
        label = (
            labels[k]
            if labels
            else (
                f"{res['memory']} {'held-out' if res['heldout'] else 'train'} envs"
                f"{', reset every episode' if res['reset_each_episode'] else ''}"
            )
        )
        ax.errorbar(x, r.mean(0), yerr=half, marker="o", capsize=3, label=label)
    ax.set_xlabel("episode index within a trial")
    ax.set_ylabel("mean return")
    ax.set_xticks(x)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
