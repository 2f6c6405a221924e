"""The diagonal SSM bases shared by S4, S4D, DSS and S5 (and LRU's complex dtype rule).

    complex_input     B x for real x and complex B, as one real GEMM (S5, LRU)
    complex_readout   s Re(C h) for complex h and C, as one real GEMM (S5, LRU)

    ChannelStateSSM   H single-input single-output SSMs with m complex states each: state (b, H, m),
                      skip D (H,), readout C (and C2 when bidirectional), the two-sided convolution
    DiagonalConvSSM   convolution-mode diagonal SSM (S4D, DSS): a subclass gives (dt A, B_bar, C)

Per channel (H of them, m = N/2 complex states with conjugate symmetry, else m = N):

    h_t = A_bar h_{t-1} + B_bar u_t,     y_t = s Re(C h_t) + D u_t          (A_bar diagonal, (H, m))
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

Symbols as in docs/architecture.md: b batch, l length, H = d_model channels, N = d_state, m complex
states per channel. Bracketed references ([S4], [S4D], [DSS], [S5]) are listed in :mod:`torchssm.layers.init`.
"""

from __future__ import annotations

import torch
from torch import nn

from torchssm.layers.base import Device, LayerOutput, SSMLayer, StepFunction, StepOutput, check_lengths, valid_steps
from torchssm.ops.conv import fft_conv
from torchssm.ops.vandermonde import vandermonde, vandermonde_transpose


def complex_dtype(real: torch.dtype) -> torch.dtype:
    """The complex dtype of states for parameters of dtype ``real``: complex128 for float64, else complex64
    (a complex ``real`` is returned as is; bf16/fp16 have no complex type)."""
    if isinstance(real, torch.dtype) and real.is_complex:
        return real
    return torch.complex128 if real == torch.float64 else torch.complex64


def check_d_state(layer: str, d_state: object, conj_sym: bool = True) -> None:
    """d_state must be a positive int, and even where one state of each conjugate pair is stored."""
    if isinstance(d_state, bool) or not isinstance(d_state, int) or d_state < 1:
        raise ValueError(f"{layer} d_state must be a positive int; got {d_state!r}")
    if conj_sym and d_state % 2:
        raise ValueError(
            f"{layer} keeps one state of each conjugate pair and needs an even d_state >= 2; got d_state={d_state}"
        )


def complex_param(z: torch.Tensor) -> nn.Parameter:
    """A complex tensor stored as a real (..., 2) parameter (optimizers and weight decay see reals)."""
    return nn.Parameter(torch.view_as_real(z.to(torch.complex64)).clone())


