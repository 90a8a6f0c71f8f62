"""The sampling core: one score wrapper per run, the solver contract, options from signatures, grids, labels."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import sdegen
from sdegen import analytic, grids
from sdegen.labels import resolve_labels
from sdegen.samplers import SOLVERS
from sdegen.samplers.registry import RUN_ARGUMENTS
from sdegen.score_guard import GuardedScore, guard

VP, VE = sdegen.VPSDE(), sdegen.VESDE(sigma_min=0.01, sigma_max=5.0)
MIX = analytic.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [0.4, 0.6])
ALL_SDES = [VP, sdegen.SubVPSDE(), VE, sdegen.PowerVESDE()]


class Spy:
    """A score that records every (x, t) it is called with and which object called it."""

    def __init__(self, score):
        self.score, self.calls, self.callers = score, [], set()

    def __call__(self, x, t):
        self.calls.append((x.clone(), t.clone()))
        self.callers.add(type(inspect.stack()[1].frame.f_locals.get("self")).__name__)
        return self.score(x, t)


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_one_wrapper_between_every_solver_and_the_score(solver):
    """The user's score is called by the run's GuardedScore only, once per counted evaluation."""
    spy = Spy(MIX.score_fn(VP))
    steps = 4 if solver != "ode" else 2
    ds = sdegen.sample(VP, spy, (3, 2), solver=solver, steps=steps, seed=0, save_x0_hat=True)
    assert spy.callers == {"GuardedScore"}
    assert len(spy.calls) == ds.attrs["nfe"]


@pytest.mark.parametrize("solver", ["euler", "pc", "ode", "dpmpp_2m", "ddim", "ancestral", "edm_heun", "heun"])
def test_callback_x0_hat_is_tweedie_of_an_evaluation_at_the_state(solver):
    """Every x0_hat a solver reports comes from an evaluation it made at exactly that state and time."""
    spy = Spy(MIX.score_fn(VP))
    ds = sdegen.sample(VP, spy, (3, 2), solver=solver, steps=6, seed=1, save_every=1, save_x0_hat=True)
    for k in range(ds.sizes["time"] - 1):
        x, t = torch.from_numpy(ds.x.values[k]), float(ds.time[k])
        evals = [s for s in spy.calls if torch.equal(s[0], x) and abs(float(s[1][0]) - t) < 1e-6]
        assert evals, f"no evaluation at saved state {k}"
        alpha, sigma = float(ds.mean_scale[k]), float(ds.sigma[k])
        expected = (x + sigma**2 * MIX.score_fn(VP)(x, evals[0][1])) / alpha
        np.testing.assert_allclose(ds.x0_hat.values[k], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_guard_checks_counts_and_is_applied_once():
    g = GuardedScore(MIX.score_fn(VP), 0.1, 1.0)
    x = torch.zeros(2, 2)
    g(x, torch.full((2,), 0.5))
    assert g.nfe == 1 and guard(g, 0.0, 1.0) is g
    with pytest.raises(RuntimeError, match="outside"):
        g(x, torch.full((2,), 0.05))
    with pytest.raises(ValueError, match="shape"):
        GuardedScore(lambda x, t: x[:, :1], 0.0, 1.0)(x, torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="non-finite"):
        GuardedScore(lambda x, t: x / 0.0, 0.0, 1.0)(torch.ones(2, 2), torch.full((2,), 0.5))
    assert g.nfe == 1  # refused calls are not evaluations


def test_reverse_and_flow_share_the_callers_guard():
    g = GuardedScore(MIX.score_fn(VP), 1e-3, 1.0)
    rev, flow = VP.reverse(g, t_min=1e-3), VP.probability_flow(g, t_min=1e-3)
    assert rev.score is g and flow.score is g
    rev.f(torch.tensor(0.2), torch.zeros(2, 2))
    flow(torch.tensor(0.5), torch.zeros(2, 2))
    assert g.nfe == rev.nfe == flow.nfe == 2


@pytest.mark.parametrize("name", list(SOLVERS))
def test_options_come_from_the_solver_and_grid_signatures(name):
    info = SOLVERS[name]
    params = {**inspect.signature(info.fn).parameters, **inspect.signature(info.grid).parameters}
    assert set(info.options) <= set(params)
    for option, default in info.options.items():
        assert params[option].default == default
    # Every keyword option of the solver body is used: nothing in the signature is ignored.
    source = inspect.getsource(info.fn)
    for option in set(info.options) - set(info.grid_options):
        assert source.count(option) >= 2, f"{name} declares {option} but never reads it"
    assert set(info.run_arguments) <= set(RUN_ARGUMENTS)


def test_grid_options_reach_the_grid():
    a = sdegen.sample(VE, MIX.score_fn(VE), (2, 2), solver="dpmpp_2m", steps=6, seed=0, schedule="karras", rho=3.0)
    np.testing.assert_array_equal(a.time.values, grids.karras(VE, 6, 1e-3, rho=3.0).numpy())
    b = sdegen.sample(VP, MIX.score_fn(VP), (2, 2), solver="ode", steps=3, seed=0, method="euler", step_size=0.1)
    assert a.attrs["solver_rho"] == 3.0 and b.attrs["steps"] == 10


@pytest.mark.parametrize("sde", ALL_SDES, ids=lambda s: s.name)
def test_grids_are_monotone_with_exact_ends(sde):
    for ts in (grids.uniform(sde, 7, 1e-3), grids.logsnr(sde, 7, 1e-3), grids.karras(sde, 7, 1e-3, rho=7.0)):
        assert ts.dtype == torch.float64 and ts[0] == sde.T and ts[-1] == 1e-3
        assert (ts[1:] < ts[:-1]).all()
    lam = -grids.noise_ratio(sde, grids.logsnr(sde, 7, 1e-3)).log()
    np.testing.assert_allclose(np.diff(lam.numpy()), np.diff(lam.numpy())[0], rtol=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        grids.by_schedule(sde, 4, 1e-3, schedule="cosine")


@pytest.mark.parametrize("sde", ALL_SDES, ids=lambda s: s.name)
def test_karras_sigma_min_ends_the_ladder_and_the_last_step_reaches_t_min(sde):
    ends = grids.noise_ratio(sde, torch.tensor([sde.T, 1e-3], dtype=torch.float64)).tolist()
    floor = (ends[0] * ends[1]) ** 0.5  # a level strictly between σ̃(t_min) and σ̃(T)
    ts = grids.karras(sde, 6, 1e-3, rho=7.0, sigma_min=floor)
    assert ts.shape == (7,) and ts[0] == sde.T and ts[-1] == 1e-3 and (ts[1:] < ts[:-1]).all()
    ratio = grids.noise_ratio(sde, ts)
    np.testing.assert_allclose(ratio[5].item(), floor, rtol=1e-9)
    root = ratio[:6] ** (1 / 7.0)  # the first six points are eq. 5's ladder from σ̃(T) to sigma_min
    np.testing.assert_allclose(np.diff(root.numpy()), np.diff(root.numpy())[0], rtol=1e-6)
    ds = sdegen.sample(sde, MIX.score_fn(sde), (2, 2), solver="edm_heun", steps=6, seed=0, t_min=1e-3,
                       sigma_min=floor)  # fmt: skip
    np.testing.assert_array_equal(ds.time.values, ts.numpy())
    for bad in (ends[1] / 2, ends[0] * 2, "0.1"):
        with pytest.raises(ValueError, match="sigma_min"):
            grids.karras(sde, 6, 1e-3, sigma_min=bad)
    with pytest.raises(ValueError, match="2 steps"):
        grids.karras(sde, 1, 1e-3, sigma_min=floor)


@pytest.mark.parametrize("sde", ALL_SDES, ids=lambda s: s.name)
def test_sde_inverts_its_half_log_nsr_and_answers_alpha_sigma(sde):
    t = torch.linspace(1e-4, 1.0, 50, dtype=torch.float64)
    alpha, sigma = sde.alpha_sigma(t)
    np.testing.assert_array_equal(alpha.numpy(), sde.mean_scale(t).numpy())
    np.testing.assert_array_equal(sigma.numpy(), sde.marginal_std(t).numpy())
    np.testing.assert_allclose(sde.time_of_half_log_nsr(torch.log(sigma / alpha)).numpy(), t.numpy(), rtol=1e-9)


def test_label_specs():
    freq = torch.tensor([0.0, 1.0, 3.0])
    assert resolve_labels("balanced", 5, 3).tolist() == [0, 1, 2, 0, 1]
    assert resolve_labels("none", 2, 3).tolist() == [3, 3]
    assert resolve_labels("2", 2, 3).tolist() == [2, 2] and resolve_labels(1, 2, 3).tolist() == [1, 1]
    assert resolve_labels("0,2", 3, 3).tolist() == [0, 2, 0]
    drawn = resolve_labels("drawn", 4000, 3, class_frequencies=freq, seed=5)
    assert (drawn != 0).all()
    frac = float((drawn == 2).double().mean())
    assert abs(frac - 0.75) < 4 * (0.75 * 0.25 / 4000) ** 0.5
    # per sample: the first labels do not depend on how many are drawn
    assert torch.equal(resolve_labels("drawn", 7, 3, class_frequencies=freq, seed=5), drawn[:7])
    assert not torch.equal(resolve_labels("random", 50, 3, seed=1), resolve_labels("random", 50, 3, seed=2))


@pytest.mark.parametrize(
    ("spec", "match"),
    [("cats", "unknown label spec"), (7, "out of range"), ("0,9", "out of range"), (-1, "out of range"),
     ("drawn", "class frequencies"), (torch.zeros(3), "integers")],
)  # fmt: skip
def test_bad_label_specs(spec, match):
    with pytest.raises((ValueError, TypeError), match=match):
        resolve_labels(spec, 4, 3)


def test_sample_offsets_nest_so_batches_keep_their_global_streams():
    from sdegen.samplers import sample_offset

    whole = sdegen.sample(VP, MIX.score_fn(VP), (6, 2), solver="euler", steps=3, seed=2).x.values[-1]
    parts = []
    for start in (0, 3):
        with sample_offset(start):
            parts.append(sdegen.sample(VP, MIX.score_fn(VP), (3, 2), solver="euler", steps=3, seed=2).x.values[-1])
    np.testing.assert_array_equal(np.concatenate(parts), whole)
