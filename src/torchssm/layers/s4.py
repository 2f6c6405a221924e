"""S4: the structured state space layer with a diagonal-plus-low-rank (DPLR) state matrix (Gu, Goel,
Re 2022, "Efficiently Modeling Long Sequences with Structured State Spaces", ICLR), Algorithm 1.

Per channel (H of them), N states of which m = N/2 are stored (the conjugate half is implied):

    A = Lambda - P P^*    (Lambda diagonal, P rank r; the HiPPO matrix in its normal eigenbasis, [S4] Thm. 1)
    A_bar = (I - dt/2 A)^-1 (I + dt/2 A),   B_bar = (I - dt/2 A)^-1 dt B        (bilinear, [S4] Eq. 3)
    h_t = A_bar h_{t-1} + B_bar u_t,        y_t = C h_t + D u_t,   K_l = C A_bar^l B_bar

The kernel comes from the truncated generating function at the L roots of unity omega_k
([S4] Lemma C.3, Algorithm 1), valid for the bilinear discretisation only:

    K^(omega) = C~ (I - A_bar omega)^-1 B_bar = 2/(1+omega) [C~ R B - C~ R P (1 + P^* R P)^-1 P^* R B],
    R = (g(omega) - Lambda)^-1,  g(omega) = 2/dt (1-omega)/(1+omega),   K = iFFT(K^)

(four Cauchy sums, ops/cauchy.py; the Woodbury identity handles rank r), where C~ = C (I - A_bar^L)
is what S4 learns (Algorithm 1 step 1). The kernel length L doubles when a longer input arrives
(C~ <- C~ (I + A_bar^L) keeps C fixed). ``step`` converts back: C = C~ (I - A_bar^L)^-1 with the dense
A_bar (O(N^2) per channel and token, as the S4 code's dense step). Chunked calls carry the state:
an initial state h0 adds C A_bar^(t+1) h0, the kernel of the input vector B' = h0/dt + A h0/2
(bilinear: B_bar' = A_bar h0), and the final state is A_bar^L h0 + sum_s A_bar^(L-1-s) B_bar u_s
(by repeated squaring).

Symbols as in docs/architecture.md: b batch, l length, h = d_model (= H), n = N full states, m = N/2
stored states; in this file also r the rank of P and k the frequency nodes (L/2 + 1).
Bracketed references ([S4], [S4D], [DSS], [S5], [HTTYH], [PTD]) are listed in :mod:`torchssm.layers.init`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchssm.layers.base import LayerOutput, StepOutput
from torchssm.layers.diagonal import ChannelStateSSM, check_d_state, complex_dtype, complex_param
from torchssm.layers.discretize import discretize_dense, dt_range_for_length
from torchssm.layers.init import HIPPO_MEASURES, hippo_dplr, log_uniform_dt
from torchssm.ops.cauchy import cauchy
from torchssm.ops.conv import fft_conv


def _full(x: torch.Tensor) -> torch.Tensor:
    """(..., m) -> (..., 2m): the stored half and its conjugate."""
    return torch.cat([x, x.conj()], dim=-1)


def _power_sum(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum_s A^(L-1-s) v_s for A (H, n, n), v (b, H, L, n) -> (b, H, n), by pairwise doubling."""
    while v.shape[2] > 1:
        if v.shape[2] % 2:
            v = torch.nn.functional.pad(v, (0, 0, 1, 0))  # a zero at the front takes the highest power
        v = (A[:, None] @ v[:, :, 0::2, :, None])[..., 0] + v[:, :, 1::2]
        A = A @ A
    return v[:, :, 0]


def _sync_kernel_length(module: S4, incompatible_keys: object) -> None:
    """load_state_dict post-hook: the int ``_kernel_length`` follows the loaded ``kernel_length`` buffer."""
    L = int(module.kernel_length)
    if L < 1:
        raise ValueError(f"S4 kernel_length must be a positive int; the loaded state dict has {L}")
    module._kernel_length = L


