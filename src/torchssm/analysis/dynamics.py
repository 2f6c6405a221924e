"""The spring-mass-damper system of the LRU article, as pure functions (the numbers behind the plots).

Newton's second law m x'' + c x' + k x = f(t) in state-space form, state s = (x, x'):

    s' = A s + B f,   A = [[0, 1], [-k/m, -c/m]],   B = [[0], [1/m]]
    eigenvalues  lambda = (-c +- sqrt(c^2 - 4 m k)) / (2 m),   damping ratio  zeta = c / (2 sqrt(m k))

Re(lambda) = -c / (2m): positive damping (c > 0) is stable, negative damping explodes. Sampled with
step dt, the discrete system s_{n+1} = A_bar s_n + B_bar f_n has eigenvalues
    ZOH:       z = exp(lambda dt)                                (exact for piecewise-constant f)
    bilinear:  z = (1 + lambda dt / 2) / (1 - lambda dt / 2)     (Tustin; S4, Gu et al. 2022, Eq. 3)
and both map the stable half-plane Re(lambda) < 0 into the unit disk |z| < 1.

Source: "Structured State Space Sequence Models" (shared/seeds/000), sections "The spring mass damper
system" and "Designing linear recurrent unit" (Figures 3-5: the aa-vs-ab demo). The article gives no
numeric values for its figures; the defaults below are chosen to reproduce their qualitative shape.
All functions work in float64 and return tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchssm.layers.discretize import discretize_dense, discretize_diag

F64 = torch.float64


def smd_matrices(m: float = 1.0, k: float = 1.0, c: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (2, 2), B (2, 1)) of the spring-mass-damper in state (position, velocity)."""
    if m <= 0 or k < 0:
        raise ValueError(f"need mass m > 0 and spring constant k >= 0; got m={m}, k={k}")
    a = torch.tensor([[0.0, 1.0], [-k / m, -c / m]], dtype=F64)
    b = torch.tensor([[0.0], [1.0 / m]], dtype=F64)
    return a, b


def smd_eigenvalues(m: float = 1.0, k: float = 1.0, c: float = 0.2) -> torch.Tensor:
    """The two continuous eigenvalues (-c +- sqrt(c^2 - 4mk)) / 2m, complex128 (2,), sorted by imag."""
    disc = torch.tensor(c * c - 4 * m * k, dtype=torch.complex128).sqrt()
    return torch.stack([(-c - disc) / (2 * m), (-c + disc) / (2 * m)])


def damping_ratio(m: float = 1.0, k: float = 1.0, c: float = 0.2) -> float:
    """zeta = c / (2 sqrt(m k)): < 1 under-damped (oscillates), 1 critical, > 1 over-damped, < 0 unstable."""
    return c / (2.0 * (m * k) ** 0.5)


def eigenvalue_locus(cs: Sequence[float], m: float = 1.0, k: float = 1.0) -> torch.Tensor:
    """Eigenvalues as the damping c sweeps ``cs`` (root locus): complex128 (len(cs), 2)."""
    return torch.stack([smd_eigenvalues(m, k, c) for c in cs])


def discretize(a: torch.Tensor, b: torch.Tensor, dt: float, method: str = "zoh") -> tuple[torch.Tensor, torch.Tensor]:
    """Dense (A (n, n), B (n, p)) -> (A_bar, B_bar) by "zoh" or "bilinear" (:mod:`torchssm.layers.discretize`)."""
    return discretize_dense(torch.tensor(dt, dtype=F64), a, b, method)


def discrete_eigenvalues(lam: torch.Tensor, dt: float, method: str = "zoh") -> torch.Tensor:
    """Map continuous eigenvalues to discrete ones: "zoh" exp(lam dt), "bilinear" (1+lam dt/2)/(1-lam dt/2)."""
    lam = lam.to(torch.complex128)
    return discretize_diag(torch.tensor(dt, dtype=F64), lam, torch.ones_like(lam), method)[0]


def simulate(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, dt: float, s0=None) -> torch.Tensor:
    """Exact response to a piecewise-constant input: u (T,) or (T, p) -> states (T + 1, n), s_0 first.

    s_{t+1} = A_bar s_t + B_bar u_t with the ZOH pair (exact for inputs held over each dt).
    """
    a_bar, b_bar = discretize(a, b, dt, "zoh")
    u = u.to(F64).reshape(u.shape[0], -1)  # (T, p)
    s = torch.zeros(a.shape[0], dtype=F64) if s0 is None else torch.as_tensor(s0, dtype=F64)
    out = [s]
    for u_t in u:
        s = a_bar @ s + b_bar @ u_t
        out.append(s)
    return torch.stack(out)  # (T + 1, n)


