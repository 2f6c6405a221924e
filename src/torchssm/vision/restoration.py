"""A Serpent-style multi-scale restoration network: a U-shaped stack of 2-D state-space blocks.

Serpent (Sepehri, Fabian, Soltanolkotabi 2024, "Serpent: Scalable and Efficient Image Restoration
via Multi-scale Structured State Space Models", arXiv 2403.17902) processes the image as sequences
at several scales with SSM blocks whose global receptive field costs linear time in the number of
pixels, in a hierarchical (encoder / decoder) architecture. This module builds that layout with any
2-D mixer of torchssm.vision (the exact Serpent block and widths are UNVERIFIED; the U-Net plumbing
below follows Restormer, Zamir et al. 2022, Fig. 2, and Uformer, Wang et al. 2022):

    stem   3x3 conv  C_in -> w                                          (b, w, H, W)
    encoder level i = 0..K-1 (width w 2^i): depth_i x Block, then (i < K-1) 2x2 stride-2 conv -> 2x width
    decoder level i = K-2..0: 2x2 stride-2 transposed conv (upsample), concat the encoder skip,
                   1x1 conv 2c -> c, depth_i x Block
    head   3x3 conv w -> C_in;   output = input + head   (residual learning, DnCNN: Zhang et al. 2017)

Two options of FFDNet (Zhang, Zuo, Zhang 2018, "FFDNet: Toward a Fast and Flexible Solution for CNN based
Image Denoising", Sec. III-A, Fig. 1):
    ``noise_map=True``  non-blind: a constant map of the noise level sigma (0..1 scale) is concatenated to
                        the input of the stem (then ``forward(images, sigma)``; one model for every sigma)
    ``unshuffle=r``     the stem reads the r x r pixel-unshuffled image (C r^2 channels at 1/r resolution)
                        and the head is pixel-shuffled back, so every block runs on r^2 times fewer pixels
                        (FFDNet uses r = 2); the residual is still added at full resolution

    Block(x) = x + mixer(LN(x));  x + FFN(LN(x)),  FFN = Linear c -> 2c, depthwise 3x3 conv, GELU, Linear 2c -> c
               (the depthwise conv gives every mixer the same local/positional cue, as Restormer's GDFN)

Mixers (``mixer=``): any layer name of the registry with a ``forward_image`` ("cross_scan",
"spatial_mamba", "s4nd"), or "attention": global softmax attention over all H*W tokens of the level
(``SelfAttention(causal=False)`` over the raster sequence, i.e. a ViT-style restoration baseline whose
cost is quadratic in the number of pixels). Image sides must be multiples of 2^(K-1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.layers.registry import build_layer
from torchssm.vision.cross_scan import CrossScan2D
from torchssm.vision.grid import Grid2DLayer
from torchssm.vision.patch import check_images


def build_mixer2d(name: str, channels: int, kwargs: dict) -> Grid2DLayer:
    """A 2-D mixer with ``forward_image`` (b, H, W, c) -> (b, H, W, c)."""
    if name == "attention":  # global attention over the raster sequence: the ViT-style baseline
        kw = {"causal": False, "max_len": 1 << 20, "n_heads": 2, **kwargs}
        return CrossScan2D(channels, "transformer", ("row",), mixer_kwargs=kw)
    layer = build_layer(name, channels, **kwargs)
    if not isinstance(layer, Grid2DLayer):
        raise ValueError(
            f"mixer {name!r} is not a 2-D mixer; expected 'attention' or one of 'cross_scan', 'spatial_mamba', 's4nd'"
        )
    return layer


class FeedForward(nn.Module):
    def __init__(self, channels: int, expand: int = 2):
        super().__init__()
        hidden = expand * channels
        self.fc1 = nn.Linear(channels, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, H, W, c)
        h = self.fc1(x).permute(0, 3, 1, 2)
        h = F.gelu(self.dwconv(h)).permute(0, 2, 3, 1)
        return self.fc2(h)


class Block2D(nn.Module):
    """x + mixer(LN(x)); x + FFN(LN(x)) on channels-last images (b, H, W, c)."""

    def __init__(self, channels: int, mixer: str, mixer_kwargs: dict):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.mixer = build_mixer2d(mixer, channels, mixer_kwargs)
        self.ffn = FeedForward(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer.forward_image(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class _Stage(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, c, H, W) in and out
        x = x.permute(0, 2, 3, 1)
        for block in self:
            x = block(x)
        return x.permute(0, 3, 1, 2)


class RestorationUNet(nn.Module):
    """The U-shaped restoration network (module docstring). images (b, C, H, W) -> restored (b, C, H, W)."""

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 16,
        depths: Sequence[int] = (1, 1, 1),
        mixer: str = "cross_scan",
        mixer_kwargs: dict | None = None,
        *,
        noise_map: bool = False,
        unshuffle: int = 1,
    ):
        super().__init__()
        depths = tuple(depths)
        if isinstance(unshuffle, bool) or not isinstance(unshuffle, int) or unshuffle < 1:
            raise ValueError(f"unshuffle must be a positive int (the pixel-unshuffle factor); got {unshuffle!r}")
        if not depths or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in depths):
            raise ValueError(f"depths must be a non-empty list of ints >= 0 (blocks per level); got {depths!r}")
        if mixer == "cross_scan" and mixer_kwargs is None:
            mixer_kwargs = {"mixer": "mamba", "mixer_kwargs": {"d_state": 8}}
        mixer_kwargs = dict(mixer_kwargs or {})
        self.in_channels, self.width, self.depths, self.mixer = in_channels, width, depths, mixer
        self.noise_map, self.unshuffle = bool(noise_map), unshuffle
        levels = len(depths)
        widths = [width * 2**i for i in range(levels)]
        packed = in_channels * unshuffle**2
        self.stem = nn.Conv2d(packed + int(self.noise_map), width, 3, padding=1)
        self.encoders = nn.ModuleList(
            _Stage(*[Block2D(widths[i], mixer, mixer_kwargs) for _ in range(depths[i])]) for i in range(levels)
        )
        self.downs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 2, stride=2) for i in range(levels - 1))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(levels - 1))
        self.fuses = nn.ModuleList(nn.Conv2d(2 * widths[i], widths[i], 1) for i in range(levels - 1))
        self.decoders = nn.ModuleList(
            _Stage(*[Block2D(widths[i], mixer, mixer_kwargs) for _ in range(depths[i])]) for i in range(levels - 1)
        )
        self.head = nn.Conv2d(width, packed, 3, padding=1)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this (unshuffle * 2^(levels-1))."""
        return self.unshuffle * 2 ** (len(self.depths) - 1)

    def forward(self, images: torch.Tensor, sigma=None) -> torch.Tensor:
        """images (b, C, H, W); ``sigma`` (a float or (b,) tensor, noise std on the 0..1 scale) is required
        with ``noise_map=True`` and refused without it."""
        check_images(images, self.in_channels)
        h, w = images.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"image size {h}x{w} is not divisible by {self.multiple} (unshuffle {self.unshuffle} x "
                f"2^(levels-1) for {len(self.depths)} levels); crop or pad the image"
            )
        x = F.pixel_unshuffle(images, self.unshuffle) if self.unshuffle > 1 else images
        if self.noise_map:
            if sigma is None:
                raise ValueError("this model has noise_map=True: pass sigma (noise std on the 0..1 scale)")
            level = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
            x = torch.cat([x, level.expand(x.shape[0], 1, *x.shape[-2:])], dim=1)
        elif sigma is not None:
            raise ValueError("sigma was given to a blind model (noise_map=False)")
        x = self.stem(x)
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x)
            if i < len(self.downs):
                skips.append(x)
                x = self.downs[i](x)
        for i in reversed(range(len(self.decoders))):
            x = self.fuses[i](torch.cat([self.ups[i](x), skips[i]], dim=1))
            x = self.decoders[i](x)
        out = self.head(x)
        return images + (F.pixel_shuffle(out, self.unshuffle) if self.unshuffle > 1 else out)
