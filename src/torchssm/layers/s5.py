"""S5: one multi-input multi-output diagonal SSM run by a parallel scan (Smith, Warrington, Linderman
2023, "Simplified State Space Layers for Sequence Modeling", ICLR).

With P states (m = P/2 stored under conjugate symmetry), H = d_model inputs and outputs:

    Lambda_bar = exp(Lambda dt),  B_bar = (Lambda_bar - 1) / Lambda * B~   (ZOH; or bilinear)   ([S5] Sec. 2)
    h_t = Lambda_bar * h_{t-1} + B_bar u_t              (h (m,) complex, B_bar (m, H))
    y_t = s Re(C~ h_t) + D * u_t                        (C~ (H, m), s = 2 with conjugate symmetry, else 1)

dt = step_rescale * exp(log_step) (per state, or one ``dt_global``); an optional ``timescale`` (b, l)
multiplies dt per step for irregularly sampled inputs ([S5] Sec. 6.3: Lambda_bar_t = exp(Lambda dt_t)).
The recurrence runs through :func:`torchssm.ops.linear_scan` (parallel/compiled backends) in
``forward`` and one multiply-add in ``step``; both read ``_ssm_params()``.
Bidirectional: the same Lambda_bar and B_bar also run in reverse, read out by a second C~2, and the
layer has no ``step`` ([S5] App. D / the S5 code's ``bidirectional``).

Symbols as in docs/architecture.md: b batch, l length, h = d_model (the paper's H), n = the state size
(the paper's P), m complex states kept (P/2 with conjugate symmetry, or P).
Bracketed references ([S4], [S4D], [DSS], [S5], [HTTYH], [PTD]) are listed in :mod:`torchssm.layers.init`.
"""

from __future__ import annotations

import torch
from torch import nn

from torchssm.layers.base import Device, LayerOutput, SSMLayer, StepFunction, StepOutput
from torchssm.layers.diagonal import complex_dtype, complex_input, complex_param, complex_readout
from torchssm.layers.discretize import discretize_diag
from torchssm.layers.init import block_hippo_n_init, lecun_normal, log_uniform_dt, ptd_init
from torchssm.ops.scan import linear_scan

INITS = ("hippo_n", "ptd")
OPT_CONFIGS = ("standard", "BfastandCdecay", "BandCdecay")


def s5_optim_overrides(
    ssm_lr: float, opt_config: str = "standard", ssm_group_log_step: bool = True
) -> dict[str, dict[str, float]]:
    """Parameter tags (:mod:`torchssm.layers.tags`) of S5's optimizer groups, as the S5 code's
    ``create_train_state`` (lindermanlab/S5 s5/train_helpers.py) builds them for ``--opt_config``:
    the "ssm" group (Adam at ssm_lr, no weight decay) holds Lambda_re, Lambda_im, log_step (left out with
    ``ssm_group_log_step=False``, S5's ``--dt_global``) and, in "standard", B; "BandCdecay" trains B at
    ssm_lr with the default weight decay (S5's "none" group: AdamW at ssm_lr); "BfastandCdecay" leaves B
    untagged (default lr and decay). Untagged parameters get train/optim.py's default rule."""
    ssm = {"lr": ssm_lr, "weight_decay": 0.0}
    names = ["Lambda_re", "Lambda_im"] + (["log_step"] if ssm_group_log_step else [])
    tags: dict[str, dict[str, float]] = {k: dict(ssm) for k in names}
    if opt_config == "standard":
        tags["B"] = dict(ssm)
    elif opt_config == "BandCdecay":
        tags["B"] = {"lr": ssm_lr}
    return tags


