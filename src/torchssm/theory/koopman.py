"""The LRU article's Koopman view: a nonlinear system learned as a linear recurrence in a lifted space.

Orvieto et al. 2023 ("Resurrecting Recurrent Neural Networks", Sec. 1 and 5) relate the LRU's linear
recurrence followed by a nonlinear readout to Koopman operator theory and cite Lusch, Kutz & Brunton
2018 ("Deep learning for universal linear embeddings of nonlinear dynamics", Nat. Commun. 9:4950).
Lusch et al. learn an encoder phi, a linear map K and a decoder psi with

    z_0 = phi(x_0),   z_k = K^k z_0,   x_k ~ psi(z_k)       (their Fig. 1; losses: reconstruction,
                                                             multi-step prediction, linearity)

Here K is the LRU's complex diagonal lambda (``torchssm.layers.LRU``): the encoded state enters as an
impulse at t = 0 and the LRU's own scan evolves it,

    u_t = phi(x_0) [t = 0],  h_t = lambda h_{t-1} + gamma B u_t,  y_t = Re(C h_t) + D u_t,  x_t ~ psi(y_t),

so h_k = lambda^k gamma B phi(x_0): a linear recurrence whose eigenvalues are lambda. The system is a
damped pendulum  theta'' = -sin(theta) - c theta'  (simulated with classical RK4). Near its stable fixed
point, the Koopman eigenvalues of a hyperbolic attractor are the linearisation's eigenvalues
mu = exp(s dt), s = -c/2 +- i sqrt(1 - c^2/4), and their products mu^a conj(mu)^b (Mauroy & Mezic
2016, "Global stability analysis using the eigenfunctions of the Koopman operator", Sec. 2; stated
from that theory, not checked against the paper's text here: UNVERIFIED) -- the figure draws them next
to the learned lambda.

Baseline after the article's reservoir-computing references (Sec. 1, UNVERIFIED section number): a
*frozen* random LRU (ring init) driven by the observed trajectory, and only a readout MLP trained to
predict the next observation (teacher forcing); multi-step prediction runs it in closed loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from torchssm.layers.lru import LRU


# --- the system --------------------------------------------------------------------------------------
def pendulum_field(x: torch.Tensor, damping: float) -> torch.Tensor:
    """Vector field of the damped pendulum: x (..., 2) = (theta, omega) -> (omega, -sin theta - c omega)."""
    theta, omega = x[..., 0], x[..., 1]
    return torch.stack([omega, -torch.sin(theta) - damping * omega], dim=-1)


def rk4_trajectories(x0: torch.Tensor, steps: int, dt: float, damping: float) -> torch.Tensor:
    """Classical 4th-order Runge-Kutta from x0 (b, 2): returns (b, steps + 1, 2) including x0."""
    if x0.dim() != 2 or x0.shape[-1] != 2:
        raise ValueError(f"x0 must have shape (batch, 2); got {tuple(x0.shape)}")
    if steps < 1 or dt <= 0:
        raise ValueError(f"need steps >= 1 and dt > 0; got steps={steps}, dt={dt}")
    out, x = [x0], x0
    for _ in range(steps):
        k1 = pendulum_field(x, damping)
        k2 = pendulum_field(x + 0.5 * dt * k1, damping)
        k3 = pendulum_field(x + 0.5 * dt * k2, damping)
        k4 = pendulum_field(x + dt * k3, damping)
        x = x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(x)
    return torch.stack(out, dim=1)


def pendulum_dataset(
    n: int, steps: int, *, dt: float = 0.1, damping: float = 0.2, max_angle: float = 2.5, seed: int = 0
) -> torch.Tensor:
    """(n, steps + 1, 2) float32 trajectories from theta_0 ~ U(-max_angle, max_angle), omega_0 ~ U(-1, 1)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.stack(
        [(2 * torch.rand(n, generator=g) - 1) * max_angle, 2 * torch.rand(n, generator=g) - 1], dim=-1
    ).double()  # (n, 2)
    substeps = 10  # integrate at dt / 10, sample every 10th step: the data are ~exact at dt
    fine = rk4_trajectories(x0, steps * substeps, dt / substeps, damping)  # (n, steps*10 + 1, 2)
    return fine[:, ::substeps].float()


def linearised_eigenvalues(dt: float, damping: float) -> torch.Tensor:
    """mu = exp(s dt), s = -c/2 + i sqrt(1 - c^2/4): the pendulum's linearisation at theta = 0, (1,) complex."""
    s = complex(-damping / 2, math.sqrt(max(1 - damping**2 / 4, 0.0)))
    return torch.tensor(
        [complex(math.exp(s.real * dt) * math.cos(s.imag * dt), math.exp(s.real * dt) * math.sin(s.imag * dt))]
    )


# --- the models --------------------------------------------------------------------------------------
def _mlp(d_in: int, width: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, d_out))


