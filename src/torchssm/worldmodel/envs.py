"""Environments and an episode collector for world-model training.

Environments: MiniGrid (Chevalier-Boisvert et al. 2023, the ``minigrid`` package) with its symbolic
egocentric observation, a (7, 7, 3) uint8 grid of (object type, colour, state) indices per cell
(``minigrid.core.constants``: 11 object types, 6 colours, 3 states), and the 7 discrete actions (left,
right, forward, pickup, drop, toggle, done). The memory tasks (``MiniGrid-MemoryS7-v0`` ... S17) show a cue
object at the start and ask for it at the end of a corridor. Any gymnasium environment with a ``Discrete``
action space and such an ``image`` observation works.

Collector: a random or scripted exploration policy runs ``n`` episodes; each episode is written as one
``.npz`` file (obs (T + 1, 7, 7, 3) uint8, actions (T,) int64, rewards (T,) float32, terminated bool) with
:func:`torchssm.data.loaders.save_npz_atomic`, so a crash never leaves a half-written episode.

Scripted policies: "spin" mixes random moves with full turns in place (four ``left`` actions), after which
the view repeats. "lookback" adds look-back excursions: turn around (two lefts), wait w steps (the no-op
``done`` action), turn back (two lefts). The view after the excursion is the one before it, while the frames
in between face the other way (they share only the agent's row with it), so it is "seen once, asked for
N = w + 4 steps later": the structure of the recall evaluation (:func:`torchssm.worldmodel.evaluate.recall_error`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from torchssm.data.loaders import save_npz_atomic

N_OBJECTS, N_COLORS, N_STATES = 11, 6, 3  # minigrid.core.constants OBJECT_TO_IDX, COLOR_TO_IDX, STATE_TO_IDX
LEFT, DONE = 0, 6  # minigrid Actions.left, Actions.done (a no-op in MiniGridEnv.step)
POLICIES = ("random", "spin", "lookback")
MAX_WAIT = 28  # longest wait of a look-back excursion: N = 4 + 28 = 32, the longest recall gap evaluated


def lookback_actions(gap: int) -> list:
    """A look-back excursion of ``gap`` = N steps (N >= 4): two lefts, N - 4 no-ops, two lefts; afterwards the
    agent has its pose, and (in a static grid) its view, of N steps before."""
    if not isinstance(gap, int) or gap < 4:
        raise ValueError(f"a look-back excursion takes at least 4 steps (two turns each way); got {gap!r}")
    return [LEFT, LEFT] + [DONE] * (gap - 4) + [LEFT, LEFT]


def make_env(name: str = "MiniGrid-MemoryS7-v0", **kwargs):
    """gymnasium.make(name) with the minigrid environments registered (ImportError names the extra)."""
    try:
        import gymnasium as gym
        import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
    except ImportError as err:
        raise ImportError(
            f"world-model environments need gymnasium and minigrid: pip install torchssm[world] ({err})"
        ) from None
    return gym.make(name, **kwargs)


def check_action_space(space, n_actions: int) -> None:
    """A clear error unless ``space`` is ``Discrete(n_actions)`` (the world model embeds one-hot actions)."""
    from gymnasium.spaces import Discrete

    if not isinstance(space, Discrete):
        raise ValueError(f"the world model needs a Discrete({n_actions}) action space; got {space}")
    if int(space.n) != n_actions:
        raise ValueError(f"action space {space} does not match the model's n_actions={n_actions}")


def observation_grid(obs) -> np.ndarray:
    """The (7, 7, 3) uint8 symbolic grid of a MiniGrid observation dict (or the array itself)."""
    grid = obs["image"] if isinstance(obs, dict) else obs
    grid = np.asarray(grid)
    if grid.ndim != 3 or grid.shape[-1] != 3:
        raise ValueError(f"expected a symbolic (H, W, 3) observation grid; got shape {grid.shape}")
    return grid.astype(np.uint8)


def _policy_actions(policy: str, n_actions: int, rng: np.random.Generator):
    """An endless stream of actions. "spin": random moves (mostly forward/turns) and, with prob. 0.15 per
    decision, a full turn in place (four lefts). "lookback": the same, and with prob. 0.1 per decision a
    look-back excursion of N = 4 + w steps, w uniform in 0 .. MAX_WAIT."""
    spin_p = {"spin": 0.15, "lookback": 0.25}.get(policy)  # lookback: P(excursion) 0.1 + P(full turn) 0.15
    while True:
        if spin_p is None:  # "random"
            yield int(rng.integers(n_actions))
            continue
        u = rng.random()
        if policy == "lookback" and u < 0.1:
            yield from lookback_actions(4 + int(rng.integers(MAX_WAIT + 1)))
        elif u < spin_p:
            yield from (LEFT,) * 4
        else:
            yield int(rng.choice(3, p=[0.25, 0.25, 0.5])) if rng.random() < 0.9 else int(rng.integers(n_actions))


def run_episode(env, policy: str = "random", seed: int = 0, max_steps: int | None = None, actions=None) -> dict:
    """One episode: {"obs" (T + 1, 7, 7, 3) uint8, "actions" (T,), "rewards" (T,), "terminated"}.
    ``actions`` (a sequence) replaces the policy (the episode stops when it runs out)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {list(POLICIES)}")
    rng = np.random.default_rng(seed)
    stream = iter(actions) if actions is not None else _policy_actions(policy, int(env.action_space.n), rng)
    obs, _ = env.reset(seed=int(seed))
    frames, acts, rewards, terminated = [observation_grid(obs)], [], [], False
    for t, action in enumerate(stream):
        if max_steps is not None and t >= max_steps:
            break
        obs, reward, terminated, truncated, _ = env.step(action)
        frames.append(observation_grid(obs))
        acts.append(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    return {
        "obs": np.stack(frames),
        "actions": np.asarray(acts, dtype=np.int64),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "terminated": np.asarray(terminated),
    }


def collect(
    out_dir,
    env_name: str = "MiniGrid-MemoryS7-v0",
    episodes: int = 100,
    policy: str = "spin",
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool = False,
) -> list:
    """Write ``episodes`` episodes to ``out_dir/episode_<seed>_<i>.npz`` (atomically); return the paths."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1; got {episodes}")
    env = make_env(env_name)
    out_dir = Path(out_dir)
    paths = []
    it = range(episodes)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"collect {env_name}")
    for i in it:
        ep = run_episode(env, policy, seed=seed * 100_003 + i, max_steps=max_steps)
        paths.append(save_npz_atomic(out_dir / f"episode_{seed}_{i:05d}.npz", **ep))
    env.close()
    return paths


def load_episodes(folder) -> list:
    """Every ``*.npz`` episode in ``folder`` (sorted by name) as dicts of numpy arrays."""
    folder = Path(folder)
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise FileNotFoundError(
            f"no episode .npz files in {folder}; write some with torchssm.worldmodel.envs.collect "
            f"or `torchssm world collect`"
        )
    out = []
    for f in files:
        with np.load(f) as z:
            missing = {"obs", "actions", "rewards"} - set(z.files)
            if missing:
                raise ValueError(f"{f}: not an episode file (missing {sorted(missing)})")
            out.append({k: z[k] for k in z.files})
    return out


def segments(episodes: list, length: int, end_window: bool = False) -> dict:
    """Non-overlapping windows of ``length`` steps from every episode at least that long:
    {"obs": (n, length, 7, 7, 3) long, "actions": (n, length) long (a_t taken after obs_t),
    "rewards": (n, length) float (r_t received on reaching obs_t; 0 at a window's first step)}.

    The windows start at 0, length, 2 length, ... and need an action after their last frame, so an episode's
    final frame (where a goal reward is received) is never in one. ``end_window=True`` adds, per episode, the
    window that ends on its final frame (overlapping the one before it); its last action, which does not
    exist, is set to 0 (a window's last action feeds no step of that window)."""
    obs, acts, rews = [], [], []
    for ep in episodes:
        T = len(ep["actions"])  # obs has T + 1 frames
        rewards = np.concatenate([[0.0], ep["rewards"]])  # reward that led to obs_t
        actions = np.concatenate([ep["actions"], [0]])  # (T + 1,): a padding action after the final frame
        starts = list(range(0, T + 1 - length, length))
        if end_window and T + 1 >= length:
            starts.append(T + 1 - length)
        for s in starts:
            obs.append(ep["obs"][s : s + length])
            acts.append(actions[s : s + length])
            rews.append(rewards[s : s + length])
    if not obs:
        raise ValueError(f"no episode has {length} steps; collect longer episodes or use a shorter length")
    return {
        "obs": torch.as_tensor(np.stack(obs)).long(),
        "actions": torch.as_tensor(np.stack(acts)).long(),
        "rewards": torch.as_tensor(np.stack(rews)).float(),
    }
