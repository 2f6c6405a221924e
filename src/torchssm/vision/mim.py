"""MambaMIM masked image modelling: mask patches, fill the masked positions by selective structured
state-space token interpolation (S6T, "TOKI") or by a learned mask token, reconstruct their pixels.

Tang et al. 2024, "MambaMIM: Pre-training Mamba with State Space Token-interpolation" (arXiv:2408.08070),
Sec. 3 and Fig. 2; the construction below follows the authors' code (FengheTan9/MambaMIM,
models/MambaMIM.py: ``mask`` / ``mask_token_every_batch`` / ``forward``); the paper's equation numbers
are UNVERIFIED (only its abstract and that code were read here).

Pipeline (b batch, L = grid cells in raster order, P = pixels per patch, h = d_model):

    keep a random (1 - ratio) L of the cells per image (ratio 0.6, the code's default ``mask_ratio``)
    f   = encoder(tokens * visible) * visible               (b, L, h)  masked cells are empty (zero),
                                                             as in the code's sparse encoder
    m   = S6T(f, visible)  or  a learned token              (b, L, h)
    rec = decoder(where(visible, f, m))                     (b, L, P)
    loss = mean over masked cells of ||rec - target||^2      (target: pixels, optionally per-patch
                                                             normalised as the code does)

S6T (the code's ``mask_token_every_batch``): anchors are the visible cells plus the first and last
cell. Between consecutive anchors a < b (gap n = b - a, offsets j = 0 .. n-1 at cells a + j)

    x~_j = (1 - alpha_j) f_a + alpha_j f_b,   alpha_j = j / (n - 1)   (linear interpolation; 0 if n = 1)
    m_{a+j} = sum_{i <= j} A^{n-1-i} x~_i                         (a state-space sum with a learned
                                                                     transition A (h, h), init 0)

and at the last cell m_{L-1} = A f_{L-1}. With A = 0 (the init) the cell just before each anchor gets
that anchor's features and the others zero; A learns how the interpolated states propagate.
The authors' code stores the result as (cells, channels) and reshapes it to (channels, cells) without a
transpose (``mask_token = AX.reshape(B, N, H, L, W)``), which mixes cells and channels; this module
implements the interpolation as the construction describes it, cell by cell.
The encoder is the deep model of models/backbone.py (any registered layer, Mamba by default); it is
fine-tuned as a classifier afterwards (vision/classify.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FILLS = ("s6t", "mask_token")


def random_visible(batch: int, length: int, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, length) bool: exactly round(length (1 - ratio)) visible cells per row (the code's ``mask``)."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1); got {ratio}")
    keep = max(1, round(length * (1 - ratio)))
    idx = torch.rand(batch, length, generator=generator).argsort(1)[:, :keep]  # (b, keep)
    return torch.zeros(batch, length, dtype=torch.bool).scatter_(1, idx, True)


def s6t_fill(f: torch.Tensor, visible: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """S6T token interpolation (module docstring): f (b, L, h), visible (b, L) bool, A (h, h) -> (b, L, h).

    Vectorised over the batch and the gaps (the authors' code loops over both)."""
    b, length, h = f.shape
    if visible.shape != (b, length) or visible.dtype != torch.bool:
        raise ValueError(
            f"visible must be a bool tensor of shape {(b, length)}; got {visible.dtype} {tuple(visible.shape)}"
        )
    if A.shape != (h, h):
        raise ValueError(f"A must have shape {(h, h)}; got {tuple(A.shape)}")
    idx = torch.arange(length, device=f.device)
    anchor = visible.clone()
    anchor[:, 0] = anchor[:, -1] = True
    a = torch.where(anchor, idx, -1).cummax(1).values  # (b, L) last anchor <= t
    nxt = torch.where(anchor, idx, length)[:, 1:]  # anchors > t, shifted: (b, L-1)
    nxt = torch.cat([nxt, nxt.new_full((b, 1), length)], 1).flip(1).cummin(1).values.flip(1)  # (b, L) first anchor > t
    last = idx == length - 1  # the last cell is its own segment
    bb = torch.where(last, idx, nxt)  # (b, L); at t = L-1 unused
    n = (bb - a).clamp(min=1)  # gap length
    j = idx - a  # offset in the gap
    alpha = torch.where(n > 1, j / (n - 1).clamp(min=1), torch.zeros_like(j, dtype=f.dtype)).to(f.dtype)[..., None]
    f_a = f.gather(1, a[..., None].expand(-1, -1, h))
    f_b = f.gather(1, bb.clamp(max=length - 1)[..., None].expand(-1, -1, h))
    x_interp = (1 - alpha) * f_a + alpha * f_b  # (b, L, h)
    power = torch.where(last, torch.ones_like(n), n - 1 - j)  # (b, L) in 0 .. L-1
    powers = [torch.eye(h, dtype=A.dtype, device=A.device)]
    for _ in range(int(power.max()) if power.numel() else 0):
        powers.append(powers[-1] @ A)
    P = torch.stack(powers)  # (K, h, h): A^k
    terms = (P[power] @ x_interp[..., None])[..., 0]  # (b, L, h): A^{power} x~
    csum = terms.cumsum(1)  # segment sums: cumsum minus the cumsum before the segment start
    before = torch.where((a > 0)[..., None], csum.gather(1, (a - 1).clamp(min=0)[..., None].expand(-1, -1, h)), 0.0)
    return csum - before


class MaskedImageModel(nn.Module):
    """Masked patch reconstruction around an encoder (a DeepSSM; only its ``encoder`` and ``blocks`` are
    used here, so the same object is fine-tuned as the classifier afterwards).

    Args:
        encoder: models.backbone.DeepSSM with d_input = P (pixels per patch).
        fill: "s6t" (token interpolation) or "mask_token" (a learned vector, the ablation).
        ratio: masked fraction (0.6: the code's default).
        norm_pix: per-patch normalised targets (the code does it); off for patches of a few pixels.
        decoder_layer, decoder_kwargs: one residual block of this registered layer, then Linear h -> P
            (a light decoder, as the code's LightDecoder is light; its exact form is UNVERIFIED here).
    """

    def __init__(
        self,
        encoder,
        fill: str = "s6t",
        ratio: float = 0.6,
        norm_pix: bool = False,
        decoder_layer: str | None = None,
        decoder_kwargs: dict | None = None,
    ):
        super().__init__()
        from torchssm.models.blocks import ResidualBlock

        if fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}; got {fill!r}")
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"mask ratio must be in (0, 1); got {ratio}")
        cfg = encoder.config
        h = cfg.d_model
        self.encoder, self.fill, self.ratio, self.norm_pix = encoder, fill, ratio, norm_pix
        if fill == "s6t":
            self.A = nn.Parameter(torch.zeros(h, h))  # the code's A_interpolation, zero init
        else:
            self.mask_token = nn.Parameter(torch.randn(h).clamp(-1, 1) * 0.02)  # the code: trunc normal, std .02
        layer = decoder_layer or cfg.layer
        kwargs = decoder_kwargs if decoder_kwargs is not None else (cfg.layer_kwargs if layer == cfg.layer else {})
        self.decoder = ResidualBlock(layer, h, kwargs, norm="layer")
        self.to_pixels = nn.Linear(h, cfg.d_input)

    def token_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Encoder and blocks of the DeepSSM without pooling: (b, L, P) -> (b, L, h)."""
        x = self.encoder.encoder(tokens)
        for block in self.encoder.blocks:
            x = block(x, None, None)
        return x

    def forward(self, tokens: torch.Tensor, visible: torch.Tensor | None = None, generator=None):
        """tokens (b, L, P) -> (loss on the masked cells, reconstruction (b, L, P), visible (b, L))."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.encoder.config.d_input:
            raise ValueError(
                f"tokens must have shape (batch, cells, {self.encoder.config.d_input}); got {tuple(tokens.shape)}"
            )
        b, length, _ = tokens.shape
        if visible is None:
            visible = random_visible(b, length, self.ratio, generator).to(tokens.device)
        vis = visible[..., None].to(tokens.dtype)  # (b, L, 1)
        f = self.token_features(tokens * vis) * vis  # (b, L, h): masked cells empty
        fill = s6t_fill(f, visible, self.A) if self.fill == "s6t" else self.mask_token.expand_as(f)
        rec = self.to_pixels(self.decoder(torch.where(visible[..., None], f, fill), None, None))  # (b, L, P)
        target = tokens
        if self.norm_pix:
            target = (tokens - tokens.mean(-1, keepdim=True)) / (tokens.var(-1, keepdim=True) + 1e-6).sqrt()
        masked = (~visible).to(tokens.dtype)  # (b, L)
        loss = (F.mse_loss(rec, target, reduction="none").mean(-1) * masked).sum() / masked.sum().clamp(min=1)
        return loss, rec, visible