def damping_responses(
    zetas: Sequence[float] = (-0.05, 0.1, 0.5, 1.0, 2.0),
    omega_n: float = 1.0,
    t_end: float = 30.0,
    dt: float = 0.05,
) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """Free response x(t) from x(0) = 1, x'(0) = 0 for each damping ratio (m = 1, k = omega_n^2).

    Returns (t (T + 1,), {zeta: x (T + 1,)}). zeta < 0 grows, 0 < zeta < 1 oscillates inside a
    decaying envelope exp(-zeta omega_n t), zeta >= 1 returns to 0 without crossing it.
    """
    steps = int(round(t_end / dt))
    t = torch.arange(steps + 1, dtype=F64) * dt
    out = {}
    for zeta in zetas:
        a, b = smd_matrices(1.0, omega_n**2, 2 * zeta * omega_n)
        out[zeta] = simulate(a, b, torch.zeros(steps), dt, s0=[1.0, 0.0])[:, 0]
    return t, out


def pulse_train(
    tokens: Sequence[float], interval: float = 10.0, width: float = 1.0, t_end: float = 30.0, dt: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """The article's Figure 3: token i is a rectangular pulse of height tokens[i] at t = i * interval.

    Returns (t (T,), u (T,)) sampled every dt (u held constant over each step).
    """
    steps = int(round(t_end / dt))
    t = torch.arange(steps, dtype=F64) * dt
    u = torch.zeros(steps, dtype=F64)
    for i, value in enumerate(tokens):
        start = i * interval
        u[(t >= start - 1e-9) & (t < start + width - 1e-9)] = value
    return t, u


# Token embeddings of the demo: a = +1, b = -1 (the article, Figures 3-5).
TOKENS = {"a": 1.0, "b": -1.0}
# Damping nu = -Re(lambda) of each demo system (illustrative; the article names the regimes only).
DEMO_DAMPING = {"low damping": 0.05, "high damping": 1.0, "negative damping": -0.05}


def information_propagation(
    damping: dict[str, float] = DEMO_DAMPING,
    sequences: Sequence[str] = ("aa", "ab"),
    omega: float = 1.0,
    interval: float = 10.0,
    width: float = 1.0,
    t_end: float = 30.0,
    dt: float = 0.01,
) -> dict:
    """The aa-vs-ab demo: feed each token sequence as pulses into systems with eigenvalues -nu +- i omega.

    Each system is a spring-mass-damper with m = 1, c = 2 nu, k = nu^2 + omega^2 (so Re(lambda) = -nu,
    the LRU's nu of lambda = exp(-nu + i theta)). Returns
        {"t": (T + 1,), "inputs": {seq: u (T,)},
         "response": {label: {seq: x (T + 1,)}}, "final": {label: {seq: state (2,)}},
         "separation": {label: |s_aa(t_end) - s_ab(t_end)|}}
    Low damping keeps the sequences apart at t_end, high damping forgets them (both states ~0),
    negative damping grows without bound.
    """
    inputs = {}
    for seq in sequences:
        t, u = pulse_train([TOKENS[ch] for ch in seq], interval, width, t_end, dt)
        inputs[seq] = u
    t_states = torch.cat([t, t[-1:] + dt])
    response, final, separation = {}, {}, {}
    for label, nu in damping.items():
        a, b = smd_matrices(1.0, nu * nu + omega * omega, 2.0 * nu)
        states = {seq: simulate(a, b, inputs[seq], dt) for seq in sequences}  # (T + 1, 2) each
        response[label] = {seq: s[:, 0] for seq, s in states.items()}
        final[label] = {seq: s[-1] for seq, s in states.items()}
        if len(sequences) == 2:
            s1, s2 = (final[label][seq] for seq in sequences)
            separation[label] = float(torch.linalg.vector_norm(s1 - s2))
    return {
        "t": t_states,
        "inputs": inputs,
        "response": response,
        "final": final,
        "separation": separation,
        "damping": dict(damping),
    }
