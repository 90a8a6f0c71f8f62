"""The U-Net of the score-SDE MNIST tutorial (Song et al. 2021, colab "Score-based generative modeling").

Four resolutions with 32/64/128/256 channels, no padding in the first convolution and transposed
convolutions on the way up, Gaussian Fourier time features added after each convolution, GroupNorm,
SiLU; about 1.1 M parameters for one input channel. Differences from the tutorial: the time input is
the parametrisation's noise feature (the tutorial's final division by the marginal std is the
"score" parametrisation's output scaling in `sdegen.score`), an optional class embedding with a null
label, and the transposed convolutions take their output size from the skip connection, so any image
of at least 20×20 pixels works (28×28 reproduces the tutorial's shapes exactly).

`padding=1` pads every convolution (resolutions 28 → 28 → 14 → 7 → 4 for MNIST): every output pixel then
sees the same receptive field. The tutorial's unpadded first convolution leaves the border pixels to the
last transposed convolution alone, and its samples carry artefacts in rows/columns 0 and 25–27.
"""

from __future__ import annotations

import torch
from torch import nn

from sdegen.nets._layers import Conditioning, check_inputs, groups_for


class TutorialUNet(nn.Module):
    """Score-SDE tutorial U-Net: net(x, t, y=None) with x (B, C, H, W), t (B,), y (B,) or None → (B, C, H, W).

    Args:
        in_channels: image channels C.
        channels: widths of the four resolution levels.
        embed_dim: width of the time (and label) embedding.
        num_classes: number of classes for conditioning (label `num_classes` is the null label), or None.
        fourier_scale: std of the random Fourier frequencies of the time feature.
        extra_in_channels: channels concatenated to x at the input and not predicted (the input Fourier
            features of `sdegen.score`); the net takes in_channels + extra_in_channels and returns in_channels.
        padding: 0 (the tutorial) or 1 (padded convolutions, see the module docstring).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, int, int, int] = (32, 64, 128, 256),
        embed_dim: int = 256,
        num_classes: int | None = None,
        fourier_scale: float = 16.0,
        extra_in_channels: int = 0,
        padding: int = 0,
    ):
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"TutorialUNet needs 4 channel widths, got {channels}")
        if padding not in (0, 1):
            raise ValueError(f"padding must be 0 or 1, got {padding!r}")
        p = padding
        c0, c1, c2, c3 = channels
        self.num_classes = num_classes
        self.embed = Conditioning(
            embed_dim, fourier_dim=embed_dim, fourier_scale=fourier_scale, num_classes=num_classes, hidden_layer=False
        )
        # Encoder: resolution 28 → 26 → 12 → 5 → 2 for MNIST (padding 1: 28 → 28 → 14 → 7 → 4).
        self.conv = nn.ModuleList(
            [
                nn.Conv2d(in_channels + extra_in_channels, c0, 3, stride=1, padding=p, bias=False),
                nn.Conv2d(c0, c1, 3, stride=2, padding=p, bias=False),
                nn.Conv2d(c1, c2, 3, stride=2, padding=p, bias=False),
                nn.Conv2d(c2, c3, 3, stride=2, padding=p, bias=False),
            ]
        )
        # Decoder; inputs after the first are concatenated with the encoder skip of the same size.
        self.tconv = nn.ModuleList(
            [
                nn.ConvTranspose2d(c3, c2, 3, stride=2, padding=p, bias=False),
                nn.ConvTranspose2d(2 * c2, c1, 3, stride=2, padding=p, bias=False),
                nn.ConvTranspose2d(2 * c1, c0, 3, stride=2, padding=p, bias=False),
            ]
        )
        self.final = nn.ConvTranspose2d(2 * c0, in_channels, 3, stride=1, padding=p)
        widths = [c0, c1, c2, c3, c2, c1, c0]
        self.dense = nn.ModuleList([nn.Linear(embed_dim, w) for w in widths])
        # The tutorial uses 4 groups at the first level and 32 elsewhere.
        self.norm = nn.ModuleList([nn.GroupNorm(groups_for(w, 4 if w == c0 else 32), w) for w in widths])
        self.act = nn.SiLU()

    def _block(self, h: torch.Tensor, emb: torch.Tensor, i: int) -> torch.Tensor:
        h = h + self.dense[i](emb)[:, :, None, None]
        return self.act(self.norm[i](h))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_inputs(x, t, y, self.num_classes, ndim=4)
        if min(x.shape[-2:]) < 20:
            raise ValueError(f"TutorialUNet needs images of at least 20×20 pixels, got {tuple(x.shape[-2:])}")
        emb = self.act(self.embed(t, y))
        skips = []
        h = x
        for i, conv in enumerate(self.conv):
            h = self._block(conv(h), emb, i)
            skips.append(h)
        for i, tconv in enumerate(self.tconv):
            skip = skips[-2 - i]
            inp = h if i == 0 else torch.cat([h, skips[-1 - i]], dim=1)
            h = self._block(tconv(inp, output_size=skip.shape[-2:]), emb, 4 + i)
        return self.final(torch.cat([h, skips[0]], dim=1), output_size=x.shape[-2:])
