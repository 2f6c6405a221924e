"""The meta-RL task: per-trial environment, orthonormal observation projection and action permutation;
memory resets only between trials (or at every episode in the ablation); per-episode statistics."""

import json

import numpy as np
import pytest

pytest.importorskip("popgym")

from torchssm.cli import main  # noqa: E402
from torchssm.rl.meta import MetaConfig, MetaEnv, episode_stats  # noqa: E402
from torchssm.rl.policy import RecurrentActorCritic  # noqa: E402
from torchssm.rl.ppo import RolloutCollector  # noqa: E402


def _cfg(**kw):
    base = dict(
        train_envs=["RepeatFirstEasy", "HigherLowerEasy"],
        heldout_envs=["RepeatPreviousEasy"],
        episodes_per_trial=2,
        obs_dim=16,
        num_actions=4,
    )
    return MetaConfig(**{**base, **kw})


def test_trial_structure_projection_and_permutation():
    env = MetaEnv(_cfg(), 3, seed=0)
    obs = env.reset()
    assert obs.shape == (3, 16 + 4 + 3) and np.all(obs[:, -1] == 1.0)  # first-step flag
    for trial in env._trials:
        np.testing.assert_allclose(trial.Q.T @ trial.Q, np.eye(trial.Q.shape[1]), atol=1e-12)  # orthonormal
        assert sorted(trial.perm) == [0, 1, 2, 3]
        # the projected observation is Q o: its norm is the one-hot's norm, 1
    np.testing.assert_allclose(np.linalg.norm(obs[:, :16], axis=1), 1.0, rtol=1e-5)
    rng = np.random.default_rng(0)
    episodes = np.zeros(3, dtype=int)
    trial_ends = 0
    for _ in range(400):
        obs, reward, done, info = env.step(rng.integers(0, 4, size=3))
        episodes += info["episode_done"]
        assert np.all(info["episode_done"][done])  # a trial ends with an episode
        trial_ends += int(done.sum())
        for name, returns in info["trials"]:
            assert name in ("RepeatFirstEasy", "HigherLowerEasy") and len(returns) == 2
            assert all(-1 <= r <= 1 for r in returns)
    assert trial_ends >= 3 and episodes.sum() >= 2 * trial_ends


def test_heldout_envs_and_bad_configs():
    env = MetaEnv(_cfg(), 2, seed=1, heldout=True)
    env.reset()
    assert {t.name for t in env._trials} == {"RepeatPreviousEasy"}
    with pytest.raises(ValueError, match="27 actions > meta.num_actions=4"):
        MetaEnv(_cfg(train_envs=["CountRecallEasy"]), 1)
    with pytest.raises(ValueError, match="discrete actions"):
        MetaEnv(_cfg(train_envs=["PositionOnlyPendulumEasy"]), 1)
    with pytest.raises(ValueError, match="unknown meta config key"):
        MetaConfig.from_dict({"envs": ["RepeatFirstEasy"]})


@pytest.mark.parametrize("ablation", [False, True])
def test_memory_resets_between_trials_only(ablation):
    env = MetaEnv(_cfg(), 2, seed=2)
    policy = RecurrentActorCritic(env.obs_dim, env.action_spec, "gru", d_model=8, hidden=8)
    collector = RolloutCollector(env, policy, also_reset_on="episode_done" if ablation else None)
    rollout = collector.collect(300)
    # memory resets: starts[t + 1] = done[t] (a trial ended) or, in the ablation only, any episode end
    starts_next, trial_end = rollout.starts[:, 1:], rollout.dones[:, :-1]
    assert bool((trial_end & ~starts_next).any()) is False  # every trial end resets the memory
    assert bool((starts_next & ~trial_end).any()) is ablation  # resets inside a trial: the ablation only


def test_episode_stats():
    returns = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 2.0]])
    s = episode_stats(returns)
    assert s["mean_per_episode"] == pytest.approx([1 / 3, 4 / 3])
    assert s["last_minus_first"] == pytest.approx(1.0)
    half = 1.96 * np.std([1.0, 0.0, 2.0], ddof=1) / np.sqrt(3)
    assert s["ci95"] == pytest.approx([1.0 - half, 1.0 + half])


def test_meta_train_and_eval_cli(tmp_path, capsys):
    out = tmp_path / "meta"
    assert (
        main(
            [
                "rl",
                "train",
                "--preset",
                "meta_popgym",
                "--model",
                "gru",
                "--out",
                str(out),
                "--no-progress",
                "--iterations",
                "1",
                "--set",
                "ppo.num_envs=4",
                "--set",
                "ppo.num_steps=32",
                "--set",
                "ppo.num_minibatches=2",
                "--set",
                "ppo.update_epochs=1",
                "--set",
                "model.d_model=8",
                "--set",
                "model.hidden=8",
                "--set",
                "meta.episodes_per_trial=2",
                "--set",
                "meta.train_envs=[RepeatFirstEasy]",
            ]
        )
        == 0
    )
    capsys.readouterr()
    plot = tmp_path / "meta.png"
    assert (
        main(
            [
                "rl",
                "meta-eval",
                "--checkpoint",
                str(out),
                "--trials",
                "4",
                "--heldout",
                "--out",
                str(tmp_path / "m.json"),
                "--plot",
                str(plot),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "m.json").read_text())
    assert np.asarray(result["returns"]).shape == (4, 2) and result["heldout"] and plot.is_file()
