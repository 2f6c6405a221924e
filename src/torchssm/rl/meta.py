"""The meta-RL task of Lu et al. 2023 ("a randomly-sampled ... environment, combined with a randomly-sampled
linear projection of the environment's observations and actions", abstract and Sec. 5.3) on POPGym
environments, discrete or continuous actions.

A *trial* is ``episodes_per_trial`` episodes in a row of one environment seen through one projection
(popjaxrl calls the trial a "meta-episode" and its episodes "trials"):

* the environment is drawn uniformly from ``train_envs`` (``heldout_envs`` for the out-of-distribution
  evaluation), new per trial. An entry is a POPGym class name (``"PositionOnlyCartPoleEasy"``) or a
  mapping ``{name: <class>, <constructor argument>: <value>, ...}`` (``{name: MultiarmedBandit,
  num_bandits: 4, episode_length: 5}``), so short episodes can be configured;
* observations: the flattened observation o (d_env,) is mapped to Q o, Q (obs_dim, d_env) with orthonormal
  columns (QR of a Gaussian matrix), new per trial and fixed within it. popjaxrl
  (``envs/environments/meta_cartpole.py`` at commit 12e5d42, ``MetaAugNetwork``) maps o by a Dense layer
  with orthogonal init (gain sqrt 2, zero bias) re-initialised at each meta-episode reset: the same map up
  to the gain;
* actions, discrete: a random permutation P of the agent's ``num_actions`` actions, new per trial; agent
  action a acts as environment action P(a) mod n_env (a permutation matrix is the orthogonal map that
  keeps one-hot actions one-hot). Continuous: agent action a in [-1, 1]^num_actions acts as
  clip(mid + half * (A a)) with A (d_act, num_actions) random orthonormal rows, mid/half the centre and
  half-width of the environment's action box. popjaxrl's public meta environment does not project
  actions (CartPole's 2 actions pass through); the paper's text says it does: how exactly is UNVERIFIED;
* ``same_start_per_trial`` (default on): every episode of a trial restarts from the same initial state,
  as popjaxrl's meta environment (it stores ``init_state``/``init_obs`` at the meta-episode reset and
  restarts every inner episode there). Here: each episode's ``reset`` gets the trial's seed, then the
  environment's generator is re-seeded freshly, so what ``reset`` draws (CartPole's start state, a
  bandit's payout probabilities, a deck's order) is fixed per trial while the randomness inside the
  episode (payouts, observation noise) is new. This is the per-trial hidden information that earlier
  episodes reveal and later ones can use.

The agent observes ``[Q o_t, previous action, previous reward r, sign(r), episode-start flag,
trial-start flag]`` (RL^2's inputs, Duan et al. 2016 Sec. 2.2; popjaxrl feeds the previous action, the
inner-episode done flag and a meta-episode start flag, not the reward; sign(r) is added because POPGym's
per-step rewards are small, +-1/episode length). The first observation of an episode shows no previous
action or reward (popjaxrl shows the last action with done = 1): whatever crosses an episode boundary goes
through the memory, so the ablation that resets the memory at every episode (``reset_each_episode``,
``also_reset_on="episode_done"`` in :class:`~torchssm.rl.ppo.RolloutCollector`) carries nothing from one
episode to the next. ``done`` marks the end of a trial: PPO's advantages and the memory reset only there.

Environments and sizes in the presets are ours (the paper's: continuous-control environments, which
exactly is UNVERIFIED; popjaxrl's code: position-only CartPole, 16 episodes per meta-episode, 200 steps
each, a 4-dim projection).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from torchssm.fileio import atomic_write_json
from torchssm.rl.envs import ActionSpec, make_env

EnvEntry = str | dict[str, Any]


def env_entry(entry: EnvEntry) -> tuple[str, str, dict[str, Any]]:
    """A ``train_envs``/``heldout_envs`` entry -> (label, POPGym class name, constructor kwargs)."""
    if isinstance(entry, str) and entry:
        return entry, entry, {}
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        kwargs = {k: v for k, v in entry.items() if k != "name"}
        args = ", ".join(f"{k}={kwargs[k]}" for k in sorted(kwargs))
        return (f"{entry['name']}({args})" if kwargs else entry["name"]), entry["name"], kwargs
    raise ValueError(
        f"a meta-RL environment must be a POPGym class name or a mapping {{name: <class>, <arg>: <value>}}; "
        f"got {entry!r}"
    )


@dataclass
class MetaConfig:
    train_envs: list[EnvEntry] = field(
        default_factory=lambda: [{"name": "MultiarmedBandit", "num_bandits": 4, "episode_length": 5}]
    )
    heldout_envs: list[EnvEntry] = field(
        default_factory=lambda: [{"name": "MultiarmedBandit", "num_bandits": 3, "episode_length": 6}]
    )
    episodes_per_trial: int = 4
    obs_dim: int = 16  # projected observation size (>= every env's flattened observation)
    num_actions: int = 4  # the agent's actions (discrete) or action dimensions (continuous), >= every env's
    project_obs: bool = True
    project_actions: bool = True  # a permutation (discrete) or orthonormal map (continuous), new per trial
    same_start_per_trial: bool = True  # every episode of a trial starts from one initial state (popjaxrl)
    reset_each_episode: bool = False  # the ablation: memory reset at every episode, not only per trial

    def __post_init__(self):
        for key in ("train_envs", "heldout_envs"):
            value = getattr(self, key)
            if not isinstance(value, list):
                raise ValueError(f"meta.{key} must be a list of environments, got {value!r}")
            for entry in value:
                env_entry(entry)
        if not self.train_envs:
            raise ValueError("meta.train_envs must name at least one environment")
        for key in ("episodes_per_trial", "obs_dim", "num_actions"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"meta.{key} must be a positive int, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict) -> MetaConfig:
        data = dict(data or {})
        if "permute_actions" in data:  # the name before continuous actions were projected too
            data["project_actions"] = data.pop("permute_actions")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown meta config key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**data)


def _orthonormal_columns(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """(rows, cols), rows >= cols, with orthonormal columns, uniformly random (QR with the sign fix of
    Mezzadri 2007)."""
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


@dataclass
class Trial:
    """One copy's current trial: environment, projections, start seed, episode counters."""

    label: str
    env: Any
    Q: np.ndarray | None  # (obs_dim, d_env) observation projection, or None
    perm: np.ndarray | None  # (num_actions,) discrete: agent action -> environment action
    A: np.ndarray | None  # (d_act, num_actions) continuous: agent action -> environment action
    start_seed: int
    episode: int = 0
    episode_return: float = 0.0
    episode_length: int = 0
    returns: list[float] = field(default_factory=list)


