"""Koopman view of the LRU: pendulum simulator, the lifted linear recurrence, training and the reservoir."""

import math

import torch

from torchssm.theory.koopman import (
    KoopmanConfig,
    KoopmanLRU,
    ReservoirLRU,
    koopman_experiment,
    linearised_eigenvalues,
    pendulum_dataset,
    rk4_trajectories,
)


def test_rk4_conserves_energy_without_damping_and_matches_the_linearisation():
    x0 = torch.tensor([[1.0, 0.0], [0.01, 0.0]], dtype=torch.float64)
    x = rk4_trajectories(x0, 1000, 0.01, damping=0.0)  # (2, 1001, 2)
    energy = 0.5 * x[..., 1] ** 2 - torch.cos(x[..., 0])
    assert (energy - energy[:, :1]).abs().max() < 1e-9
    t = torch.arange(1001, dtype=torch.float64) * 0.01
    assert (x[1, :, 0] - 0.01 * torch.cos(t)).abs().max() < 1e-6  # small angle: theta = theta0 cos t


def test_linearised_eigenvalue():
    mu = complex(linearised_eigenvalues(0.1, 0.2)[0])
    assert abs(abs(mu) - math.exp(-0.01)) < 1e-7 and abs(math.atan2(mu.imag, mu.real) - 0.1 * math.sqrt(0.99)) < 1e-7


def test_koopman_model_is_a_linear_recurrence_in_the_lifted_space():
    torch.manual_seed(0)
    model = KoopmanLRU(d_lift=8, d_state=4, width=16).double()
    x0 = torch.randn(3, 2, dtype=torch.float64)
    pred = model(x0, 6)  # (3, 7, 2)
    lru = model.lru
    z0 = model.encoder(x0)
    h0 = z0.to(torch.complex128) @ lru._normalised_B().T  # (3, n): gamma B phi(x0)
    lam = lru.eigenvalues()
    C = torch.complex(lru.C_re, lru.C_im)
    for k in range(7):
        y = (lam**k * h0) @ C.T  # (3, d_lift)
        expected = model.decoder(y.real + (lru.D * z0 if k == 0 else 0))
        torch.testing.assert_close(pred[:, k], expected)


def test_reservoir_trains_only_its_readout():
    res = ReservoirLRU(d_res=8, d_state=8, width=8)
    trainable = {n for n, p in res.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("readout.") for n in trainable)
    out = res.rollout(pendulum_dataset(2, 10)[:, :5], 7)
    assert out.shape == (2, 7, 2)


def test_short_training_beats_persistence():
    cfg = KoopmanConfig(n_train=32, n_test=16, train_horizon=20, test_horizon=20, warmup=5, steps=80, batch=32)
    r = koopman_experiment(cfg, horizons=(10, 20))
    for row in r["rows"]:
        assert row["koopman_lru"] < 0.5 * row["persistence"], row
        assert row["frozen_lru_reservoir"] < row["persistence"], row
    assert r["eigenvalues"].abs().max() < 1.0
