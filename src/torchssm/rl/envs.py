"""The POPGym suite (Morad et al. 2023, "POPGym: Benchmarking Partially Observable Reinforcement
Learning", ICLR) from the ``popgym`` package, wrapped for batched recurrent PPO.

Each environment is the package's own class, wrapped as POPGym's PPO baseline wraps it
(``popgym/baselines/ppo.py``: ``Antialias(PreviousAction(env))``: the previous action and an
"is first step" flag are appended to the observation), then ``Flatten`` (Tuple/Discrete
observations -> one flat 0/1 or float vector) and ``DiscreteAction`` (a MultiDiscrete action such as
Battleship's (row, column) -> one Discrete index; applied to MultiDiscrete actions only), all from
``popgym.wrappers``.

Reward normalisation: POPGym scales every environment's rewards inside the environment so that an
episode's return lies in [-1, 1] (e.g. ``RepeatPrevious.step``: ``reward_scale = 1 / (num_cards - k)``,
``PositionOnlyPendulum.reward_transform``: ``scaled / max_episode_length``, ``CountRecall``:
``1 / max_episode_length``); popjaxrl's JAX port keeps the same scales. Nothing is rescaled here, so
returns are comparable with both papers; ``tests/rl/test_envs.py`` checks the [-1, 1] bound under a
random policy for every environment of :data:`ISSUE_ENVS`.

:class:`BatchedEnv` steps ``num_envs`` copies in lock-step and resets a finished copy at once (the
returned observation is then the new episode's first one, and ``done`` tells the policy to reset its
memory before reading it), the gymnax/popjaxrl auto-reset convention.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# The environments the issue lists (each in Easy/Medium/Hard): the default set of reward tables.
ISSUE_ENVS = (
    "RepeatPrevious",
    "RepeatFirst",
    "CountRecall",
    "Autoencode",
    "PositionOnlyCartPole",
    "NoisyPositionOnlyCartPole",
    "PositionOnlyPendulum",
    "HigherLower",
    "Battleship",
    "MineSweeper",
    "Concentration",
)
LEVELS = ("Easy", "Medium", "Hard")


def _popgym_envs():
    try:
        import popgym.envs as popgym_envs
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("torchssm.rl needs the POPGym suite: pip install 'torchssm[rl]' (gymnasium, popgym)") from err
    return popgym_envs


def available_envs() -> list[str]:
    """Names of every POPGym environment class registered by the package (e.g. 'RepeatPreviousEasy')."""
    return sorted(cls.__name__ for cls in _popgym_envs().ALL)


def base_envs() -> list[str]:
    """POPGym's base classes (e.g. 'MultiarmedBandit'): ``make_env`` passes them constructor arguments."""
    return sorted(cls.__name__ for cls in _popgym_envs().ALL_BASE)


@dataclass(frozen=True)
class ActionSpec:
    """What a policy must output: ``n`` discrete actions, or a ``dim``-vector in [low, high]."""

    kind: str  # "discrete" | "continuous"
    n: int = 0  # discrete: number of actions
    dim: int = 0  # continuous: action size
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    @property
    def size(self) -> int:
        """Width of the policy's head: logits (discrete) or means (continuous)."""
        return self.n if self.kind == "discrete" else self.dim

    @staticmethod
    def from_space(space, env_name: str = "environment") -> ActionSpec:
        from gymnasium import spaces

        if isinstance(space, spaces.Discrete):
            return ActionSpec("discrete", n=int(space.n))
        if isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.floating) and len(space.shape) == 1:
            return ActionSpec(
                "continuous",
                dim=int(space.shape[0]),
                low=tuple(map(float, space.low)),
                high=tuple(map(float, space.high)),
            )
        raise TypeError(f"{env_name}: unsupported action space {space}; expected Discrete or a 1-D float Box")


