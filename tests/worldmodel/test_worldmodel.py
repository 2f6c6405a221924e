"""World model (S4WM): step-mode imagination equals the teacher-forced parallel pass when fed the true latents,
for SSM, Transformer and GRU backbones; the collector writes whole episodes; bad actions fail clearly."""

import numpy as np
import pytest
import torch

pytest.importorskip("minigrid")

from torchssm.worldmodel.envs import (
    check_action_space,
    collect,
    load_episodes,
    make_env,
    observation_grid,
    run_episode,
    segments,
)
from torchssm.worldmodel.evaluate import cell_error, imagination_error, recall_episodes, train_world_model
from torchssm.worldmodel.model import WorldModel, WorldModelConfig, gaussian_kl

ENV = "MiniGrid-MemoryS7-v0"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("episodes")
    collect(folder, ENV, episodes=3, policy="spin", seed=0, max_steps=40)
    return segments(load_episodes(folder), 12)


def _model(backbone, **kw):
    torch.manual_seed(0)
    cfg = WorldModelConfig(backbone=backbone, d_model=16, d_hidden=32, d_latent=4, max_len=64, **kw)
    return WorldModel(cfg).double().eval()


@pytest.mark.parametrize("backbone", ["lru", "s4d", "mamba", "transformer", "gru"])
def test_step_imagination_equals_teacher_forced(data, backbone):
    model = _model(backbone)
    obs, actions = data["obs"][:2], data["actions"][:2]
    with torch.no_grad():
        out = model(obs, actions, sample=False)
        im = model.imagine(obs[:, :5], actions, latents=out["z"])
        logits, reward = model.decode(out["z"], out["h"])
    torch.testing.assert_close(im["h"], out["h"])
    torch.testing.assert_close(im["reward"], out["reward"])
    torch.testing.assert_close(im["frames"], torch.stack([lg.argmax(-1) for lg in logits], -1))
    # without the given latents the first C steps use the posterior means, i.e. the same h there
    im2 = model.imagine(obs[:, :5], actions)
    torch.testing.assert_close(im2["h"][:, :5], out["h"][:, :5])


def test_prior_depends_only_on_the_past(data):
    model = _model("lru")
    obs, actions = data["obs"][:1].clone(), data["actions"][:1].clone()
    with torch.no_grad():
        h1 = model(obs, actions, sample=False)["h"]
        obs[:, 6:] = (obs[:, 6:] + 1) % 3
        actions[:, 6:] = (actions[:, 6:] + 1) % 7
        h2 = model(obs, actions, sample=False)["h"]
    torch.testing.assert_close(h1[:, :7], h2[:, :7])  # h_t sees z_<t and a_<t only
    assert not torch.allclose(h1[:, 7:], h2[:, 7:])


def test_collector_writes_whole_episodes(tmp_path):
    paths = collect(tmp_path, ENV, episodes=2, policy="random", seed=3, max_steps=10)
    assert len(paths) == 2 and not list(tmp_path.glob("*.tmp"))
    eps = load_episodes(tmp_path)
    for ep in eps:
        assert ep["obs"].shape == (len(ep["actions"]) + 1, 7, 7, 3) and ep["obs"].dtype == np.uint8
    again = collect(tmp_path / "again", ENV, episodes=2, policy="random", seed=3, max_steps=10)
    np.testing.assert_array_equal(load_episodes(tmp_path)[0]["obs"], load_episodes(again[0].parent)[0]["obs"])
    with pytest.raises(FileNotFoundError, match="no episode"):
        load_episodes(tmp_path / "empty")
    with pytest.raises(ValueError, match="no episode has"):
        segments(eps, 1000)


def test_wrong_action_space_and_actions(data):
    from gymnasium.spaces import Box, Discrete

    with pytest.raises(ValueError, match="Discrete"):
        check_action_space(Box(-1, 1, (2,)), 7)
    with pytest.raises(ValueError, match="n_actions=7"):
        check_action_space(Discrete(3), 7)
    check_action_space(make_env(ENV).action_space, 7)
    model = _model("lru")
    obs, actions = data["obs"][:1], data["actions"][:1]
    with pytest.raises(ValueError, match=r"integers in \[0, 7\)"):
        model(obs, actions + 7)
    with pytest.raises(ValueError, match="integers"):
        model(obs, actions.double())
    with pytest.raises(ValueError, match="obs must have shape"):
        model(obs[..., :2], actions)
    with pytest.raises(ValueError, match="policy"):
        run_episode(make_env(ENV), "greedy")
    with pytest.raises(ValueError, match="observation grid"):
        observation_grid(np.zeros((7, 7)))
    with pytest.raises(ValueError, match="causal"):
        WorldModel(WorldModelConfig(backbone="hydra", d_model=16, layer_kwargs={"headdim": 4}))


def test_training_lowers_the_loss_and_evaluations_run(data):
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(backbone="lru", d_model=16, d_hidden=32, d_latent=4))
    fit = train_world_model(model, data, steps=15, batch_size=4, lr=3e-3, log_every=5)
    first, last = fit["history"][0]["nll"], fit["history"][-1]["nll"]
    assert last < first
    res = imagination_error(model, data, context=4)
    assert len(res["horizon_error"]) == 8 and all(0 <= e <= 1 for e in res["horizon_error"])


def test_recall_frames_repeat_after_four_turns():
    ep = recall_episodes(ENV, 2, context=6, turns=8)
    obs = ep["obs"]
    assert obs.shape[1] == 6 + 8
    torch.testing.assert_close(obs[:, -1], obs[:, 5])
    torch.testing.assert_close(obs[:, 9], obs[:, 5])
    assert float(cell_error(obs[:, 6], obs[:, 5]).max()) >= 0.0


def test_gaussian_kl_matches_torch():
    m1, s1, m2, s2 = torch.randn(3, 4), torch.rand(3, 4) + 0.1, torch.randn(3, 4), torch.rand(3, 4) + 0.1
    want = torch.distributions.kl_divergence(torch.distributions.Normal(m1, s1), torch.distributions.Normal(m2, s2))
    torch.testing.assert_close(gaussian_kl(m1, s1, m2, s2), want.sum(-1))


def test_plot_horizon_error(tmp_path):
    pytest.importorskip("matplotlib")
    from torchssm.worldmodel.evaluate import plot_horizon_error

    rows = [{"backbone": "lru", "horizon_error": [0.1, 0.2], "copy_last_error": [0.2, 0.3]}]
    path = plot_horizon_error(rows, tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0 and path.endswith("h.png")
