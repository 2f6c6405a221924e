"""Linear Recurrent Unit (LRU): Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for
Long Sequences" (ICML), Sec. 3 and the reference code of App. A.

Math, per channel of the complex diagonal state (n = d_state entries, h = d_model channels):

    lambda   = exp(-exp(nu_log) + i exp(theta_log))           (n,)  stable exponential parameterisation
    gamma    = exp(gamma_log)                                 (n,)  normalisation, init sqrt(1 - |lambda|^2)
    h_t      = lambda * h_{t-1} + gamma * (B x_t)             (b, n) complex, B = B_re + i B_im (n, h)
    y_t      = Re(C h_t) + D * x_t                            (b, h), C = C_re + i C_im (h, n), D (h,)

Bidirectional mode (as S5's, Smith et al. 2023, App. D.1): lambda and B are shared, the recurrence also
runs reversed in time, and a second readout C2 reads the reversed state:
    y_t = Re(C h_t) + Re(C2 g_t) + D * x_t,   g_t = lambda * g_{t+1} + gamma * (B x_t).

Shapes: b batch, l length, h = d_model, n = d_state (the glossary of docs/architecture.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchssm.layers.base import Device, LayerOutput, SSMLayer, StepFunction, StepOutput, check_lengths
from torchssm.layers.diagonal import complex_dtype, complex_input, complex_readout
from torchssm.layers.init import lru_ring_init
from torchssm.ops.backend import check_backend_name
from torchssm.ops.scan.lru import lru_lambda, lru_scan

# The recurrent parameters (A = lambda, B, and gamma) train at lr * lr_factor with no weight decay
# (LRU paper App. D.2; the factor is per task in its Tb. 9: 0.1 to 0.5).
_RECURRENT = ("nu_log", "theta_log", "gamma_log", "B_re", "B_im")


def lengths_to_reset(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """(b,) valid lengths -> (b, l) bool, true at each sequence's last valid step (t = lengths - 1).

    A reversed scan with this ``reset`` starts from a zero state at the last valid step, so padding
    (t >= lengths) never flows backward into the valid part.
    """
    t = torch.arange(length, device=lengths.device)  # (l,)
    return t[None, :] == (lengths[:, None] - 1)  # (b, l)


class LRU(SSMLayer):
    """Linear Recurrent Unit with complex diagonal state (see the module docstring for the math).

    Args:
        d_model: h, input/output channels.
        d_state: n, complex state size. Default 64: the MNIST-1D preset of this package
            (preset mnist1d_lru, H = N = 64) and S4D's default N (Gu et al. 2022, Sec. 5).
        r_min, r_max: ring init radii of lambda (Lemma 3.2). Defaults 0 and 1 are the paper's
            general ring of Sec. 3.2 (the whole unit disk); its LRA runs use r_min up to 0.9 and
            r_max 0.99-0.999 (Sec. 3.3, App. D), MNIST-1D here uses 0.5 / 0.99 (preset mnist1d_lru).
        max_phase: phases ~ U[0, max_phase]; 2*pi is the paper's default, pi/10 its PathX choice
            (Sec. 3.4 "Reducing Eigenvalue Phase at Initialization"; App. C.3 Tb. 8).
        lr_factor: the recurrent parameters (nu, theta, gamma, B) train at lr * lr_factor with no
            weight decay (App. D.2; per-task factors in Tb. 9). Default 0.5: Tb. 9's ListOps and
            Retrieval value and minimal-LRU's default (NicolasZucchet/minimal-LRU run_train.py).
        bidirectional: also run the recurrence reversed with a second readout C2 (non-causal).
        backend: backend of the LRU op :func:`torchssm.ops.scan.lru.lru_scan` (the dispatcher's
            names, :mod:`torchssm.ops.backend`): "gpu" (or "auto" on CUDA) is the fused Triton scan,
            float32 parameters only; "cpu", "chunked", "naive" the linear scan's backends.
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
        bidirectional: bool = False,
        backend: str = "auto",
    ):
        super().__init__(d_model)
        if not isinstance(d_state, int) or d_state < 1:
            raise ValueError(f"d_state must be a positive int, got {d_state!r}")
        if isinstance(lr_factor, bool) or not isinstance(lr_factor, (int, float)) or not 0 < lr_factor <= 1:
            raise ValueError(f"lr_factor must be a number in (0, 1], got {lr_factor!r}")
        self.lr_factor = float(lr_factor)
        self.optim_overrides = {name: {"lr_scale": self.lr_factor, "weight_decay": 0.0} for name in _RECURRENT}
        self.d_state = d_state
        self.bidirectional = bool(bidirectional)
        self.causal = not self.bidirectional
        check_backend_name(backend)
        self.backend = backend
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        h, n = d_model, d_state
        dtype = torch.get_default_dtype()

        nu_log, theta_log = lru_ring_init(n, r_min, r_max, max_phase, dtype=torch.float64)  # (n,), (n,)
        # gamma = sqrt(1 - |lambda|^2) = sqrt(-expm1(-2 nu)): exact near |lambda| = 1 (no 1 - 1 = 0)
        gamma_log = 0.5 * torch.log(-torch.expm1(-2 * torch.exp(nu_log)))  # (n,)
        self.nu_log = nn.Parameter(nu_log.to(dtype))
        self.theta_log = nn.Parameter(theta_log.to(dtype))
        self.gamma_log = nn.Parameter(gamma_log.to(dtype))
        # Glorot-like init of App. A: B ~ N(0, 1/(2h)) per real/imag part, C ~ N(0, 1/n), D ~ N(0, 1)
        self.B_re = nn.Parameter(torch.randn(n, h) / math.sqrt(2 * h))  # (n, h)
        self.B_im = nn.Parameter(torch.randn(n, h) / math.sqrt(2 * h))  # (n, h)
        self.C_re = nn.Parameter(torch.randn(h, n) / math.sqrt(n))  # (h, n)
        self.C_im = nn.Parameter(torch.randn(h, n) / math.sqrt(n))  # (h, n)
        if self.bidirectional:
            self.C2_re = nn.Parameter(torch.randn(h, n) / math.sqrt(n))  # (h, n)
            self.C2_im = nn.Parameter(torch.randn(h, n) / math.sqrt(n))  # (h, n)
        self.D = nn.Parameter(torch.randn(h))  # (h,)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, r_min={self.r_min}, r_max={self.r_max}, "
            f"max_phase={self.max_phase:.4g}, bidirectional={self.bidirectional}"
        )

    # --- the one place the normalised B is built (lambda: ops.scan.lru.lru_lambda) --------------------
    def _normalised_B(self) -> torch.Tensor:
        """gamma-normalised B (n, h) complex, used by forward and step: gamma * B, gamma = exp(gamma_log)."""
        gamma = torch.exp(self.gamma_log)[:, None]  # (n, 1)
        return torch.complex(self.B_re * gamma, self.B_im * gamma)  # (n, h)

    # --- contract --------------------------------------------------------------------------------------
    def init_state(self, batch: int, device: Device = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Zero state (b, n), complex64 for float32 parameters, complex128 for float64."""
        cdtype = complex_dtype(self.nu_log.dtype if dtype is None else dtype)
        device = self.nu_log.device if device is None else device
        return torch.zeros(batch, self.d_state, device=device, dtype=cdtype)

    def forward(
        self,
        x: torch.Tensor,
        state: torch.Tensor | None = None,
        *,
        return_state: bool = False,
        reset: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> LayerOutput:
        """x (b, l, h) -> y (b, l, h); with ``return_state`` also the state after the last valid step.

        ``state`` (b, n) complex: initial state (causal mode only). ``reset`` (b, l) bool: zero the state
        before step t (episode starts). ``lengths`` (b,) int: valid lengths of a right-padded batch;
        the reversed direction starts at each sequence's last valid step and the returned state is the
        one at ``lengths - 1``. Outputs at padded positions are finite but meaningless.
        """
        self._check_forward(x, state)
        batch, length, _ = x.shape
        check_lengths(lengths, batch)
        if self.bidirectional and (state is not None or return_state):
            raise ValueError("a bidirectional LRU carries no state: call it with state=None, return_state=False")
        if reset is None and lengths is None and (fast := self._one_token_forward(x, state, return_state)) is not None:
            return fast  # streaming one token at a time: the kept step, not a scan
        xp = x.to(self.nu_log.dtype)  # (b, l, h): params' dtype (bf16 has no complex type)
        with torch.autocast(device_type=x.device.type, enabled=False):
            bu = complex_input(xp, self._normalised_B())  # (b, l, n) complex, gamma folded into B

            def scan(h0: torch.Tensor | None, reverse: bool, reset_: torch.Tensor | None) -> torch.Tensor:
                return lru_scan(
                    self.nu_log, self.theta_log, bu, h0, reverse=reverse, reset=reset_, backend=self.backend
                )

            h = scan(state, False, reset)  # (b, l, n)
            y = complex_readout(h, self.C_re, self.C_im) + self.D * xp  # (b, l, h)
            if self.bidirectional:
                # reversed scan: state before step t is zeroed where a new episode starts at t + 1
                # (reset) and at each sequence's last valid step (lengths), so nothing flows backward
                # across an episode boundary or out of the padding
                rev_reset = None  # (b, l) bool
                if reset is not None:
                    rev_reset = torch.zeros_like(reset)
                    rev_reset[:, :-1] = reset[:, 1:]
                if lengths is not None:
                    at_end = lengths_to_reset(lengths.to(x.device), length)
                    rev_reset = at_end if rev_reset is None else rev_reset | at_end
                g = scan(None, True, rev_reset)  # (b, l, n)
                y = y + complex_readout(g, self.C2_re, self.C2_im)
        y = y.to(x.dtype)
        if not return_state:
            return y
        if lengths is None:
            return y, h[:, -1]
        last = (lengths.to(x.device).clamp(1, length) - 1)[:, None, None].expand(-1, 1, self.d_state)  # (b, 1, n)
        return y, h.gather(1, last)[:, 0]

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> StepOutput:
        """One token: x_t (b, h), state (b, n) complex -> (y_t (b, h), new_state (b, n)). Pure, O(1)."""
        self._check_step(x_t, state)
        return self._derived_once("step_function", self.step_function)(x_t, state)

    def step_function(self) -> StepFunction:
        """h' = lambda h + (gamma B) x_t, y = Re(C h') + D x_t, with lambda and gamma B derived once."""
        lam = lru_lambda(self.nu_log, self.theta_log)  # (n,), outside the autocast block: an export folds it
        with torch.autocast(device_type=self.nu_log.device.type, enabled=False):
            B = self._normalised_B()  # (n, h) complex
        dtype, C_re, C_im, D = self.nu_log.dtype, self.C_re, self.C_im, self.D

        def step(x_t: torch.Tensor, state: torch.Tensor) -> StepOutput:
            xp = x_t.to(dtype)  # (b, h)
            with torch.autocast(device_type=x_t.device.type, enabled=False):
                new_state = lam * state + complex_input(xp, B)  # (b, n)
                y_t = complex_readout(new_state, C_re, C_im) + D * xp  # (b, h)
            return y_t.to(x_t.dtype), new_state

        return step

    # --- introspection ---------------------------------------------------------------------------------
    @torch.no_grad()
    def eigenvalues(self) -> torch.Tensor:
        """lambda (n,) complex: the diagonal of the state transition (for plots and analysis)."""
        return lru_lambda(self.nu_log, self.theta_log)
