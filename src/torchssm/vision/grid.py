"""Base class of the 2-D mixers: a layer of the 1-D contract (docs/index.md) over a raster-ordered grid.

Every 2-D layer works on images ``forward_image(x (b, H, W, d)) -> (b, H, W, d)`` of any size, and
also follows the layer contract of ``torchssm.layers`` on sequences (b, L, d) that are H x W grids
read in raster order (row by row, L = H*W), so it can be built by name (``build_layer("cross_scan",
d, grid=(32, 32))``) and used inside the deep model (models/backbone.py) on flattened images. ``grid``
(H, W) fixes the grid; ``grid=None`` reads a square grid (L must be a perfect square). The 2-D
mixers are non-causal: no ``step``, no carried state (``init_state`` gives an empty (b, 0) tensor
only for generic code, as Hydra's).
"""

from __future__ import annotations

import math

import torch

from torchssm.layers.base import SSMLayer


def check_grid(grid) -> tuple | None:
    """None, or (H, W) positive ints (an int g means (g, g))."""
    if grid is None:
        return None
    if isinstance(grid, int) and not isinstance(grid, bool):
        grid = (grid, grid)
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != 2
        or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in grid)
    ):
        raise ValueError(f"grid must be (height, width) positive ints or None; got {grid!r}")
    return int(grid[0]), int(grid[1])


def check_image(x: torch.Tensor, d_model: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != d_model:
        raise ValueError(
            f"x must have shape (batch, height, width, d_model={d_model}); got {tuple(getattr(x, 'shape', ()))}"
        )
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"x is an empty image {tuple(x.shape)}; expected height, width >= 1")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}")


class Grid2DLayer(SSMLayer):
    """Sequence <-> image plumbing shared by the 2-D mixers; subclasses implement ``forward_image``."""

    causal = False

    def __init__(self, d_model: int, grid=None):
        super().__init__(d_model)
        self.grid = check_grid(grid)

    def grid_of(self, length: int) -> tuple:
        if self.grid is not None:
            if self.grid[0] * self.grid[1] != length:
                raise ValueError(
                    f"{type(self).__name__} reads a {self.grid[0]}x{self.grid[1]} grid: expected "
                    f"sequences of length {self.grid[0] * self.grid[1]}; got length {length}"
                )
            return self.grid
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(
                f"{type(self).__name__} without grid= reads a square grid: length {length} is not a "
                f"perfect square; pass grid=(height, width)"
            )
        return side, side

    def init_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """Non-causal: an empty (b, 0) tensor, for generic code only."""
        p = next(self.parameters())
        return torch.zeros(batch, 0, device=device if device is not None else p.device, dtype=dtype or p.dtype)

    def forward(self, x: torch.Tensor, state=None, *, return_state: bool = False) -> torch.Tensor:
        """x (b, L = H*W, d) in raster order -> (b, L, d)."""
        self._check_forward(x, state)
        if state is not None or return_state:
            raise ValueError(f"{type(self).__name__} is a non-causal 2-D mixer and carries no state: call forward(x)")
        h, w = self.grid_of(x.shape[1])
        b, length, d = x.shape
        return self.forward_image(x.reshape(b, h, w, d)).reshape(b, length, d)

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
