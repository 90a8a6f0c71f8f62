"""Forward SDEs: closed-form marginals, consistency of drift/diffusion with them, and input checks."""

import math

import pytest
import torch
import torchsde

import sdegen
from sdegen.sdes import sde_from_attrs

ALL_SDES = [
    sdegen.VPSDE(),
    sdegen.SubVPSDE(),
    sdegen.VESDE(),
    sdegen.PowerVESDE(),
    sdegen.VPSDE(beta_min=0.5, beta_max=5.0),
    sdegen.VESDE(sigma_min=0.1, sigma_max=5.0),
    sdegen.PowerVESDE(sigma=5.0),
]
IDS = [repr(s) for s in ALL_SDES]
TS = torch.tensor([0.0, 1e-4, 0.01, 0.1, 0.37, 0.5, 0.9, 1.0], dtype=torch.float64)


def test_closed_forms_vp():
    sde = sdegen.VPSDE(0.1, 20.0)
    t = TS
    B = 0.1 * t + 0.5 * t**2 * 19.9
    assert torch.allclose(sde.mean_scale(t), torch.exp(-0.5 * B), rtol=1e-12)
    assert torch.allclose(sde.marginal_std(t), torch.sqrt(1 - torch.exp(-B)), rtol=1e-10, atol=1e-15)
    assert torch.allclose(sde.diffusion(t), torch.sqrt(0.1 + t * 19.9), rtol=1e-12)


def test_closed_forms_subvp():
    sde = sdegen.SubVPSDE(0.1, 20.0)
    B = 0.1 * TS + 0.5 * TS**2 * 19.9
    assert torch.allclose(sde.mean_scale(TS), torch.exp(-0.5 * B), rtol=1e-12)
    assert torch.allclose(sde.marginal_std(TS), 1 - torch.exp(-B), rtol=1e-10, atol=1e-15)
    g2 = (0.1 + TS * 19.9) * (1 - torch.exp(-2 * B))
    assert torch.allclose(sde.diffusion(TS) ** 2, g2, rtol=1e-10, atol=1e-15)


def test_closed_forms_ve_and_power():
    ve = sdegen.VESDE(0.01, 50.0)
    sig = 0.01 * 5000.0**TS
    assert torch.allclose(ve.marginal_std(TS), torch.sqrt(sig**2 - 0.01**2), rtol=1e-9, atol=1e-15)
    assert torch.allclose(ve.diffusion(TS), sig * math.sqrt(2 * math.log(5000.0)), rtol=1e-12)
    assert torch.all(ve.mean_scale(TS) == 1)
    pw = sdegen.PowerVESDE(25.0)
    assert torch.allclose(pw.marginal_std(TS), torch.sqrt((25.0 ** (2 * TS) - 1) / (2 * math.log(25.0))), rtol=1e-10)
    assert torch.allclose(pw.diffusion(TS), 25.0**TS, rtol=1e-12)
    assert pw.prior_std == pytest.approx(math.sqrt(624 / (2 * math.log(25.0))))


@pytest.mark.parametrize("sde", ALL_SDES, ids=IDS)
def test_coefficients_consistent(sde):
    """alpha' = f·alpha and (sigma²)' = 2f·sigma² + g² (the moment ODEs of a linear SDE), by finite differences."""
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    alpha = sde.mean_scale(t)
    dalpha = (sde.mean_scale(t + h) - sde.mean_scale(t - h)) / (2 * h)
    f = sde._drift_coeff(t)
    assert torch.allclose(dalpha, f * alpha, rtol=1e-6, atol=1e-9)
    var = sde.marginal_std(t) ** 2
    dvar = (sde.marginal_std(t + h) ** 2 - sde.marginal_std(t - h) ** 2) / (2 * h)
    assert torch.allclose(dvar, 2 * f * var + sde.diffusion(t) ** 2, rtol=1e-5)
    assert sde.mean_scale(0.0).item() == 1.0 and sde.marginal_std(0.0).item() == 0.0


