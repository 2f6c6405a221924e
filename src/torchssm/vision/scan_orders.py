"""Scan orders of a 2-D grid: the permutations that turn an (H, W) grid into a 1-D sequence.

A scan order is a LongTensor ``perm`` (H*W,) of raster indices (r * W + c): step s of the sequence
visits grid cell ``perm[s]``, so ``seq = x_raster[:, perm]`` and ``x_raster = seq[:, inverse(perm)]``.

Orders (``*_rev`` is the same path walked backwards):

    row, row_rev       raster, row by row (left to right) and its reverse
    col, col_rev       column by column (top to bottom) and its reverse
                       -- these four are VMamba's cross-scan (Liu et al. 2024, "VMamba: Visual State
                       Space Model", Sec. 4.1 / Fig. 2 "SS2D": four directions, then cross-merge)
    snake, snake_rev   boustrophedon rows (even rows left to right, odd rows right to left): every
                       step moves to a 4-neighbour (the zig-zag scan of ZigMa, Hu et al. 2024, and of
                       PlainMamba, Yang et al. 2024; UNVERIFIED that their exact start corner matches)
    snake_col(_rev)    the same by columns
    hilbert(_rev)      a generalised Hilbert curve on any H x W rectangle ("gilbert", J. Cervený's
                       algorithm: recursive halving of the longer side); on 2^k x 2^k grids it is the
                       classical Hilbert curve and every step moves to a 4-neighbour

``VMAMBA_CROSS_SCAN = ("row", "row_rev", "col", "col_rev")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import torch

VMAMBA_CROSS_SCAN = ("row", "row_rev", "col", "col_rev")
_BASE_ORDERS = ("row", "col", "snake", "snake_col", "hilbert")
ORDERS = tuple(o for base in _BASE_ORDERS for o in (base, base + "_rev"))


def _check_grid(height, width) -> None:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"grid {name} must be a positive int; got {v!r}")


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _gilbert(x: int, y: int, ax: int, ay: int, bx: int, by: int) -> Iterator[tuple[int, int]]:
    """Cells (x, y) of the generalised Hilbert curve filling the parallelogram spanned by a=(ax, ay)
    (major axis, walked first) and b=(bx, by) from corner (x, y)."""
    w, h = abs(ax + ay), abs(bx + by)
    dax, day, dbx, dby = _sign(ax), _sign(ay), _sign(bx), _sign(by)
    if h == 1:  # a single row (or column) along a
        for _ in range(w):
            yield x, y
            x, y = x + dax, y + day
        return
    if w == 1:  # a single column along b
        for _ in range(h):
            yield x, y
            x, y = x + dbx, y + dby
        return
    ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
    w2, h2 = abs(ax2 + ay2), abs(bx2 + by2)
    if 2 * w > 3 * h:  # long rectangle: split along a into two halves
        if w2 % 2 and w > 2:
            ax2, ay2 = ax2 + dax, ay2 + day  # prefer an even split so the halves join
        yield from _gilbert(x, y, ax2, ay2, bx, by)
        yield from _gilbert(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
    else:  # standard case: one step up, the long way across, one step down
        if h2 % 2 and h > 2:
            bx2, by2 = bx2 + dbx, by2 + dby
        yield from _gilbert(x, y, bx2, by2, ax2, ay2)
        yield from _gilbert(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
        yield from _gilbert(
            x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby), -bx2, -by2, -(ax - ax2), -(ay - ay2)
        )


def hilbert_cells(height: int, width: int) -> list:
    """(row, col) cells of the generalised Hilbert curve over a height x width grid, in visiting order."""
    _check_grid(height, width)
    if width >= height:
        cells = _gilbert(0, 0, width, 0, 0, height)
    else:
        cells = _gilbert(0, 0, 0, height, width, 0)
    return [(y, x) for x, y in cells]  # the algorithm's (x, y) is (col, row)


@lru_cache(maxsize=256)
def _order(name: str, height: int, width: int) -> torch.Tensor:
    base, rev = (name[:-4], True) if name.endswith("_rev") else (name, False)
    idx = torch.arange(height * width).reshape(height, width)  # raster index of each cell
    if base == "row":
        perm = idx.reshape(-1)
    elif base == "col":
        perm = idx.t().reshape(-1)
    elif base == "snake":
        rows = idx.clone()
        rows[1::2] = rows[1::2].flip(-1)
        perm = rows.reshape(-1)
    elif base == "snake_col":
        cols = idx.t().clone()
        cols[1::2] = cols[1::2].flip(-1)
        perm = cols.reshape(-1)
    else:  # hilbert
        perm = torch.tensor([r * width + c for r, c in hilbert_cells(height, width)], dtype=torch.long)
    return perm.flip(0) if rev else perm


def scan_order(name: str, height: int, width: int) -> torch.Tensor:
    """The permutation (H*W,) int64 of order ``name`` over a height x width grid (module docstring)."""
    if name not in ORDERS:
        raise ValueError(f"unknown scan order {name!r}; expected one of {list(ORDERS)}")
    _check_grid(height, width)
    return _order(name, height, width).clone()


def inverse(perm: torch.Tensor) -> torch.Tensor:
    """The inverse permutation: ``inverse(perm)[perm[s]] = s``."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


def to_sequence(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Image (b, H, W, d) -> sequence (b, H*W, d) in the order ``perm``."""
    b, h, w, d = x.shape
    return x.reshape(b, h * w, d).index_select(1, perm.to(x.device))


def to_image(seq: torch.Tensor, perm: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sequence (b, H*W, d) in the order ``perm`` -> image (b, H, W, d); exact inverse of :func:`to_sequence`."""
    b, _, d = seq.shape
    return seq.index_select(1, inverse(perm).to(seq.device)).reshape(b, height, width, d)
