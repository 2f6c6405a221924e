"""The 2-D mixers (cross_scan, spatial_mamba, s4nd): shapes, every gradient, the layer contract's bad
inputs, and each one against a plain reference written here from its definition (float64)."""

import pytest
import torch
import torch.nn.functional as F

from torchssm.layers.registry import build_layer
from torchssm.ops.selective.naive import selective_scan_naive
from torchssm.testing import assert_values_and_grads_close, check_layer_contract
from torchssm.vision.cross_scan import CrossScan2D
from torchssm.vision.s4nd import S4ND
from torchssm.vision.scan_orders import scan_order
from torchssm.vision.spatial_mamba import SpatialMamba, selective_hidden_states

F64 = torch.float64
D = 8

BLOCKS = {
    "cross_scan/mamba": lambda grid: CrossScan2D(D, "mamba", grid=grid, mixer_kwargs={"d_state": 4}),
    "cross_scan/lru-shared-linear": lambda grid: CrossScan2D(
        D, "lru", grid=grid, share=True, merge="linear", mixer_kwargs={"d_state": 4}
    ),
    "cross_scan/hydra-hilbert": lambda grid: CrossScan2D(
        D, "hydra", ("hilbert", "snake"), grid=grid, mixer_kwargs={"d_state": 4, "headdim": 4}
    ),
    "cross_scan/s4d-bidirectional": lambda grid: CrossScan2D(
        D, "s4d", grid=grid, mixer_kwargs={"d_state": 4, "bidirectional": True}
    ),
    "spatial_mamba": lambda grid: SpatialMamba(D, d_state=2, grid=grid),
    "s4nd": lambda grid: S4ND(D, d_state=4, grid=grid),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_shapes_gradients_and_contract(name):
    torch.manual_seed(0)
    layer = BLOCKS[name]((3, 5)).double()
    x = torch.randn(2, 15, D, dtype=F64, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == F64 and not layer.causal
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    img = torch.randn(1, 4, 2, D, dtype=F64)  # forward_image takes any size
    assert layer.forward_image(img).shape == img.shape
    check_layer_contract(layer, length=15)  # bad inputs raise ValueError/TypeError naming the shape


@pytest.mark.parametrize("name", ["cross_scan", "spatial_mamba", "s4nd"])
def test_registered_and_grid_errors(name):
    kw = {"mixer_kwargs": {"d_state": 4}} if name == "cross_scan" else {"d_state": 2}
    layer = build_layer(name, D, grid=(4, 4), **kw)
    assert layer(torch.randn(1, 16, D)).shape == (1, 16, D)
    assert layer(torch.randn(1, 16, D, dtype=F64)).dtype == F64  # computed in float32, returned as given
    with pytest.raises(ValueError, match="4x4 grid: expected sequences of length 16"):
        layer(torch.randn(1, 15, D))
    square = build_layer(name, D, **kw)
    assert square(torch.randn(1, 9, D)).shape == (1, 9, D)
    with pytest.raises(ValueError, match="not a perfect square"):
        square(torch.randn(1, 10, D))
    with pytest.raises(ValueError, match="no state|carries no state"):
        layer(torch.randn(1, 16, D), return_state=True)
    with pytest.raises(ValueError, match="grid must be"):
        build_layer(name, D, grid=(4, 0), **kw)
    with pytest.raises(ValueError, match="height, width, d_model=8"):
        layer.forward_image(torch.randn(1, 4, 4, D + 1))


def test_cross_scan_is_the_mean_of_the_mixer_over_each_order():
    torch.manual_seed(0)
    layer = CrossScan2D(D, "mamba", grid=(3, 4), mixer_kwargs={"d_state": 4}).double()
    x = torch.randn(2, 3, 4, D, dtype=F64)
    want = 0
    for k, name in enumerate(layer.orders):
        perm = scan_order(name, 3, 4)
        seq = x.reshape(2, 12, D)[:, perm]
        out = torch.empty(2, 12, D, dtype=F64)
        out[:, perm] = layer.mixers[k](seq)  # position perm[s] gets output s
        want = want + out.reshape(2, 3, 4, D) / 4
    torch.testing.assert_close(layer.forward_image(x), want)


def test_cross_scan_rows_and_columns_swap_under_transpose():
    """With one shared mixer over (row, col), transposing the image transposes the output."""
    torch.manual_seed(0)
    layer = CrossScan2D(D, "lru", ("row", "col"), share=True, mixer_kwargs={"d_state": 4}).double()
    x = torch.randn(2, 3, 5, D, dtype=F64)
    torch.testing.assert_close(layer.forward_image(x.transpose(1, 2)), layer.forward_image(x).transpose(1, 2))


def test_cross_scan_bad_arguments():
    with pytest.raises(ValueError, match="scan orders"):
        CrossScan2D(D, "lru", ("row", "diagonal"))
    with pytest.raises(ValueError, match="unknown merge"):
        CrossScan2D(D, "lru", merge="max")
    with pytest.raises(ValueError, match="unknown layer"):
        CrossScan2D(D, "no_such_layer")


def _selective_inputs(b=2, l=7, d=3, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, l, d, generator=g, dtype=F64, requires_grad=True)
    dt = F.softplus(torch.randn(b, l, d, generator=g, dtype=F64)).requires_grad_()
    A = (-torch.rand(d, n, generator=g, dtype=F64) - 0.1).requires_grad_()
    B = torch.randn(b, l, n, generator=g, dtype=F64, requires_grad=True)
    C = torch.randn(b, l, n, generator=g, dtype=F64, requires_grad=True)
    Dskip = torch.randn(d, generator=g, dtype=F64, requires_grad=True)
    return u, dt, A, B, C, Dskip


@pytest.mark.parametrize("backend", ["naive", "auto"])
def test_selective_hidden_states_read_out_equal_the_naive_selective_scan(backend):
    u, dt, A, B, C, Dskip = _selective_inputs()
    h = selective_hidden_states(u, dt, A, B, backend=backend)  # (b, l, d, n)
    y = (h * C[:, :, None]).sum(-1) + Dskip * u
    ref = selective_scan_naive(u, dt, A, B, C, Dskip)
    assert_values_and_grads_close([y], [ref], [u, dt, A, B, C, Dskip])


def _fusion_loop(fusion, h):
    """h^[r, c] = sum_k alpha_k sum_{i, j} W_k[i, j] h[clamp(r + dil (i-1)), clamp(c + dil (j-1))]."""
    b, ch, H, W = h.shape
    out = torch.zeros_like(h)
    for k, dil in enumerate(fusion.dilations):
        for r in range(H):
            for c in range(W):
                for i in range(3):
                    for j in range(3):
                        rr = min(max(r + dil * (i - 1), 0), H - 1)  # replicate padding = clamped index
                        cc = min(max(c + dil * (j - 1), 0), W - 1)
                        w = fusion.alpha[k] * fusion.weight[k, :, 0, i, j]  # (channels,)
                        out[:, :, r, c] = out[:, :, r, c] + w * h[:, :, rr, cc]
    return out


def test_spatial_mamba_fuses_states_before_the_readout():
    torch.manual_seed(0)
    layer = SpatialMamba(4, d_state=2, dilations=(1, 2)).double()
    with torch.no_grad():  # break the all-ones init so every neighbour weight matters
        layer.fusion.weight.copy_(torch.randn_like(layer.fusion.weight))
        layer.fusion.alpha.copy_(torch.tensor([0.7, -1.3]))
    x = torch.randn(2, 3, 4, layer.d_inner, dtype=F64, requires_grad=True)
    got = layer.ssm(x)
    # reference from the three stages with plain loops
    b, H, W, d = x.shape
    u = x.reshape(b, H * W, d)
    dt, Bm, Cm = torch.split(layer.x_proj(u), [layer.dt_rank, 2, 2], dim=-1)
    dt = F.softplus(layer.dt_proj(dt))
    A = -torch.exp(layer.A_log)
    h = torch.zeros(b, d, 2, dtype=F64)
    states = []
    for t in range(H * W):  # stage 1: the S6 recurrence
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[:, :, None] * Bm[:, t, None, :]
        states.append(h)
    hs = torch.stack(states, 1).reshape(b, H, W, d * 2).permute(0, 3, 1, 2)  # (b, d n, H, W)
    fused = _fusion_loop(layer.fusion, hs).permute(0, 2, 3, 1).reshape(b, H * W, d, 2)  # stage 2
    want = ((fused * Cm[:, :, None]).sum(-1) + layer.D * u).reshape(b, H, W, d)  # stage 3
    params = [x] + list(layer.parameters())
    assert_values_and_grads_close(
        [got],
        [want],
        [
            p
            for p in params
            if p is not layer.out_norm.weight
            and p is not layer.out_norm.bias
            and p is not layer.out_proj.weight
            and p is not layer.in_proj.weight
            and p is not layer.conv2d.weight
            and p is not layer.conv2d.bias
        ],
    )


def test_spatial_mamba_without_fusion_is_the_selective_scan():
    torch.manual_seed(0)
    layer = SpatialMamba(4, d_state=3, dilations=()).double()
    x = torch.randn(2, 3, 3, layer.d_inner, dtype=F64)
    u = x.reshape(2, 9, -1)
    dt, B, C = torch.split(layer.x_proj(u), [layer.dt_rank, 3, 3], dim=-1)
    ref = selective_scan_naive(
        u,
        dt @ layer.dt_proj.weight.T,
        -torch.exp(layer.A_log),
        B,
        C,
        layer.D,
        delta_bias=layer.dt_proj.bias,
        delta_softplus=True,
    )
    torch.testing.assert_close(layer.ssm(x).reshape(2, 9, -1), ref)


def test_s4nd_matches_the_direct_2d_convolution_with_the_separable_kernel():
    torch.manual_seed(0)
    layer = S4ND(3, d_state=4).double()
    H, W = 4, 5
    x = torch.randn(2, H, W, 3, dtype=F64, requires_grad=True)
    k_rows, k_cols = layer.rows.kernel(H), layer.cols.kernel(W)  # (d, 2H-1), (d, 2W-1)
    want = layer.D * x
    for i in range(H):
        for j in range(W):
            for s in range(H):
                for t in range(W):
                    kij = k_rows[:, i - s + H - 1] * k_cols[:, j - t + W - 1]
                    want = want + F.pad((kij * x[:, s, t])[:, None, None], (0, 0, j, W - 1 - j, i, H - 1 - i))
    assert_values_and_grads_close([layer.forward_image(x)], [want], [x] + list(layer.parameters()))


def test_s4nd_axis_kernel_is_the_s4d_impulse_response():
    torch.manual_seed(0)
    axis = S4ND(2, d_state=4).double().rows
    L = 6
    k = axis.kernel(L)  # (d, 2L-1): offsets -(L-1)..(L-1)
    A = torch.complex(-torch.exp(axis.log_A_real), axis.A_imag)
    dt = torch.exp(axis.log_dt)[:, None]
    B_bar = (torch.exp(dt * A) - 1) / A * torch.view_as_complex(axis.B)  # ZOH
    C = torch.view_as_complex(axis.C)
    h_fwd, h_bwd = B_bar.clone(), B_bar.clone()  # state after an impulse, stepped by exp(dt A)
    for o in range(L):
        torch.testing.assert_close(k[:, L - 1 + o], 2 * (C[0] * h_fwd).sum(-1).real)
        if o >= 1:
            torch.testing.assert_close(k[:, L - 1 - o], 2 * (C[1] * h_bwd).sum(-1).real)
            h_bwd = torch.exp(dt * A) * h_bwd
        h_fwd = torch.exp(dt * A) * h_fwd


def test_spatial_mamba_and_s4nd_bad_arguments():
    with pytest.raises(ValueError, match="d_conv must be odd"):
        SpatialMamba(4, d_conv=4)
    with pytest.raises(ValueError, match="dilations"):
        SpatialMamba(4, dilations=(1, 0))
    with pytest.raises(ValueError, match="even int"):
        S4ND(4, d_state=3)
