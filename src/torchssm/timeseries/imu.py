"""Inertial odometry from a simulated IMU: smooth random 3-D motion, accelerometer and gyroscope readings
through the standard continuous-time IMU noise model, target = velocity per step (the sensor-to-state
task of HiSS's CSP-Bench IMU sets, Bhirangi et al. 2024, Sec. 5, made offline).

Motion (world frame W, z up; body frame B; R = R_WB body-to-world, ZYX Euler angles yaw psi, pitch theta,
roll phi: R = Rz(psi) Ry(theta) Rx(phi)), each axis a sum of random harmonics, starting at rest at p = 0:

    p_i(t) = sum_j (a_ij / w_ij^2) (1 - cos(w_ij t)),   v_i(t) = sum_j (a_ij / w_ij) sin(w_ij t),
    a_i(t) = sum_j a_ij cos(w_ij t)
    angle_i(t) = sum_j b_ij sin(u_ij t)

Sensors (Kalibr "IMU Noise Model", Furgale/Rehder et al., ethz-asl/kalibr wiki; the same model as
Forster et al. 2017, "On-Manifold Preintegration", Sec. IV): with standard gravity g_W = (0, 0, -g),

    omega_B = E(phi, theta) (phi', theta', psi')               body angular rate (ZYX kinematics, Diebel 2006 eq. 76)
    f_B     = R^T (a_W - g_W)                                   specific force: at rest f_B = R^T (0, 0, g)
    gyro_k  = omega_B(t_k) + b_g,k + sigma_g / sqrt(dt) n_k     white noise of density sigma_g  (rad/s/sqrt(Hz))
    acc_k   = f_B(t_k)     + b_a,k + sigma_a / sqrt(dt) n'_k    white noise of density sigma_a  (m/s^2/sqrt(Hz))
    b_k+1   = b_k + sigma_b sqrt(dt) n''_k                      bias random walk of density sigma_b

Inputs per step (L, 6): [acc / g, gyro] (accelerometer in units of g); target (L, 3): v_W in m/s.
All parameters live in :class:`IMUConfig`; their values were fixed (and committed) before any model was
compared on this task, and every experiment states the config it used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from torchssm.data.loaders import TensorDictDataset
from torchssm.data.registry import TaskData, TaskInfo, register_task

CITATION = (
    "Bhirangi et al. 2024 (HiSS, CSP-Bench IMU tasks); Kalibr IMU noise model (ethz-asl/kalibr wiki); "
    "EuRoC MAV ADIS16448 noise densities (Burri et al. 2016)"
)


@dataclass(frozen=True)
class IMUConfig:
    """Sensor and motion parameters (each with its source; UNVERIFIED where not checked at the source)."""

    rate_hz: float = 200.0  # ADIS16448 sampling rate in the EuRoC MAV data set (Burri et al. 2016, Sec. 2)
    seconds: float = 5.0  # L = rate_hz * seconds = 1000 steps
    gravity: float = 9.80665  # standard gravity, m/s^2 (3rd CGPM 1901; ISO 80000-3)
    # EuRoC imu0 sensor.yaml (ADIS16448) noise densities as quoted in public VIO configs (UNVERIFIED against
    # the original file): gyro 1.6968e-4 rad/s/sqrt(Hz), bias walk 1.9393e-5 rad/s^2/sqrt(Hz); accelerometer
    # 2.0e-3 m/s^2/sqrt(Hz), bias walk 3.0e-3 m/s^3/sqrt(Hz)
    gyro_noise_density: float = 1.6968e-4
    gyro_random_walk: float = 1.9393e-5
    accel_noise_density: float = 2.0e-3
    accel_random_walk: float = 3.0e-3
    # turn-on bias spread (std per axis): a MEMS-grade order of magnitude, UNVERIFIED (chosen, not from a datasheet)
    gyro_bias_std: float = 2e-3  # rad/s
    accel_bias_std: float = 2e-2  # m/s^2
    # motion: harmonics per axis and their ranges (chosen: walking/handheld-like, UNVERIFIED)
    harmonics: int = 3
    accel_amplitude: tuple = (0.2, 1.5)  # |a_ij| in m/s^2
    motion_hz: tuple = (0.1, 1.0)  # w_ij / (2 pi)
    angle_amplitude: tuple = (0.05, 0.4)  # |b_ij| in rad
    rotation_hz: tuple = (0.05, 0.5)  # u_ij / (2 pi)

    @property
    def length(self) -> int:
        return int(round(self.rate_hz * self.seconds))


def euler_zyx_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) [roll phi, pitch theta, yaw psi] -> (..., 3, 3) R = Rz(psi) Ry(theta) Rx(phi), body to world."""
    phi, theta, psi = angles.unbind(-1)
    cf, sf, ct, st, cp, sp = phi.cos(), phi.sin(), theta.cos(), theta.sin(), psi.cos(), psi.sin()
    rows = [
        [cp * ct, cp * st * sf - sp * cf, cp * st * cf + sp * sf],
        [sp * ct, sp * st * sf + cp * cf, sp * st * cf - cp * sf],
        [-st, ct * sf, ct * cf],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def body_rate_zyx(angles: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """Body angular velocity (..., 3) from ZYX Euler angles and their time derivatives (Diebel 2006, eq. 76)."""
    phi, theta, _ = angles.unbind(-1)
    dphi, dtheta, dpsi = rates.unbind(-1)
    return torch.stack(
        [
            dphi - dpsi * theta.sin(),
            dtheta * phi.cos() + dpsi * phi.sin() * theta.cos(),
            -dtheta * phi.sin() + dpsi * phi.cos() * theta.cos(),
        ],
        dim=-1,
    )


def _harmonics(gen, n: int, cfg: IMUConfig, amp, hz):
    """Random amplitudes (signed) and angular frequencies, each (n, 3, harmonics)."""
    shape = (n, 3, cfg.harmonics)
    a = amp[0] + (amp[1] - amp[0]) * torch.rand(shape, generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(shape, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
    w = 2 * math.pi * (hz[0] + (hz[1] - hz[0]) * torch.rand(shape, generator=gen, dtype=torch.float64))
    return a * sign, w


def simulate(n: int, cfg: IMUConfig = IMUConfig(), seed: int = 0) -> dict:
    """``n`` trajectories (deterministic in ``seed``): float64 tensors
    t (L,), acc (n, L, 3) m/s^2, gyro (n, L, 3) rad/s, velocity (n, L, 3) m/s, position (n, L, 3) m,
    R (n, L, 3, 3), and the noise-free specific force / body rate (f_true, omega_true)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if cfg.rate_hz <= 0 or cfg.seconds <= 0 or cfg.harmonics < 1:
        raise ValueError(f"rate_hz, seconds and harmonics must be positive; got {cfg}")
    gen = torch.Generator().manual_seed(int(seed))
    dt, L = 1.0 / cfg.rate_hz, cfg.length
    t = torch.arange(L, dtype=torch.float64) * dt  # (L,)
    acc_amp, w = _harmonics(gen, n, cfg, cfg.accel_amplitude, cfg.motion_hz)  # (n, 3, J)
    wt = w[:, None] * t[None, :, None, None]  # (n, L, 3, J)
    a_world = (acc_amp[:, None] * wt.cos()).sum(-1)  # (n, L, 3)
    velocity = (acc_amp[:, None] / w[:, None] * wt.sin()).sum(-1)
    position = (acc_amp[:, None] / w[:, None] ** 2 * (1 - wt.cos())).sum(-1)
    ang_amp, u = _harmonics(gen, n, cfg, cfg.angle_amplitude, cfg.rotation_hz)
    ut = u[:, None] * t[None, :, None, None]
    angles = (ang_amp[:, None] * ut.sin()).sum(-1)  # (n, L, 3) roll, pitch, yaw
    rates = (ang_amp[:, None] * u[:, None] * ut.cos()).sum(-1)
    R = euler_zyx_to_matrix(angles)  # (n, L, 3, 3)
    g_world = torch.tensor([0.0, 0.0, -cfg.gravity], dtype=torch.float64)
    f_true = (R.transpose(-1, -2) @ (a_world - g_world)[..., None])[..., 0]  # (n, L, 3)
    omega_true = body_rate_zyx(angles, rates)

    def bias_walk(std0, density):  # (n, L, 3): turn-on bias + random walk
        steps = torch.randn(n, L, 3, generator=gen, dtype=torch.float64) * density * math.sqrt(dt)
        steps[:, 0] = torch.randn(n, 3, generator=gen, dtype=torch.float64) * std0
        return steps.cumsum(1)

    b_g = bias_walk(cfg.gyro_bias_std, cfg.gyro_random_walk)
    b_a = bias_walk(cfg.accel_bias_std, cfg.accel_random_walk)

    def white(density):  # (n, L, 3): discrete white noise of continuous density `density` (std density / sqrt(dt))
        return torch.randn(n, L, 3, generator=gen, dtype=torch.float64) * density / math.sqrt(dt)

    gyro = omega_true + b_g + white(cfg.gyro_noise_density)
    acc = f_true + b_a + white(cfg.accel_noise_density)
    return {
        "t": t,
        "acc": acc,
        "gyro": gyro,
        "velocity": velocity,
        "position": position,
        "R": R,
        "f_true": f_true,
        "omega_true": omega_true,
        "gyro_bias": b_g,
        "accel_bias": b_a,
    }


def imu_dataset(n: int, cfg: IMUConfig = IMUConfig(), seed: int = 0, target: str = "velocity") -> TensorDictDataset:
    """Examples {"inputs": (L, 6) float32 [acc / g, gyro], "targets": (L, 3) float32 velocity (or position)}."""
    if target not in ("velocity", "position"):
        raise ValueError(f"target must be 'velocity' or 'position', got {target!r}")
    sim = simulate(n, cfg, seed)
    inputs = torch.cat([sim["acc"] / cfg.gravity, sim["gyro"]], dim=-1).float()  # (n, L, 6)
    return TensorDictDataset(inputs=inputs, targets=sim[target].float())


@register_task(
    "imu",
    "inertial odometry: simulated IMU (accelerometer, gyroscope, noise, bias drift, gravity) -> velocity per step",
)
def build(
    data_dir=None,
    seed: int = 0,
    n_train: int = 512,
    n_val: int = 128,
    n_test: int = 256,
    seconds: float = IMUConfig.seconds,
    target: str = "velocity",
) -> TaskData:
    """Train/val/test from disjoint seeds (seed, seed + 1, seed + 2) of :func:`simulate`."""
    cfg = IMUConfig(seconds=float(seconds))
    train = imu_dataset(int(n_train), cfg, 3 * int(seed), target)
    val = imu_dataset(int(n_val), cfg, 3 * int(seed) + 1, target) if n_val else None
    test = imu_dataset(int(n_test), cfg, 3 * int(seed) + 2, target)
    info = TaskInfo(name="imu", d_input=6, d_output=3, length=cfg.length, kind="regression", citation=CITATION)
    return TaskData(info=info, train=train, val=val, test=test, extra={"imu_config": asdict(cfg)})
