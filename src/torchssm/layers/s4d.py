"""S4D: the diagonal structured state space layer (Gu, Gupta, Goel, Re 2022, "On the Parameterization
and Initialization of Diagonal State Space Models", NeurIPS), and the convolution-mode machinery it
shares with DSS.

Per channel h (H of them, each an independent SISO SSM with m = N/2 complex states):

    h_t = A_bar h_{t-1} + B_bar u_t,     y_t = s Re(C h_t) + D u_t          (A_bar diagonal, (H, m))
    A_bar = exp(dt A), B_bar = (A_bar - 1)/A B  (ZOH)  or bilinear         (layers/discretize.py)
    K_l = s Re(sum_n C_n B_bar_n A_bar_n^l)    so    y = K * u + D u        (ops/vandermonde.py, ops/conv.py)

s = 2 with conjugate symmetry (the conjugate half of the state is implied, [S4D] Sec. 3.2), else 1.
Training uses the convolution (``forward``), inference the recurrence (``step``); both read the
parameters from ``_ssm_params()``. The state (b, H, m) complex is carried by ``forward`` too: an
initial state adds s Re(C A_bar^(t+1) h0) to y_t (a Vandermonde product), and the final state is
A_bar^L h0 + B_bar sum_s A_bar^(L-1-s) u_s (a transposed Vandermonde product), so chunked calls
continue exactly.

Bidirectional mode (``bidirectional=True``, as ``FFTConv`` of state-spaces/s4, src/models/sequence/kernels/
fftconv.py, used by all its LRA configs): the same (dt, A, B) with a second readout C2 gives a second
kernel K2, applied anti-causally one step away (ops/conv.py):

    y_t = sum_{s <= t} K_{t-s} u_s + sum_{s > t} K2_{s-t-1} u_s + D u_t

The layer is then not causal: no ``step``, no carried state; ``lengths`` (b,) zeroes the padding
of a right-padded batch so that it does not flow backward into the valid steps.

Glossary: b batch, l length, h (= H = d_model) channels, m complex states per channel (N/2).
Bracketed references ([S4], [S4D], [DSS], [S5], [HTTYH], [PTD]) are listed in :mod:`torchssm.layers.init`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from torchssm.layers.base import SSMLayer, check_lengths
from torchssm.layers.discretize import discretize_diag
from torchssm.layers.init import DIAGONAL_INITS, diagonal_init, hippo, log_uniform_dt, ptd_init
from torchssm.ops.conv import fft_conv
from torchssm.ops.vandermonde import vandermonde, vandermonde_transpose


def complex_dtype(real: torch.dtype) -> torch.dtype:
    if isinstance(real, torch.dtype) and real.is_complex:
        return real
    return torch.complex128 if real == torch.float64 else torch.complex64


def check_d_state(layer: str, d_state, conj_sym: bool = True) -> None:
    """d_state must be a positive int, and even where one state of each conjugate pair is stored."""
    if isinstance(d_state, bool) or not isinstance(d_state, int) or d_state < 1:
        raise ValueError(f"{layer} d_state must be a positive int; got {d_state!r}")
    if conj_sym and d_state % 2:
        raise ValueError(f"{layer} keeps one state of each conjugate pair and needs an even d_state >= 2; "
                         f"got d_state={d_state}")


def complex_param(z: torch.Tensor) -> nn.Parameter:
    """A complex tensor stored as a real (..., 2) parameter (optimizers and weight decay see reals)."""
    return nn.Parameter(torch.view_as_real(z.to(torch.complex64)).clone())


class ChannelStateSSM(SSMLayer):
    """H single-input single-output SSMs with m complex states each (S4, S4D, DSS): state (b, H, m), a
    skip connection D (H,), a readout (C or W) and, bidirectional, a second readout for the backward kernel."""

    bidirectional: bool = False

    def __init__(self, d_model: int, n_complex: int):
        super().__init__(d_model)
        self.n_complex = n_complex
        self.D = nn.Parameter(torch.randn(d_model))  # skip connection, N(0, 1) as in the S4 code

    def init_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """Zero state (b, H, m): complex64 for float32 parameters, complex128 for float64."""
        cdtype = complex_dtype(self.D.dtype if dtype is None else dtype)
        device = self.D.device if device is None else device
        return torch.zeros(batch, self.d_model, self.n_complex, device=device, dtype=cdtype)

    def _set_readouts(self, name: str, C: torch.Tensor, C2: Optional[torch.Tensor] = None) -> None:
        """Register the readout ``name`` (H, m, 2) from C (H, m) complex and, if C2 is given, the backward
        readout ``name + "2"``: the layer is then bidirectional (non-causal)."""
        self._readout_name = name
        self.bidirectional = C2 is not None
        self.causal = not self.bidirectional
        setattr(self, name, complex_param(C))
        if C2 is not None:
            setattr(self, name + "2", complex_param(C2))

    def _readouts(self) -> torch.Tensor:
        """The readout C (H, m) complex, or [C, C2] stacked (2, H, m) for a bidirectional layer."""
        C = torch.view_as_complex(getattr(self, self._readout_name))
        if not self.bidirectional:
            return C
        return torch.stack([C, torch.view_as_complex(getattr(self, self._readout_name + "2"))])

    def _check_call(self, x: torch.Tensor, state, return_state: bool, lengths: Optional[torch.Tensor]) -> None:
        """forward's checks: the contract's, ``lengths`` (b,) int, no state for a bidirectional layer."""
        self._check_forward(x, state)
        check_lengths(lengths, x.shape[0])
        if self.bidirectional and (state is not None or return_state):
            raise ValueError(f"a bidirectional {type(self).__name__} carries no state: "
                             "call it with state=None, return_state=False")
        if lengths is not None and return_state:
            raise ValueError("lengths cannot be combined with return_state (the final state would be the one "
                             "after the padding); pass x without padding")

    def _two_sided(self, x: torch.Tensor, k: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """Bidirectional output K * u + K2 (anti-causal, from lag 1) * u + D u: x (b, L, H), k (2, H, >= L) real.
        ``lengths`` (b,) zeroes the inputs past each sequence's end, so padding never flows backward."""
        k = k.to(torch.promote_types(k.dtype, torch.float32))
        if lengths is None:
            return fft_conv(x, k[0], k[1], D=self.D).to(x.dtype)  # (b, L, H)
        valid = torch.arange(x.shape[1], device=x.device) < lengths.to(x.device)[:, None]  # (b, L)
        u = x * valid[..., None]  # (b, L, H)
        return (fft_conv(u, k[0], k[1]) + x * self.D).to(x.dtype)  # the skip term reads the unmasked x


