"""The simulated IMU: deterministic, physically consistent (gyro = body rate of R, accelerometer = specific
force R^T (a - g)), noise at the configured densities, and clear errors."""

import math

import pytest
import torch

from torchssm.data.registry import build_task
from torchssm.timeseries.imu import IMUConfig, imu_dataset, simulate

CFG = IMUConfig(seconds=1.0)


def test_deterministic_in_seed():
    a, b, c = simulate(3, CFG, seed=5), simulate(3, CFG, seed=5), simulate(3, CFG, seed=6)
    for key in ("acc", "gyro", "velocity"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert not torch.allclose(a["acc"], c["acc"])


def test_kinematics_consistent():
    s = simulate(4, CFG)
    dt = 1.0 / CFG.rate_hz
    R = s["R"]
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye)  # rotations
    W = R[:, 1:-1].transpose(-1, -2) @ (R[:, 2:] - R[:, :-2]) / (2 * dt)  # R^T dR/dt = [omega]x
    omega_fd = torch.stack([W[..., 2, 1], W[..., 0, 2], W[..., 1, 0]], dim=-1)
    torch.testing.assert_close(omega_fd, s["omega_true"][:, 1:-1], atol=1e-3, rtol=0)
    a_world = (R @ s["f_true"][..., None])[..., 0] + torch.tensor([0.0, 0.0, -CFG.gravity], dtype=torch.float64)
    dv = (s["velocity"][:, 2:] - s["velocity"][:, :-2]) / (2 * dt)
    torch.testing.assert_close(dv, a_world[:, 1:-1], atol=2e-3, rtol=0)
    torch.testing.assert_close(s["velocity"][:, 0], torch.zeros(4, 3, dtype=torch.float64))  # starts at rest


def test_gravity_and_noise_levels():
    s = simulate(64, CFG, seed=1)
    # |f| averages near g (motion accelerations are small and zero-mean)
    assert abs(float(s["f_true"].norm(dim=-1).mean()) - CFG.gravity) < 0.5
    noise = s["gyro"] - s["omega_true"] - s["gyro_bias"]
    want = CFG.gyro_noise_density * math.sqrt(CFG.rate_hz)
    assert abs(float(noise.std()) / want - 1) < 0.05
    noise = s["acc"] - s["f_true"] - s["accel_bias"]
    assert abs(float(noise.std()) / (CFG.accel_noise_density * math.sqrt(CFG.rate_hz)) - 1) < 0.05
    walk = s["accel_bias"].diff(dim=1)
    assert abs(float(walk.std()) / (CFG.accel_random_walk / math.sqrt(CFG.rate_hz)) - 1) < 0.05


def test_dataset_and_task():
    ds = imu_dataset(2, CFG)
    item = ds[0]
    assert item["inputs"].shape == (200, 6) and item["targets"].shape == (200, 3)
    assert abs(float(item["inputs"][:, 2].mean()) - 1.0) < 0.3  # accelerometer z in units of g, near +1
    data = build_task("imu", n_train=2, n_val=0, n_test=1, seconds=0.5)
    assert data.info.kind == "regression" and data.info.length == 100 and data.val is None
    assert not torch.allclose(data.train.tensors["inputs"][0], data.test.tensors["inputs"][0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="positive int"):
        simulate(0, CFG)
    with pytest.raises(ValueError, match="'velocity' or 'position'"):
        imu_dataset(1, CFG, target="speed")


def test_comparison_seed_keeps_the_data_and_data_seed_changes_it(tmp_path):
    """``timeseries imu``: --seed seeds weights and batches only; the trajectories follow --data-seed."""
    from torchssm.timeseries.imu_compare import run

    kw = dict(budget=300, steps=2, lrs=(1e-3,), n_train=8, n_val=4, n_test=4, seconds=0.5, batch_size=4, progress=False)
    a = run(["lstm"], seed=0, **kw)
    b = run(["lstm"], seed=1, out=tmp_path / "b.json", **kw)
    c = run(["lstm"], seed=0, data_seed=1, **kw)
    assert a["zero_predictor_test_mse"] == b["zero_predictor_test_mse"]  # same test trajectories
    assert a["zero_predictor_test_mse"] != c["zero_predictor_test_mse"]
    assert a["rows"][0]["val_mse"] != b["rows"][0]["val_mse"]  # another initialisation
    assert (b["seed"], b["data_seed"]) == (1, 0) and (tmp_path / "b.json").exists()
