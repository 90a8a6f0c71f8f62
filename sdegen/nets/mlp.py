"""A residual MLP for low-dimensional data (2-D toys, flattened small vectors).

x is flattened to (batch, d), lifted to `hidden` units, passed through `depth` residual blocks
h ← h + W₂·SiLU(W₁·SiLU(LayerNorm(h) + e)) with e the time (+ label) embedding, and projected back
to d (zero-initialised, so the untrained network outputs zeros).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sdegen.nets._layers import Conditioning, check_inputs


class _Block(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(self.act(self.norm(h) + emb))))


class MLP(nn.Module):
    """Residual MLP: net(x, t, y=None) with x (B, *data_shape), t (B,), y (B,) or None → shaped like x.

    Args:
        data_shape: shape of one sample, e.g. (2,).
        hidden: width of the hidden layers.
        depth: number of residual blocks.
        num_classes: number of classes for conditioning (label `num_classes` is the null label), or None.
        fourier_scale: std of the random Fourier frequencies of the time feature.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...] = (2,),
        hidden: int = 256,
        depth: int = 4,
        num_classes: int | None = None,
        fourier_scale: float = 16.0,
    ):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        dim = math.prod(self.data_shape)
        self.embed = Conditioning(hidden, fourier_dim=64, fourier_scale=fourier_scale, num_classes=num_classes)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList([_Block(hidden) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_inputs(x, t, y, self.num_classes, ndim=1 + len(self.data_shape))
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"MLP built for data shape {self.data_shape}, got x of shape {tuple(x.shape)}")
        emb = self.embed(t, y)
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(torch.nn.functional.silu(self.out_norm(h))).reshape(x.shape)
