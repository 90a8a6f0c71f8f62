"""torchsde on `sde.reverse(exact score)` recovers the data; torchdiffeq on `sde.probability_flow` matches
the exact map; the ½ in the PF ODE is checked by a negative control; bad scores raise clear errors.

Solves start from the exact marginal p_T (sampled from `analytic`) rather than the prior, so that what is
left is solver error plus Monte-Carlo error, both bounded below.
"""

import math

import pytest
import torch
import torchdiffeq
import torchsde

import sdegen
from sdegen import analytic

SDES = [sdegen.VPSDE(), sdegen.SubVPSDE(), sdegen.VESDE(), sdegen.PowerVESDE()]
IDS = [type(s).__name__ for s in SDES]
T_MIN = 1e-3


def reverse_solve(sde, score, x_T, *, steps=400, method="euler", seed=0, data_shape=None):
    """Integrate the reverse SDE from T to T_MIN with `steps` uniform steps; returns x at T_MIN."""
    sde_type = "stratonovich" if method in ("heun", "midpoint") else "ito"
    rsde = sde.reverse(score, data_shape=data_shape, sde_type=sde_type, t_min=T_MIN)
    s_end = sde.T - T_MIN
    dt = s_end / steps
    y0 = x_T.reshape(x_T.shape[0], -1)
    ts = torch.tensor([0.0, s_end], dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, s_end, size=y0.shape, dtype=y0.dtype, dt=dt, entropy=seed)
    ys = torchsde.sdeint(rsde, y0, ts, method=method, dt=dt, bm=bm)
    return ys[-1].reshape(x_T.shape), rsde


def moment_tolerances(var, n, k=5.0):
    """k standard errors of the sample mean (√(var/n)) and sample variance (var·√(2/n))."""
    return k * torch.sqrt(var / n), k * var * math.sqrt(2 / n)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_reverse_sde_recovers_gaussian(sde):
    g = analytic.Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.5]))
    n = 4000
    gen = torch.Generator().manual_seed(1)
    x_T = g.marginal(sde, sde.T).sample(n, gen, dtype=torch.float64)
    x, rsde = reverse_solve(sde, g.score_fn(sde), x_T)
    target = g.marginal(sde, T_MIN)  # the exact p_{t_min}: the solve stops at T_MIN, not at 0
    mean_tol, var_tol = moment_tolerances(target.variance(), n)
    # Euler–Maruyama has weak order 1: allow a bias of 2% of the variance at 400 steps on top.
    assert torch.all((x.mean(0) - target.mean()).abs() < mean_tol + 0.02 * target.variance().sqrt())
    assert torch.all((x.var(0) - target.variance()).abs() < var_tol + 0.02 * target.variance())
    cov = torch.cov(x.T)[0, 1]
    assert abs(cov) < 5 * target.variance().prod().sqrt() / math.sqrt(n)
    assert rsde.nfe == 400 or rsde.nfe == 401  # one score call per Euler step (+ a sliver step at most)


@pytest.mark.parametrize("sde", [SDES[0], SDES[2]], ids=[IDS[0], IDS[2]])
def test_reverse_sde_recovers_mixture(sde):
    mix = analytic.GaussianMixture([0.2, 0.5, 0.3], [[-2.0, 0.0], [1.0, 1.5], [2.0, -2.0]], [0.3, 0.4, 0.35])
    n = 4000
    gen = torch.Generator().manual_seed(2)
    x_T = mix.marginal(sde, sde.T).sample(n, gen, dtype=torch.float64)
    x, _ = reverse_solve(sde, mix.score_fn(sde), x_T, steps=500)
    # Mode weights: assign each sample to its nearest mean; a binomial proportion has std √(w(1−w)/n).
    comp = torch.cdist(x, mix.means).argmin(1)
    freq = torch.bincount(comp, minlength=3).double() / n
    w = mix.weights
    assert torch.all((freq - w).abs() < 5 * torch.sqrt(w * (1 - w) / n)), freq
    target = mix.marginal(sde, T_MIN)
    mean_tol, var_tol = moment_tolerances(target.variance(), n)
    assert torch.all((x.mean(0) - target.mean()).abs() < mean_tol)
    assert torch.all((x.var(0) - target.variance()).abs() < var_tol + 0.02 * target.variance())


