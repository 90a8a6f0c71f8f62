"""A configurable DDPM-style U-Net (Ho et al. 2020; Dhariwal & Nichol 2021 for the details).

Per resolution level: `num_res_blocks` residual blocks (GroupNorm → SiLU → conv, plus the embedding
as a per-channel scale and shift, dropout, a zero-initialised second conv) and, at the resolutions
listed in `attention_resolutions`, multi-head self-attention; stride-2 convolutions down and
nearest-neighbour upsampling + conv up, with skip connections from every encoder block. The
embedding is Fourier features of the noise feature plus an optional class embedding with a null
label. Zero-initialised output layers make each block start as the identity, which trains fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sdegen.nets._layers import Conditioning, check_inputs, groups_for


class ResBlock(nn.Module):
    """h + conv(drop(act(norm(conv(act(norm(h))))·(1 + scale) + shift))), a 1×1 skip when widths differ."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups_for(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups_for(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(self.drop(h))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions, residual, zero-initialised output."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention width {channels} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups_for(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # each (b, heads, hw, c/heads)
        a = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c/heads)
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class _Level(nn.Module):
    """One residual block at a resolution level, followed by self-attention or nothing."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, attend: bool, num_heads: int):
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, dropout)
        self.attn = SelfAttention(cout, num_heads) if attend else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


class UNet(nn.Module):
    """DDPM-style U-Net: net(x, t, y=None) with x (B, C, H, W), t (B,), y (B,) or None → (B, C, H, W).

    Args:
        in_channels: image channels C.
        image_size: nominal H (= W) of the images; it fixes where attention goes. Other sizes divisible
            by 2^(levels − 1) also run, with attention at the same levels.
        model_channels: width of the first level.
        channel_mult: width multiplier of each level; H and W must be divisible by 2^(levels − 1).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: image sizes (e.g. 7 for the 7×7 level of MNIST) with self-attention.
        dropout: dropout rate inside the residual blocks.
        num_heads: attention heads.
        num_classes: number of classes for conditioning (label `num_classes` is the null label), or None.
        fourier_scale: std of the random Fourier frequencies of the time feature.
        extra_in_channels: channels concatenated to x at the input and not predicted (the input Fourier
            features of `sdegen.score`); the net takes in_channels + extra_in_channels and returns in_channels.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        model_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (7,),
        dropout: float = 0.1,
        num_heads: int = 4,
        num_classes: int | None = None,
        fourier_scale: float = 16.0,
        extra_in_channels: int = 0,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.levels = len(channel_mult)
        factor = 2 ** (self.levels - 1)
        if image_size % factor:
            raise ValueError(f"image_size={image_size} is not divisible by 2^(levels - 1) = {factor}")
        sizes = [image_size // 2**level for level in range(self.levels)]
        unknown = set(attention_resolutions) - set(sizes)
        if unknown:
            raise ValueError(f"attention_resolutions {sorted(unknown)} are not among the level sizes {sizes}")
        attend = [s in attention_resolutions for s in sizes]
        emb_dim = 4 * model_channels
        self.embed = Conditioning(
            emb_dim, fourier_dim=model_channels, fourier_scale=fourier_scale, num_classes=num_classes
        )
        self.stem = nn.Conv2d(in_channels + extra_in_channels, model_channels, 3, padding=1)
        self.down = nn.ModuleList()
        widths, ch = [model_channels], model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(_Level(ch, model_channels * mult, emb_dim, dropout, attend[level], num_heads))
                ch = model_channels * mult
                widths.append(ch)
            if level < self.levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                widths.append(ch)
        self.mid = nn.ModuleList(
            [ResBlock(ch, ch, emb_dim, dropout), SelfAttention(ch, num_heads), ResBlock(ch, ch, emb_dim, dropout)]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(
                    _Level(ch + widths.pop(), model_channels * mult, emb_dim, dropout, attend[level], num_heads)
                )
                ch = model_channels * mult
            if level > 0:
                self.up.append(
                    nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1))
                )
        self.out_norm = nn.GroupNorm(groups_for(ch), ch)
        self.out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_inputs(x, t, y, self.num_classes, ndim=4)
        factor = 2 ** (self.levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"UNet with {self.levels} levels needs H, W divisible by {factor}, got {tuple(x.shape[-2:])}"
            )
        emb = self.embed(t, y)
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, _Level) else block(h)
            skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(block, _Level) else block(h)
        return self.out(F.silu(self.out_norm(h)))
