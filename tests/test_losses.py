"""Losses: each is minimised by the exact optimum on Gaussian data, at the closed-form minimum value."""

import math

import pytest
import torch
from _oracle import oracle_model

from sdegen.analytic import Gaussian
from sdegen.losses import (
    LOSSES,
    dsm_loss,
    eps_mse_loss,
    half_log_nsr,
    likelihood_loss,
    likelihood_normaliser,
    likelihood_time,
)
from sdegen.sdes import VESDE, VPSDE, PowerVESDE, SubVPSDE

T_MIN = 1e-5
N = 20000
STD = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
DIST = Gaussian(torch.tensor([0.5, -1.0, 2.0]), STD)
SIGMA_DATA = 0.8
# The parametrisation whose raw output lives in the space each loss measures (perturbations go there).
KIND = {"dsm": "eps", "eps_mse": "eps", "x0_mse": "x0", "v_mse": "v", "likelihood": "eps"}


def _log_grid(t_min, n=40001):
    return torch.logspace(math.log10(t_min), 0, n, dtype=torch.float64)


def _integrate(f, t):
    return torch.trapezoid(f, t).item()


def _posterior_vars(sde, t):
    """Per-coordinate Var(ε | x_t) and Var(x0 | x_t) for the Gaussian data: (len(t), d) each."""
    a, s = sde.mean_scale(t)[:, None], sde.marginal_std(t)[:, None]
    tot = a**2 * STD**2 + s**2
    return a**2 * STD**2 / tot, STD**2 * s**2 / tot, a, s


def expected_minimum(name, sde):
    """Closed-form E[loss] of the exact optimum (a 1-D integral over t, done by quadrature)."""
    t = _log_grid(T_MIN)
    var_eps, var_x0, a, s = _posterior_vars(sde, t)
    if name == "likelihood":
        w = (sde.diffusion(t) ** 2 / sde.marginal_std(t) ** 2)[:, None]
        return 0.5 * _integrate((w * var_eps).mean(1), t)
    per = {
        "dsm": var_eps,
        "eps_mse": var_eps,
        "x0_mse": var_x0,
        # v − v_hat = (ε − ε_hat)·c/(alpha σ_d) with c² = alpha²σ_d² + sigma².
        "v_mse": var_eps * (a**2 * SIGMA_DATA**2 + s**2) / (a**2 * SIGMA_DATA**2),
    }[name]
    return _integrate(per.mean(1), t) / (1 - T_MIN)


def _losses(name, sde, shift=0.0, seed=0):
    model = oracle_model(DIST, sde, KIND[name], sigma_data=SIGMA_DATA, shift=shift)
    x0 = DIST.sample(N, torch.Generator().manual_seed(seed), dtype=torch.float64)
    return LOSSES[name](model, sde, x0, generator=torch.Generator().manual_seed(seed + 1), t_min=T_MIN)


CASES = [(n, s) for n in ("dsm", "eps_mse", "x0_mse", "v_mse") for s in (VPSDE(), VESDE())] + [
    ("likelihood", s) for s in (VPSDE(), SubVPSDE(), VESDE(), PowerVESDE())
]


@pytest.mark.parametrize(("name", "sde"), CASES, ids=[f"{n}-{s.name}" for n, s in CASES])
def test_exact_optimum_minimises_loss_at_the_closed_form_value(name, sde):
    exact = _losses(name, sde)
    assert exact.shape == (N,)
    se = exact.std().item() / math.sqrt(N)
    expected = expected_minimum(name, sde)
    assert abs(exact.mean().item() - expected) < 4 * se, (exact.mean().item(), expected, se)
    # Negative controls: shifted predictions, same data/t/noise (common random numbers).
    for shift in (0.1, -0.1):
        diff = _losses(name, sde, shift=shift) - exact
        assert diff.mean().item() > 5 * diff.std().item() / math.sqrt(N), (shift, diff.mean().item())


def test_dsm_equals_eps_mse():
    sde = VPSDE()
    model = oracle_model(DIST, sde, "x0", shift=0.05)
    x0 = DIST.sample(64, torch.Generator().manual_seed(0), dtype=torch.float64)
    a = dsm_loss(model, sde, x0, generator=torch.Generator().manual_seed(1))
    b = eps_mse_loss(model, sde, x0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(), PowerVESDE()], ids=lambda s: s.name)
def test_importance_density_is_uniform_in_half_log_nsr(sde):
    # The identity behind the sampler: g²/sigma² = 2 dρ/dt, checked by central differences.
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    h = 1e-6
    drho = (half_log_nsr(sde, t + h) - half_log_nsr(sde, t - h)) / (2 * h)
    torch.testing.assert_close(2 * drho, sde.diffusion(t) ** 2 / sde.marginal_std(t) ** 2, rtol=1e-6, atol=0)
    # The sampler is the inverse CDF of q ∝ g²/sigma², with the CDF integrated independently.
    grid = _log_grid(T_MIN)
    q = sde.diffusion(grid) ** 2 / sde.marginal_std(grid) ** 2
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(q, grid)])
    assert cdf[-1].item() == pytest.approx(likelihood_normaliser(sde, T_MIN), rel=1e-6)
    u = torch.linspace(0.0, 0.999, 41, dtype=torch.float64)
    t_u = likelihood_time(sde, u, T_MIN)
    cdf_at = torch.from_numpy(__import__("numpy").interp(t_u.numpy(), grid.numpy(), cdf.numpy())) / cdf[-1]
    torch.testing.assert_close(cdf_at, u, atol=1e-5, rtol=0)
    assert t_u[0].item() == pytest.approx(T_MIN, rel=1e-9)


def test_importance_sampling_reduces_variance_at_the_same_mean():
    sde = VPSDE()
    model = oracle_model(DIST, sde, "eps")
    g = torch.Generator().manual_seed(5)
    x0 = DIST.sample(N, g, dtype=torch.float64)
    is_est = likelihood_loss(model, sde, x0, generator=g, t_min=T_MIN)
    # Plain Monte Carlo over t ~ U[t_min, 1] of the same integral ½∫ g²‖s + ε/sigma‖²/d dt.
    t = T_MIN + (1 - T_MIN) * torch.rand(N, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    xt = sde.perturb(x0, t, eps)
    sig = sde.marginal_std(t, x0)[:, None]
    uni = 0.5 * (1 - T_MIN) * sde.diffusion(t)[:, None] ** 2 * (model.score(xt, t) + eps / sig).pow(2)
    uni = uni.mean(1)
    se = math.sqrt((is_est.var() + uni.var()).item() / N)
    assert abs(is_est.mean().item() - uni.mean().item()) < 4 * se
    assert is_est.var().item() < 0.05 * uni.var().item()


def test_loss_argument_errors():
    sde = VPSDE()
    model = oracle_model(DIST, sde)
    x0 = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="t_min"):
        eps_mse_loss(model, sde, x0, t_min=1.0)
    with pytest.raises(ValueError, match="noise"):
        eps_mse_loss(model, sde, x0, noise=torch.zeros(3, 3, dtype=torch.float64))
