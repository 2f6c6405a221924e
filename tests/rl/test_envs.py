"""The POPGym suite through torchssm.rl.envs: every environment the issue lists builds, its flattened
observations are vectors, POPGym's own reward scaling keeps random-policy returns in [-1, 1], the batched
wrapper resets finished copies, and bad names / actions raise one-line errors."""

import numpy as np
import pytest
import torch

pytest.importorskip("popgym")

from torchssm.rl.envs import (  # noqa: E402
    ISSUE_ENVS,
    BatchedEnv,
    available_envs,
    base_envs,
    expand_env_names,
    make_env,
    random_returns,
)
from torchssm.rl.policy import RecurrentActorCritic  # noqa: E402
from torchssm.rl.ppo import RolloutCollector  # noqa: E402

EVERY_LEVEL = expand_env_names(list(ISSUE_ENVS))  # the issue's 11 environments x Easy/Medium/Hard


def test_issue_envs_are_registered_in_all_levels():
    names = set(available_envs())
    for base in ISSUE_ENVS:
        for level in ("Easy", "Medium", "Hard"):
            assert f"{base}{level}" in names


@pytest.mark.parametrize("name", EVERY_LEVEL)
def test_random_returns_lie_in_unit_interval(name):
    env = make_env(name)
    assert len(env.observation_space.shape) == 1
    returns = random_returns(name, episodes=2, seed=3)
    assert all(-1.0 - 1e-6 <= r <= 1.0 + 1e-6 for r in returns), returns


@pytest.mark.parametrize("name", EVERY_LEVEL)
def test_every_level_runs_under_a_recurrent_policy(name):
    """What `torchssm rl train --set env=<name>` builds: batched env, a policy fitted to its spaces, rollout."""
    env = BatchedEnv(name, 2, seed=0)
    policy = RecurrentActorCritic(env.obs_dim, env.action_spec, "gru", d_model=4, hidden=4)
    rollout = RolloutCollector(env, policy).collect(3)
    assert rollout.obs.shape == (2, 3, env.obs_dim) and rollout.obs.dtype == torch.float32
    assert torch.isfinite(rollout.rewards).all() and rollout.rewards.abs().max() <= 1.0
    if env.action_spec.kind == "discrete":
        assert rollout.actions.shape == (2, 3) and int(rollout.actions.max()) < env.action_spec.n
    else:
        assert rollout.actions.shape == (2, 3, env.action_spec.dim)


def test_batched_env_auto_reset_and_episode_returns():
    env = BatchedEnv("RepeatPreviousEasy", 3, seed=1)
    obs = env.reset()
    # Antialias appends a Discrete(2) "first step" flag, flattened to the last two entries: [0, 1] at t = 0
    assert np.all(obs[:, -2:] == [0.0, 1.0])
    totals = np.zeros(3)
    finished = []
    rng = np.random.default_rng(0)
    for _ in range(60):  # episodes last 51 steps
        obs, reward, done, info = env.step(rng.integers(0, 4, size=3))
        totals += reward
        assert np.all(obs[~done, -2:] == [1.0, 0.0])
        assert np.all(obs[done, -2:] == [0.0, 1.0])  # the returned observation starts the next episode
        if done.any():
            finished += list(totals[done])
            totals[done] = 0.0
            np.testing.assert_allclose(sorted(info["episode_returns"]), sorted(finished[-int(done.sum()) :]), atol=1e-5)
    assert len(finished) == 3


def test_battleship_multidiscrete_action_becomes_discrete():
    env = BatchedEnv("BattleshipEasy", 2)
    assert env.action_spec.kind == "discrete" and env.action_spec.n == 64  # 8 x 8 board cells


def test_pendulum_is_continuous():
    env = BatchedEnv("PositionOnlyPendulumEasy", 2)
    assert env.action_spec.kind == "continuous" and env.action_spec.dim == 1
    env.reset()
    env.step(np.array([[5.0], [-5.0]], dtype=np.float32))  # clipped to [-2, 2]


def test_base_class_with_constructor_arguments(capsys):
    from torchssm.cli import main

    assert "MultiarmedBandit" in base_envs() and "MultiarmedBandit" not in available_envs()
    env = BatchedEnv("MultiarmedBandit", 2, num_bandits=3, episode_length=4)
    assert env.action_spec.n == 3
    env.reset()
    dones = [env.step(np.array([0, 2]))[2] for _ in range(4)]
    assert not np.any(dones[:3]) and dones[3].all()  # episode_length=4 took effect
    assert main(["rl", "envs"]) == 0 and "MultiarmedBandit," in capsys.readouterr().out


def test_unknown_env_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown POPGym environment 'RepeatPreviousEsay'.*RepeatPreviousEasy"):
        make_env("RepeatPreviousEsay")


def test_bad_actions_are_clear_errors():
    env = BatchedEnv("RepeatPreviousEasy", 2)
    env.reset()
    with pytest.raises(ValueError, match=r"expected \(2,\) integer actions"):
        env.step(np.zeros((2, 1), dtype=np.int64))
    with pytest.raises(ValueError, match=r"expected \(2,\) integer actions"):
        env.step(np.zeros(2, dtype=np.float32))
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\)"):
        env.step(np.array([0, 4]))
    cont = BatchedEnv("PositionOnlyPendulumEasy", 2)
    cont.reset()
    with pytest.raises(ValueError, match=r"expected \(2, 1\) float actions"):
        cont.step(np.array([0, 1]))


def test_policy_env_action_space_mismatch():
    env = BatchedEnv("RepeatPreviousEasy", 2)
    other = BatchedEnv("HigherLowerEasy", 2)  # Discrete(2) actions, not Discrete(4)
    policy = RecurrentActorCritic(env.obs_dim, other.action_spec, "gru", d_model=8, hidden=8)
    with pytest.raises(ValueError, match="action space"):
        RolloutCollector(env, policy)
    policy = RecurrentActorCritic(env.obs_dim + 1, env.action_spec, "gru", d_model=8, hidden=8)
    with pytest.raises(ValueError, match="obs_dim"):
        RolloutCollector(env, policy)
    with pytest.raises(ValueError, match="observations must have shape"):
        policy.step(torch.zeros(2, env.obs_dim), policy.initial_state(2))