class MetaEnv:
    """``num_envs`` copies of the meta-RL task (module docstring), with the ``BatchedEnv`` interface.

    ``reset() -> obs (n, obs_dim + num_actions + 4)``; ``step(actions) -> (obs, reward, trial_done, info)``
    with ``info``: ``episode_returns`` / ``episode_lengths`` (inner episodes that ended), ``episode_done``
    (n,) bool, and ``trials``: the finished trials as ``(env label, [return per episode])``.
    """

    def __init__(self, cfg: MetaConfig, num_envs: int, seed: int = 0, heldout: bool = False):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.cfg, self.num_envs, self.seed = cfg, num_envs, int(seed)
        entries = cfg.heldout_envs if heldout else cfg.train_envs
        if not entries:
            raise ValueError("meta.heldout_envs is empty: no held-out environments to evaluate on")
        self.specs = {
            label: (name, kwargs) for label, name, kwargs in map(env_entry, cfg.train_envs + cfg.heldout_envs)
        }
        self.labels = [env_entry(e)[0] for e in entries]
        kinds = {}
        for label, (name, kwargs) in self.specs.items():
            env = make_env(name, memory_wrappers=False, **kwargs)
            d_env = int(np.prod(env.observation_space.shape))
            spec = ActionSpec.from_space(env.action_space, label)
            kinds[label] = spec.kind
            if spec.size > cfg.num_actions:
                what = "actions" if spec.kind == "discrete" else "action dimensions"
                raise ValueError(f"{label} has {spec.size} {what} > meta.num_actions={cfg.num_actions}")
            if d_env > cfg.obs_dim:
                raise ValueError(f"{label} has {d_env}-dim observations > meta.obs_dim={cfg.obs_dim}")
        if len(set(kinds.values())) > 1:
            raise ValueError(f"meta-RL environments must all have discrete or all continuous actions; got {kinds}")
        self.discrete = next(iter(kinds.values())) == "discrete"
        k = cfg.num_actions
        self.action_spec = (
            ActionSpec("discrete", n=k)
            if self.discrete
            else ActionSpec("continuous", dim=k, low=(-1.0,) * k, high=(1.0,) * k)
        )
        self.obs_dim = cfg.obs_dim + k + 4
        self._envs: list[dict[str, Any]] = [{} for _ in range(num_envs)]
        self._rngs = [np.random.default_rng(self.seed + 7919 * i) for i in range(num_envs)]
        self._trials: list[Trial] = []

    # --- trials and episodes ---------------------------------------------------------------------------
    def _env(self, i: int, label: str):
        if label not in self._envs[i]:
            name, kwargs = self.specs[label]
            self._envs[i][label] = make_env(name, memory_wrappers=False, **kwargs)
        return self._envs[i][label]

    def _new_trial(self, i: int) -> Trial:
        rng, cfg, k = self._rngs[i], self.cfg, self.cfg.num_actions
        label = self.labels[int(rng.integers(len(self.labels)))]
        env = self._env(i, label)
        d_env = int(np.prod(env.observation_space.shape))
        Q = _orthonormal_columns(rng, cfg.obs_dim, d_env) if cfg.project_obs else None
        perm = A = None
        if self.discrete:
            perm = rng.permutation(k) if cfg.project_actions else np.arange(k)
        else:
            d_act = int(env.action_space.shape[0])
            A = _orthonormal_columns(rng, k, d_act).T if cfg.project_actions else np.eye(d_act, k)
        return Trial(label, env, Q, perm, A, start_seed=int(rng.integers(2**31)))

    def _reset_episode(self, i: int) -> np.ndarray:
        trial, rng = self._trials[i], self._rngs[i]
        fresh = int(rng.integers(2**31))
        if not self.cfg.same_start_per_trial:
            return trial.env.reset(seed=fresh)[0]
        o, _ = trial.env.reset(seed=trial.start_seed)  # what reset draws is the trial's
        trial.env.unwrapped.np_random = np.random.default_rng(fresh)  # the episode's own noise is new
        return o

    def _env_action(self, trial: Trial, a: np.ndarray):
        """The environment action of agent action ``a`` through the trial's projection."""
        if trial.perm is not None:
            return int(trial.perm[int(a)]) % int(trial.env.action_space.n)
        assert trial.A is not None  # continuous actions
        space = trial.env.action_space
        mid, half = (space.high + space.low) / 2, (space.high - space.low) / 2
        return np.clip(mid + half * (trial.A @ a), space.low, space.high).astype(space.dtype)

    def _observe(self, trial: Trial, o, prev_action=None, prev_reward: float = 0.0, trial_start: bool = False):
        """[Q o, previous action, r, sign r, episode-start flag, trial-start flag]; an episode's first
        observation (``prev_action`` None) shows no action or reward."""
        o = np.asarray(o, dtype=np.float64).reshape(-1)
        x = np.zeros(self.obs_dim, dtype=np.float32)
        d = self.cfg.obs_dim
        x[:d] = trial.Q @ o if trial.Q is not None else np.pad(o, (0, d - o.shape[0]))
        if prev_action is not None:
            if self.discrete:
                x[d + int(prev_action)] = 1.0
            else:
                x[d : d + self.cfg.num_actions] = prev_action
            x[-4], x[-3] = prev_reward, np.sign(prev_reward)
        else:
            x[-2] = 1.0
        x[-1] = float(trial_start)
        return x

    def reset(self) -> np.ndarray:
        self._trials = [self._new_trial(i) for i in range(self.num_envs)]
        return np.stack(
            [self._observe(self._trials[i], self._reset_episode(i), trial_start=True) for i in range(self.num_envs)]
        )

    def check_actions(self, actions) -> np.ndarray:
        a = np.asarray(actions.detach().cpu() if hasattr(actions, "detach") else actions)
        n, k = self.num_envs, self.cfg.num_actions
        if self.discrete:
            if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(
                    f"meta task: expected ({n},) integer actions in [0, {k}); got {a.dtype} array of shape {a.shape}"
                )
            if a.size and (a.min() < 0 or a.max() >= k):
                raise ValueError(f"meta task: actions must lie in [0, {k}); got range [{a.min()}, {a.max()}]")
            return a
        if a.shape != (n, k) or not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"meta task: expected ({n}, {k}) float actions; got {a.dtype} array of shape {a.shape}")
        return np.clip(a, -1.0, 1.0).astype(np.float64)

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        a = self.check_actions(actions)
        obs = np.empty((self.num_envs, self.obs_dim), dtype=np.float32)
        reward = np.zeros(self.num_envs, dtype=np.float32)
        trial_done = np.zeros(self.num_envs, dtype=bool)
        episode_done = np.zeros(self.num_envs, dtype=bool)
        info: dict = {"episode_returns": [], "episode_lengths": [], "trials": []}
        for i in range(self.num_envs):
            trial = self._trials[i]
            o, r, terminated, truncated, _ = trial.env.step(self._env_action(trial, a[i]))
            reward[i] = r
            trial.episode_return += float(r)
            trial.episode_length += 1
            if not (terminated or truncated):
                obs[i] = self._observe(trial, o, a[i], float(r))
                continue
            episode_done[i] = True
            trial.returns.append(trial.episode_return)
            info["episode_returns"].append(trial.episode_return)
            info["episode_lengths"].append(trial.episode_length)
            trial.episode_return, trial.episode_length = 0.0, 0
            trial.episode += 1
            if trial.episode >= self.cfg.episodes_per_trial:
                trial_done[i] = True
                info["trials"].append((trial.label, list(trial.returns)))
                self._trials[i] = self._new_trial(i)
            obs[i] = self._observe(self._trials[i], self._reset_episode(i), trial_start=bool(trial_done[i]))
        info["episode_done"] = episode_done
        return obs, reward, trial_done, info