class S5(SSMLayer):
    """S5 layer.

    Args (defaults and their sources):
        d_model: H.
        d_state: P, the state size (m = P/2 complex states are stored with ``conj_sym``); 64 here
            ([S5] App. G uses P in 16..384 per task).
        blocks: J, the number of HiPPO-N blocks of size P/J on the diagonal of the init ([S5] Sec. 4.1,
            App. B.1.1); 1 by default.
        init: ``"hippo_n"`` (default, [S5] Sec. 4.1: the diagonalised normal part of HiPPO-LegS) or
            ``"ptd"`` (S5-PTD, Yu et al. 2024: the perturbed LegS matrix, ``blocks=1``; with
            ``conj_sym`` it keeps (P + k)/2 states, k = the few real eigenvalues, see ``ptd_init``).
        conj_sym: keep one state per conjugate pair and output 2 Re(.) ([S5] App. B.1.1); default True.
        discretization: ``"zoh"`` (default, [S5] Sec. 2 / App. C) or ``"bilinear"``.
        dt_min, dt_max: log-uniform init of the per-state steps, 1e-3 and 1e-1 ([S5] App. B.1.3).
        dt_global: one shared step instead of one per state ([S5] App. B.1.3 discusses both).
        clip_eigs: clamp Re(Lambda) <= -1e-4 for stability (the S5 code's ``clip_eigs``, [S5] App. G).
        step_rescale: multiplies dt: run a trained model at another sampling rate ([S5] Sec. 6.3).
        bidirectional: also scan in reverse with a second readout C2 (non-causal).
        ssm_lr: learning rate of the S5 code's "ssm" optimizer group (Adam, no weight decay; [S5] App. G:
            ssm_lr = 1e-3 on most tasks); None tags nothing (every parameter gets the default lr and decay).
        opt_config: which parameters are in that group, as the S5 code's ``--opt_config``
            (lindermanlab/S5 s5/train_helpers.py, ``create_train_state``):
            ``"standard"`` (default): B, Lambda_re, Lambda_im, log_step at ssm_lr, no weight decay;
            ``"BfastandCdecay"``: Lambda_re, Lambda_im, log_step at ssm_lr, no decay; B at the default lr
            with the default weight decay (like C);
            ``"BandCdecay"``: as BfastandCdecay, but B at ssm_lr (keeping the default weight decay).
            C, C2 and D are never tagged (default lr and weight decay in every config).
        ssm_group_log_step: False leaves log_step out of the ssm group (default lr and weight decay): what
            the S5 code's ``--dt_global=True`` does there (in ``create_train_state`` it changes only this
            grouping; this layer's ``dt_global`` is a separate choice, one shared step).
    Parameters: ``Lambda_re``, ``Lambda_im`` (m,), ``B`` (m, H, 2) = V^-1 B with B lecun-normal,
    ``C`` (H, m, 2) = C V with C truncated standard normal (complex), ``C2`` (bidirectional), ``D`` (H,),
    ``log_step`` (m,) or (1,).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        blocks: int = 1,
        init: str = "hippo_n",
        conj_sym: bool = True,
        discretization: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_global: bool = False,
        clip_eigs: bool = False,
        step_rescale: float = 1.0,
        bidirectional: bool = False,
        ssm_lr: float | None = 1e-3,
        opt_config: str = "standard",
        ssm_group_log_step: bool = True,
    ):
        super().__init__(d_model)
        if opt_config not in OPT_CONFIGS:
            raise ValueError(f"unknown S5 opt_config {opt_config!r}; expected one of {list(OPT_CONFIGS)}")
        if init not in INITS:
            raise ValueError(f"unknown S5 init {init!r}; expected one of {list(INITS)}")
        if discretization not in ("zoh", "bilinear"):
            raise ValueError(f"unknown discretization {discretization!r}; expected 'zoh' or 'bilinear'")
        if conj_sym and d_state % 2:
            raise ValueError(f"conj_sym=True needs an even d_state (conjugate pairs); got d_state={d_state}")
        if init == "ptd" and blocks != 1:
            raise ValueError("init='ptd' diagonalises the full perturbed LegS matrix: use blocks=1")
        if not step_rescale > 0:
            raise ValueError(f"step_rescale must be > 0; got {step_rescale}")
        self.d_state, self.blocks, self.init, self.conj_sym = d_state, blocks, init, conj_sym
        self.discretization, self.clip_eigs, self.step_rescale = discretization, clip_eigs, float(step_rescale)
        self.bidirectional = bool(bidirectional)
        self.causal = not self.bidirectional
        H, P = d_model, d_state
        if init == "ptd":
            lam, V, V_inv, _ = ptd_init("legs", P, conj_sym=conj_sym)  # m = (P + #real eigenvalues)/2 halved
        else:
            lam, V = block_hippo_n_init(P, blocks, conj_sym=conj_sym)  # (m,), (P, m): unitary blocks
            V_inv = V.conj().T  # (m, P)
        m = lam.shape[0]
        self.n_complex = m
        self.Lambda_re = nn.Parameter(lam.real.float())
        self.Lambda_im = nn.Parameter(lam.imag.float())
        B = lecun_normal((P, H), fan_in=P)  # jax lecun_normal: fan_in = shape[-2] ([S5] App. B.1.2)
        self.B = complex_param(V_inv @ B.to(V_inv.dtype))  # (m, H, 2)

        def c_init() -> torch.Tensor:  # truncated standard normal, complex (the S5 code's default C_init)
            C = torch.empty(H, P, 2, dtype=torch.float64)
            nn.init.trunc_normal_(C, std=1.0, a=-2.0, b=2.0)
            return complex_param(torch.view_as_complex(C) @ V)  # (H, m, 2)

        self.C = c_init()
        if self.bidirectional:
            self.C2 = c_init()
        self.D = nn.Parameter(torch.randn(H))
        self.log_step = nn.Parameter(log_uniform_dt(1 if dt_global else m, dt_min, dt_max).float())
        self.opt_config, self.ssm_group_log_step = opt_config, bool(ssm_group_log_step)
        self.optim_overrides = {} if ssm_lr is None else s5_optim_overrides(ssm_lr, opt_config, ssm_group_log_step)

    def _ssm_params(self, timescale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(Lambda_bar, B_bar): (m,), (m, H); with ``timescale`` (...,) : (..., m), (..., m, H)."""
        re = self.Lambda_re.clamp(max=-1e-4) if self.clip_eigs else self.Lambda_re
        lam = torch.complex(re, self.Lambda_im)  # (m,)
        dt = self.step_rescale * torch.exp(self.log_step)  # (m,) or (1,)
        if timescale is not None:
            dt = timescale.to(dt.dtype)[..., None] * dt  # (..., m)
        lam_bar, B_bar = discretize_diag(
            dt[..., None], lam[:, None], torch.view_as_complex(self.B), self.discretization
        )
        return lam_bar[..., 0], B_bar  # (..., m), (..., m, H)

    def _readout(self, h: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """s Re(C~ h) for h (..., m) complex and the readout C (H, m, 2): (..., H) real, s = 2 with
        conjugate symmetry (the implied conjugate half of the state, [S5] App. B.1.1), else 1."""
        return complex_readout(h, C[..., 0], C[..., 1], scale=2.0 if self.conj_sym else 1.0)

    def init_state(self, batch: int, device: Device = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Zero state (b, m): complex64 for float32 parameters, complex128 for float64."""
        cdtype = complex_dtype(self.D.dtype if dtype is None else dtype)
        return torch.zeros(batch, self.n_complex, device=self.D.device if device is None else device, dtype=cdtype)

    def _check_timescale(self, timescale: torch.Tensor | None, shape: tuple[int, ...]) -> None:
        if timescale is not None and tuple(timescale.shape) != tuple(shape):
            raise ValueError(
                f"timescale must have shape {tuple(shape)} (batch{', length' if len(shape) > 1 else ''}); "
                f"got {tuple(timescale.shape)}"
            )

    def forward(
        self,
        x: torch.Tensor,
        state: torch.Tensor | None = None,
        *,
        return_state: bool = False,
        timescale: torch.Tensor | None = None,
    ) -> LayerOutput:
        """x (b, l, H) -> y (b, l, H); ``timescale`` (b, l) > 0 multiplies dt at each step."""
        self._check_forward(x, state)
        self._check_timescale(timescale, x.shape[:2])
        if self.bidirectional and (state is not None or return_state):
            raise ValueError("a bidirectional S5 carries no state: call it with state=None, return_state=False")
        if timescale is None and (fast := self._one_token_forward(x, state, return_state)) is not None:
            return fast  # streaming one token at a time: the kept step, not a scan
        lam_bar, B_bar = self._ssm_params(timescale)  # (m,) | (b, l, m);  (m, H) | (b, l, m, H)
        if timescale is None:
            Bu = complex_input(x, B_bar)  # (b, l, m)
        else:
            Bu = (B_bar @ x.to(B_bar.dtype)[..., None])[..., 0]  # (b, l, m)
        h = linear_scan(lam_bar, Bu, state)  # (b, l, m)
        y = self._readout(h, self.C)
        if self.bidirectional:
            y = y + self._readout(linear_scan(lam_bar, Bu, reverse=True), self.C2)
        y = (y + self.D * x).to(x.dtype)
        if return_state:
            return y, h[:, -1].to(complex_dtype(self.D.dtype))
        return y

    def step(self, x_t: torch.Tensor, state: torch.Tensor, *, timescale: torch.Tensor | None = None) -> StepOutput:
        """One token x_t (b, H) -> (y_t (b, H), new state (b, m)); ``timescale`` (b,) as in forward."""
        self._check_step(x_t, state)
        self._check_timescale(timescale, x_t.shape[:1])
        if timescale is None:
            return self._derived_once("step_function", self.step_function)(x_t, state)
        lam_bar, B_bar = self._ssm_params(timescale)  # (b, m), (b, m, H)
        h = lam_bar * state + (B_bar @ x_t.to(B_bar.dtype)[..., None])[..., 0]  # (b, m)
        y = self._readout(h, self.C) + self.D * x_t
        return y.to(x_t.dtype), h.to(state.dtype)

    def step_function(self) -> StepFunction:
        """h' = lambda_bar h + B_bar x_t, y = Re(C h') + D x_t (no timescale), lambda_bar and B_bar derived once."""
        lam_bar, B_bar = self._ssm_params(None)  # (m,), (m, H)

        def step(x_t: torch.Tensor, state: torch.Tensor) -> StepOutput:
            h = lam_bar * state + complex_input(x_t, B_bar)  # (b, m)
            y = self._readout(h, self.C) + self.D * x_t  # (b, H)
            return y.to(x_t.dtype), h.to(state.dtype)

        return step

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, blocks={self.blocks}, init={self.init!r}, "
            f"conj_sym={self.conj_sym}, bidirectional={self.bidirectional}"
        )
