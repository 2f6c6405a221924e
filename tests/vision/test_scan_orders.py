"""Scan orders are permutations that invert exactly; the path geometry of each order; patch embedding errors."""

import pytest
import torch

from torchssm.vision.patch import PatchEmbed
from torchssm.vision.scan_orders import (
    ORDERS,
    VMAMBA_CROSS_SCAN,
    hilbert_cells,
    inverse,
    scan_order,
    to_image,
    to_sequence,
)

GRIDS = [(1, 1), (1, 7), (5, 1), (4, 4), (3, 5), (6, 4), (8, 8), (7, 9)]


@pytest.mark.parametrize("name", ORDERS)
@pytest.mark.parametrize("grid", GRIDS)
def test_order_is_a_permutation_that_inverts(name, grid):
    h, w = grid
    perm = scan_order(name, h, w)
    assert perm.dtype == torch.long and sorted(perm.tolist()) == list(range(h * w))
    inv = inverse(perm)
    assert torch.equal(perm[inv], torch.arange(h * w)) and torch.equal(inv[perm], torch.arange(h * w))
    x = torch.randn(2, h, w, 3)
    seq = to_sequence(x, perm)
    assert torch.equal(seq[:, 0], x.reshape(2, -1, 3)[:, perm[0]])
    assert torch.equal(to_image(seq, perm, h, w), x)  # exact, not approximately


def test_vmamba_directions_visit_the_cells_in_their_order():
    h, w = 3, 4
    cells = torch.arange(h * w).reshape(h, w)
    assert scan_order("row", h, w).tolist() == cells.reshape(-1).tolist()
    assert scan_order("row_rev", h, w).tolist() == cells.reshape(-1).flip(0).tolist()
    assert scan_order("col", h, w).tolist() == cells.t().reshape(-1).tolist()
    assert scan_order("col_rev", h, w).tolist() == cells.t().reshape(-1).flip(0).tolist()
    assert VMAMBA_CROSS_SCAN == ("row", "row_rev", "col", "col_rev")


def _steps(perm, w):
    r, c = perm // w, perm % w
    return (r[1:] - r[:-1]).abs() + (c[1:] - c[:-1]).abs()  # Manhattan distance of each step


@pytest.mark.parametrize("name", ["snake", "snake_col", "hilbert"])
@pytest.mark.parametrize("side", [2, 4, 8, 16])
def test_continuous_orders_move_to_a_neighbour_each_step(name, side):
    assert torch.all(_steps(scan_order(name, side, side), side) == 1)


def test_hilbert_on_rectangles_is_a_permutation_with_short_steps():
    for h, w in [(6, 10), (12, 8), (32, 32)]:
        cells = hilbert_cells(h, w)
        assert len(set(cells)) == h * w and all(0 <= r < h and 0 <= c < w for r, c in cells)
        assert _steps(scan_order("hilbert", h, w), w).max() <= 2  # at most a diagonal step (generalised curve)


def test_bad_order_and_grid():
    with pytest.raises(ValueError, match="unknown scan order"):
        scan_order("spiral", 4, 4)
    with pytest.raises(ValueError, match="positive int"):
        scan_order("row", 0, 4)


def test_patch_embed_shapes_and_errors():
    emb = PatchEmbed(3, 8, patch_size=4)
    assert emb(torch.randn(2, 3, 16, 12)).shape == (2, 4, 3, 8)
    assert PatchEmbed(1, 8, patch_size=(2, 2))(torch.randn(1, 1, 4, 4)).shape == (1, 2, 2, 8)
    with pytest.raises(ValueError, match="non-square patches"):
        PatchEmbed(3, 8, patch_size=(4, 2))
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        emb(torch.randn(1, 3, 16, 10))
    with pytest.raises(ValueError, match="not divisible"):
        PatchEmbed(3, 8, patch_size=5, image_size=32)
    with pytest.raises(ValueError, match="channels=3"):
        emb(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="positive int"):
        PatchEmbed(3, 8, patch_size=0)
