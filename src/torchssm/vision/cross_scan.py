"""Multi-order 2-D scan with any registered 1-D layer: VMamba's cross-scan / cross-merge, generalised.

VMamba (Liu et al. 2024, "VMamba: Visual State Space Model", Sec. 4.1 "2D-Selective-Scan", Fig. 2)
unfolds the patch grid into four sequences (rows and columns, each forwards and backwards), runs a
selective scan on each, folds every output back to the grid and merges them (CrossMerge adds the four
maps). Here the mixer of each order is any layer of the registry (``torchssm.layers.build_layer``):

    for each order k (a permutation P_k of the H*W cells, vision/scan_orders.py):
        y_k = unscan_k( mixer_k( scan_k(x) ) )          (b, H, W, d)
    y = merge(y_1, ..., y_K)                            "sum" | "mean" | "linear" (concat, Linear K d -> d)

``orders`` default: the four VMamba directions for a causal mixer; ("row", "col") for a
bidirectional one (its reverse directions are already inside it). ``share=True`` uses one mixer
for every order (the parameters of the 1-D layer alone: the equal-parameter comparison with the
raster-sequence model); ``share=False`` (default, as VMamba's per-direction dt/A/B/C/D) one per order.
``merge="mean"`` is the default: VMamba sums and normalises right after (its out_norm); here the mixers
sit in residual blocks, so averaging keeps the output scale of one mixer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchssm.layers.registry import build_layer
from torchssm.vision.grid import Grid2DLayer, check_image
from torchssm.vision.scan_orders import ORDERS, VMAMBA_CROSS_SCAN, scan_order, to_image, to_sequence

MERGES = ("sum", "mean", "linear")


class CrossScan2D(Grid2DLayer):
    """Scan the grid in several orders with a registered layer and merge (module docstring).

    Args:
        d_model: channels d.
        mixer: registered layer name (``torchssm.layers.available_layers()``), default "mamba".
        orders: scan order names (vision/scan_orders.py ``ORDERS``); default as in the module docstring.
        share: one mixer for every order (True) or one per order (False).
        merge: "sum", "mean" or "linear".
        grid: (H, W) of the raster sequences given to ``forward`` (None: square).
        mixer_kwargs: keyword arguments of the mixer (e.g. ``{"d_state": 16}``).
    """

    def __init__(
        self,
        d_model: int,
        mixer: str = "mamba",
        orders: Sequence[str] | None = None,
        *,
        share: bool = False,
        merge: str = "mean",
        grid=None,
        mixer_kwargs: dict | None = None,
    ):
        super().__init__(d_model, grid)
        if merge not in MERGES:
            raise ValueError(f"unknown merge {merge!r}; expected one of {list(MERGES)}")
        mixer_kwargs = dict(mixer_kwargs or {})
        first = build_layer(mixer, d_model, **mixer_kwargs)
        if orders is None:
            orders = VMAMBA_CROSS_SCAN if first.causal else ("row", "col")
        orders = tuple(orders)
        if not orders or any(o not in ORDERS for o in orders):
            raise ValueError(f"orders must be a non-empty list of scan orders from {list(ORDERS)}; got {orders!r}")
        self.mixer_name, self.orders, self.share, self.merge = mixer, orders, share, merge
        n_mixers = 1 if share else len(orders)
        others = [build_layer(mixer, d_model, **mixer_kwargs) for _ in range(n_mixers - 1)]
        self.mixers = nn.ModuleList([first, *others])
        self.merge_proj = nn.Linear(len(orders) * d_model, d_model) if merge == "linear" else None
        self.optim_overrides = {}  # the mixers carry their own (optim builder walks submodules)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, mixer={self.mixer_name!r}, orders={self.orders}, share={self.share}, "
            f"merge={self.merge!r}"
        )

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        """x (b, H, W, d) -> (b, H, W, d)."""
        check_image(x, self.d_model)
        _, h, w, _ = x.shape
        outs = []
        for k, name in enumerate(self.orders):
            perm = scan_order(name, h, w)  # (H*W,)
            mixer = self.mixers[0 if self.share else k]
            outs.append(to_image(mixer(to_sequence(x, perm)), perm, h, w))  # (b, H, W, d)
        if self.merge == "linear":
            return self.merge_proj(torch.cat(outs, dim=-1))
        y = torch.stack(outs).sum(0)
        return y / len(outs) if self.merge == "mean" else y
