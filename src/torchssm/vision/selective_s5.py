"""Selective S4 ("S5") for long videos: a learned mask generator keeps the informative frame tokens, an
S4-family backbone models only those, a momentum-updated copy of the model guides the selection, and
long-short masked contrastive learning (LSMCL) pre-trains it. Wang et al. 2023, "Selective Structured
State-Spaces for Long-Form Video Understanding" (CVPR 2023, arXiv:2303.14526), Sec. 3.

What is confirmed from the paper's text (abstract, Sec. 1): a lightweight mask generator selects image
tokens adaptively for the S4 model; it is guided by the momentum-updated S4 model (no dense
self-attention for the token scores); LSMCL makes the model predict the longer temporal context from a
shorter input clip. UNVERIFIED (the full method section could not be read here), chosen as below:

* one token per frame (the paper has several image tokens per frame, from a ViT);
* scores s = MLP(teacher features) over all T frame tokens; the K = round(keep T) highest of s + Gumbel
  noise are kept, in temporal order, with the straight-through weight 1 + p - sg(p),
  p = softmax((s + g) / tau) (Gumbel-softmax, Jang et al. 2017; noise only in training);
* the teacher is an exponential moving average of the student's frame encoder, backbone and projector
  (momentum 0.99, as in MoCo / BYOL-style momentum encoders);
* LSMCL: the teacher embeds the whole (long) clip, the student a random short window (``short`` of the
  frames) with a random half of its tokens masked out; InfoNCE between the two over the batch
  (temperature 0.1): the student must predict the long clip's embedding from the short masked one.

Shapes: b clips, T frames, K kept tokens, h = d_model; frames (b, T, side, side).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.checks import unit_interval


class SelectiveS5(nn.Module):
    """Frame encoder (MLP on the pixels), token selection, residual SSM blocks, mean pool, head.

    Args:
        pixels: pixels per frame. classes: output classes.
        d_model, n_layers, layer, layer_kwargs: the backbone (ResidualBlock of a registered layer; "s4d").
        keep: fraction of frame tokens kept (K = round(keep T)); 1.0 keeps all (the plain S4 model, no
            teacher pass). 0.25 (UNVERIFIED: the paper sweeps its masking ratio).
        tau: Gumbel-softmax temperature (1.0). momentum: teacher EMA momentum (0.99).
    """

    def __init__(
        self,
        pixels: int,
        classes: int,
        d_model: int = 32,
        n_layers: int = 2,
        layer: str = "s4d",
        layer_kwargs: dict | None = None,
        keep: float = 0.25,
        tau: float = 1.0,
        momentum: float = 0.99,
    ):
        super().__init__()
        from torchssm.models.blocks import ResidualBlock

        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1]; got {keep}")
        unit_interval("momentum", momentum, "a momentum", include_one=False)
        self.pixels, self.keep, self.tau, self.momentum = pixels, keep, tau, momentum
        h = d_model
        self.encoder = nn.Sequential(nn.Linear(pixels, h), nn.GELU(), nn.Linear(h, h))
        self.blocks = nn.ModuleList(ResidualBlock(layer, h, layer_kwargs or {}, norm="layer") for _ in range(n_layers))
        self.projector = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, h))  # LSMCL embedding
        self.head = nn.Linear(h, classes)
        self.mask_generator = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))
        self.teacher = copy.deepcopy(
            nn.ModuleDict({"encoder": self.encoder, "blocks": self.blocks, "projector": self.projector})
        )
        self.teacher.requires_grad_(False)

    # --- pieces -------------------------------------------------------------------------------------
    def tokens(self, frames: torch.Tensor, encoder: nn.Module | None = None) -> torch.Tensor:
        """(b, T, side, side) -> (b, T, h)."""
        if frames.dim() != 4 or frames.shape[2] * frames.shape[3] != self.pixels:
            raise ValueError(
                f"frames must have shape (batch, frames, side, side) with {self.pixels} pixels; "
                f"got {tuple(frames.shape)}"
            )
        return (encoder or self.encoder)(frames.flatten(2))

    @staticmethod
    def backbone(x: torch.Tensor, blocks) -> torch.Tensor:
        for block in blocks:
            x = block(x, None, None)
        return x

    @torch.no_grad()
    def teacher_features(self, frames: torch.Tensor) -> torch.Tensor:
        """The momentum model's per-frame features (b, T, h), no gradient."""
        t = self.teacher
        return self.backbone(self.tokens(frames, t["encoder"]), t["blocks"])

    def select(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """scores (b, T) -> kept indices (b, K) in temporal order and straight-through weights (b, K)."""
        T = scores.shape[1]
        k = max(1, round(self.keep * T))
        z = scores
        if self.training:
            u = torch.rand_like(scores).clamp(1e-9, 1 - 1e-9)
            z = scores - torch.log(-torch.log(u))  # + Gumbel noise
        idx = z.topk(k, dim=1).indices.sort(dim=1).values  # (b, K)
        p = torch.softmax(z / self.tau, dim=1).gather(1, idx)  # (b, K)
        return idx, 1.0 + p - p.detach()

    @torch.no_grad()
    def update_teacher(self) -> None:
        """teacher <- m teacher + (1 - m) student (encoder, blocks, projector)."""
        student = nn.ModuleDict({"encoder": self.encoder, "blocks": self.blocks, "projector": self.projector})
        for t, s in zip(self.teacher.parameters(), student.parameters()):
            t.mul_(self.momentum).add_(s.detach(), alpha=1 - self.momentum)
        for tb, sb in zip(self.teacher.buffers(), student.buffers()):
            tb.copy_(sb)

    # --- model --------------------------------------------------------------------------------------
    def forward(self, frames: torch.Tensor, *, return_selection: bool = False):
        """Logits (b, classes); with ``return_selection`` also the kept indices (b, K) (None if keep = 1)."""
        x = self.tokens(frames)  # (b, T, h)
        idx = None
        if self.keep < 1.0:
            scores = self.mask_generator(self.teacher_features(frames))[..., 0]  # (b, T)
            idx, weight = self.select(scores)
            x = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1])) * weight[..., None]  # (b, K, h)
        logits = self.head(self.backbone(x, self.blocks).mean(1))
        return (logits, idx) if return_selection else logits

    def lsmcl_loss(
        self,
        frames: torch.Tensor,
        *,
        short: float = 0.25,
        mask: float = 0.5,
        temperature: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Long-short masked contrastive loss (module docstring) on a batch of clips (b >= 2)."""
        b, T = frames.shape[:2]
        if b < 2:
            raise ValueError("LSMCL contrasts clips of a batch: it needs batch >= 2")
        with torch.no_grad():
            t = self.teacher
            z_long = F.normalize(t["projector"](self.teacher_features(frames).mean(1)), dim=-1)  # (b, h)
        n = max(2, round(short * T))
        start = torch.randint(0, T - n + 1, (b,), generator=generator)  # a short window per clip
        window = start[:, None] + torch.arange(n)  # (b, n)
        clip = frames.gather(1, window[..., None, None].expand(-1, -1, *frames.shape[2:]))  # (b, n, side, side)
        k = max(1, round((1 - mask) * n))
        kept = torch.rand(b, n, generator=generator).argsort(1)[:, :k].sort(1).values  # random tokens, in order
        x = self.tokens(clip)
        x = x.gather(1, kept[..., None].expand(-1, -1, x.shape[-1]))  # (b, k, h)
        z_short = F.normalize(self.projector(self.backbone(x, self.blocks).mean(1)), dim=-1)  # (b, h)
        logits = z_short @ z_long.T / temperature  # (b, b): the matching clip is the positive
        return F.cross_entropy(logits, torch.arange(b))