class KoopmanLRU(nn.Module):
    """encoder phi -> LRU driven by the impulse phi(x_0) -> decoder psi (module docstring)."""

    def __init__(self, d_lift: int = 32, d_state: int = 16, width: int = 64, r_min: float = 0.8, r_max: float = 0.999):
        super().__init__()
        self.encoder = _mlp(2, width, d_lift)
        self.lru = LRU(d_lift, d_state, r_min=r_min, r_max=r_max, max_phase=math.pi / 4, backend="naive")
        self.decoder = _mlp(d_lift, width, 2)

    def forward(self, x0: torch.Tensor, steps: int) -> torch.Tensor:
        """x0 (b, 2) -> predictions (b, steps + 1, 2) for t = 0..steps (t = 0 is the reconstruction)."""
        z0 = self.encoder(x0)  # (b, d_lift)
        u = torch.zeros(x0.shape[0], steps + 1, z0.shape[-1], dtype=z0.dtype)  # (b, steps+1, d_lift)
        u[:, 0] = z0
        return self.decoder(self.lru(u))  # (b, steps+1, 2)

    def eigenvalues(self) -> torch.Tensor:
        return self.lru.eigenvalues()


class ReservoirLRU(nn.Module):
    """Frozen random LRU driven by the observations; only the readout MLP trains (next-step prediction)."""

    lift: torch.Tensor  # (2, d_res) fixed random input map (a buffer)

    def __init__(
        self,
        d_res: int = 64,
        d_state: int = 64,
        width: int = 64,
        r_min: float = 0.9,
        r_max: float = 0.999,
        seed: int = 0,
    ):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        state = torch.get_rng_state()
        torch.manual_seed(seed)  # the LRU's own init draws from the global generator
        self.reservoir = LRU(d_res, d_state, r_min=r_min, r_max=r_max, backend="naive")
        torch.set_rng_state(state)
        self.register_buffer("lift", torch.randn(2, d_res, generator=g))  # (2, d_res) fixed input map
        self.reservoir.requires_grad_(False)
        self.readout = _mlp(d_res, width, 2)

    def features(self, x: torch.Tensor, state: torch.Tensor | None = None):
        """x (b, l, 2) observations -> reservoir features (b, l, d_res) and the final LRU state."""
        return self.reservoir(x @ self.lift, state, return_state=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher-forced one-step predictions: x (b, l, 2) -> x_hat (b, l, 2) of x[:, 1:] (last is beyond)."""
        return self.readout(self.features(x)[0])

    @torch.no_grad()
    def rollout(self, warmup: torch.Tensor, steps: int) -> torch.Tensor:
        """Closed loop: read ``warmup`` (b, w, 2), then feed back predictions: (b, steps, 2) after it."""
        feats, state = self.features(warmup)
        x = self.readout(feats[:, -1])  # (b, 2): prediction of the step after the warm-up
        preds = [x]
        for _ in range(steps - 1):
            y, state = self.reservoir.step(x @ self.lift, state)
            x = self.readout(y)
            preds.append(x)
        return torch.stack(preds, dim=1)


# --- training and evaluation -------------------------------------------------------------------------
@dataclass
class KoopmanConfig:
    """Sizes of the pendulum experiment (dt 0.1, damping 0.2: a few oscillations before it settles)."""

    n_train: int = 512
    n_test: int = 128
    train_horizon: int = 100
    test_horizon: int = 100
    warmup: int = 20
    dt: float = 0.1
    damping: float = 0.2
    max_angle: float = 2.5
    steps: int = 1500
    batch: int = 64
    lr: float = 3e-3
    seed: int = 0


def _adam_loop(params, loss_fn, steps: int, lr: float) -> list[float]:
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def train_koopman(model: KoopmanLRU, data: torch.Tensor, cfg: KoopmanConfig) -> list[float]:
    """Multi-step loss of Lusch et al. (prediction over ``train_horizon`` from random start times)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    h = cfg.train_horizon

    def loss_fn():
        idx = torch.randint(0, data.shape[0], (cfg.batch,), generator=g)
        t0 = torch.randint(0, data.shape[1] - h, (1,), generator=g).item()
        target = data[idx, t0 : t0 + h + 1]  # (batch, h+1, 2)
        return (model(target[:, 0], h) - target).pow(2).mean()

    return _adam_loop(model.parameters(), loss_fn, cfg.steps, cfg.lr)


def train_reservoir(model: ReservoirLRU, data: torch.Tensor, cfg: KoopmanConfig) -> list[float]:
    """Readout only: next-step prediction with teacher forcing on whole training trajectories."""
    g = torch.Generator().manual_seed(cfg.seed + 2)

    def loss_fn():
        x = data[torch.randint(0, data.shape[0], (cfg.batch,), generator=g)]  # (batch, T, 2)
        return (model(x[:, :-1]) - x[:, 1:]).pow(2).mean()

    return _adam_loop(model.readout.parameters(), loss_fn, cfg.steps, cfg.lr)


@torch.no_grad()
def horizon_rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMSE over trajectories and both coordinates at each horizon k: (b, k, 2) x2 -> (k,)."""
    return (pred - target).pow(2).mean(dim=(0, 2)).sqrt()


def koopman_experiment(cfg: KoopmanConfig | None = None, horizons: Sequence[int] = (1, 10, 25, 50, 100)) -> dict:
    """Train both models on the same pendulum data; RMSE vs horizon on held-out trajectories.

    Both predict ``test_horizon`` steps after time ``warmup``: the Koopman model from x at that time, the
    reservoir after reading the first ``warmup + 1`` observations. Persistence (x_k = x_0) is the floor
    every model must beat."""
    cfg = cfg or KoopmanConfig()
    torch.manual_seed(cfg.seed)
    span = cfg.warmup + cfg.test_horizon
    train = pendulum_dataset(cfg.n_train, span, dt=cfg.dt, damping=cfg.damping, max_angle=cfg.max_angle, seed=cfg.seed)
    test = pendulum_dataset(
        cfg.n_test, span, dt=cfg.dt, damping=cfg.damping, max_angle=cfg.max_angle, seed=cfg.seed + 100
    )
    start, future = test[:, cfg.warmup], test[:, cfg.warmup + 1 :]  # (b, 2), (b, H, 2)

    koop, res = KoopmanLRU(), ReservoirLRU(seed=cfg.seed)
    t = time.process_time()
    koop_losses = train_koopman(koop, train, cfg)
    koop_cpu = time.process_time() - t
    t = time.process_time()
    res_losses = train_reservoir(res, train, cfg)
    res_cpu = time.process_time() - t
    with torch.no_grad():
        err = {
            "koopman_lru": horizon_rmse(koop(start, cfg.test_horizon)[:, 1:], future),
            "frozen_lru_reservoir": horizon_rmse(res.rollout(test[:, : cfg.warmup + 1], cfg.test_horizon), future),
            "persistence": horizon_rmse(start[:, None].expand_as(future), future),
        }
    rows = [
        {"horizon": k, **{name: round(float(e[k - 1]), 4) for name, e in err.items()}}
        for k in horizons
        if k <= cfg.test_horizon
    ]
    return {
        "rows": rows,
        "errors": err,
        "eigenvalues": koop.eigenvalues(),
        "linearised": linearised_eigenvalues(cfg.dt, cfg.damping),
        "final_loss": {"koopman_lru": koop_losses[-1], "frozen_lru_reservoir": res_losses[-1]},
        "cpu_s": {"koopman_lru": round(koop_cpu, 1), "frozen_lru_reservoir": round(res_cpu, 1)},
        "config": cfg,
    }


def plot_koopman(path, result: dict) -> dict:
    """Two panels: RMSE vs horizon (log y) and the learned lambda on the unit disc with mu^a conj(mu)^b."""
    from torchssm.analysis.plots import _np, _unit_circle, legend, new_figure, save_figure

    fig, (ax_e, ax_z) = new_figure(2, 1)
    for name, e in result["errors"].items():
        ax_e.semilogy(range(1, e.numel() + 1), *_np(e), label=name.replace("_", " "))
    ax_e.set_xlabel("prediction horizon k (steps of dt)")
    ax_e.set_ylabel("RMSE (held-out trajectories)")
    legend(ax_e)
    _unit_circle(ax_z, shade=False)
    mu = complex(result["linearised"][0])
    lattice = [mu**a * mu.conjugate() ** b for a in range(4) for b in range(4) if 0 < a + b <= 3]
    ax_z.plot(
        [z.real for z in lattice],
        [z.imag for z in lattice],
        "x",
        color="tab:red",
        label="mu^a conj(mu)^b (linearisation)",
    )
    lam = result["eigenvalues"]
    ax_z.plot(*_np(lam.real, lam.imag), "o", ms=4, mfc="none", label="learned LRU lambda")
    ax_z.plot(*_np(lam.real, -lam.imag), "o", ms=4, mfc="none", color="tab:blue", alpha=0.4)
    ax_z.set_xlim(0.2, 1.05)  # the learned and linearised eigenvalues sit near z = 1
    ax_z.set_ylim(-0.6, 0.6)
    ax_z.set_title("learned lambda (and conjugates), near z = 1")
    legend(ax_z, loc="lower left")
    return {"path": save_figure(fig, path), "rows": result["rows"]}


__all__ = [
    "KoopmanConfig",
    "KoopmanLRU",
    "ReservoirLRU",
    "horizon_rmse",
    "koopman_experiment",
    "linearised_eigenvalues",
    "pendulum_dataset",
    "plot_koopman",
    "rk4_trajectories",
    "train_koopman",
    "train_reservoir",
]