def test_wrong_score_fails_the_same_check():
    """Negative control: a score 10% too small keeps the mean but inflates the variance beyond tolerance."""
    sde = sdegen.VPSDE()
    g = analytic.Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.5]))
    n = 4000
    gen = torch.Generator().manual_seed(1)
    x_T = g.marginal(sde, sde.T).sample(n, gen, dtype=torch.float64)
    exact = g.score_fn(sde)
    x, _ = reverse_solve(sde, lambda x, t: 0.9 * exact(x, t), x_T)
    target = g.marginal(sde, T_MIN)
    _, var_tol = moment_tolerances(target.variance(), n)
    assert torch.any((x.var(0) - target.variance()).abs() > var_tol + 0.02 * target.variance())


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("direction", ["down", "up"])
def test_probability_flow_matches_exact_map(sde, direction):
    g = analytic.Gaussian(torch.tensor([1.0, -2.0, 0.3]), torch.tensor([0.5, 1.5, 0.1]))
    gen = torch.Generator().manual_seed(4)
    t0, t1 = (sde.T, T_MIN) if direction == "down" else (T_MIN, sde.T)
    x0 = g.marginal(sde, t0).sample(64, gen, dtype=torch.float64)
    pf = sde.probability_flow(g.score_fn(sde), t_min=T_MIN)
    ts = torch.tensor([t0, t1], dtype=torch.float64)
    tol = 1e-8
    x1 = torchdiffeq.odeint(pf, x0, ts, rtol=tol, atol=tol, method="dopri5", options={"step_t": ts})[-1]
    exact = g.flow_map(sde, x0, t0, t1)
    scale = g.marginal(sde, t1).variance().sqrt()
    assert torch.all((x1 - exact).abs() / scale < 1e-5)


def test_probability_flow_without_half_collapses():
    """Negative control: dx/dt = f x − g² s (the ½ dropped) does not preserve the marginals."""
    sde = sdegen.PowerVESDE(25.0)
    g = analytic.Gaussian(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5]))
    score = g.score_fn(sde)
    x0 = g.marginal(sde, sde.T).sample(2000, torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = torch.tensor([sde.T, T_MIN], dtype=torch.float64)
    good = sde.probability_flow(score, t_min=T_MIN)

    def without_half(t, x):
        tt = t.clamp(T_MIN, sde.T).expand(x.shape[0])  # same clamping as the real module
        return sde.drift(x, tt) - sde.diffusion(tt)[:, None] ** 2 * score(x, tt)

    target_std = g.marginal(sde, T_MIN).variance().sqrt()
    for fn, ok in [(good, True), (without_half, False)]:
        x = torchdiffeq.odeint(fn, x0, ts, rtol=1e-6, atol=1e-6, method="dopri5")[-1]
        close = torch.allclose(x.std(0), target_std, rtol=0.1)
        assert close == ok


def test_score_never_outside_interval_with_step_t():
    sde = sdegen.VPSDE()
    g = analytic.Gaussian(torch.zeros(2), torch.ones(2))
    seen = []

    def score(x, t):
        seen.append(t.detach().clone())
        return g.score(sde, x, t)

    pf = sde.probability_flow(score, t_min=T_MIN)
    ts = torch.tensor([1.0, T_MIN], dtype=torch.float64)
    x0 = torch.randn(8, 2, dtype=torch.float64)
    torchdiffeq.odeint(pf, x0, ts, rtol=1e-5, atol=1e-5, method="dopri5", options={"step_t": ts})
    allt = torch.cat(seen)
    assert allt.min() >= T_MIN and allt.max() <= 1.0
    assert pf.nfe == len(seen)


def test_images_through_reverse_sde():
    """Image-shaped data: the adapter flattens for torchsde and unflattens for the score."""
    sde = sdegen.VPSDE()
    g = analytic.Gaussian(torch.full((1, 3, 3), 0.5), 0.2)
    x_T = g.marginal(sde, 1.0).sample(500, torch.Generator().manual_seed(0), dtype=torch.float64)
    x, _ = reverse_solve(sde, g.score_fn(sde), x_T, steps=200, data_shape=(1, 3, 3))
    assert x.shape == (500, 1, 3, 3)
    assert abs(x.mean().item() - 0.5) < 0.02
    assert abs(x.std().item() - 0.2) < 0.02


@pytest.mark.parametrize(
    "bad_score, err, match",
    [
        (lambda x, t: torch.zeros(x.shape[0], 3), ValueError, "score returned shape"),
        (lambda x, t: torch.full_like(x, float("nan")), ValueError, "non-finite"),
        (lambda x, t: x.numpy(), TypeError, "must return a torch.Tensor"),
    ],
)
def test_bad_score_raises(bad_score, err, match):
    sde = sdegen.VPSDE()
    x_T = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(err, match=match):
        reverse_solve(sde, bad_score, x_T, steps=5)
    pf = sde.probability_flow(bad_score, t_min=T_MIN)
    with pytest.raises(err, match=match):
        pf(torch.tensor(0.5, dtype=torch.float64), x_T)


def test_score_not_callable():
    with pytest.raises(TypeError, match="callable"):
        sdegen.VPSDE().reverse(3.0)


def test_score_refused_outside_interval():
    sde = sdegen.VPSDE()
    rsde = sde.reverse(lambda x, t: -x, t_min=0.1)
    with pytest.raises(RuntimeError, match="outside"):
        rsde.f(torch.tensor(0.95, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64))
