"""Input checks shared by the SSD reference and the chunked algorithm.

Symbols as in docs/architecture.md, except that in the SSD code ``h`` counts heads (the glossary's
``nh``), after mamba_ssm's einsum letters: x (b, l, h, p), B/C (b, l, g, n), states (b, h, p, n), with
g groups of B/C each shared by h // g heads.
"""

from __future__ import annotations

import torch

from torchssm.ops.common import check_bc, check_reset, shape_str


def check_ssd_inputs(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    h0: torch.Tensor | None,
    reset: torch.Tensor | None,
) -> None:
    """Shapes/dtypes only (no device sync). See :func:`torchssm.ops.ssd.ssd`."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must have shape (batch, length, heads, headdim); got {shape_str(x)}")
    b, l, h, p = x.shape
    if l == 0:
        raise ValueError("x is an empty sequence (length 0); expected shape (batch, length>=1, heads, headdim)")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}")
    if not isinstance(dt, torch.Tensor) or tuple(dt.shape) != (b, l, h):
        raise ValueError(f"dt must have shape (batch, length, heads)=({b}, {l}, {h}); got {shape_str(dt)}")
    if not isinstance(A, torch.Tensor) or tuple(A.shape) != (h,):
        raise ValueError(f"A must have shape (heads,)=({h},) (one scalar per head); got {shape_str(A)}")
    if B is None or not isinstance(B, torch.Tensor) or B.dim() != 4:
        raise ValueError(f"B must have shape (batch, length, groups, n); got {shape_str(B)}")
    n = check_bc("B", B, b, l, h, None)
    check_bc("C", C, b, l, h, n)
    if C.dim() != 4 or C.shape[2] != B.shape[2]:
        raise ValueError(f"C must have the shape of B {tuple(B.shape)}; got {shape_str(C)}")
    if D is not None and (not isinstance(D, torch.Tensor) or tuple(D.shape) not in {(h,), (h, p)}):
        raise ValueError(f"D must have shape (heads,)=({h},) or (heads, headdim)=({h}, {p}); got {shape_str(D)}")
    for name, t, shape in (("dt_bias", dt_bias, (h,)), ("z", z, (b, l, h, p)), ("h0", h0, (b, h, p, n))):
        if t is not None and (not isinstance(t, torch.Tensor) or tuple(t.shape) != shape):
            raise ValueError(f"{name} must have shape {shape}; got {shape_str(t)}")
    check_reset(reset, b, l)


def d_skip(D: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """D of shape (h,) or (h, p) broadcast against x (b, l, h, p)."""
    if D is None:
        return None
    return D[:, None] if D.dim() == 1 else D
