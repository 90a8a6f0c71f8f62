"""A small noise-conditional image classifier for classifier guidance: net(x, c) → (batch, num_classes) logits.

x is the preconditioned state c_in·x_t and c the noise feature ln(sigma/alpha) (`sdegen.classifier` feeds
both); each level is a 3×3 convolution whose features are shifted by a projection of the noise embedding
(as in the score networks), then GroupNorm and SiLU, twice, and a stride-2 convolution between levels
(28 → 14 → 7 for MNIST); a global mean over pixels and a linear layer give the logits. About 0.3 M
parameters with the default widths: guidance differentiates it at every solver step, so it must stay
cheap next to the score network.
"""

from __future__ import annotations

import torch
from torch import nn

from sdegen.nets._layers import Conditioning, groups_for


class NoisyClassifierNet(nn.Module):
    """net(x, c) with x (B, C, H, W) and c (B,) → (B, num_classes) logits.

    Args:
        in_channels: image channels C.
        num_classes: number of classes K.
        channels: width of each resolution level (len = number of levels).
        embed_dim: width of the noise embedding.
        fourier_scale: std of the Fourier frequencies of the noise feature (1: smooth in ln(sigma/alpha)).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: tuple[int, ...] = (32, 64, 128),
        embed_dim: int = 128,
        fourier_scale: float = 1.0,
    ):
        super().__init__()
        if num_classes < 2 or not channels:
            raise ValueError(f"need num_classes >= 2 and at least one level, got {num_classes}, {channels}")
        self.num_classes = num_classes
        self.embed = Conditioning(embed_dim, fourier_dim=embed_dim, fourier_scale=fourier_scale, num_classes=None)
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.convs, self.dense, self.norms, self.down = (
            nn.ModuleList(),
            nn.ModuleList(),
            nn.ModuleList(),
            nn.ModuleList(),
        )
        for i, width in enumerate(channels):
            self.convs.append(nn.Conv2d(width, width, 3, padding=1))
            self.dense.append(nn.Linear(embed_dim, width))
            self.norms.append(nn.GroupNorm(groups_for(width), width))
            if i + 1 < len(channels):
                self.down.append(nn.Conv2d(width, channels[i + 1], 3, stride=2, padding=1))
        self.head = nn.Linear(channels[-1], num_classes)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or c.shape != (x.shape[0],):
            raise ValueError(f"need x (B, C, H, W) and c (B,), got {tuple(x.shape)} and {tuple(c.shape)}")
        emb = self.act(self.embed(c, None))
        h = self.stem(x)
        for i, conv in enumerate(self.convs):
            # residual: h + SiLU(GN(conv(h) + W·emb)), the noise level entering every level
            h = h + self.act(self.norms[i](conv(h) + self.dense[i](emb)[:, :, None, None]))
            if i < len(self.down):
                h = self.act(self.down[i](h))
        return self.head(h.mean(dim=(2, 3)))