class DiagonalConvSSM(ChannelStateSSM):
    """Convolution-mode diagonal SSM: subclasses define ``_ssm_params()`` -> (dtA, B_bar, C), dtA and B_bar
    (H, m) complex, C (H, m) or, bidirectional, (2, H, m) (from :meth:`_readouts`), and may override
    ``_kernel`` (same math, another evaluation order)."""

    kernel_scale: float = 2.0  # s above

    def _ssm_params(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _kernel(self, length: int, dtA: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """K (..., H, length) real: s Re(sum_n C_n B_bar_n exp(dtA_n l)); C (..., H, m)."""
        return self.kernel_scale * vandermonde(C * B_bar, dtA, length).real

    def forward(self, x: torch.Tensor, state: Optional[torch.Tensor] = None, *, return_state: bool = False,
                lengths: Optional[torch.Tensor] = None):
        """x (b, l, H) -> y (b, l, H). ``lengths`` (b,) int, bidirectional only: valid lengths of a
        right-padded batch (padded inputs are zeroed before the backward kernel reads them; outputs at
        padded steps are meaningless). A causal layer ignores it (its valid outputs never see padding)."""
        self._check_call(x, state, return_state, lengths)
        length = x.shape[1]
        dtA, B_bar, C = self._ssm_params()  # (H, m), (H, m), (H, m) or (2, H, m)
        k = self._kernel(length, dtA, B_bar, C)  # (H, L) or (2, H, L)
        if self.bidirectional:
            return self._two_sided(x, k, lengths)
        y = fft_conv(x, k.to(torch.promote_types(k.dtype, torch.float32)), D=self.D)  # (b, L, H): K * u + D u
        if state is not None:  # + s Re(C A_bar^(t+1) h0)
            c0 = C * torch.exp(dtA) * state.to(C.dtype)  # (b, H, m)
            y = y + self.kernel_scale * vandermonde(c0, dtA, length).real.transpose(1, 2).to(y.dtype)
        y = y.to(x.dtype)  # bf16 activations stay bf16 (the kernel and state are float32)
        if not return_state:
            return y
        u = x.transpose(1, 2).flip(-1).to(dtA.dtype)  # (b, H, L), time reversed
        h = B_bar * vandermonde_transpose(u, dtA)  # (b, H, m)
        if state is not None:
            h = h + torch.exp(dtA * length) * state.to(h.dtype)
        return y, h.to(complex_dtype(self.D.dtype))

    def step(self, x_t: torch.Tensor, state: torch.Tensor):
        self._check_step(x_t, state)
        dtA, B_bar, C = self._ssm_params()
        h = torch.exp(dtA) * state + B_bar * x_t.unsqueeze(-1).to(B_bar.dtype)  # (b, H, m)
        y = self.kernel_scale * (C * h).sum(-1).real + x_t * self.D  # (b, H)
        return y.to(x_t.dtype), h.to(state.dtype)


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

    def __init__(self, d_model: int, d_state: int = 64, *, init: str = "legs", discretization: str = "zoh",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, bidirectional: bool = False,
                 lr: Optional[float] = 1e-3):
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

        def draw_C():  # (H, m) complex N(0, 1); PTD: C~ = C V
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

    def _ssm_params(self):
        """(dt A, B_bar, C): (H, m) complex, C (H, m) or (2, H, m) bidirectional; the one place both modes
        read the SSM from."""
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)  # (H, m)
        dt = torch.exp(self.log_dt)[:, None]  # (H, 1)
        A_bar, B_bar = discretize_diag(dt, A, torch.view_as_complex(self.B), self.discretization)
        dtA = dt * A if self.discretization == "zoh" else torch.log(A_bar)
        return dtA, B_bar, self._readouts()

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, init={self.init!r}, "
                f"discretization={self.discretization!r}, bidirectional={self.bidirectional}")


__all__ = ["S4D", "ChannelStateSSM", "DiagonalConvSSM", "check_d_state", "complex_dtype", "complex_param"]