# --- evaluation: return per episode index within trials -------------------------------------------------
@torch.no_grad()
def run_trials(policy, env: MetaEnv, trials: int, reset_each_episode: bool = False) -> list[tuple[str, list[float]]]:
    """Play until ``trials`` trials have finished; returns (env label, returns of its episodes) per trial."""
    from torchssm.rl.ppo import sample_action

    obs = torch.as_tensor(env.reset())
    starts = torch.ones(env.num_envs, dtype=torch.bool)
    state = policy.initial_state(env.num_envs)
    done_trials: list[tuple[str, list[float]]] = []
    while len(done_trials) < trials:
        head, _, state = policy.step(obs, state, starts)
        obs_np, _, done, info = env.step(sample_action(policy, head).numpy())
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

    if trials < 2:
        raise ValueError(f"trials must be >= 2 (a confidence interval needs two), got {trials}")
    policy, cfg, state = load_policy(checkpoint)
    if cfg.meta is None:
        raise ValueError(f"{checkpoint} is not a meta-RL run (its config has no meta: section)")
    meta = MetaConfig.from_dict(cfg.meta)
    env = MetaEnv(meta, num_envs, seed=seed, heldout=heldout)
    played = run_trials(policy, env, trials, reset_each_episode=reset_each_episode)
    returns = np.asarray([r for _, r in played])  # (trials, episodes)
    result = {
        "checkpoint": str(checkpoint),
        "memory": cfg.model.memory,
        "heldout": heldout,
        "reset_each_episode": reset_each_episode,
        "trials": trials,
        "seed": seed,
        "env_steps": state.get("step"),
        "trained_reset_each_episode": meta.reset_each_episode,
        "envs": sorted({n for n, _ in played}),
        **episode_stats(returns),
        "returns": returns.tolist(),
    }
    if out:
        atomic_write_json(out, result)
    return result


