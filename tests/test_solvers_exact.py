"""Every solver, fed the exact analytic score, reproduces the exact law of x_{t_min} — and wrong scores fail.

Runs start from an exact draw of p_T (`init`), so the only errors are the solver's and the sampling noise.
Tolerances come from the sample size (tests/_moments.py: K = 4 standard errors). Step counts are chosen per
solver so that the discretisation bias, measured at n = 20 000, stays below one standard error at n = 4000
(first-order DDPM needs ~1000 steps for that; reversible Heun is unstable below ~100 steps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _moments import K, moment_failures

import sdegen
from sdegen import analytic
from sdegen.trajectory import compare_marginals

N = 4000
T_MIN = 1e-3
GAUSS = analytic.Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([0.5, 1.0]))
MIXTURE = analytic.gaussian_mixture_2d(n_modes=8, radius=4.0, std=0.5)

# (solver, options, steps on VP, steps on VE); None: not defined for VE.
CASES = [
    ("euler", {}, 200, 100),
    ("milstein", {}, 200, 100),
    ("srk", {}, 50, 50),
    ("heun", {}, 50, 50),
    ("midpoint", {}, 50, 50),
    ("reversible_heun", {}, 200, 200),
    # snr 0.05: the Langevin corrector's own bias is ~snr² in variance (2.6% at the default 0.16).
    ("pc", {"snr": 0.05}, 200, 100),
    ("ode", {}, 10, 10),
    ("ancestral", {}, 1000, None),
    ("ddim", {}, 200, None),
    ("dpmpp_2m", {}, 30, 30),
    ("edm_heun", {}, 50, 50),
]
SDES = {"vp": sdegen.VPSDE(), "ve": sdegen.VESDE()}
# The mixture runs of these cases are fast; the full matrix is marked slow.
FAST_MIXTURE = {("euler", "vp"), ("ddim", "vp"), ("dpmpp_2m", "vp"), ("ode", "ve"), ("edm_heun", "ve"), ("pc", "ve")}


def _params():
    for solver, opts, vp_steps, ve_steps in CASES:
        for name, steps in (("vp", vp_steps), ("ve", ve_steps)):
            if steps is not None:
                yield pytest.param(solver, opts, name, steps, id=f"{solver}-{name}")


def _final(sde, dist, solver, steps, opts, score=None, seed=0, n=N):
    init = dist.marginal(sde, sde.T).sample(n, torch.Generator().manual_seed(100 + seed))
    score = score or dist.score_fn(sde)
    ds = sdegen.sample(sde, score, (n, 2), solver=solver, steps=steps, seed=seed, t_min=T_MIN, init=init, **opts)
    return ds.x.isel(time=-1).values.astype(np.float64)


def _exact(sde, dist):
    m = dist.marginal(sde, T_MIN)
    return m.means[0].numpy(), m.stds[0].numpy()


@pytest.mark.parametrize("solver, opts, sde_name, steps", list(_params()))
def test_gaussian_mean_and_covariance(solver, opts, sde_name, steps):
    sde = SDES[sde_name]
    x = _final(sde, GAUSS, solver, steps, opts)
    assert moment_failures(x, *_exact(sde, GAUSS)) == []


def _mixture_failures(x: np.ndarray, sde) -> list[str]:
    """Mode weights (each 1/8) within K binomial SEs, and the pooled within-mode std within K SEs."""
    m = MIXTURE.marginal(sde, T_MIN)
    centres = m.means.numpy()
    mode = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    n, k = len(x), len(centres)
    out = []
    counts = np.bincount(mode, minlength=k)
    p = 1 / k
    z_w = (counts / n - p) / math.sqrt(p * (1 - p) / n)
    out += [f"weight[{j}] z={z:+.1f}" for j, z in enumerate(z_w) if abs(z) > K]
    s = float(m.stds[0, 0])
    resid = x - centres[mode]
    z_s = (resid.std(0, ddof=1) - s) / (s / math.sqrt(2 * (n - 1)))
    out += [f"within-mode std[{j}] z={z:+.1f}" for j, z in enumerate(z_s) if abs(z) > K]
    return out


def _mixture_params():
    for p in _params():
        solver, opts, sde_name, steps = p.values
        marks = [] if (solver, sde_name) in FAST_MIXTURE else [pytest.mark.slow]
        yield pytest.param(solver, opts, sde_name, steps, id=p.id, marks=marks)


@pytest.mark.parametrize("solver, opts, sde_name, steps", list(_mixture_params()))
def test_mixture_mode_weights(solver, opts, sde_name, steps):
    sde = SDES[sde_name]
    x = _final(sde, MIXTURE, solver, steps, opts)
    assert _mixture_failures(x, sde) == []


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_reversible_heun_without_resync_is_biased_by_its_parasitic_mode(sde_name):
    # torchsde's plain reversible Heun: e = y − z grows like exp(∫|J| dt) whatever the step size (≈ e⁹ on VE),
    # biasing the mixture samples (within-mode std z ≈ +340 on VE, +50 on VP at 200 steps, seen). The default
    # resync_every = 10 passes the same check (test_mixture_mode_weights) at the same 200 steps.
    sde = SDES[sde_name]
    x = _final(sde, MIXTURE, "reversible_heun", 200, {"resync_every": 0})
    assert any("within-mode std" in f for f in _mixture_failures(x, sde))


def test_prior_start_also_matches():
    # Without `init` the run starts from the prior N(0, I), not p_T; for VP at T = 1 they differ by
    # alpha(1)·μ ≈ 0.007, far below the tolerance, so the final law must still match.
    sde = SDES["vp"]
    ds = sdegen.sample(sde, GAUSS.score_fn(sde), (N, 2), solver="dpmpp_2m", steps=30, seed=1, t_min=T_MIN)
    assert moment_failures(ds.x.isel(time=-1).values, *_exact(sde, GAUSS)) == []


# -- negative controls: each must fail the same checks the solvers pass ----------------------------------


@pytest.mark.parametrize("solver, steps", [("euler", 200), ("ode", 10)])
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_score_ten_percent_off_moves_variance_not_mean(solver, steps, factor):
    sde = SDES["vp"]
    exact = GAUSS.score_fn(sde)
    x = _final(sde, GAUSS, solver, steps, {}, score=lambda x, t: factor * exact(x, t))
    failures = moment_failures(x, *_exact(sde, GAUSS))
    assert any(f.startswith("var") for f in failures), failures
    assert not any(f.startswith("mean") for f in failures), failures


def test_pf_ode_without_half_collapses():
    # Passing 2·score to the PF ODE drops its ½: dx/dt = f·x − g²·s, the reverse SDE without its noise.
    sde = SDES["vp"]
    exact = GAUSS.score_fn(sde)
    x = _final(sde, GAUSS, "ode", 10, {}, score=lambda x, t: 2 * exact(x, t))
    mean, std = _exact(sde, GAUSS)
    assert any(f.startswith("var") for f in moment_failures(x, mean, std))
    assert (x.std(0) < 0.1 * std).all(), "the samples should collapse onto the mean"


def test_wrong_mixture_score_fails_mode_check():
    # A score of the mixture with the wrong component std (0.35 instead of 0.5) must fail the mixture check.
    sde = SDES["vp"]
    wrong = analytic.gaussian_mixture_2d(n_modes=8, radius=4.0, std=0.35)
    x = _final(sde, MIXTURE, "euler", 200, {}, score=wrong.score_fn(sde))
    assert any("within-mode std" in f for f in _mixture_failures(x, sde))


def test_reverse_path_has_exact_marginals_at_every_saved_time():
    # The reverse SDE started from p_T has law p_t at every t: check each saved state, not only the last.
    sde = SDES["vp"]
    init = GAUSS.marginal(sde, sde.T).sample(N, torch.Generator().manual_seed(7))
    ds = sdegen.sample(sde, GAUSS.score_fn(sde), (N, 2), solver="heun", steps=100, seed=7, save_every=10, init=init)
    cmp = compare_marginals(ds, GAUSS)
    assert ds.sizes["time"] == 11
    assert float(np.abs(cmp["z_mean"]).max()) < K
    assert float(np.abs(cmp["z_std"]).max()) < K
