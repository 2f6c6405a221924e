"""HiPPO bases in closed form, checked against the SSMs' impulse responses.

References:
  [HTTYH] Gu, Johnson, Timalsina, Rudra, Re 2022, "How to Train Your HiPPO: State Space Models with
          Generalized Orthogonal Basis Projections", ICLR 2023: the impulse response e^{tA} B of
          time-invariant HiPPO-LegS is the exponentially-warped Legendre basis (Sec. 3.1, Thm. on
          LegS as a time-invariant SSM; theorem number UNVERIFIED), FouT's is the truncated Fourier
          basis (Sec. 3.3).
  [S4D]   Gu, Gupta, Goel, Re 2022, "On the Parameterization and Initialization of Diagonal State
          Space Models", NeurIPS: S4D-LegS keeps only the normal part A + P P^T of S4-LegS
          (diagonalised) with B/2; it approximates S4-LegS as N grows (Sec. 4, the theorem on
          S4D-LegS; number and exact mode of convergence UNVERIFIED).
  [PTD]   Yu, Nigmetov, Morozov, Mahoney, Erichson 2024, "Robustifying State-space Models for Long
          Sequences via Approximate Diagonalization", ICLR: Sec. 3.2 "input-wise convergence" of the
          diagonal initialisation (outputs for smooth inputs converge, App. F.2) and Sec. 3.3
          "system-wise divergence" (not on the unit impulse, App. F.3).

What we measure (docs/theory.md, tests/theory/test_hippo.py): S4D-LegS's OUTPUTS for a smooth input
u(t) = e^{-t} converge to S4-LegS's (error about halves per doubling of N), while its IMPULSE RESPONSES
do not (relative error stays O(1) up to N = 512) -- the [PTD] picture; the [S4D] claim holds in the
input-wise sense only.

State matrices come from :func:`torchssm.layers.init.hippo` (the library's single source). With that
FouT matrix (frequencies pi k, i.e. window 2) the basis is (1/2) [1, 0, sqrt2 cos(pi t), sqrt2 sin(pi t),
sqrt2 cos(2 pi t), ...] on [0, 2): the truncated Fourier basis of [HTTYH] on a window of length 2, the
second state unused (its row and column of A are zero, B_1 = 0). Found numerically here and tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from torchssm.layers.init import hippo, hippo_low_rank, normal_eig


def impulse_response(A: torch.Tensor, B: torch.Tensor, t_max: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Basis functions K(t) = e^{tA} B on the uniform grid t_i = i t_max / steps (i = 0..steps),
    exact up to rounding (powers of one matrix exponential). Returns t (steps+1,), K (steps+1, n)."""
    if steps < 1 or t_max <= 0:
        raise ValueError(f"need steps >= 1 and t_max > 0; got steps={steps}, t_max={t_max}")
    t = torch.linspace(0.0, t_max, steps + 1, dtype=torch.float64)
    E = torch.linalg.matrix_exp((t_max / steps) * A.to(torch.float64))
    k = B.to(torch.float64)
    out = []
    for _ in range(steps + 1):
        out.append(k)
        k = E @ k
    return t, torch.stack(out)


def legendre(n: int, x: torch.Tensor) -> torch.Tensor:
    """Legendre polynomials P_0..P_{n-1} at x (Bonnet's recursion): (*x.shape, n)."""
    P = [torch.ones_like(x), x]
    for k in range(1, n - 1):
        P.append(((2 * k + 1) * x * P[k] - k * P[k - 1]) / (k + 1))
    return torch.stack(P[:n], dim=-1)


def legs_basis(n: int, t: torch.Tensor) -> torch.Tensor:
    """Closed form of HiPPO-LegS's impulse response ([HTTYH] Sec. 3.1):
    K_k(t) = sqrt(2k+1) e^{-t} P_k(2 e^{-t} - 1). t (T,) -> (T, n)."""
    w = torch.exp(-t.to(torch.float64))
    return torch.sqrt(2 * torch.arange(n, dtype=torch.float64) + 1) * w[:, None] * legendre(n, 2 * w - 1)


def fout_basis(n: int, t: torch.Tensor) -> torch.Tensor:
    """Closed form (limit N -> inf) of the impulse response of ``hippo("fout", n)`` (module docstring):
    window [0, 2), K_0 = 1/2, K_1 = 0, K_{2k} = cos(pi k t)/sqrt2, K_{2k+1} = sin(pi k t)/sqrt2."""
    t = t.to(torch.float64)
    K = torch.zeros(t.shape[0], n, dtype=torch.float64)
    K[:, 0] = 0.5
    for j in range(2, n):
        k = j // 2
        K[:, j] = (torch.cos if j % 2 == 0 else torch.sin)(math.pi * k * t) / math.sqrt(2.0)
    return K * (t < 2.0)[:, None]


