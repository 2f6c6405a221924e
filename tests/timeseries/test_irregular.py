"""Irregular sampling: exact discretisation, the Kalman floor, the gap-aware LRU (reference loop, dt = 1 is the
LRU, gradients), S5's timescale path, and clear errors."""

import math

import pytest
import torch

from torchssm.layers.lru import LRU
from torchssm.timeseries.irregular import (
    DampedOscillator,
    GapLRU,
    GapSSM,
    LinearSDE,
    OUProcess,
    gap_lru_reference,
    irregular_dataset,
    kalman_filter,
)


def test_ou_exact_discretisation():
    o = OUProcess(theta=2.0, sigma=1.0)
    Fm, Q = o.transition(torch.tensor(0.3, dtype=torch.float64))
    assert abs(float(Fm) - math.exp(-0.6)) < 1e-12
    assert abs(float(Q) - (1 - math.exp(-1.2)) / 4.0) < 1e-12  # sigma^2 (1 - e^{-2 theta dt}) / (2 theta)
    assert abs(float(o.stationary_cov()) - 0.25) < 1e-12
    # the sample's lag-dt autocorrelation is exp(-theta dt), also for uneven gaps
    v = o.sample(torch.full((4000, 2), 0.3, dtype=torch.float64), seed=1)
    corr = float((v[:, 0] * v[:, 1]).mean() / v[:, 0].var())
    assert abs(corr - math.exp(-0.6)) < 0.05


def test_oscillator_semigroup_and_stationarity():
    p = DampedOscillator()
    F1, Q1 = p.transition(torch.tensor(0.2, dtype=torch.float64))
    F2, Q2 = p.transition(torch.tensor(0.4, dtype=torch.float64))
    torch.testing.assert_close(F1 @ F1, F2)  # F(2 dt) = F(dt)^2
    torch.testing.assert_close(F1 @ Q1 @ F1.T + Q1, Q2)  # Q(2 dt) = F Q F^T + Q
    P = p.stationary_cov()
    torch.testing.assert_close(p.A @ P + P @ p.A.T + p.L @ p.L.T, torch.zeros(2, 2, dtype=torch.float64))
    assert abs(float(P[0, 0]) - 1.0) < 1e-9
    with pytest.raises(ValueError, match="stable"):
        LinearSDE(torch.tensor([[0.1]]), torch.tensor([[1.0]]))


def test_dataset_deterministic_with_dropouts():
    a, b = irregular_dataset(8, 50, seed=3), irregular_dataset(8, 50, seed=3)
    torch.testing.assert_close(a.tensors["inputs"], b.tensors["inputs"], rtol=0, atol=0)
    mask = a.tensors["inputs"][..., 1]
    assert 0.6 < float(mask.mean()) < 0.95  # dropout 0.2
    assert float((a.tensors["inputs"][..., 0] * (1 - mask)).abs().sum()) == 0.0  # missing values are 0
    assert (a.tensors["dt"] > 0).all()
    with pytest.raises(ValueError, match="dropout"):
        irregular_dataset(2, 5, dropout=1.0)


def test_kalman_filter_beats_raw_observations():
    p = DampedOscillator()
    ds = irregular_dataset(64, 100, process=p, noise=0.3, seed=0)
    t = ds.tensors
    kf = kalman_filter(p, t["values"], t["inputs"][..., 1], t["dt"], 0.3)
    mse_kf = float((kf - t["targets"][..., 0]).square().mean())
    assert mse_kf < 0.3**2 < float(t["targets"].square().mean())


def _gap_lru():
    torch.manual_seed(0)
    return GapLRU(4, 6, max_phase=2 * math.pi).double()


def test_gap_lru_matches_reference_and_lru():
    g = _gap_lru()
    x = torch.randn(2, 9, 4, dtype=torch.float64, requires_grad=True)
    dt = (torch.rand(2, 9, dtype=torch.float64) * 3).requires_grad_()
    y, ref = g(x, dt=dt), gap_lru_reference(g, x, dt)
    torch.testing.assert_close(y, ref)
    grads = torch.autograd.grad(y.square().sum(), [x, dt, *g.parameters()])
    grads_ref = torch.autograd.grad(ref.square().sum(), [x, dt, *g.parameters()])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)
    lru = LRU(4, 6).double()
    lru.load_state_dict(g.state_dict())
    torch.testing.assert_close(g(x, dt=torch.ones(2, 9, dtype=torch.float64)), lru(x))  # dt = 1: the LRU
    torch.testing.assert_close(g(x), lru(x))


def test_gap_lru_step_and_continuation():
    g = _gap_lru()
    x = torch.randn(2, 7, 4, dtype=torch.float64)
    dt = torch.rand(2, 7, dtype=torch.float64) + 0.1
    y, final = g(x, dt=dt, return_state=True)
    s = g.init_state(2)
    outs = []
    for t in range(7):
        y_t, s = g.step(x[:, t], s, dt=dt[:, t])
        outs.append(y_t)
    torch.testing.assert_close(torch.stack(outs, 1), y)
    torch.testing.assert_close(s, final)
    y1, s1 = g(x[:, :3], dt=dt[:, :3], return_state=True)
    torch.testing.assert_close(torch.cat([y1, g(x[:, 3:], s1, dt=dt[:, 3:])], 1), y)
    with pytest.raises(ValueError, match="dt must have shape"):
        g(x, dt=dt[:, :3])


@pytest.mark.parametrize("layer", ["gap_lru", "s5"])
def test_gap_ssm_uses_the_gaps(layer):
    torch.manual_seed(0)
    x = torch.randn(2, 10, 2)
    dt = torch.rand(2, 10) + 0.1
    for mode in ("timescale", "feature"):
        m = GapSSM(layer, d_model=8, d_state=4, gap_mode=mode).eval()
        with torch.no_grad():
            assert not torch.allclose(m(x, dt), m(x, 2 * dt))
    m = GapSSM(layer, d_model=8, d_state=4, gap_mode="ignore").eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x, dt), m(x, 2 * dt))
    with pytest.raises(ValueError, match="gap_mode"):
        GapSSM(layer, gap_mode="sometimes")


def test_gap_lru_layer_contract_without_gaps():
    from torchssm.testing import check_layer_contract

    check_layer_contract(_gap_lru(), length=10)
