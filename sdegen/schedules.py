"""Discrete DDPM noise schedules and their correspondence with the continuous VP SDE.

A DDPM with N steps has x_i = √(1 − β_i)·x_{i−1} + √β_i·ε, i = 1..N, so x_i | x0 ~
N(√ᾱ_i·x0, (1 − ᾱ_i) I) with ᾱ_i = Π_{j≤i}(1 − β_j) (Ho et al. 2020). The *linear* schedule with
β_i = βmin/N + (i−1)(βmax − βmin)/(N(N−1)) is the Euler discretisation of
`VPSDE(βmin, βmax)` on the grid t_i = i/N; as N → ∞, ᾱ_i → alpha(t_i)² = exp(−B(t_i)).
The *cosine* schedule (Nichol & Dhariwal 2021, eq. 17) sets ᾱ(t) = cos²((t + s)/(1 + s)·π/2)/ᾱ(0)
and clips β_i at 0.999.
"""

from __future__ import annotations

import math

import torch

from sdegen._checks import check_int


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_1..β_N evenly spaced from beta_start to beta_end (Ho et al. 2020 use 1e-4 → 0.02, N = 1000)."""
    _check_steps(num_steps)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """β_i = 1 − ᾱ(i/N)/ᾱ((i−1)/N) for ᾱ(t) = cos²((t + s)/(1 + s)·π/2), clipped at max_beta."""
    _check_steps(num_steps)
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    abar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_i = Π_{j≤i}(1 − β_j), i = 1..N (float64)."""
    return torch.cumprod(1 - betas.double(), dim=0)


SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def get_betas(name: str, num_steps: int, **kwargs) -> torch.Tensor:
    """Look up a schedule by name ("linear" or "cosine")."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; known: {sorted(SCHEDULES)}")
    return SCHEDULES[name](num_steps, **kwargs)


def _check_steps(num_steps: int) -> int:
    return check_int(num_steps, "num_steps", 2)
