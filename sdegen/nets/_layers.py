"""Building blocks shared by the networks: noise-level features, label embeddings, group-norm choice.

Every network takes a per-sample scalar conditioning input `t` of shape (batch,). What that scalar
means is the parametrisation's choice (see `sdegen.score`): either the SDE time t ∈ [0, 1] or the
log noise-to-signal ratio ln(sigma/alpha). The networks only embed it with random Fourier features.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianFourierFeatures(nn.Module):
    """Fixed random Fourier features [sin(2πWc), cos(2πWc)] of a scalar c, W ~ N(0, scale²).

    Tancik et al. 2020; used for the noise level by Song et al. 2021 (NCSN++, the score-SDE tutorial).

    Args:
        dim: output width (even).
        scale: std of the random frequencies. It bounds how fast the network can vary with the noise
            level, and an adaptive ODE solver must resolve every such wiggle: with c = ln(sigma/alpha)
            (range ~12), scale 16 (EDM's NCSN++ value) makes the PF velocity wiggle on ~0.02 in c and
            the likelihood ODE cost several times the NFE of scale 1 (`studies/time_smoothness.py`);
            30 on c = t ∈ [0, 1] is the score-SDE tutorial's choice.
        seed: seed of the fixed frequencies (a buffer, saved with the weights).
    """

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"Fourier feature dim must be even, got {dim}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(dim // 2, generator=gen) * scale)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """c: (batch,) → (batch, dim)."""
        proj = 2 * math.pi * c.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=1)


class Conditioning(nn.Module):
    """Embedding of the noise feature plus an optional class label: (batch,), (batch,) → (batch, dim).

    The label table has `num_classes + 1` rows: row `num_classes` is the *null label* ∅ used for
    classifier-free guidance (Ho & Salimans 2022); y=None means ∅ for the whole batch.
    """

    def __init__(
        self, dim: int, *, fourier_dim: int, fourier_scale: float, num_classes: int | None, hidden_layer: bool = True
    ):
        super().__init__()
        self.fourier = GaussianFourierFeatures(fourier_dim, fourier_scale)
        # The tutorial U-Net uses a single linear layer after the Fourier features; DDPM nets use two.
        layers = (
            [nn.Linear(fourier_dim, dim), nn.SiLU(), nn.Linear(dim, dim)]
            if hidden_layer
            else [nn.Linear(fourier_dim, dim)]
        )
        self.mlp = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        emb = self.mlp(self.fourier(t))
        if self.label is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.label(y)
        elif y is not None:
            raise ValueError("labels given to a network built without num_classes")
        return emb


def check_inputs(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, num_classes: int | None, ndim: int) -> None:
    """Validate the shared calling convention net(x, t, y): x (B, *shape), t (B,), y (B,) long or None."""
    if x.ndim != ndim:
        raise ValueError(f"x must have {ndim} dimensions (batch, ...), got shape {tuple(x.shape)}")
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
    if y is not None:
        if y.shape != (x.shape[0],) or y.dtype != torch.long:
            raise ValueError(f"y must be a long tensor of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        if num_classes is None:
            raise ValueError("labels given to a network built without num_classes")


def groups_for(channels: int, max_groups: int = 32) -> int:
    """Largest number of GroupNorm groups ≤ max_groups that divides `channels`."""
    return math.gcd(channels, max_groups)
