"""The closed-form oracles against independent computations (scipy densities, autograd, Monte Carlo)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import sdegen
from sdegen import analytic

SDES = [sdegen.VPSDE(), sdegen.SubVPSDE(), sdegen.VESDE(), sdegen.PowerVESDE()]
IDS = [type(s).__name__ for s in SDES]


def mixture():
    return analytic.GaussianMixture(
        [0.2, 0.5, 0.3],
        [[-2.0, 0.0], [1.0, 1.5], [2.0, -2.0]],
        [[0.3, 0.5], [0.6, 0.2], [0.4, 0.4]],
    )


def test_log_prob_against_scipy():
    mix = mixture()
    x = torch.randn(7, 2, dtype=torch.float64) * 2
    ref = np.log(
        sum(
            w * stats.multivariate_normal(m, np.diag(s**2)).pdf(x.numpy())
            for w, m, s in zip(mix.weights.numpy(), mix.means.numpy(), mix.stds.numpy(), strict=True)
        )
    )
    assert np.allclose(mix.log_prob(x).numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_score_is_gradient_of_marginal_log_prob(sde):
    mix = mixture()
    x = torch.randn(6, 2, dtype=torch.float64).requires_grad_()
    t = torch.tensor([0.01, 0.1, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad(mix.marginal_log_prob(sde, x, t).sum(), x)
    assert torch.allclose(mix.score(sde, x.detach(), t), grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_is_data_convolved_with_transition(sde):
    """p_t by Monte Carlo over x0: mean and variance of alpha·x0 + sigma·eps match the mixture marginal."""
    mix = mixture()
    n, t = 200_000, 0.4
    gen = torch.Generator().manual_seed(3)
    x0 = mix.sample(n, gen, dtype=torch.float64)
    xt = sde.perturb(x0, t, generator=gen)
    m = mix.marginal(sde, t)
    sd = m.variance().sqrt()
    assert torch.allclose(xt.mean(0), m.mean(), atol=(5 * sd / math.sqrt(n)).max().item())
    assert torch.allclose(xt.var(0), m.variance(), rtol=5 * math.sqrt(2 / n) * 3)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_tweedie_denoiser_single_gaussian(sde):
    """For one Gaussian, E[x0 | x_t] is the linear regression mu + a s²/(a² s² + σ²)(x − a mu)."""
    g = analytic.Gaussian(torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.5, 2.0, 1.0]))
    x = torch.randn(4, 3, dtype=torch.float64)
    t = 0.3
    a, s = sde.mean_scale(t).item(), sde.marginal_std(t).item()
    ref = g.mu + a * g.std**2 / (a**2 * g.std**2 + s**2) * (x - a * g.mu)
    assert torch.allclose(g.denoise(sde, x, t), ref, rtol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_flow_map_solves_pf_ode(sde):
    """d/dt flow_map(x, t0 → t) equals the PF-ODE velocity f x − ½ g² score, and the map composes."""
    g = analytic.Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0]))
    x = torch.randn(5, 2, dtype=torch.float64)
    t0, t, h = 0.05, 0.6, 1e-6
    xt = g.flow_map(sde, x, t0, t)
    dxdt = (g.flow_map(sde, x, t0, t + h) - g.flow_map(sde, x, t0, t - h)) / (2 * h)
    v = sde.probability_flow(g.score_fn(sde)).velocity(torch.full((5,), t, dtype=torch.float64), xt)
    assert torch.allclose(dxdt, v, rtol=1e-5, atol=1e-7)
    assert torch.allclose(g.flow_map(sde, xt, t, 0.9), g.flow_map(sde, x, t0, 0.9), rtol=1e-12)
    assert torch.allclose(g.flow_map(sde, xt, t, t0), x, rtol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_model_log_prob_is_change_of_variables(sde):
    """model_log_prob = prior density at z plus log|det dz/dx|, with the Jacobian from autograd."""
    g = analytic.Gaussian(torch.tensor([1.0, -2.0, 0.0]), torch.tensor([0.5, 2.0, 1.0]))
    x = torch.randn(4, 3, dtype=torch.float64)
    t_min = 1e-3
    jac = torch.autograd.functional.jacobian(lambda y: g.flow_map(sde, y[None], t_min, 1.0)[0], x[0])
    z = g.flow_map(sde, x, t_min, 1.0)
    ref = sde.prior_logp(z[:1]) + torch.logdet(jac)
    assert torch.allclose(g.model_log_prob(sde, x, t_min)[:1], ref, rtol=1e-10)


def test_model_log_prob_equals_data_density_when_prior_exact():
    """If the prior equals p_T, pushing it back through the flow recovers p_{t_min} exactly.

    Here p_T has variance σmax² and the prior σmax² − σmin², a relative mismatch of 4e-8.
    """
    sde = sdegen.VESDE(0.01, 50.0)
    g = analytic.Gaussian(torch.zeros(2), torch.full((2,), 0.01))  # p_T = N(0, σmax² I) = prior here
    x = torch.randn(3, 2, dtype=torch.float64) * 0.01
    assert torch.allclose(g.model_log_prob(sde, x, 0.0), g.log_prob(x), rtol=1e-6)


def test_mixture_circle_and_moments():
    mix = analytic.gaussian_mixture_2d(8, radius=4.0, std=0.5)
    assert torch.allclose(mix.mean(), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(mix.variance(), torch.full((2,), 8.0 + 0.25, dtype=torch.float64), rtol=1e-12)
    x = mix.sample(50_000, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(x.var(0), mix.variance(), rtol=0.03)


def test_images_shape():
    g = analytic.Gaussian(torch.full((1, 4, 4), 0.5), 0.1)
    sde = sdegen.VPSDE()
    x = torch.rand(3, 1, 4, 4)
    assert g.score(sde, x, 0.5).shape == x.shape
    assert g.marginal_log_prob(sde, x, 0.5).shape == (3,)


def test_bad_inputs():
    with pytest.raises(ValueError, match="weights"):
        analytic.GaussianMixture([1.0, -1.0], [[0.0], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="stds must be positive"):
        analytic.GaussianMixture([1.0], [[0.0]], [0.0])
    with pytest.raises(ValueError, match="data shape"):
        mixture().score(sdegen.VPSDE(), torch.zeros(2, 3), 0.5)
