"""S4D: the diagonal structured state space layer (Gu, Gupta, Goel, Re 2022, "On the Parameterization
and Initialization of Diagonal State Space Models", NeurIPS).

Per channel h (H of them, each an independent SISO SSM with m = N/2 complex states):

    A = -exp(log_A_real) + i A_imag,  dt = exp(log_dt)                     (H, m), (H,)
    A_bar = exp(dt A), B_bar = (A_bar - 1)/A B  (ZOH)  or bilinear         (layers/discretize.py)
    h_t = A_bar h_{t-1} + B_bar u_t,     y_t = 2 Re(C h_t) + D u_t
    K_l = 2 Re(sum_n C_n B_bar_n A_bar_n^l)    so    y = K * u + D u

The convolution, the carried state and the bidirectional mode are the diagonal base's
(:class:`torchssm.layers.diagonal.DiagonalConvSSM`); this file is the parameterisation and its init.
Symbols as in docs/architecture.md; bracketed references ([S4], [S4D]) are listed in
:mod:`torchssm.layers.init`.
"""

from __future__ import annotations

import torch
from torch import nn

from torchssm.layers.diagonal import ChannelStateSSM, DiagonalConvSSM, check_d_state, complex_dtype, complex_param  # noqa: F401  (the bases, re-exported from their old home)
from torchssm.layers.discretize import discretize_diag
from torchssm.layers.init import DIAGONAL_INITS, diagonal_init, hippo, log_uniform_dt, ptd_init


class S4D(DiagonalConvSSM):
    """S4D layer: diagonal A with a HiPPO-derived init, convolution for training, recurrence for inference.

    Args (defaults and their sources):
        d_model: H, independent channels.
        d_state: N, the real state size per channel (N/2 complex states kept); 64 ([S4D] Sec. 5 and
            App. B: N = 64 for all experiments).
        init: ``"legs"`` (default, S4D-LegS, [S4D] Sec. 4: eigenvalues of the normal part of
            HiPPO-LegS), ``"inv"``, ``"lin"``, ``"real"``, ``"random"`` (layers/init.py), or ``"ptd"``
            (S4-PTD, Yu et al. 2024: perturbed LegS, B = V^-1 B_hippo, C = C V; full state, no
            conjugate symmetry).
        discretization: ``"zoh"`` (default, [S4D] Sec. 3.2 / Table 4 "ZOH") or ``"bilinear"``.
        dt_min, dt_max: log-uniform dt init range, 1e-3 and 1e-1 ([S4D] Sec. 3.3, from [S4] App. D.2);
            ``discretize.dt_range_for_length(L)`` gives a range whose memory lengths 1/dt reach L.
        bidirectional: a second readout C2 and an anti-causal kernel (module docstring); default False
            (causal, with ``step``). The state-spaces/s4 LRA configs set ``bidirectional: true`` on every task.
        lr: learning rate of the SSM parameters (log_dt, A, B), 1e-3 with no weight decay ([S4] App.
            D.2 and the S4 code's ``lr=0.001`` for SSM parameters; [S4D] App. B keeps it).
    Parameters: ``log_dt`` (H,), ``log_A_real`` (H, m) = log(-Re A), ``A_imag`` (H, m), ``B`` and
    ``C`` (H, m, 2) (complex as real pairs; C ~ N(0, 1) complex), ``C2`` like C (bidirectional), ``D`` (H,).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        init: str = "legs",
        discretization: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        lr: float | None = 1e-3,
    ):
        if init not in DIAGONAL_INITS + ("ptd",):
            raise ValueError(f"unknown S4D init {init!r}; expected one of {list(DIAGONAL_INITS) + ['ptd']}")
        if discretization not in ("zoh", "bilinear"):
            raise ValueError(f"unknown discretization {discretization!r}; expected 'zoh' or 'bilinear'")
        conj_sym = init != "ptd"
        check_d_state("S4D", d_state, conj_sym)
        m = d_state // 2 if conj_sym else d_state
        super().__init__(d_model, m)
        self.d_state, self.init, self.discretization = d_state, init, discretization
        self.kernel_scale = 2.0 if conj_sym else 1.0
        H = d_model
        if init == "ptd":
            lam, V, V_inv, _ = ptd_init("legs", d_state)
            B = V_inv @ hippo("legs", d_state)[1].to(V_inv.dtype)  # (m,)
        else:
            lam, V = diagonal_init(init, d_state), None
            B = torch.ones(m, dtype=torch.complex128)  # B = 1 ([S4D] Sec. 3.2, as in DSS)

        def draw_C() -> torch.Tensor:  # (H, m) complex N(0, 1); PTD: C~ = C V
            C = torch.randn(H, m, dtype=torch.complex128)
            return C if V is None else C @ V

        C = draw_C()
        C2 = draw_C() if bidirectional else None
        self.log_dt = nn.Parameter(log_uniform_dt(H, dt_min, dt_max).float())
        self.log_A_real = nn.Parameter(torch.log(-lam.real).float().repeat(H, 1))  # (H, m)
        self.A_imag = nn.Parameter(lam.imag.float().repeat(H, 1))  # (H, m)
        self.B = complex_param(B.repeat(H, 1))  # (H, m, 2)
        self._set_readouts("C", C, C2)  # (H, m, 2) each
        ssm = {"lr": lr, "weight_decay": 0.0}
        self.optim_overrides = {} if lr is None else {k: dict(ssm) for k in ("log_dt", "log_A_real", "A_imag", "B")}

    def _ssm_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dt A, B_bar, C): (H, m) complex, C (H, m) or (2, H, m) bidirectional; the one place both modes
        read the SSM from."""
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)  # (H, m)
        dt = torch.exp(self.log_dt)[:, None]  # (H, 1)
        A_bar, B_bar = discretize_diag(dt, A, torch.view_as_complex(self.B), self.discretization)
        dtA = dt * A if self.discretization == "zoh" else torch.log(A_bar)
        return dtA, B_bar, self._readouts()

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, init={self.init!r}, "
            f"discretization={self.discretization!r}, bidirectional={self.bidirectional}"
        )


__all__ = ["S4D", "ChannelStateSSM", "DiagonalConvSSM", "check_d_state", "complex_dtype", "complex_param"]
