"""`sdegen.sample`: registry, input contract, honest NFE, reproducibility, x0_hat/denoise, schema, streaming."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import sdegen
from sdegen import analytic
from sdegen.reverse import ProbabilityFlowODE
from sdegen.samplers import SOLVERS
from sdegen.trajectory import REQUIRED_ATTRS, open_trajectory

GAUSS = analytic.Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([0.5, 1.0]))
MIX = analytic.gaussian_mixture_2d()
VP, VE = sdegen.VPSDE(), sdegen.VESDE()
FIXED = [name for name, info in SOLVERS.items() if info.evals_per_step is not None]


def _run(solver="euler", sde=VP, dist=GAUSS, n=6, steps=8, seed=0, **kw):
    return sdegen.sample(sde, dist.score_fn(sde), (n, *dist.data_shape), solver=solver, steps=steps, seed=seed, **kw)


class Counter:
    """A score that counts its calls and records the times it was asked for."""

    def __init__(self, fn):
        self.fn, self.calls, self.t_lo, self.t_hi = fn, 0, float("inf"), -float("inf")

    def __call__(self, x, t):
        self.calls += 1
        self.t_lo, self.t_hi = min(self.t_lo, float(t.min())), max(self.t_hi, float(t.max()))
        return self.fn(x, t)


# -- registry ---------------------------------------------------------------------------------------------


def test_registry_names_and_metadata():
    names = sdegen.solvers()
    assert names == list(SOLVERS)
    required = {"euler", "milstein", "srk", "heun", "midpoint", "reversible_heun", "pc", "ode", "ancestral", "ddim"}
    assert required | {"dpmpp_2m", "edm_heun"} <= set(names)
    for name, info in SOLVERS.items():
        assert info.family in {"torchsde", "pc", "ode", "ddpm", "fast_ode", "fast_sde"}, name
        assert isinstance(info.stochastic, bool)
        assert info.weak_order is not None and info.weak_order >= 1.0
        assert info.fn.__doc__ and "\n" not in info.fn.__doc__.strip(), f"{name}: one-line docstring"
    assert {n for n, i in SOLVERS.items() if i.vp_only} == {"ancestral", "ddim"}
    assert SOLVERS["ode"].evals_per_step is None


@pytest.mark.parametrize("solver", FIXED)
def test_nfe_is_steps_times_declared_evals(solver):
    counter = Counter(GAUSS.score_fn(VP))
    ds = sdegen.sample(VP, counter, (5, 2), solver=solver, steps=12, seed=0)
    info = SOLVERS[solver]
    resyncs = (12 - 1) // info.options["resync_every"] if "resync_every" in info.options else 0  # at k = 10
    assert ds.attrs["nfe"] == counter.calls == 12 * info.evals_per_step + info.extra_evals + resyncs
    assert ds.attrs["nfe_extra"] == 0
    assert counter.t_lo >= 1e-3 - 1e-7 and counter.t_hi <= 1.0


@pytest.mark.parametrize("resync_every, expected", [(0, 25), (1, 48), (5, 29), (24, 25)])
def test_reversible_heun_resync_costs_one_evaluation_each(resync_every, expected):
    counter = Counter(GAUSS.score_fn(VP))
    ds = sdegen.sample(VP, counter, (5, 2), solver="reversible_heun", steps=24, seed=0, resync_every=resync_every)
    assert ds.attrs["nfe"] == counter.calls == expected  # 24 steps + 1 initial drift + one per resync


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_reversible_heun_rejects_a_bad_resync_every(bad):
    with pytest.raises(ValueError, match="resync_every"):
        sdegen.sample(VP, GAUSS.score_fn(VP), (5, 2), solver="reversible_heun", steps=4, seed=0, resync_every=bad)


def test_corrector_off_costs_nothing_and_more_correctors_cost_more():
    assert _run("pc", corrector_steps=0, steps=10).attrs["nfe"] == 10
    assert _run("pc", corrector_steps=3, steps=10).attrs["nfe"] == 40


@pytest.mark.parametrize(
    "solver, opts", [("ode", {}), ("ode", {"method": "rk4"}), ("euler", {"adaptive": True, "rtol": 0.05, "atol": 0.05})]
)
def test_nfe_counts_real_calls_for_adaptive_and_odes(solver, opts):
    counter = Counter(MIX.score_fn(VE))
    ds = sdegen.sample(VE, counter, (5, 2), solver=solver, steps=10, seed=1, **opts)
    assert ds.attrs["nfe"] == counter.calls > 0
    if opts.get("method") == "rk4":
        assert counter.calls == 4 * 10


@pytest.mark.parametrize(
    "method, save_every",
    [("dopri5", 1), ("dopri5", 3), ("dopri5", 10), ("dopri8", 10), ("bosh3", 3), ("adaptive_heun", 10)]
    + [("fehlberg2", 1)],
)
def test_adaptive_ode_never_asks_outside_the_time_interval(method, save_every):
    counter = Counter(MIX.score_fn(VP))
    ds = sdegen.sample(VP, counter, (4, 2), solver="ode", steps=10, seed=0, save_every=save_every, method=method)
    assert ds.attrs["clamped_evals"] == 0  # no raw solver time outside [t_min, T] ...
    assert 1e-3 - 1e-9 <= counter.t_lo and counter.t_hi <= 1.0  # ... so the score saw none either


def test_plain_torchdiffeq_would_step_past_t_min():
    # The reason for step_t: without it dopri5 integrates beyond the end time and interpolates back.
    from torchdiffeq import odeint

    seen = []
    flow = ProbabilityFlowODE(VP, GAUSS.score_fn(VP), t_min=1e-3)

    def f(t, x):
        seen.append(float(t))
        return flow(t, x)

    odeint(f, torch.randn(4, 2), torch.tensor([1.0, 1e-3], dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert min(seen) < 1e-3


# -- input contract ---------------------------------------------------------------------------------------


def test_unknown_solver_lists_the_legal_names():
    with pytest.raises(ValueError, match="unknown solver 'eulr'") as err:
        _run("eulr")
    for name in sdegen.solvers():
        assert name in str(err.value)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="steps"):
        _run(steps=steps)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"t_min": 0.0}, "t_min"),
        ({"t_min": 1.0}, "t_min"),
        ({"save_every": 0}, "save_every"),
        ({"seed": -1}, "seed"),
        ({"labels": [1, 2]}, "labels"),
        ({"init": torch.zeros(3, 2)}, "init"),
        ({"solver": "pc", "snr": -1.0}, "snr"),
        ({"solver": "pc", "predictor": "leapfrog"}, "predictor"),
        ({"solver": "pc", "corrector_steps": -1}, "corrector_steps"),
        ({"solver": "ode", "method": "rk45"}, "method"),
        ({"solver": "ode", "rtol": 0.0}, "rtol"),
        ({"solver": "ddim", "eta": -0.5}, "eta"),
        ({"solver": "ancestral", "variance": "big"}, "variance"),
        ({"solver": "dpmpp_2m", "schedule": "cosine"}, "schedule"),
        ({"solver": "edm_heun", "rho": 0.0}, "rho"),
        ({"brownian": "pink"}, "brownian"),
        ({"adaptive": True, "brownian": "grid"}, "adaptive"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _run(**kwargs)


def test_bad_types():
    with pytest.raises(TypeError, match="sde"):
        sdegen.sample("vp", GAUSS.score_fn(VP), (2, 2))
    with pytest.raises(TypeError, match="callable"):
        sdegen.sample(VP, 3.0, (2, 2))
    with pytest.raises(ValueError, match="shape"):
        sdegen.sample(VP, GAUSS.score_fn(VP), (4,))


@pytest.mark.parametrize("solver", ["ancestral", "ddim"])
@pytest.mark.parametrize("sde", [VE, sdegen.PowerVESDE()], ids=["ve", "powerve"])
def test_vp_only_solvers_refuse_ve(solver, sde):
    with pytest.raises(ValueError, match="VP family"):
        _run(solver, sde=sde)


@pytest.mark.parametrize("solver", ["euler", "srk", "pc", "ode", "ddim", "dpmpp_2m", "edm_heun"])
def test_nan_or_misshaped_score_is_an_error(solver):
    with pytest.raises(ValueError, match="non-finite"):
        sdegen.sample(VP, lambda x, t: torch.full_like(x, float("nan")), (3, 2), solver=solver, steps=4, seed=0)
    with pytest.raises(ValueError, match="shape"):
        sdegen.sample(VP, lambda x, t: x[:, :1], (3, 2), solver=solver, steps=4, seed=0)


def test_unknown_options_warn_and_name_the_accepted_ones():
    with pytest.warns(UserWarning, match=r"ignores unknown option\(s\) \['sn'\].*'snr'"):
        _run("pc", sn=0.1)


# -- reproducibility ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_same_seed_same_samples_and_stochastic_flag(solver):
    a, b = _run(solver, seed=4), _run(solver, seed=4)
    assert np.array_equal(a.x.values, b.x.values)
    init = GAUSS.marginal(VP, 1.0).sample(6, torch.Generator().manual_seed(0))
    c, d = _run(solver, seed=1, init=init), _run(solver, seed=2, init=init)
    # Given the starting state, only stochastic solvers depend on the seed.
    assert np.array_equal(c.x.values, d.x.values) != SOLVERS[solver].stochastic


@pytest.mark.parametrize(
    "solver, opts",
    [(name, {}) for name in SOLVERS if name not in ("pc", "ode")]
    + [("ode", {"method": "rk4"}), ("ddim", {"eta": 0.7}), ("euler", {"dtype": torch.float64})],
)
def test_sample_i_does_not_depend_on_the_batch_size(solver, opts):
    small = _run(solver, dist=MIX, n=3, seed=9, **opts)
    large = _run(solver, dist=MIX, n=8, seed=9, **opts)
    assert np.array_equal(small.x.values, large.x.values[:, :3])


def test_adaptive_ode_result_and_cost_do_not_depend_on_the_saved_times():
    # One odeint call over all saved times: the step-size controller is never restarted at a saved state.
    runs = [_run("ode", dist=MIX, steps=s, save_every=e) for s, e in [(1, 1), (10, 1), (10, 3), (40, 1)]]
    for ds in runs[1:]:
        assert ds.attrs["nfe"] == runs[0].attrs["nfe"]
        np.testing.assert_array_equal(ds.x.values[-1], runs[0].x.values[-1])
    assert runs[3].sizes["time"] == 41


def test_adaptive_ode_depends_on_the_batch_only_within_tolerance():
    small = _run("ode", dist=MIX, n=3, seed=9, rtol=1e-6, atol=1e-6)
    large = _run("ode", dist=MIX, n=8, seed=9, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(small.x.values, large.x.values[:, :3], atol=1e-4)


def test_seed_none_is_recorded_and_replayable_and_generators_work():
    a = _run(seed=None)
    assert np.array_equal(_run(seed=a.attrs["seed"]).x.values, a.x.values)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert np.array_equal(_run(seed=g1).x.values, _run(seed=g2).x.values)


def test_milstein_equals_euler_for_additive_noise():
    # Derivative-free Milstein adds (g(y') − g(y))·(ΔW² − h)/(2√h), exactly zero when g ignores the state.
    assert np.array_equal(_run("milstein", dist=MIX).x.values, _run("euler", dist=MIX).x.values)


def test_ancestral_equals_ddim_with_eta_one():
    a = _run("ancestral", dist=MIX, steps=20, dtype=torch.float64)
    b = _run("ddim", dist=MIX, steps=20, eta=1.0, dtype=torch.float64)
    np.testing.assert_allclose(a.x.values, b.x.values, atol=1e-5)


def test_pc_without_corrector_equals_torchsde_euler():
    # Same Euler–Maruyama step and the same per-sample noise stream: two families, one answer.
    a = _run("pc", dist=MIX, steps=20, corrector_steps=0, dtype=torch.float64)
    b = _run("euler", dist=MIX, steps=20, dtype=torch.float64)
    np.testing.assert_allclose(a.x.values, b.x.values, atol=1e-5)


# -- x0_hat and denoise ------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["euler", "srk", "pc", "ode", "ancestral", "ddim", "dpmpp_2m", "edm_heun"])
def test_x0_hat_is_tweedie_of_the_saved_state_at_no_extra_cost(solver):
    plain = _run(solver, dist=MIX, steps=10, save_every=2)
    ds = _run(solver, dist=MIX, steps=10, save_every=2, save_x0_hat=True)
    np.testing.assert_allclose(ds.x.values, plain.x.values, atol=1e-6)
    # Only the final state costs an extra evaluation, except for the adaptive ODE, whose saved states after the
    # first are dense-output interpolants the solver never evaluated at: one extra each (5 of the 6 here).
    extra = 5 if solver == "ode" else 1
    assert ds.attrs["nfe"] == plain.attrs["nfe"] + extra and ds.attrs["nfe_extra"] == extra
    for k, t in enumerate(ds.time.values):
        x = torch.from_numpy(ds.x.values[k])
        np.testing.assert_allclose(ds.x0_hat.values[k], MIX.denoise(VP, x, float(t)).numpy(), rtol=1e-4, atol=1e-4)


def test_x0_hat_for_a_solver_that_never_evaluates_at_the_state():
    # Reversible Heun evaluates the drift at its second state z, not at y: saved states after the first (whose
    # drift it evaluates to start) cost one extra NFE each.
    plain = _run("reversible_heun", dist=MIX, steps=10, save_every=5)
    ds = _run("reversible_heun", dist=MIX, steps=10, save_every=5, save_x0_hat=True)
    assert ds.attrs["nfe_extra"] == 2 and ds.attrs["nfe"] == plain.attrs["nfe"] + 2
    x = torch.from_numpy(ds.x.values[1])
    np.testing.assert_allclose(ds.x0_hat.values[1], MIX.denoise(VP, x, float(ds.time[1])).numpy(), atol=1e-4)


def test_denoise_replaces_the_final_state_by_tweedie():
    plain = _run("euler", dist=MIX, steps=10)
    ds = _run("euler", dist=MIX, steps=10, denoise=True)
    x_last = torch.from_numpy(plain.x.values[-1])
    np.testing.assert_allclose(ds.x.values[-1], MIX.denoise(VP, x_last, 1e-3).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.x.values[:-1], plain.x.values[:-1])
    assert ds.attrs["nfe"] == plain.attrs["nfe"] + 1 and ds.attrs["denoise"] == 1


def test_progress_bar(capsys):
    _run(progress=True, steps=5)
    assert "sampling" in capsys.readouterr().err


# -- the Dataset ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data_shape, dims",
    [((2,), ("dim",)), ((1, 4, 3), ("channel", "height", "width")), ((4, 3), ("dim_0", "dim_1"))],
)
def test_schema(data_shape, dims):
    dist = analytic.Gaussian(torch.zeros(data_shape), torch.ones(data_shape))
    labels = torch.tensor([3, 1, 4])
    ds = sdegen.sample(VE, dist.score_fn(VE), (3, *data_shape), solver="pc", steps=7, seed=1, save_every=3,
                       labels=labels, data_range=(0.0, 1.0), score_source="exact")  # fmt: skip
    assert ds["x"].dims == ("time", "sample", *dims) and ds["x"].dtype == np.float32
    assert ds["time"].dtype == np.float64
    np.testing.assert_array_equal(ds["time"].values, [1.0, 1 - 3 * 0.999 / 7, 1 - 6 * 0.999 / 7, 1e-3])
    np.testing.assert_array_equal(ds["sample"].values, [0, 1, 2])
    np.testing.assert_array_equal(ds["label"].values, [3, 1, 4])
    t = torch.tensor(ds["time"].values)
    np.testing.assert_allclose(ds["sigma"].values, VE.marginal_std(t).numpy(), rtol=1e-12)
    np.testing.assert_allclose(ds["mean_scale"].values, VE.mean_scale(t).numpy(), rtol=1e-12)
    for key in REQUIRED_ATTRS + ("score_source", "data_range", "created", "sde_sigma_min", "solver_snr"):
        assert key in ds.attrs, key
    assert ds.attrs["sde"] == "ve" and ds.attrs["solver"] == "pc" and ds.attrs["steps"] == 7
    assert ds.attrs["data_range"] == "[0.0, 1.0]" and ds.attrs["score_source"] == "exact"
    assert all(isinstance(v, int | float | str) for v in ds.attrs.values())


def test_default_save_grid_keeps_about_ten_states_and_the_ends():
    ds = _run(steps=95)
    assert ds.sizes["time"] == 11 and ds.time.values[0] == 1.0 and ds.time.values[-1] == 1e-3


# -- streaming ----------------------------------------------------------------------------------------------


def test_streamed_file_equals_the_returned_dataset(tmp_path):
    path = tmp_path / "run.nc"
    ds = _run("ddim", dist=MIX, steps=9, save_every=2, out=path, save_x0_hat=True, labels=[0, 1, 2, 3, 4, 5])
    back = open_trajectory(path)
    for name in ("x", "x0_hat", "sigma", "mean_scale", "time", "label"):
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert back.attrs["nfe"] == ds.attrs["nfe"] and back.attrs["complete"] == 1


def test_run_that_raises_leaves_the_states_written_so_far(tmp_path):
    path = tmp_path / "broken.nc"
    exact = MIX.score_fn(VP)
    calls = []

    def failing(x, t):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("network exploded")
        return exact(x, t)

    with pytest.raises(RuntimeError, match="exploded") as info:
        sdegen.sample(VP, failing, (4, 2), solver="euler", steps=20, seed=0, save_every=1, out=path)
    assert not path.exists() and "broken.nc.partial" in str(info.value.__notes__)  # the target appears when complete
    with pytest.warns(UserWarning, match="did not complete"):
        back = open_trajectory(tmp_path / "broken.nc.partial")
    # A state is recorded once the solver has evaluated the score there: states 0..4 (calls 1..5) made it.
    assert back.sizes["time"] == 5 and back.attrs["complete"] == 0
    np.testing.assert_array_equal(back.x.values, _run(dist=MIX, n=4, steps=20, save_every=1).x.values[:5])


def test_killed_run_leaves_a_readable_file(tmp_path):
    path = tmp_path / "killed.nc"
    script = textwrap.dedent(f"""
        import time, torch, sdegen
        from sdegen import analytic
        mix = analytic.gaussian_mixture_2d()
        exact, calls = mix.score_fn(sdegen.VPSDE()), [0]
        def slow(x, t):
            calls[0] += 1
            print("call", calls[0], flush=True)
            time.sleep(0.05)
            return exact(x, t)
        sdegen.sample(sdegen.VPSDE(), slow, (4, 2), steps=10000, seed=0, save_every=1, out={str(path)!r})
    """)
    env = {**os.environ, "HDF5_USE_FILE_LOCKING": "FALSE"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.strip() == "call 4":  # record k is synced before the score is called at state k
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    with pytest.warns(UserWarning, match="did not complete"):
        back = open_trajectory(tmp_path / "killed.nc.partial")  # streamed as .partial; killed.nc never appeared
    assert back.sizes["time"] >= 3 and back.attrs["complete"] == 0 and not path.exists()
    assert np.isfinite(back.x.values).all()
