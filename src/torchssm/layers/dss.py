"""DSS: Diagonal State Spaces (Gupta, Gu, Berant 2022, "Diagonal State Spaces are as Effective as
Structured State Spaces", NeurIPS), exp and softmax variants (their Sec. 3.2, Prop. 1).

Lambda (m,) complex is shared by the H channels; each channel has its own step dt_h and W_h (m,):

    DSS-exp:      K_l = Re( sum_n W_n (exp(Lambda_n dt) - 1) / Lambda_n * exp(Lambda_n dt l) ),  Re Lambda < 0
    DSS-softmax:  K_l = Re( sum_n W_n / Lambda_n * softmax_l(Lambda_n dt l) ),  softmax over l < l_max

DSS-exp is a ZOH-discretised diagonal SSM with B = 1 and C = W. DSS-softmax normalises each mode
over a fixed kernel length l_max (Re Lambda may be positive): a diagonal SSM with B_bar = 1 and
C_n = W_n / (Lambda_n Z_n), Z_n = sum_{l < l_max} exp(Lambda_n dt l), so its recurrence (``step``) equals
its convolution for inputs up to l_max. The convolution evaluates modes with Re Lambda > 0 in reversed
time, exp(Lambda dt (l - l_max + 1)), as the DSS code does, so the kernel never overflows.
Both use the convolution/recurrence machinery of :class:`torchssm.layers.s4d.DiagonalConvSSM`, including
its bidirectional mode (a second W2 for the anti-causal kernel, as S4D's C2).
Bracketed references ([S4], [S4D], [DSS], [S5], [HTTYH], [PTD]) are listed in :mod:`torchssm.layers.init`.
"""

from __future__ import annotations

import torch
from torch import nn

from torchssm.layers.diagonal import DiagonalConvSSM, check_d_state
from torchssm.layers.init import diagonal_init, log_uniform_dt
from torchssm.ops.vandermonde import vandermonde

VERSIONS = ("exp", "softmax")


class DSS(DiagonalConvSSM):
    """DSS layer.

    Args (defaults and their sources):
        d_model: H channels.
        d_state: N; m = N/2 complex modes, Lambda initialised to the eigenvalues of the normal part of
            HiPPO-LegS with positive imaginary part ([DSS] Sec. 3.3); N = 64 ([DSS] Sec. 4, App. A).
        version: ``"exp"`` (default; [DSS] Sec. 3.2 DSS_EXP, used with the "softmax" ablation in
            Table 1) or ``"softmax"``.
        l_max: kernel length; required by ``"softmax"`` (its normalisation length, [DSS] Prop. 1).
        dt_min, dt_max: log-uniform dt range 1e-3, 1e-1 ([DSS] Sec. 3.3, following [S4]).
        bidirectional: a second readout W2 and an anti-causal kernel (see :mod:`torchssm.layers.s4d`);
            default False (causal, with ``step``).
        lr: learning rate of Lambda and log_dt, 1e-3 with no weight decay ([DSS] App. A, as [S4]).
    Parameters: ``Lambda_log_neg_re`` (exp: Re Lambda = -exp(.)) or ``Lambda_re`` (softmax), ``Lambda_im``
    (m,), ``log_dt`` (H,), ``W`` (H, m, 2) complex N(0, 1) as real pairs, ``W2`` like W (bidirectional),
    ``D`` (H,).
    """

    kernel_scale = 1.0

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        version: str = "exp",
        l_max: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        lr: float | None = 1e-3,
    ):
        if version not in VERSIONS:
            raise ValueError(f"unknown DSS version {version!r}; expected one of {list(VERSIONS)}")
        if version == "softmax" and (isinstance(l_max, bool) or not isinstance(l_max, int) or l_max < 1):
            raise ValueError(
                "DSS version='softmax' normalises its kernel over a fixed length: pass an int "
                f"l_max >= 1; got l_max={l_max!r}"
            )
        check_d_state("DSS", d_state)
        super().__init__(d_model, d_state // 2)
        self.d_state, self.version, self.l_max = d_state, version, l_max
        lam = diagonal_init("legs", d_state)  # (m,)
        if version == "exp":
            self.Lambda_log_neg_re = nn.Parameter(torch.log(-lam.real).float())
        else:
            self.Lambda_re = nn.Parameter(lam.real.float())
        self.Lambda_im = nn.Parameter(lam.imag.float())
        self.log_dt = nn.Parameter(log_uniform_dt(d_model, dt_min, dt_max).float())
        W = torch.randn(d_model, d_state // 2, dtype=torch.complex128)  # (H, m)
        W2 = torch.randn(d_model, d_state // 2, dtype=torch.complex128) if bidirectional else None
        self._set_readouts("W", W, W2)  # (H, m, 2) each
        names = ("Lambda_log_neg_re" if version == "exp" else "Lambda_re", "Lambda_im", "log_dt")
        self.optim_overrides = {} if lr is None else {k: {"lr": lr, "weight_decay": 0.0} for k in names}

    def _lambda(self) -> torch.Tensor:
        re = -torch.exp(self.Lambda_log_neg_re) if self.version == "exp" else self.Lambda_re
        return torch.complex(re, self.Lambda_im)  # (m,)

    def _ssm_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dt Lambda, B_bar, C): (H, m), C (H, m) or (2, H, m) bidirectional; the one place both modes read
        the SSM from."""
        lam = self._lambda()  # (m,)
        dtA = torch.exp(self.log_dt)[:, None] * lam  # (H, m)
        W = self._readouts()  # (H, m) or (2, H, m)
        if self.version == "exp":
            return dtA, (torch.exp(dtA) - 1) / lam, W
        assert self.l_max is not None  # softmax: required, checked in __init__
        z = torch.exp(dtA)
        return dtA, torch.ones_like(dtA), W / lam * (z - 1) / (z**self.l_max - 1)  # C = W / (Lambda Z)

    def _check_forward(self, x: torch.Tensor, state: torch.Tensor | None) -> None:
        super()._check_forward(x, state)
        if self.l_max is not None and self.version == "softmax" and x.shape[1] > self.l_max:
            raise ValueError(
                f"DSS-softmax kernel length l_max={self.l_max} is shorter than the input length "
                f"{x.shape[1]}; expected x of shape (batch, length<={self.l_max}, {self.d_model})"
            )

    def _kernel(self, length: int, dtA: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        if self.version == "exp":
            return super()._kernel(length, dtA, B_bar, C)
        # softmax: modes with Re(dt Lambda) > 0 run in reversed time (stable, as in the DSS code)
        L = self.l_max
        assert L is not None  # softmax: required, checked in __init__
        pos = dtA.real > 0  # (H, m)
        a = torch.where(pos, -dtA, dtA)  # Re a <= 0
        q = torch.exp(a)
        c = self._readouts() / self._lambda() * (q - 1) / (q**L - 1)  # (H, m) or (2, H, m)
        zero = torch.zeros((), dtype=c.dtype, device=c.device)
        k = vandermonde(torch.where(pos, zero, c), a, L).real
        return k + vandermonde(torch.where(pos, c, zero), a, L).real.flip(-1)  # (H, l_max) or (2, H, l_max)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, version={self.version!r}, l_max={self.l_max}, "
            f"bidirectional={self.bidirectional}"
        )