class S4(ChannelStateSSM):
    """S4 layer (DPLR, Cauchy kernel, bilinear, learned C~, kernel doubling, dense recurrent step).

    Args (defaults and their sources):
        d_model: H channels.
        d_state: N (m = N/2 stored), 64 ([S4] App. D.2: N = 64 in all experiments).
        measure: HiPPO init ``"legs"`` (default, [S4] Sec. 3.1), ``"legt"`` or ``"fout"`` ([HTTYH]
            Table 1); rank 1 (LegS, FouT) or 2 (LegT) (layers/init.py ``hippo_low_rank``).
        l_max: initial kernel length; doubled whenever a longer input arrives.
        dt_min, dt_max: log-uniform dt init 1e-3, 1e-1 (the state-spaces/s4 ``SSMKernel`` defaults and its
            LRA configs for L <= 4096; memory lengths 1/dt of 10..1000 steps).
        dt_scale_to_length: replace dt_min by 1/l_max so that 1/dt spans [1/dt_max, l_max] steps
            (:func:`torchssm.layers.discretize.dt_range_for_length`). Off by default, as in the reference
            code, which sets the range per task instead (Path-X, L = 16384: dt_min = 1e-4).
        bidirectional: a second readout C~2 and an anti-causal kernel, as S4D's (:mod:`torchssm.layers.s4d`);
            default False (causal, with ``step``); the state-spaces/s4 LRA configs set it on every task.
        lr: learning rate of log_dt, Lambda, P, B: 1e-3 with no weight decay ([S4] App. D.2).
    Parameters: ``log_dt`` (H,), ``log_A_real``, ``A_imag`` (H, m) with Re Lambda = -exp(log_A_real)
    (clamped at -1e-4 at init for LegT/FouT, whose normal part has Re = 0), ``P`` (r, H, m, 2),
    ``B`` (H, m, 2) = V^* B_hippo, ``C`` (H, m, 2) = C~ (complex N(0, 1) at init), ``C2`` like C
    (bidirectional), ``D`` (H,).
    """

    kernel_length: torch.Tensor  # buffer: the kernel's length L (doubled when an input is longer)
    C: nn.Parameter  # the readout C~ (H, m, 2), registered by _set_readouts

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        measure: str = "legs",
        l_max: int = 1024,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_scale_to_length: bool = False,
        bidirectional: bool = False,
        lr: float | None = 1e-3,
    ):
        if measure not in HIPPO_MEASURES:
            raise ValueError(f"unknown S4 measure {measure!r}; expected one of {list(HIPPO_MEASURES)}")
        check_d_state("S4", d_state)
        if not isinstance(l_max, int) or l_max < 1:
            raise ValueError(f"l_max must be a positive int; got {l_max!r}")
        super().__init__(d_model, d_state // 2)
        self.d_state, self.measure = d_state, measure
        H = d_model
        lam, P, B, _ = hippo_dplr(measure, d_state)  # (m,), (r, m), (m,)
        if dt_scale_to_length:
            dt_min, dt_max = dt_range_for_length(l_max, dt_max)
        self.log_dt = nn.Parameter(log_uniform_dt(H, dt_min, dt_max).float())
        self.log_A_real = nn.Parameter(torch.log((-lam.real).clamp(min=1e-4)).float().repeat(H, 1))
        self.A_imag = nn.Parameter(lam.imag.float().repeat(H, 1))
        self.P = complex_param(P[:, None, :].repeat(1, H, 1))  # (r, H, m, 2)
        self.B = complex_param(B.repeat(H, 1))  # (H, m, 2)
        C = torch.randn(H, self.n_complex, dtype=torch.complex128)  # C~ (H, m)
        self._set_readouts("C", C, torch.randn(H, self.n_complex, dtype=torch.complex128) if bidirectional else None)
        # L lives twice: the buffer (saved in the state dict) and a plain int read by the code, so that no
        # tensor is turned into a Python number per call (no device sync; torch.export/compile can trace the
        # step). Both are written together by _double_kernel_length and by load_state_dict (the hook below).
        self.register_buffer("kernel_length", torch.tensor(l_max, dtype=torch.long))
        self._kernel_length = l_max
        self.register_load_state_dict_post_hook(_sync_kernel_length)
        names = ("log_dt", "log_A_real", "A_imag", "P", "B")
        self.optim_overrides = {} if lr is None else {k: {"lr": lr, "weight_decay": 0.0} for k in names}

    # --- parameters --------------------------------------------------------------------------------
    def _ssm_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Continuous DPLR SSM: dt (H,), Lambda (H, m), P (r, H, m), B (H, m), C~ (H, m) (the forward readout;
        a bidirectional layer's C~2 is read by ``_readout_stack``)."""
        lam = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        c = torch.view_as_complex
        return torch.exp(self.log_dt), lam, c(self.P), c(self.B), c(self.C)

    def _dense(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dense discrete SSM on the full n states: A_bar (H, n, n), B_bar (H, n), C (H, n) with
        C = C~ (I - A_bar^L)^-1 (row vectors), from the same ``_ssm_params``."""
        dt, lam, P, B, Ct = self._ssm_params()
        Pf = _full(P)  # (r, H, n)
        A = torch.diag_embed(_full(lam)) - torch.einsum("rhi,rhj->hij", Pf, Pf.conj())  # (H, n, n)
        A_bar, B_bar = discretize_dense(dt, A, _full(B)[..., None], "bilinear")
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        A_L = torch.linalg.matrix_power(A_bar, self._kernel_length)
        C = torch.linalg.solve((eye - A_L).transpose(-1, -2), _full(Ct)[..., None])[..., 0]  # (H, n)
        return A, A_bar, B_bar[..., 0], C

    def _kernel(self, B: torch.Tensor, Ct: torch.Tensor) -> torch.Tensor:
        """Kernels K_l = C A_bar^l B_bar(B) for l < kernel_length by the Cauchy path, one per readout C~:
        B (..., H, m), Ct (c, H, m) -> (..., c, H, L)."""
        dt, lam, P, _, _ = self._ssm_params()
        L = self._kernel_length
        r, c = P.shape[0], Ct.shape[0]
        k = torch.arange(L // 2 + 1 - (1 - L % 2), device=lam.device, dtype=lam.real.dtype)
        omega = torch.exp(-2j * math.pi * k / L).to(lam.dtype)  # (k,) roots of unity (omega = -1 apart)
        z = 2 * (1 - omega) / (1 + omega)  # dt * g(omega)
        Pf = _full(P)  # (r, H, n)
        left = torch.cat([_full(Ct), Pf.conj()], 0)  # (c+r, H, n): C~ (each readout), P^*
        right = torch.cat([_full(B)[..., None, :, :], Pf.expand(*B.shape[:-2], *Pf.shape)], -3)  # (..., 1+r, H, n)
        v = left[:, None] * right[..., None, :, :, :] * dt[:, None]  # (..., c+r, 1+r, H, n)
        Rv = cauchy(v, z, _full(dt[:, None] * lam))  # (..., c+r, 1+r, H, k)
        r00, r01, r10, r11 = Rv[..., :c, 0, :, :], Rv[..., :c, 1:, :, :], Rv[..., c:, 0, :, :], Rv[..., c:, 1:, :, :]
        # Woodbury: C~ R B - C~ R P (I + P^* R P)^-1 P^* R B, per readout, channel and node
        M = torch.eye(r, dtype=Rv.dtype, device=Rv.device) + r11.movedim((-2, -1), (-4, -3))  # (..., H, k, r, r)
        sol = torch.linalg.solve(M, r10.movedim(-3, -1)[..., None])  # (..., H, k, r, 1)
        corr = (r01.movedim(-3, -1) * sol[..., 0].unsqueeze(-4)).sum(-1)  # (..., c, H, k)
        k_hat = 2 / (1 + omega) * (r00 - corr)  # (..., c, H, k)
        if L % 2 == 0:  # omega = -1: the limit of the formula, K^(-1) = C~ (I + A_bar)^-1 B_bar = dt/2 C~ B
            last = dt / 2 * (_full(Ct) * _full(B)[..., None, :, :]).sum(-1)  # (..., c, H)
            k_hat = torch.cat([k_hat, last[..., None]], -1)
        return torch.fft.irfft(k_hat, n=L)  # (..., c, H, L)

    def _readout_stack(self) -> torch.Tensor:
        """C~ (1, H, m), or [C~, C~2] (2, H, m) for a bidirectional layer."""
        Ct = self._readouts()
        return Ct if self.bidirectional else Ct[None]

    @torch.no_grad()
    def _double_kernel_length(self) -> None:
        """L -> 2L keeping C (and C2) fixed: C~_2L = C (I - A_bar^2L) = C~_L (I + A_bar^L)."""
        _, A_bar, _, _ = self._dense()
        A_L = torch.linalg.matrix_power(A_bar, self._kernel_length)
        for name in ("C", "C2") if self.bidirectional else ("C",):
            param = getattr(self, name)
            Ct = _full(torch.view_as_complex(param))  # (H, n)
            new = Ct + torch.einsum("hi,hij->hj", Ct, A_L)
            param.copy_(torch.view_as_real(new[..., : self.n_complex]))
        self.kernel_length.mul_(2)
        self._kernel_length *= 2

    # --- contract ----------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        state: torch.Tensor | None = None,
        *,
        return_state: bool = False,
        lengths: torch.Tensor | None = None,
    ) -> LayerOutput:
        """x (b, l, H) -> y (b, l, H); ``lengths`` (b,) as in :class:`torchssm.layers.s4d.DiagonalConvSSM`
        (bidirectional: padding is zeroed before the backward kernel; a causal layer ignores it)."""
        self._check_call(x, state, return_state, lengths)
        if (fast := self._one_token_forward(x, state, return_state)) is not None:
            return fast  # streaming one token at a time: the step on the kept dense SSM, not a kernel and FFT
        length = x.shape[1]
        while length > self._kernel_length:
            self._double_kernel_length()
        dt, lam, P, B, Ct = self._ssm_params()
        k = self._kernel(B, self._readout_stack())  # (1 or 2, H, L_k)
        if self.bidirectional:
            return self._two_sided(x, k, lengths)
        y = fft_conv(x, k[0], D=self.D)  # (b, l, H): K * u + D u
        if state is not None:  # + C A_bar^(t+1) h0 = kernel of B' = h0/dt + A h0 / 2
            h0 = state.to(lam.dtype)
            Ah0 = lam * h0 - torch.einsum("rhm,bhr->bhm", P, torch.einsum("rhn,bhn->bhr", _full(P).conj(), _full(h0)))
            k0 = self._kernel(h0 / dt[:, None] + Ah0 / 2, Ct[None])[:, 0]  # (b, H, L_k)
            y = y + k0[..., :length].transpose(1, 2).to(y.dtype)
        y = y.to(x.dtype)
        if not return_state:
            return y
        _, A_bar, B_bar, _ = self._dense()
        v = B_bar[:, None, :] * x.transpose(1, 2)[..., None].to(B_bar.dtype)  # (b, H, l, n)
        h = _power_sum(A_bar, v)  # (b, H, n)
        if state is not None:
            h = h + (torch.linalg.matrix_power(A_bar, length) @ _full(state.to(h.dtype))[..., None])[..., 0]
        return y, h[..., : self.n_complex].to(complex_dtype(self.D.dtype))

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> StepOutput:
        self._check_step(x_t, state)
        # the N^3 log L conversion to a dense SSM runs once for inference, then each step is O(N^2) per channel
        _, A_bar, B_bar, C = self._derived_once("dense", self._dense, self._kernel_length)
        hf = _full(state.to(A_bar.dtype))  # (b, H, n)
        # A_bar h as a matmul between views (not [..., None] / [..., 0]): the ONNX exporter lowers complex
        # matmul, view, cat and conj to real arithmetic, but not complex unsqueeze/select (models/export.py)
        h = (A_bar @ hf.view(*hf.shape, 1)).view(hf.shape) + B_bar * x_t[..., None].to(B_bar.dtype)  # (b, H, n)
        y = (C * h).sum(-1).real + self.D * x_t  # (b, H); real since h, C are conjugate-symmetric
        return y.to(x_t.dtype), h[..., : self.n_complex].to(state.dtype)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, measure={self.measure!r}, "
            f"kernel_length={self._kernel_length}, bidirectional={self.bidirectional}"
        )
