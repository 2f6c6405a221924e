"""Federated Granger causality between state-space clients vs the centralised oracles."""

import numpy as np
import pytest

from torchssm.analysis.granger import (
    block_scores,
    federated_granger,
    fit_transition,
    kalman_filter,
    simulate_clients,
    support_auroc,
    var_granger_oracle,
)


def test_simulation_has_the_stated_snr_and_a_stable_sparse_coupling():
    d = simulate_clients(clients=4, length=4000, snr_db=0.0, seed=3)
    assert np.max(np.abs(np.linalg.eigvals(d.A))) < 0.95
    np.testing.assert_array_equal(block_scores(d.A, 4) > 0, d.support)
    signal = np.mean([np.var(d.h[:, 2 * m : 2 * m + 2] @ d.C[m].T) for m in range(4)])
    noise = np.mean([np.var(d.y[m] - d.h[:, 2 * m : 2 * m + 2] @ d.C[m].T) for m in range(4)])
    assert abs(10 * np.log10(signal / noise)) < 0.3


def test_server_least_squares_recovers_the_transition_from_exact_states():
    d = simulate_clients(clients=3, length=5000, seed=1)
    A = fit_transition(d.h, ridge=0.0)
    assert np.abs(A - d.A).max() < 0.05  # 5000 steps, unit process noise: O(1/sqrt(T)) error


def test_kalman_filter_beats_the_pseudo_inverse():
    d = simulate_clients(clients=3, length=1000, snr_db=-5.0, seed=2)
    rows = slice(0, 2)
    cross = d.A[rows].copy()
    cross[:, rows] = 0.0
    drive = np.vstack([np.zeros((1, 6)), d.h[:-1]]) @ cross.T  # (T, 2): the true cross term
    kf = kalman_filter(d.y[0], d.A[rows, rows], d.C[0], d.q, d.r, drive)
    pinv = d.y[0] @ np.linalg.pinv(d.C[0]).T
    assert np.mean((kf - d.h[:, rows]) ** 2) < 0.7 * np.mean((pinv - d.h[:, rows]) ** 2)


def test_federated_recovers_the_support_like_the_oracle():
    d = simulate_clients(clients=4, length=1000, snr_db=0.0, seed=0)
    fed = federated_granger(d, rounds=3)
    assert support_auroc(fed["scores"], d.support) >= 0.95
    assert fed["floats_per_step_per_client"] == 2  # states, not the 8 raw observations
    var = var_granger_oracle(d, maxlags=2)
    assert support_auroc(var["scores"], d.support) >= 0.9
    shuffled = np.random.default_rng(0).permutation(d.support.ravel()).reshape(d.support.shape)
    np.fill_diagonal(shuffled, False)
    if shuffled.any() and (shuffled != d.support).any():  # a wrong support scores lower
        assert support_auroc(fed["scores"], shuffled) < support_auroc(fed["scores"], d.support)


def test_bad_input():
    with pytest.raises(ValueError, match="clients"):
        simulate_clients(clients=1)
    with pytest.raises(ValueError, match="density"):
        simulate_clients(density=0.0)
