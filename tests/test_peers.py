"""diffusers' schedulers driven by an sdegen score (`sdegen.peers`): the schedule and timestep maps are exact
where claimed, and a scheduler fed the exact Gaussian score reproduces the Gaussian (K = 4 standard errors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _moments import moment_failures

import sdegen
from sdegen import analytic
from sdegen.samplers import ddpm
from sdegen.score_guard import GuardedScore

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[peers]); peer tests skipped")
from sdegen import peers  # noqa: E402

# diffusers (numpy 2) warns about `__array__` copies inside its schedulers: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

GAUSS = analytic.Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([0.5, 1.0]))
VP, VE = sdegen.VPSDE(), sdegen.VESDE()
N = 4000


def test_schedule_is_the_sdes_marginals():
    t = peers.train_times()
    assert t[0] == 1e-3 and t[-1] == 1.0 and len(t) == 1000
    # VP: ᾱ_i = alpha(t_i)² exactly, and the betas rebuild it.
    torch.testing.assert_close(peers.alphas_cumprod(VP), VP.mean_scale(t) ** 2, rtol=1e-12, atol=0)
    rebuilt = np.cumprod(1 - peers.trained_betas(VP))
    np.testing.assert_allclose(rebuilt, VP.mean_scale(t).numpy() ** 2, rtol=1e-10)
    # diffusers' own table (float32 accumulation) agrees to ~1e-5.
    sched = peers.make_scheduler("dpmsolver++", VP)
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), rebuilt, rtol=2e-4)


@pytest.mark.parametrize("sde", [VP, VE], ids=["vp", "ve"])
def test_timestep_to_time_is_exact(sde):
    i = torch.arange(1000)
    torch.testing.assert_close(peers.time_of_timestep(sde, i), peers.train_times(), rtol=0, atol=0)
    assert peers.train_times()[411].item() == 412 / 1000
    # A fractional timestep: log σ̃ interpolates linearly between the training levels.
    tau = torch.tensor([0.25, 411.5, 998.9])
    t = peers.time_of_timestep(sde, tau)
    log_ratio = torch.log(sde.marginal_std(t) / sde.mean_scale(t))
    lo = peers.log_noise_ratios(sde)[tau.floor().long()]
    hi = peers.log_noise_ratios(sde)[tau.floor().long() + 1]
    torch.testing.assert_close(log_ratio, lo + (tau.double() - tau.floor().double()) * (hi - lo), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="timesteps must lie in"):
        peers.time_of_timestep(sde, torch.tensor([1000.0]))


def test_karras_timesteps_map_to_the_schedulers_sigmas():
    # Euler on Karras sigmas calls the model at fractional timesteps (diffusers' `_sigma_to_t`); their SDE
    # times must carry the very noise levels the scheduler steps with.
    sched = peers.make_scheduler("euler", VP, karras=True)
    sched.set_timesteps(12)
    t = peers.time_of_timestep(VP, sched.timesteps)
    ratio = (VP.marginal_std(t) / VP.mean_scale(t)).numpy()
    np.testing.assert_allclose(ratio, sched.sigmas[:-1].double().numpy(), rtol=1e-4)


def test_adapter_returns_the_noise_of_the_vp_scaled_input():
    # For x_t = alpha·x0 + sigma·ε with x0 = μ exactly (a point mass has score −(x − alpha·μ)/sigma²), the
    # adapter must return ε — on VE too, where the model input is VP-scaled.
    for sde in (VP, VE):
        point = analytic.Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([1e-6, 1e-6]))
        adapter = peers.EpsilonAdapter(sde, point.score_fn(sde))
        eps = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        i = 500
        ratio = float(peers.log_noise_ratios(sde)[i].exp())
        x_vp = (point.mu + ratio * eps) / np.sqrt(1 + ratio**2)
        torch.testing.assert_close(adapter(x_vp, torch.tensor(i)), eps, rtol=1e-6, atol=1e-6)


def test_ddim_equals_sdegens_ddim_on_the_same_grid():
    # The same algorithm on both sides: diffusers' DDIM on its timesteps and sdegen's `ddim` on the SDE
    # times of those timesteps (ending at t = 0, ᾱ = 1) agree to float32 round-off.
    ds = peers.sample_diffusers(VP, GAUSS.score_fn(VP), (64, 2), "ddim", nfe=25, seed=3, dtype=torch.float64)
    ts = torch.tensor([*ds.time.values[:-1], 0.0], dtype=torch.float64)
    x0 = torch.from_numpy(ds.x.values[0]).double()
    guarded = GuardedScore(GAUSS.score_fn(VP), 1e-3, 1.0)
    ours = ddpm.ddim(VP, guarded, x0, ts, callback=lambda *a: None, seed=0)
    np.testing.assert_allclose(ds.x.values[-1], ours.numpy(), rtol=1e-5, atol=1e-5)
    assert ds.attrs["nfe"] == guarded.nfe == 25


@pytest.mark.parametrize(
    "scheduler, nfe, karras, sde",
    [
        ("dpmsolver++", 50, False, VP),
        ("unipc", 50, True, VP),
        ("heun", 99, False, VP),
        ("dpmsolver++", 50, True, VE),
        pytest.param("ddim", 200, False, VP, marks=pytest.mark.slow),
        pytest.param("euler", 200, True, VP, marks=pytest.mark.slow),
    ],
    ids=["dpm-vp", "unipc-karras-vp", "heun-vp", "dpm-karras-ve", "ddim-vp", "euler-karras-vp"],
)
def test_scheduler_with_the_exact_score_reproduces_the_gaussian(scheduler, nfe, karras, sde):
    ds = peers.sample_diffusers(sde, GAUSS.score_fn(sde), (N, 2), scheduler, nfe=nfe, seed=0, karras=karras)
    assert ds.attrs["nfe"] == (nfe if peers.SCHEDULERS[scheduler][2] == 1 else 2 * ((nfe + 1) // 2) - 1)
    assert ds.time.values[0] == 1.0 and ds.time.values[-1] == 0.0
    # The final state is at σ = 0: the data law itself.
    assert moment_failures(ds.x.values[-1], GAUSS.mu.numpy(), GAUSS.std.numpy()) == []


def test_wrong_score_fails_the_same_check():
    exact = GAUSS.score_fn(VP)
    ds = peers.sample_diffusers(VP, lambda x, t: 0.9 * exact(x, t), (N, 2), "dpmsolver++", nfe=50, seed=0)
    failures = moment_failures(ds.x.values[-1], GAUSS.mu.numpy(), GAUSS.std.numpy())
    assert any(f.startswith("var") for f in failures), failures


def test_sample_i_does_not_depend_on_the_batch_size_and_dpmsolver_sde_runs():
    small = peers.sample_diffusers(VP, GAUSS.score_fn(VP), (3, 2), "unipc", nfe=8, seed=4)
    large = peers.sample_diffusers(VP, GAUSS.score_fn(VP), (8, 2), "unipc", nfe=8, seed=4)
    np.testing.assert_array_equal(small.x.values, large.x.values[:, :3])
    ds = peers.sample_diffusers(VP, GAUSS.score_fn(VP), (4, 2), "dpmsolver_sde", nfe=9, seed=4)
    assert ds.attrs["nfe"] == 9 and np.isfinite(ds.x.values).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown diffusers scheduler"):
        peers.make_scheduler("lms", VP)
    with pytest.raises(ValueError, match="Karras"):
        peers.make_scheduler("ddim", VP, karras=True)
    with pytest.raises(ValueError, match="nfe"):
        peers.steps_for_nfe("unipc", 0)
