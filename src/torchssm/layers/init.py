"""Initialisers for SSM parameters: small pure functions returning tensors.

Ring init (LRU): Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences", Lemma 3.2: sampling |lambda|^2 ~ U[r_min^2, r_max^2] and arg(lambda) ~ U[0, max_phase]
gives eigenvalues uniform over the ring's area.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch


def lru_ring_init(
    n: int,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    *,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sample n eigenvalues uniformly on the ring r_min <= |lambda| <= r_max, 0 <= arg < max_phase.

    Returns ``(nu_log, theta_log)`` of shape (n,), the LRU's exponential parameterisation
    lambda = exp(-exp(nu_log) + i exp(theta_log)):
        u1, u2 ~ U[0, 1];  nu = -1/2 log(u1 (r_max^2 - r_min^2) + r_min^2);  theta = max_phase u2.
    """
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"ring init needs 0 <= r_min < r_max <= 1; got r_min={r_min}, r_max={r_max}")
    if not 0.0 < max_phase <= 2 * math.pi:
        raise ValueError(f"max_phase must be in (0, 2*pi]; got {max_phase}")
    u1 = torch.rand(n, generator=generator, dtype=torch.float64)
    u2 = torch.rand(n, generator=generator, dtype=torch.float64)
    # clamps keep nu_log finite at the edges: |lambda| = 0 (r_min = 0) and |lambda| = 1 (r_max = 1)
    nu = (-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2).clamp_min(-1e30)).clamp_min(1e-12)
    theta = (max_phase * u2).clamp_min(1e-12)
    return torch.log(nu).to(dtype), torch.log(theta).to(dtype)


# ------------------------------------------------------------------------------------------------
# HiPPO matrices and the inits of the S4 family.
#
# References (cited by the functions below):
#   [S4]    Gu, Goel, Re 2022, "Efficiently Modeling Long Sequences with Structured State Spaces",
#           ICLR; Sec. 3.1-3.3 (NPLR form, Thm. 1), App. C.
#   [HTTYH] Gu, Johnson, Timalsina, Rudra, Re 2023, "How to Train Your HiPPO", ICLR; Sec. 3-4
#           (LegS/LegT/FouT as time-invariant SSMs, Table 1), Sec. 4.2/App. C (timescale dt).
#   [S4D]   Gu, Gupta, Goel, Re 2022, "On the Parameterization and Initialization of Diagonal
#           State Space Models", NeurIPS; Sec. 4 (S4D-LegS, S4D-Inv, S4D-Lin), Table 2 (S4D-Real).
#   [DSS]   Gupta, Gu, Berant 2022, "Diagonal State Spaces are as Effective as Structured State
#           Spaces", NeurIPS; Sec. 3.3 (Lambda from the normal part of HiPPO-LegS).
#   [S5]    Smith, Warrington, Linderman 2023, "Simplified State Space Layers for Sequence
#           Modeling", ICLR; Sec. 4.1 and App. B.1 (HiPPO-N, block-diagonal init, lecun-normal B).
#   [PTD]   Yu, Nigmetov, Morozov, Mahoney, Erichson 2024, "Robustifying State-space Models for
#           Long Sequences via Approximate Diagonalization", ICLR; Sec. 4 (perturb-then-diagonalize).
# ------------------------------------------------------------------------------------------------

HIPPO_MEASURES = ("legs", "legt", "fout")
DIAGONAL_INITS = ("legs", "lin", "inv", "real", "random")


def _check_measure(measure: str) -> None:
    if measure not in HIPPO_MEASURES:
        raise ValueError(f"unknown HiPPO measure {measure!r}; expected one of {list(HIPPO_MEASURES)}")


