"""S4ND: Nguyen, Goel, Gu, Downs, Shah, Dao, Baccus, Re 2022, "S4ND: Modeling Images and Videos as
Multidimensional Signals Using State Spaces" (NeurIPS), Sec. 3: the convolutional 2-D SSM baseline.

An N-D SSM whose state is the tensor product of one 1-D SSM per axis has a separable kernel: the
outer product of the 1-D kernels (S4ND Sec. 3.1-3.2; equation numbers UNVERIFIED). Per channel c:

    k_axis[c, o]   1-D S4D kernel of each axis (Gu et al. 2022, S4D, as layers/s4d.py):
                   o >= 0:  2 Re sum_m C_m   B_bar_m exp(dt A_m o)         (causal half)
                   o <  0:  2 Re sum_m C2_m  B_bar_m exp(dt A_m (-o - 1))  (anti-causal half, from lag 1)
                   i.e. the bidirectional S4 kernel ([S4] App. D.2, ops/conv.py) on each axis
    K[c, o1, o2] = k_rows[c, o1] k_cols[c, o2]                               (separable 2-D kernel)
    y[b, i, j, c] = sum_{s, t} K[c, i - s, j - t] u[b, s, t, c] + D[c] u[b, i, j, c]

computed by a 2-D FFT of size >= (2H - 1, 2W - 1) (a circular convolution that long is the linear one),
O(b d H W log(H W)). The same kernel for any image size (the SSM is continuous in each axis, as S4ND
uses for resolution changes). A two-sided kernel makes the layer non-causal; the axis kernels'
negative-offset half being a separate readout C2 is UNVERIFIED against the S4ND code (its ``bidirectional``
option is the S4 one). Defaults as S4D: d_state = 64, S4D-LegS init, ZOH, dt log-uniform [1e-3, 1e-1],
SSM parameters at lr 1e-3 without weight decay ([S4] App. D.2).
"""

from __future__ import annotations

import torch
from torch import nn

from torchssm.layers.discretize import discretize_diag
from torchssm.layers.init import diagonal_init, log_uniform_dt
from torchssm.ops.conv import fast_fft_length
from torchssm.ops.vandermonde import vandermonde
from torchssm.vision.grid import Grid2DLayer, check_image


class AxisKernel(nn.Module):
    """The two-sided 1-D S4D kernel of one axis: ``kernel(L)`` -> (d, 2L - 1) over offsets -(L-1)..(L-1)."""

    def __init__(self, d_model: int, d_state: int, init: str, dt_min: float, dt_max: float):
        super().__init__()
        A = diagonal_init(init, d_state)  # (m,) complex128, m = d_state / 2
        m = A.shape[0]
        self.log_dt = nn.Parameter(log_uniform_dt(d_model, dt_min, dt_max).float())  # (d,)
        self.log_A_real = nn.Parameter(torch.log(-A.real).float().repeat(d_model, 1))  # (d, m)
        self.A_imag = nn.Parameter(A.imag.float().repeat(d_model, 1))  # (d, m)
        self.B = nn.Parameter(torch.view_as_real(torch.ones(d_model, m, dtype=torch.complex64)).clone())
        C = torch.randn(2, d_model, m, dtype=torch.complex64) * 0.5**0.5  # C ~ N(0, 1) complex ([S4D])
        self.C = nn.Parameter(torch.view_as_real(C).clone())  # (2, d, m, 2): causal and anti-causal readouts

    def kernel(self, length: int) -> torch.Tensor:
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)  # (d, m)
        dt = torch.exp(self.log_dt)[:, None]  # (d, 1)
        _, B_bar = discretize_diag(dt, A, torch.view_as_complex(self.B), "zoh")  # (d, m)
        k = 2 * vandermonde(torch.view_as_complex(self.C) * B_bar, dt * A, length).real  # (2, d, L)
        return torch.cat([k[1][:, : length - 1].flip(-1), k[0]], dim=-1)  # (d, 2L-1): lags L-2..0 of k2, then k


class S4ND(Grid2DLayer):
    """Separable 2-D S4D convolution (module docstring). Non-causal; images (b, H, W, d) or raster sequences."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        init: str = "legs",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        grid=None,
        lr: float | None = 1e-3,
    ):
        super().__init__(d_model, grid)
        if isinstance(d_state, bool) or not isinstance(d_state, int) or d_state < 2 or d_state % 2:
            raise ValueError(f"S4ND d_state must be an even int >= 2 (conjugate pairs); got {d_state!r}")
        self.d_state = d_state
        self.rows = AxisKernel(d_model, d_state, init, dt_min, dt_max)
        self.cols = AxisKernel(d_model, d_state, init, dt_min, dt_max)
        self.D = nn.Parameter(torch.randn(d_model))
        if lr is not None:
            ssm = {"lr": lr, "weight_decay": 0.0}
            self.rows.optim_overrides = self.cols.optim_overrides = {
                "log_dt": ssm,
                "log_A_real": ssm,
                "A_imag": ssm,
                "B": ssm,
            }

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_state={self.d_state}"

    def kernel(self, height: int, width: int) -> torch.Tensor:
        """K (d, 2H-1, 2W-1) over offsets (o1, o2) in [-(H-1), H-1] x [-(W-1), W-1] (index o + H - 1)."""
        return self.rows.kernel(height)[:, :, None] * self.cols.kernel(width)[:, None, :]

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        """x (b, H, W, d) -> (b, H, W, d)."""
        check_image(x, self.d_model)
        b, H, W, d = x.shape
        k = self.kernel(H, W)  # (d, 2H-1, 2W-1)
        n1, n2 = fast_fft_length(2 * H - 1), fast_fft_length(2 * W - 1)
        # circular layout: offset o at index o mod n (negative offsets wrap to the end)
        kc = torch.roll(nn.functional.pad(k, (0, n2 - (2 * W - 1), 0, n1 - (2 * H - 1))), (-(H - 1), -(W - 1)), (1, 2))
        u = x.permute(0, 3, 1, 2).to(k.dtype)  # (b, d, H, W)
        spec = torch.fft.rfft2(u, s=(n1, n2)) * torch.fft.rfft2(kc, s=(n1, n2))
        y = torch.fft.irfft2(spec, s=(n1, n2))[..., :H, :W] + self.D[:, None, None] * u  # (b, d, H, W)
        return y.permute(0, 2, 3, 1).to(x.dtype)
