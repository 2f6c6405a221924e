"""The meta-RL task: per-trial environment, orthonormal observation projection and action permutation /
projection, re-sampled per trial and fixed within it; every episode of a trial from one initial state; the
memory resets only between trials (or at every episode in the ablation); per-episode statistics; CLI."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("popgym")

from torchssm.cli import main  # noqa: E402
from torchssm.rl.envs import make_env  # noqa: E402
from torchssm.rl.meta import MetaConfig, MetaEnv, episode_stats, pool_results  # noqa: E402
from torchssm.rl.policy import RecurrentActorCritic  # noqa: E402
from torchssm.rl.ppo import RolloutCollector  # noqa: E402
from torchssm.rl.train import list_presets, load_rl_config  # noqa: E402

BANDIT = {"name": "MultiarmedBandit", "num_bandits": 4, "episode_length": 5}


def _cfg(**kw):
    base = dict(
        train_envs=[BANDIT, "HigherLowerEasy"],
        heldout_envs=["RepeatPreviousEasy"],
        episodes_per_trial=2,
        obs_dim=16,
        num_actions=4,
    )
    return MetaConfig(**{**base, **kw})


def _play(env, steps, seed=0):
    """Random actions for ``steps`` steps; yields (trial objects before the step, obs, done, info)."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        before = list(env._trials)
        if env.discrete:
            action = rng.integers(0, env.cfg.num_actions, size=env.num_envs)
        else:
            action = rng.uniform(-1, 1, size=(env.num_envs, env.cfg.num_actions)).astype(np.float32)
        obs, reward, done, info = env.step(action)
        yield before, obs, done, info


def test_projection_and_permutation_resampled_per_trial_fixed_within():
    env = MetaEnv(_cfg(train_envs=[BANDIT]), 2, seed=0)
    obs = env.reset()
    assert obs.shape == (2, 16 + 4 + 4) and np.all(obs[:, -2:] == 1.0)  # episode- and trial-start flags
    seen_Q, seen_perm = [], []
    for before, obs, done, _ in _play(env, 60):
        for i, trial in enumerate(env._trials):
            np.testing.assert_allclose(trial.Q.T @ trial.Q, np.eye(trial.Q.shape[1]), atol=1e-12)
            assert sorted(trial.perm) == [0, 1, 2, 3]
            if not done[i]:  # within a trial: the very same projection and permutation
                assert trial is before[i]
            else:  # a new trial: new ones
                assert trial is not before[i] and not np.allclose(trial.Q, before[i].Q)
                seen_Q.append(trial.Q)
                seen_perm.append(tuple(trial.perm))
            # the projected observation is Q o with o the bandit's one-hot payout bit: unit norm
            np.testing.assert_allclose(np.linalg.norm(obs[i, :16]), 1.0, rtol=1e-5)
    assert len(seen_Q) >= 4 and len(set(seen_perm)) > 1  # 5 steps x 2 episodes per trial: ~6 trials per copy


def test_discrete_action_goes_through_the_trials_permutation():
    env = MetaEnv(_cfg(train_envs=[BANDIT]), 1, seed=3)
    env.reset()
    trial = env._trials[0]
    for a in range(4):
        assert env._env_action(trial, np.int64(a)) == trial.perm[a]
    nope = MetaEnv(_cfg(train_envs=[BANDIT], project_actions=False), 1)
    nope.reset()
    assert [nope._env_action(nope._trials[0], np.int64(a)) for a in range(4)] == [0, 1, 2, 3]


def test_every_episode_of_a_trial_starts_from_the_same_state():
    cfg = _cfg(train_envs=["PositionOnlyCartPoleEasy"], heldout_envs=[], episodes_per_trial=3, obs_dim=4, num_actions=2)
    env = MetaEnv(cfg, 1, seed=0)
    obs = env.reset()
    starts = {id(env._trials[0]): [obs[0, :4]]}
    for _, obs, _, info in _play(env, 250):
        if info["episode_done"][0]:
            starts.setdefault(id(env._trials[0]), []).append(obs[0, :4])
    trials = [np.stack(v) for v in starts.values() if len(v) == 3]
    assert len(trials) >= 2
    for s in trials:  # the same projected start observation in each of a trial's 3 episodes
        np.testing.assert_allclose(s, s[0:1].repeat(3, 0), atol=1e-7)
    assert not np.allclose(trials[0][0], trials[1][0])  # new trial, new start (and projection)
    # without same_start_per_trial the episodes of a trial start apart
    env = MetaEnv(MetaConfig(**{**cfg.__dict__, "same_start_per_trial": False}), 1, seed=0)
    first = env.reset()[0, :4]
    for _, obs, done, info in _play(env, 250):
        if info["episode_done"][0] and not done[0]:
            assert not np.allclose(obs[0, :4], first)
            break
    else:
        raise AssertionError("no second episode within 250 steps")