def hippo(measure: str, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The HiPPO state matrix A (n, n) and input vector B (n,) in float64 ([HTTYH] Table 1, [S4] Eq. 2).

    LegS:  A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k),  -(n+1) (n = k),  0 (n < k);   B_n = sqrt(2n+1).
    LegT:  A_nk = -1/2 sqrt(2n+1) sqrt(2k+1) * (1 if n >= k else (-1)^(n-k));  B_n = 1/2 sqrt(2n+1)
           (the LMU/LegT matrix halved for timescale correctness, [HTTYH] Sec. 3.2).
    FouT:  A = pi * (block-diagonal rotations with frequencies 1..n/2-1) - B B^T, B = (1, sqrt2, 0, sqrt2, 0, ...)
           ([HTTYH] Sec. 3.3, the truncated Fourier basis).
    """
    _check_measure(measure)
    if n < 1:
        raise ValueError(f"state size n must be >= 1, got {n}")
    q = torch.arange(n, dtype=torch.float64)
    row, col = q[:, None], q[None, :]  # (n, 1), (1, n)
    r = torch.sqrt(2 * q + 1)  # (n,)
    if measure == "legs":
        A = -torch.where(row > col, r[:, None] * r[None, :], torch.zeros(())) - torch.diag(q + 1)
        B = r.clone()
    elif measure == "legt":
        sign = torch.where(row < col, (-1.0) ** (row - col), torch.ones(()))
        A = -0.5 * r[:, None] * sign * r[None, :]
        B = 0.5 * r
    else:  # fout
        B = torch.zeros(n, dtype=torch.float64)
        B[0::2] = math.sqrt(2.0)
        B[0] = 1.0
        freqs = torch.arange(n // 2, dtype=torch.float64)
        d = torch.stack([torch.zeros(n // 2, dtype=torch.float64), freqs], dim=-1).reshape(-1)[1:n]
        A = math.pi * (-torch.diag(d, 1) + torch.diag(d, -1))
        A = A[:n, :n] - B[:, None] * B[None, :]
    return A, B


def hippo_low_rank(measure: str, n: int) -> torch.Tensor:
    """P (r, n) with A + P^T P normal (the NPLR form of [S4] Thm. 1 / App. C.1): rank 1 for LegS and
    FouT, rank 2 for LegT. LegS: P_n = sqrt(n + 1/2), so A + P^T P = -1/2 I + skew-symmetric."""
    _check_measure(measure)
    q = torch.arange(n, dtype=torch.float64)
    if measure == "legs":
        return torch.sqrt(q + 0.5)[None, :]
    if measure == "legt":
        p = torch.sqrt(1 + 2 * q) * 2**-0.5
        p0, p1 = p.clone(), p.clone()
        p0[0::2] = 0.0
        p1[1::2] = 0.0
        return torch.stack([p0, p1], dim=0)
    return hippo(measure, n)[1][None, :]


def normal_eig(S: torch.Tensor, conj_sym: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a real normal matrix S = c I + K (K skew-symmetric), computed stably.

    K is diagonalised by the Hermitian eigh of -iK (unitary V), so V diag(W) V^* reconstructs S to
    machine precision for any size (the point of the NPLR form, [S4] Sec. 3.1). With ``conj_sym`` only
    the eigenvalues with Im >= 0 are kept (one per conjugate pair, sorted by increasing Im); a pair of
    zero eigenvalues is merged into one complex eigenvector (u1 + i u2)/sqrt2 so that [V, conj(V)]
    stays unitary. Returns W (m,) complex128 and V (n, m), m = n/2 (conj_sym) or n.
    """
    n = S.shape[-1]
    S = S.to(torch.float64)
    w_re = torch.diagonal(S).mean()
    K = 0.5 * (S - S.T)
    w_im, V = torch.linalg.eigh(-1j * K.to(torch.complex128))  # (n,), (n, n), Hermitian: stable
    if not conj_sym:
        return torch.complex(torch.full_like(w_im, w_re.item()), w_im), V
    if n % 2:
        raise ValueError(f"conjugate symmetry needs an even state size; got n={n}")
    tol = 1e-9 * max(1.0, float(w_im.abs().max()))
    pos = w_im > tol
    zero = w_im.abs() <= tol
    W_pos, V_pos = w_im[pos], V[:, pos]
    if int(zero.sum()) % 2:
        raise ValueError("normal_eig: an odd number of zero eigenvalues cannot be split into conjugate pairs")
    if bool(zero.any()):
        Z = V[:, zero]  # (n, k) spans a real null space: take a real orthonormal basis of it
        U = torch.linalg.svd(torch.cat([Z.real, Z.imag], dim=1), full_matrices=False)[0][:, : Z.shape[1]]
        Vz = (U[:, 0::2] + 1j * U[:, 1::2]) * 2**-0.5  # (n, k/2)
        W_pos = torch.cat([W_pos, torch.zeros(Vz.shape[1], dtype=W_pos.dtype)])
        V_pos = torch.cat([V_pos, Vz], dim=1)
    W = torch.complex(torch.full_like(W_pos, w_re.item()), W_pos)
    return W, V_pos