@pytest.mark.parametrize("sde", ALL_SDES[:4], ids=IDS[:4])
def test_marginal_matches_simulated_forward_sde(sde):
    """Simulate the forward SDE with torchsde and compare mean/std at t = 0.5 and T with `marginal`.

    n = 8000 draws: the sample mean has std sigma/sqrt(n) and the sample std about sigma/sqrt(2n);
    we allow 5 such standard errors plus the Euler bias (dt = 1e-3, O(dt)).
    """
    n, d = 8000, 2
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64).expand(n, d).clone()
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(n, d), dtype=torch.float64, dt=1e-3, entropy=1)
    ys = torchsde.sdeint(sde.forward_sde(), x0, ts, method="euler", dt=1e-3, bm=bm)
    del gen
    for k, t in [(1, 0.5), (2, 1.0)]:
        mean, std = sde.marginal(x0[:1], t)
        emp_mean, emp_std = ys[k].mean(0), ys[k].std(0)
        s = std.item()
        assert torch.allclose(emp_mean, mean[0], atol=5 * s / math.sqrt(n) + 1e-3 * abs(mean[0]).max().item())
        assert torch.allclose(emp_std, torch.full((d,), s, dtype=torch.float64), rtol=5 / math.sqrt(2 * n) + 2e-3)


@pytest.mark.parametrize("sde", ALL_SDES[:4], ids=IDS[:4])
@pytest.mark.parametrize("shape", [(3,), (2, 5), (1, 4, 4), (2, 1, 3, 3)])
def test_shapes(sde, shape):
    x = torch.randn(4, *shape)
    t = torch.rand(4)
    assert sde.drift(x, t).shape == x.shape
    assert sde.diffusion(t).shape == (4,)
    mean, std = sde.marginal(x, t)
    assert mean.shape == x.shape and std.shape == (4,)
    assert sde.drift(x, 0.3).shape == x.shape
    z = sde.prior_sample((4, *shape), generator=torch.Generator().manual_seed(1))
    assert z.shape == (4, *shape)
    assert sde.prior_logp(z).shape == (4,)
    assert sde.perturb(x, t, generator=torch.Generator().manual_seed(0)).shape == x.shape


@pytest.mark.parametrize("sde", ALL_SDES[:4], ids=IDS[:4])
def test_prior_logp_is_gaussian_density(sde):
    z = torch.randn(5, 3, dtype=torch.float64)
    s2 = sde.prior_std**2
    expected = (-0.5 * z**2 / s2 - 0.5 * math.log(2 * math.pi * s2)).sum(1)
    assert torch.allclose(sde.prior_logp(z), expected, rtol=1e-12)


@pytest.mark.parametrize("sde", ALL_SDES[:4], ids=IDS[:4])
def test_prior_matches_marginal_at_T(sde):
    """The prior's std equals the marginal std at T for the VE family, and ~1 for the VP family."""
    assert sde.marginal_std(sde.T).item() == pytest.approx(sde.prior_std, rel=5e-4)


def test_prior_sample_seeded():
    sde = sdegen.VPSDE()
    a = sde.prior_sample((3, 4), generator=torch.Generator().manual_seed(7))
    b = sde.prior_sample((3, 4), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("sde", ALL_SDES, ids=IDS)
def test_attrs_round_trip(sde):
    assert sde_from_attrs(sde.attrs()) == sde
    assert all(isinstance(v, (str, float)) for v in sde.attrs().values())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: sdegen.VPSDE(beta_min=1.0, beta_max=0.5), "beta_max must be > beta_min"),
        (lambda: sdegen.VPSDE(beta_min=1.0, beta_max=1.0), "beta_max must be > beta_min"),
        (lambda: sdegen.SubVPSDE(beta_min=-0.1), "beta_min must be a finite number > 0"),
        (lambda: sdegen.VPSDE(beta_max=float("nan")), "beta_max must be a finite number > 0"),
        (lambda: sdegen.VESDE(sigma_min=0.0), "sigma_min must be a finite number > 0"),
        (lambda: sdegen.VESDE(sigma_min=2.0, sigma_max=1.0), "sigma_max must be > sigma_min"),
        (lambda: sdegen.PowerVESDE(sigma=1.0), "sigma must be > 1"),
        (lambda: sdegen.PowerVESDE(sigma=float("inf")), "sigma must be a finite number > 0"),
    ],
)
def test_invalid_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_time_outside_interval():
    sde = sdegen.VPSDE()
    x = torch.randn(3, 2)
    for bad in [-0.1, 1.5, float("nan")]:
        with pytest.raises(ValueError, match="outside the time interval"):
            sde.marginal(x, bad)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1.0\]"):
        sde.drift(x, torch.tensor([0.5, 1.2, 0.1]))
    with pytest.raises(ValueError, match="non-finite"):
        sde.drift(x, torch.tensor([0.5, float("nan"), 0.1]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        sde.drift(x, torch.rand(4))


def test_bad_state():
    sde = sdegen.VESDE()
    with pytest.raises(ValueError, match="batch"):
        sde.drift(torch.randn(5), 0.5)
    with pytest.raises(TypeError, match="floating-point"):
        sde.drift(torch.ones(2, 3, dtype=torch.long), 0.5)