def make_env(name: str, memory_wrappers: bool = True, **kwargs):
    """One POPGym environment by class name, wrapped as in the module docstring (gymnasium API).

    ``name``: a registered level (``RepeatPreviousEasy``) or a base class (``RepeatPrevious``,
    ``MultiarmedBandit``: ``popgym.envs.ALL_BASE``), whose constructor takes ``kwargs`` (e.g.
    ``make_env("RepeatPrevious", num_decks=1, k=4)``). ``memory_wrappers=False`` leaves out
    PreviousAction and Antialias (the meta-RL task adds its own).
    """
    from popgym.wrappers import Antialias, DiscreteAction, Flatten, PreviousAction

    popgym_envs = _popgym_envs()
    classes = {cls.__name__: cls for cls in (*popgym_envs.ALL, *popgym_envs.ALL_BASE)}
    if not isinstance(name, str) or name not in classes:
        close = difflib.get_close_matches(str(name), list(classes), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown POPGym environment {name!r}{hint}; run `torchssm rl envs` for the list")
    from gymnasium import spaces

    try:
        env = classes[name](**kwargs)
    except TypeError as err:
        raise TypeError(f"{name}: bad constructor arguments {kwargs}: {err}") from None
    env = Flatten(Antialias(PreviousAction(env)) if memory_wrappers else env)
    if isinstance(env.action_space, spaces.MultiDiscrete):
        env = DiscreteAction(env)
    if not isinstance(env.observation_space, spaces.Box):  # a bare Discrete observation: one-hot
        from gymnasium.wrappers import FlattenObservation

        env = FlattenObservation(env)
    obs_shape = env.observation_space.shape
    if obs_shape is None or len(obs_shape) != 1:
        raise TypeError(f"{name}: flattened observation space {env.observation_space} is not a vector")
    return env


EnvFactory = Callable[[], object]


class BatchedEnv:
    """``num_envs`` copies of one environment stepped together, with automatic resets.

    ``reset() -> obs (n, obs_dim) float32``; ``step(actions) -> (obs, reward (n,) float32, done (n,) bool,
    info)``, where ``info["episode_returns"]`` / ``info["episode_lengths"]`` list the episodes that
    finished in this step. ``actions``: (n,) ints for a discrete :class:`ActionSpec`, (n, dim) floats
    (clipped to the space) for a continuous one; anything else raises a ValueError naming the shape.
    """

    def __init__(self, env: str | EnvFactory, num_envs: int, seed: int = 0, **env_kwargs):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        factory = (lambda: make_env(env, **env_kwargs)) if isinstance(env, str) else env
        self.name = env if isinstance(env, str) else getattr(env, "__name__", type(env).__name__)
        self.envs = [factory() for _ in range(num_envs)]
        self.num_envs, self.seed = num_envs, int(seed)
        first = self.envs[0]
        self.obs_dim = int(np.prod(first.observation_space.shape))
        self.action_spec = ActionSpec.from_space(first.action_space, str(self.name))
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)

    def _obs(self, obs) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32).reshape(self.obs_dim)

    def reset(self) -> np.ndarray:
        """Start every copy (copy i seeded with ``seed + i``); returns obs (n, obs_dim)."""
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return np.stack([self._obs(e.reset(seed=self.seed + i)[0]) for i, e in enumerate(self.envs)])

    def check_actions(self, actions) -> np.ndarray:
        a = np.asarray(actions.detach().cpu() if hasattr(actions, "detach") else actions)
        spec, n = self.action_spec, self.num_envs
        if spec.kind == "discrete":
            if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(
                    f"{self.name}: expected ({n},) integer actions in [0, {spec.n}) for "
                    f"Discrete({spec.n}); "
                    f"got {a.dtype} array of shape {a.shape}"
                )
            if a.size and (a.min() < 0 or a.max() >= spec.n):
                raise ValueError(f"{self.name}: actions must lie in [0, {spec.n}); got range [{a.min()}, {a.max()}]")
            return a
        if a.shape != (n, spec.dim) or not np.issubdtype(a.dtype, np.floating):
            raise ValueError(
                f"{self.name}: expected ({n}, {spec.dim}) float actions for a continuous action space; "
                f"got {a.dtype} array of shape {a.shape}"
            )
        return np.clip(a, spec.low, spec.high).astype(np.float32)

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, list]]:
        a = self.check_actions(actions)
        obs = np.empty((self.num_envs, self.obs_dim), dtype=np.float32)
        reward = np.empty(self.num_envs, dtype=np.float32)
        done = np.zeros(self.num_envs, dtype=bool)
        info: dict[str, list] = {"episode_returns": [], "episode_lengths": []}
        for i, env in enumerate(self.envs):
            o, r, terminated, truncated, _ = env.step(a[i].item() if a.ndim == 1 else a[i])
            reward[i] = r
            self._returns[i] += r
            self._lengths[i] += 1
            if terminated or truncated:
                done[i] = True
                info["episode_returns"].append(float(self._returns[i]))
                info["episode_lengths"].append(int(self._lengths[i]))
                self._returns[i], self._lengths[i] = 0.0, 0
                o, _ = env.reset()
            obs[i] = self._obs(o)
        return obs, reward, done, info


def expand_env_names(names: str | Sequence[str]) -> list[str]:
    """'RepeatPrevious' -> its Easy/Medium/Hard names; full names pass through (checked by make_env)."""
    names = [names] if isinstance(names, str) else list(names)
    out: list[str] = []
    for name in names:
        out.extend(f"{name}{lvl}" for lvl in LEVELS) if name in ISSUE_ENVS else out.append(name)
    return out


def random_returns(name: str, episodes: int = 3, seed: int = 0) -> list[float]:
    """Returns of ``episodes`` episodes of a uniformly random policy (checks and chance baselines)."""
    env = make_env(name)
    env.action_space.seed(seed)
    out = []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(r)
            done = terminated or truncated
        out.append(total)
    return out
