"""Discretisation of the continuous SSM x'(t) = A x(t) + B u(t) with step dt.

    zero-order hold (ZOH):  A_bar = exp(dt A),                        B_bar = A^-1 (exp(dt A) - I) B
    bilinear (Tustin):      A_bar = (I - dt/2 A)^-1 (I + dt/2 A),     B_bar = (I - dt/2 A)^-1 dt B

([S4] Sec. 2.3, Eq. 3 uses bilinear; [S4D] Sec. 3.2 and [S5] Sec. 2 use ZOH.)
Diagonal A: ``A`` holds the diagonal (..., n) (complex or real) and everything is elementwise.
Dense A: ``A`` is (..., n, n); ZOH uses the matrix exponential of the augmented matrix
[[A, B], [0, 0]] * dt, whose top-right block is B_bar, so it is valid for singular A as well.
``dt`` broadcasts against A's leading dimensions (diagonal: against (..., n)).

The step also sets the timescales the SSM remembers: a mode with decay rate |Re A| ~ 1 forgets over
about 1/dt steps, so a log-uniform dt in [dt_min, dt_max] spreads the memory lengths 1/dt over
[1/dt_max, 1/dt_min] steps. :func:`dt_range_for_length` picks dt_min = 1/L so they reach the sequence length.
References [S4], [S4D], [S5], [HTTYH] as listed in :mod:`torchssm.layers.init`.
"""

from __future__ import annotations

import torch

METHODS = ("zoh", "bilinear")
DT_MAX = 1e-1  # the state-spaces/s4 SSMKernel default (dt_max=0.1) and its LRA configs: memory from 10 steps


def dt_range_for_length(length: int, dt_max: float = DT_MAX) -> tuple[float, float]:
    """(dt_min, dt_max) whose memory lengths 1/dt span [1/dt_max, length] steps: dt_min = min(1/length, dt_max).

    The rule "1/dt covers the sequence length" of the S4 line of work, as an opt-in choice (S4's
    ``dt_scale_to_length``). The reference code does not apply it automatically: state-spaces/s4
    ``SSMKernel.init_dt`` (src/models/sequence/kernels/ssm.py) samples log dt ~ U[log dt_min, log dt_max]
    with no dependence on L, and its LRA configs set the range by hand per task: [1e-3, 1e-1] for
    ListOps, Text, Retrieval, Image, Pathfinder (L = 2000, 4096, 4000, 1024, 1024) and [1e-4, 1e-1] for
    Path-X (L = 16384; configs/experiment/lra/s4-lra-*.yaml). 1/L is within a factor 4.1 of each of
    those dt_min. [HTTYH] relates dt to the timescale of the dependencies the model captures (its
    abstract: "how to initialize the important timescale parameter"); its timescale section could not
    be read here (only its abstract), so no sentence of it is quoted.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int (the sequence length); got {length!r}")
    if not dt_max > 0:
        raise ValueError(f"dt_max must be > 0; got {dt_max}")
    return min(1.0 / length, dt_max), dt_max


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown discretisation {method!r}; expected one of {list(METHODS)}")


def discretize_diag(
    dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, method: str = "zoh"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal A (..., n), B broadcastable to (..., n); dt broadcastable to (..., n). Returns (A_bar, B_bar)."""
    _check_method(method)
    dtA = dt * A  # (..., n)
    if method == "zoh":
        A_bar = torch.exp(dtA)
        # exact ZOH for diagonal A with nonzero entries (all inits in layers/init.py are nonzero)
        B_bar = (A_bar - 1) / A * B
    else:
        denom = 1 - dtA / 2
        A_bar = (1 + dtA / 2) / denom
        B_bar = dt / denom * B
    return A_bar, B_bar


def discretize_dense(
    dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, method: str = "zoh"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense A (..., n, n), B (..., n, m); dt broadcastable to A's leading dims (...). Returns
    (A_bar (..., n, n), B_bar (..., n, m))."""
    _check_method(method)
    if A.shape[-1] != A.shape[-2] or B.shape[-2] != A.shape[-1]:
        raise ValueError(f"A must be (..., n, n) and B (..., n, m); got A {tuple(A.shape)}, B {tuple(B.shape)}")
    dt = torch.as_tensor(dt, dtype=A.real.dtype, device=A.device)
    dt = dt[..., None, None]  # (..., 1, 1)
    n, m = A.shape[-1], B.shape[-1]
    batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2], dt.shape[:-2])
    A = A.expand(*batch, n, n)
    B = B.to(torch.promote_types(A.dtype, B.dtype)).expand(*batch, n, m)
    A = A.to(B.dtype)
    if method == "zoh":
        M = torch.zeros(*batch, n + m, n + m, dtype=A.dtype, device=A.device)  # (..., n+m, n+m)
        M[..., :n, :n] = A
        M[..., :n, n:] = B
        E = torch.linalg.matrix_exp(M * dt)
        return E[..., :n, :n], E[..., :n, n:]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    lhs = eye - dt / 2 * A  # (..., n, n)
    A_bar = torch.linalg.solve(lhs, eye + dt / 2 * A)
    B_bar = torch.linalg.solve(lhs, dt * B)
    return A_bar, B_bar
