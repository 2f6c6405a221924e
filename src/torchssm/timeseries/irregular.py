"""Irregularly sampled sequences with missing values: a known continuous-time process, observed at random
times with dropouts, and SSMs that are told the time gaps.

Process: a linear SDE dx = A x dt + L dW (x in R^d), discretised *exactly* over any gap dt (Van Loan 1978,
"Computing integrals involving the matrix exponential", Sec. 4; Sarkka & Solin 2019, "Applied Stochastic
Differential Equations", Sec. 6.2):

    x(t + dt) = F(dt) x(t) + q,   F = expm(A dt),   q ~ N(0, Q(dt)),   Q = int_0^dt expm(A s) L L^T expm(A s)^T ds
    [[-A, L L^T], [0, A^T]] dt  --expm-->  [[., G], [0, F^T]],   Q = F G.

:class:`OUProcess` is the Ornstein-Uhlenbeck case (d = 1, A = -theta, L = sigma); :class:`DampedOscillator`
the stochastic damped spring (d = 2, position and velocity, A = [[0, 1], [-w^2, -2 zeta w]]).

Observations (:func:`irregular_dataset`): times of a Poisson process (gaps ~ Exponential(mean_gap)); at each
time the position plus white noise, missing with probability ``dropout`` (then value 0 and mask 0, as in
clinical series with missing labs). Inputs per step (2): [value * mask, mask]; gaps (b, n) given apart;
target: the noise-free position at each observation time (filtering). :func:`kalman_filter` with the true
model is the optimal (minimum MSE) filter, the floor any model can reach.

Gap-aware models: S5 with its per-step ``timescale`` (Smith et al. 2023, Sec. 6.3; dt_t = timescale_t dt) and
:class:`GapLRU`, an LRU whose transition is lambda^dt: for a continuous-time diagonal system with eigenvalue
log(lambda) per unit time, the exact transition over a gap dt is exp(dt log lambda) (Orvieto et al. 2023,
Sec. 3.1 relate the LRU to a discretised diagonal continuous system; the variable-gap form is S5's Sec. 6.3
applied to the LRU's exponential parameterisation). They are compared with the same networks that ignore
the gaps, and with ones that get the gap only as an extra input feature.
"""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.data.loaders import TensorDictDataset
from torchssm.layers.base import SSMLayer
from torchssm.layers.init import lru_ring_init
from torchssm.layers.registry import build_layer
from torchssm.ops.scan import linear_scan
from torchssm.timeseries.fit import write_json