def complex_input(x: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """B x for x (..., H) real and B (m, H) complex: (..., m) complex, as one real GEMM.

    The weight is B interleaved (re, im) as (H, 2m), so the GEMM's output already has the memory layout
    of a complex tensor: no complex cast of x, no complex GEMM, no copy to assemble re + i im.
    """
    m = B.shape[0]
    w = torch.view_as_real(B).transpose(0, 1).reshape(-1, 2 * m)  # (H, 2m): [re_0, im_0, re_1, ...]
    return torch.view_as_complex((x.to(w.dtype) @ w).unflatten(-1, (m, 2)))  # (..., m)


def complex_readout(h: torch.Tensor, C_re: torch.Tensor, C_im: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """s Re(C h) = s (C_re h_re - C_im h_im) for h (..., m) complex and C = C_re + i C_im (H, m): (..., H) real.

    One real GEMM of view_as_real(h) (..., 2m) against the interleaved weight s [C_re, -C_im] (H, 2m);
    the scale s (2 with conjugate symmetry) is folded into the weight, not applied to the output.
    """
    w = torch.stack([C_re, -C_im], dim=-1)  # (H, m, 2), interleaved like view_as_real(h)
    if scale != 1.0:
        w = w * scale
    return torch.view_as_real(h).flatten(-2) @ w.flatten(-2).T  # (..., H)


class ChannelStateSSM(SSMLayer):
    """H single-input single-output SSMs with m complex states each (S4, S4D, DSS): state (b, H, m), a
    skip connection D (H,), a readout (C or W) and, bidirectional, a second readout for the backward kernel."""

    bidirectional: bool = False

    def __init__(self, d_model: int, n_complex: int):
        super().__init__(d_model)
        self.n_complex = n_complex
        self.D = nn.Parameter(torch.randn(d_model))  # skip connection, N(0, 1) as in the S4 code

    def init_state(self, batch: int, device: Device = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Zero state (b, H, m): complex64 for float32 parameters, complex128 for float64."""
        cdtype = complex_dtype(self.D.dtype if dtype is None else dtype)
        device = self.D.device if device is None else device
        return torch.zeros(batch, self.d_model, self.n_complex, device=device, dtype=cdtype)

    def _set_readouts(self, name: str, C: torch.Tensor, C2: torch.Tensor | None = None) -> None:
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

    def _check_call(
        self, x: torch.Tensor, state: torch.Tensor | None, return_state: bool, lengths: torch.Tensor | None
    ) -> None:
        """forward's checks: the contract's, ``lengths`` (b,) int, no state for a bidirectional layer."""
        self._check_forward(x, state)
        check_lengths(lengths, x.shape[0])
        if self.bidirectional and (state is not None or return_state):
            raise ValueError(
                f"a bidirectional {type(self).__name__} carries no state: call it with state=None, return_state=False"
            )
        if lengths is not None and return_state:
            raise ValueError(
                "lengths cannot be combined with return_state (the final state would be the one "
                "after the padding); pass x without padding"
            )

    def _two_sided(self, x: torch.Tensor, k: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Bidirectional output K * u + K2 (anti-causal, from lag 1) * u + D u: x (b, L, H), k (2, H, >= L) real.
        ``lengths`` (b,) zeroes the inputs past each sequence's end, so padding never flows backward."""
        k = k.to(torch.promote_types(k.dtype, torch.float32))
        if lengths is None:
            return fft_conv(x, k[0], k[1], D=self.D).to(x.dtype)  # (b, L, H)
        valid = valid_steps(lengths, x.shape[1], x.device)  # (b, L)
        u = x * valid[..., None]  # (b, L, H)
        return (fft_conv(u, k[0], k[1]) + x * self.D).to(x.dtype)  # the skip term reads the unmasked x


class DiagonalConvSSM(ChannelStateSSM):
    """Convolution-mode diagonal SSM: subclasses define ``_ssm_params()`` -> (dtA, B_bar, C), dtA and B_bar
    (H, m) complex, C (H, m) or, bidirectional, (2, H, m) (from :meth:`_readouts`), and may override
    ``_kernel`` (same math, another evaluation order)."""

    kernel_scale: float = 2.0  # s above

    def _ssm_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _kernel(self, length: int, dtA: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """K (..., H, length) real: s Re(sum_n C_n B_bar_n exp(dtA_n l)); C (..., H, m)."""
        return self.kernel_scale * vandermonde(C * B_bar, dtA, length).real

    def forward(
        self,
        x: torch.Tensor,
        state: torch.Tensor | None = None,
        *,
        return_state: bool = False,
        lengths: torch.Tensor | None = None,
    ) -> LayerOutput:
        """x (b, l, H) -> y (b, l, H). ``lengths`` (b,) int, bidirectional only: valid lengths of a
        right-padded batch (padded inputs are zeroed before the backward kernel reads them; outputs at
        padded steps are meaningless). A causal layer ignores it (its valid outputs never see padding)."""
        self._check_call(x, state, return_state, lengths)
        if (fast := self._one_token_forward(x, state, return_state)) is not None:
            return fast  # streaming one token at a time: the kept step, not a length-1 kernel and FFT
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

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> StepOutput:
        """One token x_t (b, H), state (b, H, m) -> (y_t (b, H), new state); pure, O(1)."""
        self._check_step(x_t, state)
        return self._derived_once("step_function", self.step_function)(x_t, state)

    def step_function(self) -> StepFunction:
        """h' = A_bar h + B_bar x_t, y = s Re(sum_m C h') + D x_t with A_bar = exp(dt A), B_bar, C derived once."""
        dtA, B_bar, C = self._ssm_params()  # (H, m) each
        A_bar, scale, D = torch.exp(dtA), self.kernel_scale, self.D

        def step(x_t: torch.Tensor, state: torch.Tensor) -> StepOutput:
            h = A_bar * state + B_bar * x_t.unsqueeze(-1).to(B_bar.dtype)  # (b, H, m)
            y = scale * (C * h).sum(-1).real + x_t * D  # (b, H)
            return y.to(x_t.dtype), h.to(state.dtype)

        return step


__all__ = [
    "ChannelStateSSM",
    "DiagonalConvSSM",
    "check_d_state",
    "complex_dtype",
    "complex_input",
    "complex_param",
    "complex_readout",
]