def pool_results(results: Sequence[dict]) -> dict:
    """Several ``evaluate_meta`` results (e.g. one per training seed) as one result: their trials stacked
    (trials x episodes), the statistics recomputed over all of them, each run's own statistics kept."""
    if not results:
        raise ValueError("pool_results needs at least one result")
    widths = {len(r["returns"][0]) for r in results}
    if len(widths) > 1:
        raise ValueError(f"results have different episodes per trial {sorted(widths)}; cannot pool them")
    returns = np.concatenate([np.asarray(r["returns"]) for r in results])
    first = results[0]
    return {
        **{k: first[k] for k in ("memory", "heldout", "reset_each_episode", "trained_reset_each_episode", "seed")},
        "checkpoint": [r["checkpoint"] for r in results],
        "envs": sorted({e for r in results for e in r["envs"]}),
        "trials": int(returns.shape[0]),
        "per_run": [
            {k: r[k] for k in ("checkpoint", "seed", "env_steps", "mean_per_episode", "last_minus_first", "ci95")}
            for r in results
        ],
        **episode_stats(returns),
        "returns": returns.tolist(),
    }


def plot_meta(results: Sequence[dict], path: str, labels: Sequence[str] | None = None) -> str:
    """Mean return (+- 95% CI over trials) vs episode index within a trial, one line per result."""
    from torchssm.analysis.plots import new_figure, save_figure

    if labels is not None and len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} results")
    fig, (ax,) = new_figure()
    x = np.arange(1)
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
