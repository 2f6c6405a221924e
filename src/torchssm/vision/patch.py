"""Patch embedding: an image (b, C, H, W) -> a grid of patch tokens (b, H/p, W/p, d_model).

As ViT (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", Sec. 3.1, Eq. 1) and VMamba's stem:
one Conv2d with kernel = stride = p is the linear map of each flattened p x p x C patch to d_model.
Only square patches are supported (one int ``patch_size``), and the image sides must be multiples of p:
both raise a ValueError naming what was expected rather than cropping or padding silently.
"""

from __future__ import annotations

import torch
from torch import nn


def check_patch_size(patch_size) -> int:
    """A square patch side as a positive int; (p, p) is accepted, (p, q) with p != q is not."""
    if isinstance(patch_size, (tuple, list)):
        if len(patch_size) != 2 or patch_size[0] != patch_size[1]:
            raise ValueError(
                f"non-square patches are not supported: patch_size={tuple(patch_size)}; "
                f"expected one int p (p x p patches)"
            )
        patch_size = patch_size[0]
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int; got {patch_size!r}")
    return patch_size


def check_images(images: torch.Tensor, in_channels: int) -> None:
    """``images`` must be a (batch, in_channels, height, width) tensor: else a one-line ValueError."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != in_channels:
        raise ValueError(
            f"images must have shape (batch, channels={in_channels}, height, width); "
            f"got {tuple(getattr(images, 'shape', ()))}"
        )


def check_divisible(height: int, width: int, patch_size: int) -> None:
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not divisible by the patch size {patch_size}; "
            f"expected both sides to be multiples of {patch_size} (crop or pad the image)"
        )


class PatchEmbed(nn.Module):
    """(b, C, H, W) -> (b, H/p, W/p, d_model) tokens (channels last), optionally LayerNorm-ed.

    ``image_size`` (an int or (H, W)), when given, is checked at construction and at every call.
    """

    def __init__(self, in_channels: int, d_model: int, patch_size=4, *, image_size=None, norm: bool = False):
        super().__init__()
        self.patch_size = check_patch_size(patch_size)
        self.in_channels, self.d_model = in_channels, d_model
        self.image_size: tuple | None = None
        if image_size is not None:
            hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            check_divisible(hw[0], hw[1], self.patch_size)
            self.image_size = hw
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = nn.LayerNorm(d_model) if norm else nn.Identity()

    def grid(self, height: int, width: int) -> tuple:
        """The patch grid (H/p, W/p) of an image of that size."""
        check_divisible(height, width, self.patch_size)
        return height // self.patch_size, width // self.patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.in_channels)
        h, w = images.shape[-2:]
        if self.image_size is not None and (h, w) != self.image_size:
            raise ValueError(f"expected images of size {self.image_size[0]}x{self.image_size[1]}; got {h}x{w}")
        self.grid(h, w)
        return self.norm(self.proj(images).permute(0, 2, 3, 1))  # (b, H/p, W/p, d)
