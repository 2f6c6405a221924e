"""SSD (Mamba-2) on the fused Triton selective-scan kernels (recurrent form).

Same signature as :func:`torchssm.ops.ssd.naive.ssd_naive` (math there). SSD is the selective scan
with a scalar decay per head: with channels c = (head j, head-dim index q), d = heads * p,

    h_t[c, i] = exp(dt_t[j] A[j]) h_{t-1}[c, i] + dt_t[j] x_t[c] B_t[g(j), i],   y_t[c] = C_t[g(j)] . h_t[c]

so it runs on ``selective/gpu.py``'s kernels with dt and A broadcast over the head dimension and
the groups of heads as groups of channels (Dao & Gu 2024, Sec. 3: the linear-time recurrent mode
of the SSD duality). The (b, l, h, p, n) states stay in registers; only one state per chunk
reaches HBM. This is the recurrent form, not the chunked matmul (tensor-core) algorithm of
``ssd/chunked.py``: which is faster depends on the state size and the GPU (``torchssm bench ops``).
"""

from __future__ import annotations

import torch

from torchssm.ops.common import ScanResult, prepare_dt, skip_and_gate
from torchssm.ops.selective.gpu import SelectiveCore, check_kernel_inputs, kernel_chunk
from torchssm.ops.ssd.common import check_ssd_inputs, d_skip

__all__ = ["ssd_gpu"]


def ssd_gpu(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    h0: torch.Tensor | None = None,
    *,
    return_final_state: bool = False,
    reset: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> ScanResult:
    """SSD by the fused Triton kernels; same signature and result as ``ssd_naive``, differentiable.

    x (b, l, h, p), dt (b, l, h), A (h,), B and C (b, l, g, n), D (h,) or (h, p), z (b, l, h, p),
    dt_bias (h,), h0 (b, h, p, n), reset bool (b, l). ``chunk_size`` bounds the kernel's time tile
    (see ``selective_scan_gpu``). Returns y (b, l, h, p) in x's dtype [, h_last (b, h, p, n) float32].
    """
    check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, h0, reset)
    check_kernel_inputs("SSD", dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, h0=h0))
    b, l, h, p = x.shape
    n = B.shape[-1]
    dtc = prepare_dt(dt, dt_bias, dt_softplus, torch.float32)  # (b, l, h)
    dt_c = dtc[..., None].expand(b, l, h, p).reshape(b, l, h * p)  # (b, l, d): per channel
    A_c = A.float()[:, None, None].expand(h, p, n).reshape(h * p, n)  # (d, n)
    u = x.reshape(b, l, h * p)  # (b, l, d)
    s0 = h0.reshape(b, h * p, n) if h0 is not None else None  # (b, d, n)
    y, h_last = SelectiveCore.apply(dt_c, u, A_c, B, C, s0, reset, kernel_chunk(chunk_size, n))
    y = skip_and_gate(y.reshape(b, l, h, p), x.float(), d_skip(D, x), z).to(x.dtype)  # (b, l, h, p)
    return (y, h_last.reshape(b, h, p, n)) if return_final_state else y