# --- the process ------------------------------------------------------------------------------------------------
class LinearSDE:
    """dx = A x dt + L dW with exact discretisation over arbitrary gaps (see the module docstring)."""

    def __init__(self, A: torch.Tensor, L: torch.Tensor):
        A, L = torch.as_tensor(A, dtype=torch.float64), torch.as_tensor(L, dtype=torch.float64)
        if A.dim() != 2 or A.shape[0] != A.shape[1] or L.shape[0] != A.shape[0]:
            raise ValueError(f"A must be (d, d) and L (d, k); got {tuple(A.shape)} and {tuple(L.shape)}")
        if torch.linalg.eigvals(A).real.max() >= 0:
            raise ValueError("A must be stable (every eigenvalue with a negative real part)")
        self.A, self.L = A, L

    @property
    def dim(self) -> int:
        return self.A.shape[0]

    def transition(self, dt: torch.Tensor):
        """dt (...,) -> F (..., d, d), Q (..., d, d) by Van Loan's block matrix exponential."""
        d = self.dim
        M = torch.zeros(2 * d, 2 * d, dtype=torch.float64)
        M[:d, :d], M[:d, d:], M[d:, d:] = -self.A, self.L @ self.L.T, self.A.T
        E = torch.linalg.matrix_exp(dt.to(torch.float64)[..., None, None] * M)  # (..., 2d, 2d)
        Fm = E[..., d:, d:].transpose(-1, -2)
        Q = Fm @ E[..., :d, d:]
        return Fm, 0.5 * (Q + Q.transpose(-1, -2))

    def stationary_cov(self) -> torch.Tensor:
        """P with A P + P A^T + L L^T = 0 (the limit of Q(dt) as dt -> infinity), by the Kronecker form
        (I (x) A + A (x) I) vec(P) = -vec(L L^T)."""
        d, eye = self.dim, torch.eye(self.dim, dtype=torch.float64)
        K = torch.kron(eye, self.A) + torch.kron(self.A, eye)
        P = torch.linalg.solve(K, -(self.L @ self.L.T).reshape(-1)).reshape(d, d)
        return 0.5 * (P + P.T)

    def sample(self, dt: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """States (b, n, d) at the times cumsum(dt) (b, n), from the stationary distribution at t = 0."""
        gen = torch.Generator().manual_seed(int(seed))
        b, n = dt.shape
        Fm, Q = self.transition(dt)  # (b, n, d, d)
        chol = torch.linalg.cholesky(Q + 1e-12 * torch.eye(self.dim, dtype=torch.float64))
        x = torch.linalg.cholesky(self.stationary_cov()) @ torch.randn(
            b, self.dim, 1, generator=gen, dtype=torch.float64
        )
        eps = torch.randn(b, n, self.dim, 1, generator=gen, dtype=torch.float64)
        out = []
        for t in range(n):
            x = Fm[:, t] @ x + chol[:, t] @ eps[:, t]
            out.append(x[..., 0])
        return torch.stack(out, dim=1)  # (b, n, d)


class OUProcess(LinearSDE):
    """Ornstein-Uhlenbeck dx = -theta x dt + sigma dW (Uhlenbeck & Ornstein 1930); stationary var sigma^2/(2 theta)."""

    def __init__(self, theta: float = 1.0, sigma: float = math.sqrt(2.0)):
        super().__init__(
            torch.tensor([[-float(theta)]], dtype=torch.float64), torch.tensor([[float(sigma)]], dtype=torch.float64)
        )

    def sample(self, dt: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Values (b, n)."""
        return super().sample(dt, seed)[..., 0]


class DampedOscillator(LinearSDE):
    """x'' = -w^2 x - 2 zeta w x' + sigma white noise: state (position, velocity)."""

    def __init__(self, omega: float = math.pi, zeta: float = 0.1, sigma: float = math.sqrt(0.4 * math.pi**3)):
        """Defaults: period 2 (w = pi), light damping zeta = 0.1, and sigma^2 = 4 zeta w^3, which makes the
        stationary position variance sigma^2 / (4 zeta w^3) = 1 (chosen for this benchmark)."""
        super().__init__(
            torch.tensor([[0.0, 1.0], [-(omega**2), -2 * zeta * omega]], dtype=torch.float64),
            torch.tensor([[0.0], [float(sigma)]], dtype=torch.float64),
        )


# --- observations ----------------------------------------------------------------------------------------------
def irregular_dataset(
    n: int,
    length: int = 100,
    *,
    process: LinearSDE | None = None,
    mean_gap: float = 0.2,
    dropout: float = 0.2,
    noise: float = 0.1,
    seed: int = 0,
) -> TensorDictDataset:
    """{"inputs": (n, length, 2) [value * mask, mask], "dt": (n, length) gaps (the first from t = 0),
    "targets": (n, length, 1) noise-free position, "values": (n, length) noisy observations} (float32)."""
    process = DampedOscillator() if process is None else process
    if n < 1 or length < 1 or mean_gap <= 0 or not 0 <= dropout < 1 or noise < 0:
        raise ValueError(
            f"need n, length >= 1, mean_gap > 0, 0 <= dropout < 1, noise >= 0; got {n}, {length}, "
            f"{mean_gap}, {dropout}, {noise}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    dt = -mean_gap * torch.log1p(-torch.rand(n, length, generator=gen, dtype=torch.float64))  # Exponential
    states = process.sample(dt, seed=int(seed) + 1)
    position = states[..., 0] if states.dim() == 3 else states  # (n, length)
    values = position + noise * torch.randn(n, length, generator=gen, dtype=torch.float64)
    mask = (torch.rand(n, length, generator=gen) >= dropout).double()
    inputs = torch.stack([values * mask, mask], dim=-1)
    return TensorDictDataset(
        inputs=inputs.float(), dt=dt.float(), targets=position[..., None].float(), values=values.float()
    )


def kalman_filter(
    process: LinearSDE, values: torch.Tensor, mask: torch.Tensor, dt: torch.Tensor, noise: float
) -> torch.Tensor:
    """Filtered position E[x_t | observations <= t] (b, n) of the true model (Kalman 1960): the optimal filter."""
    b, n = values.shape
    d = process.dim
    Fm, Q = process.transition(dt.double())
    H = torch.zeros(1, d, dtype=torch.float64)
    H[0, 0] = 1.0
    m = torch.zeros(b, d, 1, dtype=torch.float64)
    P = process.stationary_cov().expand(b, d, d)
    out = []
    for t in range(n):
        m, P = Fm[:, t] @ m, Fm[:, t] @ P @ Fm[:, t].transpose(-1, -2) + Q[:, t]
        S = (H @ P @ H.T) + noise**2  # (b, 1, 1)
        K = P @ H.T / S  # (b, d, 1)
        seen = mask[:, t].double()[:, None, None]
        m = m + seen * K * (values[:, t].double()[:, None, None] - H @ m)
        P = P - seen * (K @ H @ P)
        out.append(m[:, 0, 0])
    return torch.stack(out, dim=1)


# --- the gap-aware LRU ------------------------------------------------------------------------------------------
class GapLRU(SSMLayer):
    """LRU with a gap-dependent transition: h_t = lambda^dt_t h_{t-1} + gamma(dt_t) B x_t, y_t = Re(C h_t) + D x_t.

    lambda^dt = exp(dt (-exp(nu) + i exp(theta))); gamma(dt) = gamma sqrt((1 - |lambda|^(2 dt)) / (1 - |lambda|^2))
    keeps the LRU's normalisation (the stationary state variance of unit white input does not depend on the
    gap). Parameters, their names and initialisation are the LRU's (Orvieto et al. 2023, Sec. 3 and App. A;
    :class:`torchssm.layers.lru.LRU`: ring init of lambda, gamma = sqrt(1 - |lambda|^2), Glorot-like B, C), so
    an LRU's state dict loads here and, with dt = 1 (or ``dt=None``), the outputs are the LRU's.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 2 * math.pi,
        lr_factor: float = 0.5,
    ):
        super().__init__(d_model)
        h, n = d_model, d_state
        self.d_state = d_state
        nu_log, theta_log = lru_ring_init(n, r_min, r_max, max_phase, dtype=torch.float64)  # (n,), (n,)
        self.nu_log = nn.Parameter(nu_log.float())
        self.theta_log = nn.Parameter(theta_log.float())
        self.gamma_log = nn.Parameter((0.5 * torch.log(-torch.expm1(-2 * torch.exp(nu_log)))).float())
        self.B_re = nn.Parameter(torch.randn(n, h) / math.sqrt(2 * h))  # (n, h)
        self.B_im = nn.Parameter(torch.randn(n, h) / math.sqrt(2 * h))
        self.C_re = nn.Parameter(torch.randn(h, n) / math.sqrt(n))  # (h, n)
        self.C_im = nn.Parameter(torch.randn(h, n) / math.sqrt(n))
        self.D = nn.Parameter(torch.randn(h))
        # the LRU's optimizer convention (App. D.2): recurrent parameters at lr * lr_factor, no weight decay
        self.optim_overrides = {
            k: {"lr_scale": float(lr_factor), "weight_decay": 0.0}
            for k in ("nu_log", "theta_log", "gamma_log", "B_re", "B_im")
        }

    def init_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        real = self.nu_log.dtype if dtype is None else dtype
        cdtype = torch.complex128 if real == torch.float64 else torch.complex64
        return torch.zeros(batch, self.d_state, device=self.nu_log.device if device is None else device, dtype=cdtype)

    def _coefficients(self, dt: torch.Tensor):
        """dt (...) -> lambda^dt (..., n) complex and the input map gamma(dt) B as (..., n, h) complex."""
        nu, theta = torch.exp(self.nu_log), torch.exp(self.theta_log)  # (n,)
        dtp = dt.to(nu.dtype)[..., None]  # (..., 1)
        lam_dt = torch.exp(torch.complex(-nu * dtp, theta * dtp))  # (..., n)
        gamma = torch.exp(self.gamma_log) * torch.sqrt(-torch.expm1(-2 * nu * dtp) / -torch.expm1(-2 * nu))  # (..., n)
        return lam_dt, gamma

    def _readout(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        C = torch.complex(self.C_re, self.C_im)  # (h, n)
        return (h @ C.T).real + self.D * x

    def forward(self, x: torch.Tensor, state=None, *, return_state: bool = False, dt=None):
        """x (b, l, h), dt (b, l) > 0 gaps (None: every gap 1, the plain LRU) -> y (b, l, h)."""
        self._check_forward(x, state)
        if dt is None:
            dt = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
        if tuple(dt.shape) != tuple(x.shape[:2]):
            raise ValueError(f"dt must have shape (batch, length)={tuple(x.shape[:2])}; got {tuple(dt.shape)}")
        xp = x.to(self.nu_log.dtype)
        lam_dt, gamma = self._coefficients(dt)  # (b, l, n) x 2
        B = torch.complex(self.B_re, self.B_im)  # (n, h)
        bu = (xp.to(B.dtype) @ B.T) * gamma  # (b, l, n)
        h = linear_scan(lam_dt, bu, state)  # (b, l, n)
        y = self._readout(h, xp).to(x.dtype)
        return (y, h[:, -1]) if return_state else y

    def step(self, x_t: torch.Tensor, state, *, dt=None):
        """One observation x_t (b, h) after a gap dt (b,) -> (y_t, new state (b, n))."""
        self._check_step(x_t, state)
        if dt is None:
            dt = torch.ones(x_t.shape[0], dtype=x_t.dtype, device=x_t.device)
        xp = x_t.to(self.nu_log.dtype)
        lam_dt, gamma = self._coefficients(dt)  # (b, n)
        B = torch.complex(self.B_re, self.B_im)
        h = lam_dt * state + (xp.to(B.dtype) @ B.T) * gamma
        return self._readout(h, xp).to(x_t.dtype), h


def gap_lru_reference(layer: GapLRU, x: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """The GapLRU recurrence as a plain loop over time, written from the formulas (for tests)."""
    nu, theta = torch.exp(layer.nu_log), torch.exp(layer.theta_log)
    lam = torch.exp(torch.complex(-nu, theta))  # (n,)
    gamma = torch.exp(layer.gamma_log)
    B = torch.complex(layer.B_re, layer.B_im)
    C = torch.complex(layer.C_re, layer.C_im)
    h = torch.zeros(x.shape[0], layer.d_state, dtype=lam.dtype)
    ys = []
    for t in range(x.shape[1]):
        d = dt[:, t, None].to(nu.dtype)
        lam_d = torch.exp(d * torch.complex(-nu, theta))  # the continuous-time eigenvalue -nu + i theta, not
        # the principal power lam ** d (which wraps the phase theta into (-pi, pi])
        g = gamma * torch.sqrt((1 - lam.abs() ** (2 * d)) / (1 - lam.abs() ** 2))
        h = lam_d * h + g * (x[:, t].to(B.dtype) @ B.T)
        ys.append((h @ C.T).real + layer.D * x[:, t])
    return torch.stack(ys, dim=1)


# --- models -----------------------------------------------------------------------------------------------------
GAP_MODES = ("ignore", "feature", "timescale")


class GapSSM(nn.Module):
    """Encoder -> n pre-norm residual blocks (LayerNorm, SSM, GELU, GLU) -> per-step head, as the package's
    residual block (:mod:`torchssm.models.blocks`), with the gaps routed by ``gap_mode``:

    * ``"ignore"``: the SSM never sees dt (a regular-sequence model);
    * ``"feature"``: dt is an extra input feature (appended to the inputs);
    * ``"timescale"``: dt / mean_gap scales each step's transition (S5: ``timescale``; ``gap_lru``: lambda^dt).
    """

    def __init__(
        self,
        layer: str = "gap_lru",
        d_input: int = 2,
        d_output: int = 1,
        d_model: int = 32,
        n_layers: int = 2,
        d_state: int = 16,
        gap_mode: str = "timescale",
        mean_gap: float = 1.0,
    ):
        super().__init__()
        if gap_mode not in GAP_MODES:
            raise ValueError(f"unknown gap_mode {gap_mode!r}; expected one of {list(GAP_MODES)}")
        if layer not in ("gap_lru", "s5"):
            raise ValueError(f"layer must be 'gap_lru' or 's5'; got {layer!r}")
        self.gap_mode, self.mean_gap, self.layer = gap_mode, float(mean_gap), layer
        self.encoder = nn.Linear(d_input + (gap_mode == "feature"), d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.ssms = nn.ModuleList(
            GapLRU(d_model, d_state, r_min=0.5, r_max=0.99)
            if layer == "gap_lru"
            else build_layer("s5", d_model, d_state=d_state)
            for _ in range(n_layers)
        )
        self.glus = nn.ModuleList(nn.Linear(d_model, 2 * d_model) for _ in range(n_layers))
        self.head = nn.Linear(d_model, d_output)

    def forward(self, inputs: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """inputs (b, n, d_input), dt (b, n) -> (b, n, d_output)."""
        rel = dt / self.mean_gap  # (b, n): gaps in units of the mean gap
        if self.gap_mode == "feature":
            inputs = torch.cat([inputs, rel[..., None].to(inputs.dtype)], dim=-1)
        x = self.encoder(inputs)
        for norm, ssm, glu in zip(self.norms, self.ssms, self.glus):
            z = norm(x)
            if self.gap_mode == "timescale":
                z = ssm(z, dt=rel) if self.layer == "gap_lru" else ssm(z, timescale=rel)
            else:
                z = ssm(z)
            x = x + F.glu(glu(F.gelu(z)), dim=-1)
        return self.head(x)


def run(
    *,
    steps: int = 400,
    n_train: int = 512,
    n_val: int = 128,
    n_test: int = 256,
    length: int = 100,
    width: int = 32,
    lrs=(1e-3, 3e-3),
    seed: int = 0,
    out=None,
) -> dict:
    """Gap-aware vs gap-ignoring vs gap-as-feature (GapLRU and S5) on the damped oscillator; Kalman floor."""
    from torchssm.timeseries.fit import count_parameters, evaluate_loss, fit_regression

    torch.set_num_threads(1)
    proc, mean_gap, noise = DampedOscillator(), 0.2, 0.3
    sets = [
        irregular_dataset(k, length, process=proc, mean_gap=mean_gap, noise=noise, seed=100 * seed + i)
        for i, k in enumerate((n_train, n_val, n_test))
    ]
    train, val, test = sets

    def loss_of(model, batch):
        return F.mse_loss(model(batch["inputs"], batch["dt"]), batch["targets"])

    t = test.tensors
    kf = kalman_filter(proc, t["values"], t["inputs"][..., 1], t["dt"], noise)
    rows = [
        {
            "model": "Kalman filter (true model)",
            "test_mse": float((kf - t["targets"][..., 0].double()).square().mean()),
            "params": 0,
        },
        {"model": "predict 0", "test_mse": float(t["targets"].square().mean()), "params": 0},
    ]
    for layer in ("gap_lru", "s5"):
        for mode in GAP_MODES:
            best = None
            for lr in lrs:
                torch.manual_seed(seed)
                model = GapSSM(layer, d_model=width, gap_mode=mode, mean_gap=mean_gap)
                fit = fit_regression(model, train, val, loss_of, steps=steps, lr=lr, seed=seed, batch_size=32)
                if best is None or fit["val"] < best[0]["val"]:
                    best = (fit, model, lr)
            fit, model, lr = best
            row = {
                "model": f"{layer} ({mode})",
                "lr": lr,
                "val_mse": fit["val"],
                "test_mse": evaluate_loss(model, test, loss_of),
                "params": count_parameters(model),
                "train_cpu_s_per_step": fit["cpu_s"] / steps,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "process": "damped oscillator w = pi, zeta = 0.1, unit stationary position variance",
        "mean_gap": mean_gap,
        "dropout": 0.2,
        "noise": noise,
        "length": length,
        "steps": steps,
        "lrs": list(lrs),
        "seed": seed,
        "rows": rows,
    }
    if out:
        write_json(out, result)
    return result


def format_table(result: dict) -> str:
    lines = ["| model (gaps) | params | best lr | test MSE |", "|---|---|---|---|"]
    for r in result["rows"]:
        lr = f"{r['lr']:g}" if "lr" in r else ""
        lines.append(f"| {r['model']} | {r['params']} | {lr} | {r['test_mse']:.4f} |")
    return "\n".join(lines)
