"""Parametrisations: exact conversions to the score for every SDE, preconditioning, guidance."""

import itertools
import math

import pytest
import torch
from _oracle import oracle_model

from sdegen.analytic import Gaussian, GaussianMixture
from sdegen.score import KINDS, Parametrisation, ScoreModel, convert
from sdegen.sdes import VESDE, VPSDE, PowerVESDE, SubVPSDE

SDES = [VPSDE(), SubVPSDE(), VESDE(), PowerVESDE()]
DIST = Gaussian(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.3, 1.0, 2.0]))


def _batch(sde, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = 1e-3 + (1 - 1e-3) * torch.rand(n, generator=g, dtype=torch.float64)
    x = sde.perturb(DIST.sample(n, g, dtype=torch.float64), t, generator=g)
    return x, t


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("precondition", [False, True])
def test_every_parametrisation_gives_the_exact_score(sde, kind, precondition):
    x, t = _batch(sde)
    model = oracle_model(DIST, sde, kind, precondition=precondition, sigma_data=0.7)
    exact = DIST.score(sde, x, t)
    torch.testing.assert_close(model.score(x, t), exact, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.denoise(x, t), DIST.denoise(sde, x, t), rtol=1e-8, atol=1e-8)
    sigma = sde.marginal_std(t, x)[:, None]
    torch.testing.assert_close(model(x, t, output="eps"), -sigma * exact, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_conversions_round_trip(sde):
    x, t = _batch(sde, seed=1)
    alpha, sigma = sde.mean_scale(t, x)[:, None], sde.marginal_std(t, x)[:, None]
    out = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for a, b in itertools.permutations(KINDS, 2):
        there = convert(a, out, x, alpha, sigma, 0.5, to=b)
        back = convert(b, there, x, alpha, sigma, 0.5, to=a)
        torch.testing.assert_close(back, out, rtol=1e-8, atol=1e-8, msg=f"{a} -> {b} -> {a}")


def test_v_is_alpha_eps_minus_sigma_x0_for_vp_with_unit_sigma_data():
    sde = VPSDE()
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(32, 4, generator=g, dtype=torch.float64), torch.randn(32, 4, generator=g, dtype=torch.float64)
    t = torch.rand(32, generator=g, dtype=torch.float64)
    alpha, sigma = sde.mean_scale(t, x0)[:, None], sde.marginal_std(t, x0)[:, None]
    x = alpha * x0 + sigma * eps
    v = convert("eps", eps, x, alpha, sigma, 1.0, to="v")
    torch.testing.assert_close(v, alpha * eps - sigma * x0)


class _Recorder(torch.nn.Module):
    def forward(self, x, t, y=None):
        self.x, self.t = x, t
        return torch.zeros_like(x)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_preconditioned_inputs_have_unit_variance_and_log_sigma_time(sde):
    sd = 0.4
    net = _Recorder()
    model = ScoreModel(net, sde, Parametrisation("eps", precondition=True, sigma_data=sd))
    g = torch.Generator().manual_seed(4)
    n = 20000
    for tval in (1e-3, 0.3, 1.0):
        x0 = sd * torch.randn(n, 2, generator=g, dtype=torch.float64)
        xt = sde.perturb(x0, tval, generator=g)
        model(xt, tval)
        var = net.x.var().item()
        assert abs(var - 1) < 5 * math.sqrt(2 / (2 * n)), (tval, var)
        ratio = (sde.marginal_std(tval, xt) / sde.mean_scale(tval, xt))[0]
        torch.testing.assert_close(net.t, torch.log(ratio).expand(n))


def test_classifier_free_guidance_combines_conditional_and_null_scores():
    sde = VPSDE()
    mix = GaussianMixture(torch.ones(3), torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]]), torch.full((3,), 0.5))
    classes = [GaussianMixture(torch.ones(1), mix.means[k : k + 1], mix.stds[k : k + 1]) for k in range(3)]
    model = oracle_model(mix, sde, "eps", per_class=classes)
    x, t = torch.randn(6, 2, dtype=torch.float64), torch.full((6,), 0.4, dtype=torch.float64)
    cond = classes[1].score(sde, x, t)
    uncond = mix.score(sde, x, t)
    torch.testing.assert_close(model.score_fn()(x, t), uncond)
    torch.testing.assert_close(model.score_fn(labels=1)(x, t), cond)
    w = 2.5
    torch.testing.assert_close(model.score_fn(labels=1, guidance=w)(x, t), (1 + w) * cond - w * uncond)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    per = torch.stack([classes[int(k)].score(sde, x[i : i + 1], t[i : i + 1])[0] for i, k in enumerate(labels)])
    torch.testing.assert_close(model.score_fn(labels=labels)(x, t), per)


def test_score_model_errors():
    sde = VPSDE()
    with pytest.raises(ValueError, match="parametrisation"):
        Parametrisation("noise")
    with pytest.raises(ValueError, match="time_input"):
        Parametrisation(time_input="sigma")
    with pytest.raises(ValueError, match="sigma_data"):
        Parametrisation(sigma_data=0.0)
    model = oracle_model(DIST, sde)
    with pytest.raises(ValueError, match="unconditional"):
        model.score_fn(labels=1)
    with pytest.raises(ValueError, match="output"):
        model(torch.zeros(2, 3, dtype=torch.float64), 0.5, output="noise")
    cond = oracle_model(DIST, sde, per_class=[DIST, DIST])
    with pytest.raises(ValueError, match="needs labels"):
        cond.score_fn(guidance=1.0)
    with pytest.raises(ValueError, match="labels must lie"):
        cond.score_fn(labels=5)(torch.zeros(2, 3, dtype=torch.float64), 0.5)
