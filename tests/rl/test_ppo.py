"""PPO math against hand-computed numbers and a plain loop, and a tiny agent that learns a real POPGym
task above chance in a few seconds."""

import math

import numpy as np
import pytest
import torch

from torchssm.rl.ppo import PPOConfig, RolloutCollector, gae, make_optimizer, ppo_loss, ppo_update


def _gae_loop(rewards, values, dones, last_value, gamma, lam):
    T, B = len(rewards), len(rewards[0])
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        running, next_value = 0.0, last_value[b]
        for t in reversed(range(T)):
            nonterminal = 0.0 if dones[t][b] else 1.0
            delta = rewards[t][b] + gamma * next_value * nonterminal - values[t][b]
            running = delta + gamma * lam * nonterminal * running
            adv[t][b] = running
            next_value = values[t][b]
    return adv


def test_gae_hand_computed():
    # T = 3, gamma 0.9, lambda 0.5; the episode ends after t = 1 (no bootstrap from V_2 there):
    # A_2 = 2 + 0.9 * 3 - 0.2 = 4.5;  A_1 = 0 - 1 = -1;  A_0 = (1 + 0.9 * 1 - 0.5) + 0.45 * (-1) = 0.95
    r = torch.tensor([[1.0], [0.0], [2.0]], dtype=torch.float64)
    v = torch.tensor([[0.5], [1.0], [0.2]], dtype=torch.float64)
    d = torch.tensor([[False], [True], [False]])
    adv, ret = gae(r, v, d, torch.tensor([3.0], dtype=torch.float64), 0.9, 0.5)
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.95, -1.0, 4.5], dtype=torch.float64))
    torch.testing.assert_close(ret[:, 0], torch.tensor([1.45, 0.0, 4.7], dtype=torch.float64))


def test_gae_matches_loop():
    g = torch.Generator().manual_seed(0)
    T, B = 17, 5
    r = torch.randn(T, B, generator=g, dtype=torch.float64)
    v = torch.randn(T, B, generator=g, dtype=torch.float64)
    d = torch.rand(T, B, generator=g) < 0.2
    last = torch.randn(B, generator=g, dtype=torch.float64)
    adv, ret = gae(r, v, d, last, 0.97, 0.9)
    want = torch.tensor(_gae_loop(r.tolist(), v.tolist(), d.tolist(), last.tolist(), 0.97, 0.9), dtype=torch.float64)
    torch.testing.assert_close(adv, want)
    torch.testing.assert_close(ret, want + v)


def test_ppo_loss_hand_computed():
    # ratios 1.5, 0.5 (old log-prob 0), advantages 2, -1, clip 0.2:
    #   policy: -mean(min(3, 2.4), min(-0.5, -0.8)) = -(2.4 - 0.8) / 2 = -0.8
    #   value: V_old 0.5, V = 1 / 0, R = 2 / 0, clipped V = 0.7 / 0.3:
    #          0.5 * mean(max(1, 1.69), max(0, 0.09)) = 0.445
    #   total: -0.8 + 0.5 * 0.445 - 0.01 * mean(0.3, 0.5) = -0.5815
    f64 = dict(dtype=torch.float64)
    loss, parts = ppo_loss(
        torch.log(torch.tensor([1.5, 0.5], **f64)),
        torch.zeros(2, **f64),
        torch.tensor([2.0, -1.0], **f64),
        torch.tensor([1.0, 0.0], **f64),
        torch.tensor([0.5, 0.5], **f64),
        torch.tensor([2.0, 0.0], **f64),
        torch.tensor([0.3, 0.5], **f64),
        clip_eps=0.2,
        vf_coef=0.5,
        ent_coef=0.01,
        normalize_advantages=False,
    )
    assert math.isclose(parts["policy_loss"].item(), -0.8, abs_tol=1e-12)
    assert math.isclose(parts["value_loss"].item(), 0.445, abs_tol=1e-12)
    assert math.isclose(parts["entropy"].item(), 0.4, abs_tol=1e-12)
    assert math.isclose(parts["clip_frac"].item(), 1.0)
    assert math.isclose(loss.item(), -0.5815, abs_tol=1e-12)


def test_ppo_loss_normalises_advantages():
    f64 = dict(dtype=torch.float64)
    adv = torch.tensor([1.0, 3.0], **f64)  # normalised: -1/sqrt(2), 1/sqrt(2) (std with Bessel: sqrt(2))
    z = torch.zeros(2, **f64)
    _, parts = ppo_loss(z, z, adv, z, z, z, z, 0.2, 1.0, 0.0)
    assert math.isclose(parts["policy_loss"].item(), 0.0, abs_tol=1e-12)  # ratio 1: -mean(normalised A) = 0


def test_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        PPOConfig(num_envs=6, num_minibatches=4)
    with pytest.raises(ValueError, match="unknown ppo config key"):
        PPOConfig.from_dict({"learning_rate": 1e-3})


def test_tiny_lru_learns_repeat_previous_easy():
    """RepeatPreviousEasy (POPGym: say the suit seen 4 cards ago; chance return -0.5): a 32-wide LRU policy
    beats chance clearly after ~40k environment steps (about 5 s on one CPU thread)."""
    pytest.importorskip("popgym")
    from torchssm.rl.envs import BatchedEnv
    from torchssm.rl.policy import RecurrentActorCritic

    torch.manual_seed(0)
    env = BatchedEnv("RepeatPreviousEasy", 16, seed=0)
    policy = RecurrentActorCritic(
        env.obs_dim, env.action_spec, "lru", d_model=32, hidden=32, memory_kwargs={"d_state": 16}
    )
    cfg = PPOConfig(lr=3e-3, num_envs=16, num_steps=64, update_epochs=4, num_minibatches=2, gae_lambda=0.95)
    optimizer, collector = make_optimizer(policy, cfg), RolloutCollector(env, policy)
    returns = []
    for _ in range(36):
        rollout = collector.collect(cfg.num_steps)
        ppo_update(policy, optimizer, rollout, cfg)
        returns.append(np.mean(rollout.episode_returns))
    assert np.mean(returns[:3]) < -0.4  # starts at chance
    assert np.mean(returns[-3:]) > -0.2, returns