def test_same_start_keeps_the_bandit_but_draws_new_payouts():
    env = MetaEnv(_cfg(train_envs=[{**BANDIT, "episode_length": 30}]), 1, seed=1)
    env.reset()
    bandit = env._trials[0].env.unwrapped
    probs, payouts = [bandit.bandits.copy()], [[]]
    for _ in range(30):  # the trial's first episode, always pulling agent action 0
        _, reward, done, info = env.step(np.array([0]))
        payouts[-1].append(float(reward[0]))
    assert info["episode_done"][0] and not done[0]
    probs.append(bandit.bandits.copy())  # after the reset for episode 2 of the same trial
    payouts.append([float(env.step(np.array([0]))[1][0]) for _ in range(29)])
    np.testing.assert_array_equal(probs[0], probs[1])  # the trial's payout probabilities
    assert payouts[0][:29] != payouts[1]  # fresh randomness inside each episode


def test_episode_start_shows_no_previous_action_or_reward():
    env = MetaEnv(_cfg(train_envs=[BANDIT]), 3, seed=2)
    env.reset()
    for _, obs, done, info in _play(env, 40):
        ep = info["episode_done"]
        assert np.all(obs[ep, 16:-2] == 0.0) and np.all(obs[ep, -2] == 1.0)
        assert np.all(obs[~ep, 16:20].sum(1) == 1.0) and np.all(obs[~ep, -2:] == 0.0)  # one-hot previous action
        assert np.all(obs[done, -1] == 1.0) and np.all(obs[ep & ~done, -1] == 0.0)


def test_continuous_actions_projected_per_trial():
    cfg = MetaConfig(
        train_envs=["PositionOnlyPendulumEasy"],
        heldout_envs=["NoisyPositionOnlyPendulumEasy"],
        obs_dim=8,
        num_actions=3,
    )
    env = MetaEnv(cfg, 2, seed=0)
    obs = env.reset()
    assert env.action_spec.kind == "continuous" and env.action_spec.dim == 3 and obs.shape == (2, 8 + 3 + 4)
    trial = env._trials[0]
    assert trial.A.shape == (1, 3) and np.isclose(np.linalg.norm(trial.A), 1.0)  # a random unit direction
    a = np.array([0.5, -0.25, 1.0])
    np.testing.assert_allclose(env._env_action(trial, a), np.clip(2.0 * trial.A @ a, -2, 2), rtol=1e-6)
    before = [t.A.copy() for t in env._trials]
    obs, _, _, _ = env.step(np.tile(np.array([[0.5, -0.25, 3.0]], dtype=np.float32), (2, 1)))
    np.testing.assert_allclose(obs[:, 8:11], [[0.5, -0.25, 1.0]] * 2)  # the clipped agent action is observed
    assert all(np.array_equal(t.A, b) for t, b in zip(env._trials, before))
    with pytest.raises(ValueError, match=r"expected \(2, 3\) float actions"):
        env.step(np.zeros(2, dtype=np.int64))
    policy = RecurrentActorCritic(env.obs_dim, env.action_spec, "lru", d_model=4, hidden=4)  # a Normal head
    rollout = RolloutCollector(env, policy).collect(5)
    assert rollout.actions.shape == (2, 5, 3) and torch.isfinite(rollout.log_probs).all()


def test_heldout_envs_and_bad_configs():
    env = MetaEnv(_cfg(), 2, seed=1, heldout=True)
    env.reset()
    assert {t.label for t in env._trials} == {"RepeatPreviousEasy"}
    with pytest.raises(ValueError, match="27 actions > meta.num_actions=4"):
        MetaEnv(_cfg(train_envs=["CountRecallEasy"]), 1)
    with pytest.raises(ValueError, match="all have discrete or all continuous"):
        MetaEnv(_cfg(train_envs=["PositionOnlyPendulumEasy"]), 1)
    with pytest.raises(ValueError, match="observations > meta.obs_dim=2"):
        MetaEnv(_cfg(obs_dim=2), 1)
    with pytest.raises(ValueError, match="unknown meta config key"):
        MetaConfig.from_dict({"envs": ["RepeatFirstEasy"]})
    with pytest.raises(ValueError, match="at least one environment"):
        MetaConfig(train_envs=[])
    with pytest.raises(ValueError, match="a POPGym class name or a mapping"):
        MetaConfig(train_envs=[{"num_bandits": 4}])
    with pytest.raises(ValueError, match="episodes_per_trial must be a positive int"):
        _cfg(episodes_per_trial=0)
    with pytest.raises(ValueError, match="unknown POPGym environment 'Bandit'"):
        MetaEnv(_cfg(train_envs=["Bandit"]), 1)
    with pytest.raises(TypeError, match="MultiarmedBandit: bad constructor arguments"):
        make_env("MultiarmedBandit", arms=3)
    with pytest.raises(ValueError, match="heldout_envs is empty"):
        MetaEnv(_cfg(heldout_envs=[]), 1, heldout=True)
    assert MetaConfig.from_dict({"permute_actions": False}).project_actions is False  # the old key


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
    # and the memory really is carried across episode boundaries inside a trial (not in the ablation)
    episode_start = torch.as_tensor(rollout.obs[:, 1:, -2] == 1.0) & ~trial_end
    assert bool(episode_start.any()) and bool((starts_next[episode_start]).all()) is ablation