def hippo_dplr(measure: str, n: int, conj_sym: bool = True):
    """The DPLR form of a HiPPO matrix in its (unitary) normal-part eigenbasis ([S4] Thm. 1, App. C):

        A = V (diag(Lambda) - P~ P~^*) V^*,   P~ = V^* P^T,   B~ = V^* B.

    Returns ``(Lambda (m,), P~ (r, m), B~ (m,), V (n, m))`` complex128 with m = n/2 under ``conj_sym``
    (the conjugate halves are implied; the full matrix is rebuilt from [V, conj V]).
    """
    A, B = hippo(measure, n)
    P = hippo_low_rank(measure, n)  # (r, n)
    W, V = normal_eig(A + P.T @ P, conj_sym=conj_sym)
    Vh = V.conj().T  # (m, n)
    P_t = (Vh @ P.T.to(V.dtype)).T  # (r, m)
    B_t = Vh @ B.to(V.dtype)  # (m,)
    return W, P_t, B_t, V


def diagonal_init(name: str, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Diagonal state matrix of a complex diagonal SSM, one eigenvalue per conjugate pair: (n // 2,) complex128.

    ``n`` is the full (real) state size N; the layer keeps the n/2 eigenvalues with Im >= 0 and takes
    2 Re(...) of its output ([S4D] Sec. 3.2, conjugate symmetry).
      legs:   eigenvalues of the normal part of HiPPO-LegS, -1/2 + i omega_k ([S4D] Sec. 4, [DSS] Sec. 3.3)
      lin:    -1/2 + i pi k                          ([S4D] Eq. (S4D-Lin), from FouT)
      inv:    -1/2 + i n/pi (n/(2k+1) - 1)           ([S4D] Eq. (S4D-Inv), approximates S4D-LegS)
      real:   -(k+1)                                 ([S4D] Table 2, "S4D-Real")
      random: -1/2 + i exp(g), g ~ N(0, 1)           (a random-imaginary baseline, [S4D] Sec. 5 ablations)
    """
    if name not in DIAGONAL_INITS:
        raise ValueError(f"unknown diagonal init {name!r}; expected one of {list(DIAGONAL_INITS)}")
    if n < 2 or n % 2:
        raise ValueError(f"conjugate-symmetric diagonal inits need an even state size n >= 2; got n={n}")
    m = n // 2
    k = torch.arange(m, dtype=torch.float64)
    half = torch.full((m,), -0.5, dtype=torch.float64)
    if name == "legs":
        return hippo_dplr("legs", n)[0]
    if name == "lin":
        return torch.complex(half, math.pi * k)
    if name == "inv":
        return torch.complex(half, n / math.pi * (n / (2 * k + 1) - 1))
    if name == "real":
        return torch.complex(-(k + 1), torch.zeros_like(k))
    return torch.complex(half, torch.exp(torch.randn(m, generator=generator, dtype=torch.float64)))


def log_uniform_dt(
    size, dt_min: float = 1e-3, dt_max: float = 1e-1, *, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """log(dt) ~ U[log dt_min, log dt_max], float64 of shape ``size``.

    Defaults dt in [1e-3, 1e-1]: [S4] App. D.2 ("dt_min=0.001, dt_max=0.1"), [S4D] Sec. 3.3, [S5] App.
    G; [HTTYH] Sec. 4.2 explains the range as timescales 1/dt between 10 and 1000 steps.
    """
    if not 0.0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(size, generator=generator, dtype=torch.float64)
    return math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min))


def block_hippo_n_init(p: int, blocks: int = 1, conj_sym: bool = True):
    """S5's block-diagonal HiPPO-N init ([S5] Sec. 4.1, App. B.1.1): the normal part of HiPPO-LegS of
    size p/J, diagonalised per block, repeated J times along the diagonal.

    Returns ``(Lambda (m,), V (p, m))`` complex128, m = p/2 with ``conj_sym`` (else p), V block-diagonal.
    """
    if blocks < 1 or p % blocks:
        raise ValueError(f"state size P={p} must be divisible by the number of blocks J={blocks}")
    size = p // blocks
    if conj_sym and size % 2:
        raise ValueError(f"conjugate symmetry needs an even block size P/J; got P={p}, J={blocks}")
    A, _ = hippo("legs", size)
    P = hippo_low_rank("legs", size)
    W, V = normal_eig(A + P.T @ P, conj_sym=conj_sym)  # (m_b,), (size, m_b)
    return W.repeat(blocks), torch.block_diag(*([V] * blocks))


def lecun_normal(shape, fan_in: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Truncated-normal-free LeCun normal: N(0, 1/fan_in) in float64 ([S5] App. B.1.2 samples B this way)."""
    return torch.randn(shape, generator=generator, dtype=torch.float64) / math.sqrt(fan_in)


def ptd_init(
    measure: str = "legs",
    n: int = 64,
    *,
    gamma: float = 1e8,
    eps_grid: Tuple[float, ...] = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3),
    draws: int = 2,
    generator: Optional[torch.Generator] = None,
):
    """Perturb-then-diagonalize ([PTD] Sec. 4): diagonalise A~ = A + E instead of the HiPPO matrix A.

    [PTD] Sec. 4.2 chooses E to trade the eigenvector condition number kappa(V_{A+E}) against ||E||:
    a huge kappa makes the diagonal form useless (for LegS kappa(V_A) grows like 2^(4n/3)), a large E
    moves the transfer function away from HiPPO's. We minimise  Phi(E) = kappa(V_{A+E}) + gamma *
    ||E|| / ||A||  by search: for each relative size eps in ``eps_grid`` and ``draws`` random
    directions, E = eps ||A|| G / ||G||_2 (G real Gaussian, so A~ stays real), keeping the stable
    (max Re lambda < 0) minimiser. kappa scales like 1/eps, so the optimum sits near eps* =
    sqrt(kappa * eps / gamma); the default gamma = 1e8 (ours; a tuning knob in [PTD]) gives, for LegS
    with n = 64, eps = 1e-4, kappa ~ 5e4 and a transfer function within ~3% of HiPPO's on the
    imaginary axis, where the S4D-LegS (normal part) system is off by more than 100%.

    The perturbed matrix keeps some real eigenvalues (LegS's spectrum is -1..-n), so the result is
    the full, not conjugate-halved, system: layers use it with ``conj_sym=False``.

    Returns ``(Lambda (n,), V (n, n), V_inv (n, n), E (n, n))`` complex128 (E real) with
    A~ = V diag(Lambda) V_inv; a diagonal SSM (Lambda, V_inv B, C V) has the transfer function of
    (A~, B, C) ([PTD] Sec. 4: B~ = V^-1 B, C~ = C V).
    """
    A, _ = hippo(measure, n)
    norm_a = torch.linalg.matrix_norm(A, ord=2)
    best = None
    for eps in eps_grid:
        for _ in range(draws):
            G = torch.randn(n, n, generator=generator, dtype=torch.float64)
            E = eps * norm_a * G / torch.linalg.matrix_norm(G, ord=2)
            lam, V = torch.linalg.eig(A + E)  # (n,), (n, n)
            if float(lam.real.max()) >= 0:
                continue
            phi = float(torch.linalg.cond(V)) + gamma * eps  # eps = ||E|| / ||A||
            if best is None or phi < best[0]:
                best = (phi, lam, V, E)
    if best is None:
        raise ValueError("ptd_init: every perturbation in eps_grid made A + E unstable; use smaller eps")
    _, lam, V, E = best
    order = torch.argsort(lam.imag)
    lam, V = lam[order], V[:, order]
    return lam, V, torch.linalg.inv(V), E