def s4d_legs_basis(n: int, t: torch.Tensor) -> torch.Tensor:
    """Impulse response of S4D-LegS, the diagonal restriction of S4-LegS ([S4D] Sec. 4): the normal
    part A + P P^T = V diag(W) V^* kept in its eigenbasis, input B/2, mapped back to the LegS
    coordinates: K(t) = Re(V e^{t W} V^* B / 2). t (T,) -> (T, n)."""
    A, B = hippo("legs", n)
    P = hippo_low_rank("legs", n)
    W, V = normal_eig(A + P.T @ P, conj_sym=False)  # (n,), (n, n) unitary
    Bt = V.conj().T @ (0.5 * B).to(V.dtype)  # (n,) input in the eigenbasis
    modes = torch.exp(t.to(torch.float64)[:, None] * W[None, :]) * Bt  # (T, n) diagonal SSM states
    return (modes @ V.T).real


def s4d_legs_kernel_error(n: int, t_max: float = 8.0, steps: int = 160, first: int = 4) -> float:
    """Relative L2 error, over t in [0, t_max] and the first ``first`` basis functions, between
    S4D-LegS's and S4-LegS's impulse responses at state size n ([S4D]'s claim: -> 0 as n grows)."""
    A, B = hippo("legs", n)
    t, K = impulse_response(A, B, t_max, steps)
    Kd = s4d_legs_basis(n, t)
    return float((Kd[:, :first] - K[:, :first]).norm() / K[:, :first].norm())


def smooth_input_response(A: torch.Tensor, B: torch.Tensor, rate: float, t_max: float, steps: int) -> torch.Tensor:
    """States x(t) of x' = A x + B u, x(0) = 0, for u(t) = e^{-rate t}, exactly: the augmented system
    [x; u]' = [[A, B], [0, -rate]] [x; u] from [0; 1]. Returns (steps+1, n)."""
    n = A.shape[0]
    M = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    M[:n, :n], M[:n, n], M[n, n] = A.to(torch.float64), B.to(torch.float64), -rate
    start = torch.zeros(n + 1, dtype=torch.float64)
    start[n] = 1.0
    return impulse_response(M, start, t_max, steps)[1][:, :n]


def s4d_legs_output_error(n: int, rate: float = 1.0, t_max: float = 8.0, steps: int = 80, first: int = 4) -> float:
    """Relative L2 error between S4D-LegS's and S4-LegS's first ``first`` state coordinates driven
    by u(t) = e^{-rate t} ([PTD] Sec. 3.2's input-wise convergence). S4D-LegS is run as the normal
    matrix A + P P^T with B/2 in LegS coordinates (equal to its diagonal form, :func:`s4d_legs_basis`)."""
    A, B = hippo("legs", n)
    P = hippo_low_rank("legs", n)
    X = smooth_input_response(A, B, rate, t_max, steps)
    Xd = smooth_input_response(A + P.T @ P, 0.5 * B, rate, t_max, steps)
    return float((Xd[:, :first] - X[:, :first]).norm() / X[:, :first].norm())


def s4d_legs_error_curve(sizes: Sequence[int] = (16, 32, 64, 128, 256, 512)) -> list[dict]:
    """[{"n", "output_error", "impulse_error"}] for the plot / table."""
    return [
        {"n": n, "output_error": s4d_legs_output_error(n), "impulse_error": s4d_legs_kernel_error(n)} for n in sizes
    ]


def plot_s4d_legs_error(path: str, sizes: Sequence[int] = (16, 32, 64, 128, 256, 512)) -> dict:
    """Plot kernel error vs N (log-log) to ``path``; returns {"path", "rows"}."""
    import matplotlib.ticker

    from torchssm.analysis.plots import new_figure, save_figure

    rows = s4d_legs_error_curve(sizes)
    fig, axes = new_figure()
    ax = axes[0]
    ns = [r["n"] for r in rows]
    ax.loglog(ns, [r["output_error"] for r in rows], "o-", label="output, u(t) = exp(-t)")
    ax.loglog(ns, [r["impulse_error"] for r in rows], "s--", label="impulse response")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("state size N")
    ax.set_ylabel("relative L2 error (first 4 states)")
    ax.set_title("S4D-LegS vs S4-LegS")
    ax.legend()
    return {"path": save_figure(fig, path), "rows": rows}


__all__ = [
    "fout_basis",
    "impulse_response",
    "legendre",
    "legs_basis",
    "plot_s4d_legs_error",
    "s4d_legs_basis",
    "s4d_legs_error_curve",
    "s4d_legs_kernel_error",
    "s4d_legs_output_error",
    "smooth_input_response",
]