def test_every_meta_preset_builds():
    metas = [name for name in list_presets()[0] if name.startswith("meta_")]
    assert {"meta_popgym", "meta_cartpole", "meta_pendulum"} <= set(metas)
    for name in metas:
        cfg = load_rl_config(name, model="gru")
        for heldout in (False, True):
            env = MetaEnv(MetaConfig.from_dict(cfg.meta), 1, heldout=heldout)
            assert env.reset().shape == (1, env.obs_dim)


def test_episode_stats_and_pooling():
    returns = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 2.0]])
    s = episode_stats(returns)
    assert s["mean_per_episode"] == pytest.approx([1 / 3, 4 / 3])
    assert s["last_minus_first"] == pytest.approx(1.0)
    half = 1.96 * np.std([1.0, 0.0, 2.0], ddof=1) / np.sqrt(3)
    assert s["ci95"] == pytest.approx([1.0 - half, 1.0 + half])
    run = {"memory": "lru", "heldout": False, "reset_each_episode": False, "trained_reset_each_episode": False}
    a = {**run, "seed": 1, "checkpoint": "a", "env_steps": 1, "envs": ["x"], **s, "returns": returns.tolist()}
    b = {**a, "checkpoint": "b", "returns": [[1.0, 0.0]], **episode_stats(np.array([[1.0, 0.0], [1.0, 0.0]]))}
    pooled = pool_results([a, b])
    assert pooled["trials"] == 4 and pooled["last_minus_first"] == pytest.approx((1 + 0 + 2 - 1) / 4)
    assert [r["checkpoint"] for r in pooled["per_run"]] == ["a", "b"]
    with pytest.raises(ValueError, match="different episodes per trial"):
        pool_results([a, {**b, "returns": [[1.0, 0.0, 0.0]]}])


def test_meta_train_and_eval_cli(tmp_path, capsys):
    small = ["--no-progress", "--iterations", "1", "--set", "ppo.num_envs=4", "--set", "ppo.num_steps=32"]
    small += ["--set", "ppo.num_minibatches=2", "--set", "ppo.update_epochs=1", "--set", "model.d_model=8"]
    small += ["--set", "model.hidden=8", "--set", "meta.episodes_per_trial=2"]
    runs = [tmp_path / "s0", tmp_path / "s1"]
    for k, out in enumerate(runs):
        train = ["rl", "train", "--preset", "meta_popgym", "--model", "gru", "--out", str(out), "--set", f"seed={k}"]
        assert main([*train, *small]) == 0
    capsys.readouterr()
    plot, result_path = tmp_path / "meta.png", tmp_path / "m.json"
    args = ["rl", "meta-eval", "--checkpoint", *map(str, runs), "--trials", "4", "--heldout"]
    assert main([*args, "--out", str(result_path), "--plot", str(plot)]) == 0
    result = json.loads(result_path.read_text())
    assert np.asarray(result["returns"]).shape == (8, 2) and result["heldout"] and plot.is_file()  # 2 runs pooled
    assert [r["seed"] for r in result["per_run"]] == [777, 778]  # each checkpoint plays its own trials
    assert len(result["per_run"]) == 2 and result["envs"] == ["MultiarmedBandit(episode_length=6, num_bandits=3)"]
    both = tmp_path / "both.png"
    assert main(["rl", "meta-plot", str(result_path), str(result_path), "--labels", "a", "b", "--out", str(both)]) == 0
    assert both.is_file()
    assert main(["rl", "meta-plot", str(tmp_path / "nope.json"), "--out", str(both)]) == 2
    assert "no meta-eval result" in capsys.readouterr().err
    assert main(["rl", "meta-eval", "--checkpoint", str(runs[0]), "--trials", "1"]) == 2
    assert "trials must be >= 2" in capsys.readouterr().err
