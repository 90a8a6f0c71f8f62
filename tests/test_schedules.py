"""DDPM discrete schedules and their correspondence with the continuous VP SDE."""

import math

import pytest
import torch

import sdegen
from sdegen import schedules


def test_vp_discrete_betas_formula():
    sde = sdegen.VPSDE(0.1, 20.0)
    n = 1000
    betas = sde.discrete_betas(n)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    expected = 0.1 / n + (i - 1) * (20.0 - 0.1) / (n * (n - 1))
    assert torch.allclose(betas, expected, rtol=1e-12)
    # Ho et al.'s schedule (1e-4 → 0.02, N = 1000) is VPSDE(0.1, 20) discretised.
    assert torch.allclose(betas, schedules.linear_betas(1000, 1e-4, 0.02), rtol=1e-12)


def test_discrete_alphas_converge_to_vp_marginal():
    """prod(1 − β_j) → alpha(t_i)² = exp(−B(t_i)) with error O(1/N)."""
    sde = sdegen.VPSDE(0.1, 20.0)
    errors = []
    for n in [100, 200, 400, 800]:
        abar = schedules.alphas_cumprod(sde.discrete_betas(n))
        t = torch.arange(1, n + 1, dtype=torch.float64) / n
        errors.append((abar - sde.mean_scale(t) ** 2).abs().max().item())
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert all(0.8 < r < 1.2 for r in rates), (errors, rates)
    assert errors[-1] < 2e-3


def test_cosine_schedule():
    betas = schedules.cosine_betas(1000)
    abar = schedules.alphas_cumprod(betas)
    assert torch.all(betas > 0) and torch.all(betas <= 0.999)
    assert torch.all(abar[1:] < abar[:-1])
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    assert torch.allclose(abar[:-5], f[:-5], rtol=1e-6)  # identical until the 0.999 clip at the very end


def test_schedule_errors():
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.get_betas("quadratic", 10)
    with pytest.raises(ValueError, match="num_steps"):
        schedules.linear_betas(1)
    with pytest.raises(ValueError, match="beta_start"):
        schedules.linear_betas(10, 0.5, 0.1)
