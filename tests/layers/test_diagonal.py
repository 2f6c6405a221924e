"""The complex-by-real GEMM helpers of torchssm.layers.diagonal (shared by S5 and the LRU) against the plain
complex formulas, outputs and every gradient in float64."""

import pytest
import torch

from torchssm.layers.diagonal import complex_input, complex_readout


def test_complex_input_is_B_x_with_its_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=g, requires_grad=True)  # (b, l, H)
    B = torch.randn(4, 3, dtype=torch.complex128, generator=g, requires_grad=True)  # (m, H)
    out = complex_input(x, B)  # (b, l, m)
    ref = x.to(B.dtype) @ B.T
    torch.testing.assert_close(out, ref)
    w = torch.randn(out.shape, dtype=torch.complex128, generator=g)
    grads = torch.autograd.grad((out * w).real.sum(), (x, B))
    refs = torch.autograd.grad((ref * w).real.sum(), (x, B))
    for got, want in zip(grads, refs):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_complex_readout_is_scaled_real_part_with_its_gradients(scale):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 5, 4, dtype=torch.complex128, generator=g, requires_grad=True)  # (b, l, m)
    C_re = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)  # (H, m)
    C_im = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    out = complex_readout(h, C_re, C_im, scale=scale)  # (b, l, H)
    ref = scale * (h @ torch.complex(C_re, C_im).T).real
    torch.testing.assert_close(out, ref)
    w = torch.randn(out.shape, dtype=torch.float64, generator=g)
    grads = torch.autograd.grad((out * w).sum(), (h, C_re, C_im))
    refs = torch.autograd.grad((ref * w).sum(), (h, C_re, C_im))
    for got, want in zip(grads, refs):
        torch.testing.assert_close(got, want)
