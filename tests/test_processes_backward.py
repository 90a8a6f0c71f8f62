"""`sdegen.processes.sample_backward`: oracle predictors recover their targets, masks, seeds, the record,
and the equivalence of x0-prediction + bridge with DDPM ancestral sampling for the Gaussian SDEs.

Oracle runs start from x_T drawn from the exact marginal of the target at times[-1] (target draw, then
`sample_forward`), so for point-mass targets and for categorical states with the exact posterior every
state of the chain has the exact marginal law at its time, whatever the grid; statistics are compared with
sample-size tolerances (K = 4 standard errors, chi-square p > 1e-3).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import sdegen
from sdegen import processes as P
from sdegen.processes import rotation
from sdegen.processes.circle import wrapped_normal_density

K = 4.0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- Gaussian SDEs: the bridge is DDPM's posterior ------------------------------------------------------


def _ddpm_ancestral_step(sde, x0, x, t, s, z):
    """One step of `sdegen.sample(..., solver="ancestral")` (sdegen/samplers/ddpm.py; Ho et al. 2020, eq. 7)
    from t_k = t to t_{k+1} = s: a = alpha_k/alpha_{k+1}, s² = sigma_k² − a²·sigma_{k+1}²,
    μ̃ = (alpha_{k+1}·s²/sigma_k²)·x0_hat + (a·sigma_{k+1}²/sigma_k²)·x, σ̃² = sigma_{k+1}²·s²/sigma_k²."""
    alpha_k, alpha_next = sde.mean_scale(t).item(), sde.mean_scale(s).item()
    sigma_k, sigma_next = sde.marginal_std(t).item(), sde.marginal_std(s).item()
    a = alpha_k / alpha_next
    s2 = max(sigma_k**2 - a**2 * sigma_next**2, 0.0)
    mean = (alpha_next * s2 / sigma_k**2) * x0 + (a * sigma_next**2 / sigma_k**2) * x
    return mean + math.sqrt(sigma_next**2 * s2 / sigma_k**2) * z


@pytest.mark.parametrize("sde", [sdegen.VPSDE(), sdegen.SubVPSDE()])
def test_vp_bridge_step_equals_ddpm_ancestral_step(sde):
    x0 = torch.randn(6, 3, generator=gen(1), dtype=torch.float64)
    xt = torch.randn(6, 3, generator=gen(2), dtype=torch.float64)
    for t, s in ((0.9, 0.7), (0.31, 0.3), (0.05, 1e-3)):
        z = torch.randn(6, 3, generator=gen(3), dtype=torch.float64)
        expected = _ddpm_ancestral_step(sde, x0, xt, t, s, z)
        got = sde.sample_bridge(x0, xt, s, t, generator=gen(3))
        assert torch.allclose(got, expected, rtol=0, atol=1e-10)
    # Negative control: the "beta" variance (σ̃² = s²) is not the bridge's.
    wrong = _ddpm_ancestral_step(sde, x0, xt, 0.9, 0.7, 1.3 * z)
    assert not torch.allclose(sde.sample_bridge(x0, xt, 0.7, 0.9, generator=gen(3)), wrong, atol=1e-3)


@pytest.mark.parametrize("sde", [sdegen.VPSDE(), sdegen.SubVPSDE(), sdegen.VESDE(), sdegen.PowerVESDE()])
def test_sde_bridge_is_the_gaussian_posterior(sde):
    """Mean and variance of q(x_s | x_t, x0) from the product of N(x_s; α_s x0, σ_s²) and N(x_t; a x_s, v)."""
    n, s, t = 20_000, 0.3, 0.6
    x0v, xtv = 0.7, -0.4
    grid = torch.tensor([s, t], dtype=torch.float64)
    (alpha_s, alpha_t), (std_s, std_t) = sde._mean_scale(grid).tolist(), sde._marginal_std(grid).tolist()
    a = alpha_t / alpha_s
    v = std_t**2 - a * a * std_s**2
    var = 1 / (1 / std_s**2 + a * a / v)
    mean = var * (alpha_s * x0v / std_s**2 + a * xtv / v)
    x = sde.sample_bridge(
        torch.full((n, 1), x0v, dtype=torch.float64), torch.full((n, 1), xtv, dtype=torch.float64), s, t, gen(4)
    )
    assert abs(x.mean().item() - mean) < K * math.sqrt(var / n)
    assert abs(x.var().item() - var) < K * var * math.sqrt(2 / (n - 1))
    x_t = sde.sample_forward(torch.full((n, 1), x0v, dtype=torch.float64), t, gen(5))
    assert abs(x_t.mean().item() - alpha_t * x0v) < K * std_t / math.sqrt(n)
    assert sde.loss(torch.zeros(3, 2), torch.ones(3, 2), 0.5).tolist() == [1.0, 1.0, 1.0]


def test_sde_bridge_chain_with_the_exact_posterior_mean_samples_the_data():
    """x0 ~ N(m, s²): bridge sampling with E[x0 | x_t] reproduces the data mean and variance (ancestral)."""
    sde, m, s2, n = sdegen.VPSDE(), 1.5, 0.25, 8000

    def predictor(x, t):
        alpha = sde.mean_scale(t, x)[:, None].double()
        std = sde.marginal_std(t, x)[:, None].double()
        gain = alpha * s2 / (alpha**2 * s2 + std**2)
        return (m + gain * (x.double() - alpha * m)).to(x.dtype)

    times = P.time_grid("log", 1e-3, 1.0, 200)
    x_T = m * sde.mean_scale(1.0) + torch.sqrt(
        sde.mean_scale(1.0) ** 2 * s2 + sde.marginal_std(1.0) ** 2
    ) * torch.randn(n, 1, generator=gen(6), dtype=torch.float64)
    ds = P.sample_backward(sde, predictor, x_T.float(), times, seed=7)
    x = ds["x0_hat"].isel(time=-1).values.ravel().astype(np.float64)
    assert abs(x.mean() - m) < K * math.sqrt(s2 / n)
    assert abs(x.var() - s2) < K * s2 * math.sqrt(2 / (n - 1))
    assert ds.attrs["nfe"] == 200 and "sigma" in ds and "mean_scale" in ds


def test_bridge_chain_matches_sdegen_ancestral_sampling_in_law():
    """Same VP SDE, same grid, exact score ↔ exact x0: `sdegen.sample(..., solver="ancestral")` and the bridge
    chain have the same law at every step; compare the final states' mean and variance (two-sample z < 4)."""
    sde, m, s2, n = sdegen.VPSDE(), 1.5, 0.25, 3000

    def score(x, t):
        alpha, std = sde.mean_scale(t, x)[:, None], sde.marginal_std(t, x)[:, None]
        return -(x - alpha * m) / (alpha**2 * s2 + std**2)

    def predictor(x, t):  # Tweedie: E[x0 | x_t] = (x + sigma²·score)/alpha
        alpha, std = sde.mean_scale(t, x)[:, None], sde.marginal_std(t, x)[:, None]
        return (x + std**2 * score(x, t)) / alpha

    ref = sdegen.sample(sde, score, (n, 1), solver="ancestral", steps=40, seed=0, save_every=1, t_min=1e-2)
    times = torch.from_numpy(ref["time"].values[::-1].copy())
    x_T = torch.from_numpy(ref["x"].values[0]).float()  # the same start law N(0, 1); the same draws even
    ours = P.sample_backward(sde, predictor, x_T, times, seed=1, save_every=1)
    a, b = ref["x"].values[-1].ravel().astype(np.float64), ours["x"].values[-1].ravel().astype(np.float64)
    z_mean = (a.mean() - b.mean()) / math.sqrt(a.var() / n + b.var() / n)
    z_var = (a.var() - b.var()) / math.sqrt(2 * a.var() ** 2 / (n - 1) + 2 * b.var() ** 2 / (n - 1))
    assert abs(z_mean) < K and abs(z_var) < K, (z_mean, z_var)
    assert np.allclose(ours["time"].values, ref["time"].values)


# -- oracle predictors -----------------------------------------------------------------------------------

WEIGHTS, MEANS, STDS = (0.3, 0.7), (-2.0, 2.0), (0.3, 0.5)


def test_ou_gaussian_mixture_oracle_recovers_mode_weights():
    ou, n = P.OrnsteinUhlenbeck(mean=0.0, volatility=1.0, reversion=0.5), 4000
    w, m, s = (torch.tensor(v, dtype=torch.float64) for v in (WEIGHTS, MEANS, STDS))

    def predictor(x, t):  # exact E[x0 | x_t] of the mixture under OU
        a = torch.exp(-0.5 * t.double())[:, None]
        v = (1 - a**2)[:, None].squeeze(-1) if False else (1 - a**2)
        xt = x.double()
        var_k = a**2 * s**2 + v
        logp = torch.log(w) - 0.5 * torch.log(var_k) - 0.5 * (xt - a * m) ** 2 / var_k
        post = torch.softmax(logp, -1)
        means = m + a * s**2 / var_k * (xt - a * m)
        return (post * means).sum(-1, keepdim=True).to(x.dtype)

    times = P.time_grid("log", 1e-3, 6.0, 150)
    comp = torch.multinomial(w, n, replacement=True, generator=gen(8))
    x0 = m[comp] + s[comp] * torch.randn(n, generator=gen(9), dtype=torch.float64)
    x_T = ou.sample_forward(x0[:, None], 6.0, gen(10)).float()
    ds = P.sample_backward(ou, predictor, x_T, times, seed=11)
    final = ds["x"].isel(time=-1).values.ravel()
    frac = (final > 0).mean()
    assert abs(frac - 0.7) < K * math.sqrt(0.7 * 0.3 / n), frac
    assert abs(final[final > 0].mean() - 2.0) < K * 0.5 / math.sqrt(frac * n) + 0.02
    # Negative control: a predictor that shrinks towards zero by 20 % moves the modes.
    bad = P.sample_backward(ou, lambda x, t: 0.8 * predictor(x, t), x_T, times, seed=11)
    bad_final = bad["x"].isel(time=-1).values.ravel()
    assert abs(bad_final[bad_final > 0].mean() - 2.0) > 10 * 0.5 / math.sqrt(frac * n)


def test_circle_point_mass_oracle_is_exact_on_any_grid():
    proc, c, n = P.WrappedBrownian(rate=2.0), 2.9, 8000
    times = P.time_grid("linear", 0.01, 3.0, 12)
    x_T = proc.sample_forward(torch.full((n,), c), 3.0, gen(12))
    ds = P.sample_backward(proc, lambda x, t: torch.full_like(x, c), x_T, times, seed=13, save_every=1)
    x = torch.from_numpy(ds["x"].values)
    assert x.min() >= -math.pi and x.max() < math.pi and ds["x"].attrs["kind"] == "angle"
    for k in (3, 8, 11):  # E[cos(x_t − c)] = e^{−rate·t/2} at every time of the chain
        t = float(ds["time"][k])
        v = torch.cos(x[k].double() - c)
        assert abs(v.mean().item() - math.exp(-t)) < K * v.std().item() / math.sqrt(n) + 1e-6


def test_discrete_posterior_oracle_recovers_the_target_marginals():
    target = torch.tensor([0.6, 0.05, 0.05, 0.3], dtype=torch.float64)
    for proc in (P.IndependentDiscrete(1.0, [0.1, 0.2, 0.3, 0.4]), P.MaskedDiscrete(1.5, 4)):

        def predictor(x, t, proc=proc):  # exact posterior log p(x0 | x_t) ∝ log target + log P(t)[x0, x_t]
            pt = proc.transition_matrix(t.double())[:, :4, :]  # (batch, K, S)
            lik = torch.gather(pt, 2, x.view(-1, 1, 1).expand(-1, 4, 1)).squeeze(-1)
            return torch.log(target * lik + 1e-300).float()

        n = 8000
        x0 = torch.multinomial(target, n, replacement=True, generator=gen(14))
        times = P.time_grid("log", 0.01, 3.0, 6)
        x_T = proc.sample_forward(x0, 3.0, gen(15))
        ds = P.sample_backward(proc, predictor, x_T, times, seed=16, save_every=1)
        assert ds["x"].dtype == np.int64 and ds["x"].attrs["kind"] == "category"
        assert ds["x"].values.min() >= 0 and ds["x"].values.max() < proc.num_values  # in range along the path
        for k in (2, 5):
            t = float(ds["time"][k])
            exact = (target @ proc.transition_matrix(t)[:4]).numpy()
            draws = ds["x"].values[k]
            keep = exact > 0
            counts = np.bincount(draws, minlength=len(exact))
            assert stats.chisquare(counts[keep], exact[keep] * n).pvalue > 1e-3
        if isinstance(proc, P.IndependentDiscrete):
            # Negative control: the prediction × likelihood step instead of the mixture is detected.
            def product_step(prediction, x_t, s, t, generator=None, proc=proc):
                w = torch.softmax(prediction.double(), -1) * proc._cols(
                    proc._matrices(torch.full((len(x_t),), t - s)), x_t
                )
                return proc._categorical(w, generator)

            original = proc.reverse_step
            proc.reverse_step = product_step
            try:
                bad = P.sample_backward(proc, predictor, x_T, times, seed=16)
            finally:
                proc.reverse_step = original
            exact = (target @ proc.transition_matrix(0.01)).numpy()
            counts = np.bincount(bad["x"].values[-1], minlength=4)
            assert stats.chisquare(counts, exact * n).pvalue < 1e-6


def test_rotation_point_mass_oracle_and_manifold_along_the_path():
    proc, n = P.RotationBrownian(rate=1.0), 500
    c = rotation.canonical(torch.tensor([[0.3, 0.5, -0.7, 0.4]], dtype=torch.float64)).float()
    times = P.time_grid("log", 1e-3, 2.0, 30)
    x_T = proc.sample_equilibrium((n,), gen(17))
    ds = P.sample_backward(proc, lambda x, t: c.expand_as(x), x_T, times, seed=18, save_every=1)
    q = torch.from_numpy(ds["x"].values).double()
    assert ((q.norm(dim=-1) - 1).abs() < 1e-5).all() and (q[..., 0] >= 0).all()
    m = P.quaternion_to_matrix(q)
    eye = torch.eye(3, dtype=torch.float64)
    assert ((m.transpose(-1, -2) @ m - eye).abs() < 1e-5).all()
    assert ((torch.linalg.det(m) - 1).abs() < 1e-5).all()
    final_angle = rotation.geodesic_distance(q[-1], c.double())
    # At t_min = 1e-3 the state is IGSO(3)(1e-3) around c: angles of order √1e-3 ≈ 0.03.
    assert final_angle.mean() < 0.1


# -- record, seeds, masks, self-conditioning, streaming -------------------------------------------------


def test_record_nfe_save_every_and_x0_hat():
    proc = P.OrnsteinUhlenbeck()
    times = P.time_grid("linear", 0.1, 1.0, 10)
    x_T = proc.sample_equilibrium((4, 2), gen(19))
    ds = P.sample_backward(proc, lambda x, t: 0.5 * x, x_T, times, seed=1, save_every=1)
    assert ds.attrs["nfe"] == 10 and ds.sizes["time"] == 10
    assert np.allclose(ds["time"].values, times.flip(0).numpy())
    assert np.allclose(ds["x0_hat"].values, 0.5 * ds["x"].values)  # the prediction made at each saved state
    assert np.array_equal(ds["x"].values[0], x_T.numpy())
    ds3 = P.sample_backward(proc, lambda x, t: 0.5 * x, x_T, times, seed=1, save_every=4)
    assert np.allclose(ds3["time"].values, times.flip(0).numpy()[[0, 4, 8, 9]])
    assert np.array_equal(ds3["x"].values[-1], ds["x"].values[-1])


def test_per_sample_seeds_do_not_depend_on_the_batch_size():
    proc = P.Joint(P.WrappedBrownian(), P.RotationBrownian(), P.UniformDiscrete(1.0, 5))
    times = P.time_grid("log", 0.01, 1.0, 8)

    def predictor(x, t):
        return (torch.zeros_like(x[0]), x[1], torch.zeros(*x[2].shape, 5))

    def run(batch):
        x_T = proc.sample_equilibrium(((batch, 2), (batch,), (batch, 3)), generator=[gen(i) for i in range(batch)])
        return P.sample_backward(proc, predictor, x_T, times, seed=21)

    small, big = run(3), run(7)
    for v in ("x_0", "x_1", "x_2"):
        assert np.array_equal(small[v].values, big[v].values[:, :3])
    again = run(3)
    assert np.array_equal(again["x_2"].values, small["x_2"].values)
    other = P.sample_backward(proc, predictor, proc.sample_equilibrium(((3, 2), (3,), (3, 3)), gen(0)), times, seed=22)
    assert not np.array_equal(other["x_0"].values[-1], small["x_0"].values[-1])


def test_masked_elements_stay_bit_identical():
    proc = P.Joint(P.OrnsteinUhlenbeck(), P.MaskedDiscrete(1.0, 3), P.RotationBrownian())
    times = P.time_grid("log", 0.01, 2.0, 12)
    x_T = (
        torch.randn(5, 4, generator=gen(23)),
        torch.randint(0, 4, (5, 6), generator=gen(24)),
        proc.processes[2].sample_equilibrium((5, 2), gen(25)),
    )
    mask = (
        torch.rand(5, 4, generator=gen(26)) < 0.5,
        torch.rand(5, 6, generator=gen(27)) < 0.5,
        torch.tensor([[True, False]] * 5),
    )
    ds = P.sample_backward(
        proc,
        lambda x, t: (torch.zeros_like(x[0]), torch.zeros(5, 6, 3), x[2]),
        x_T,
        times,
        seed=28,
        mask=mask,
        save_every=1,
    )
    for j in range(3):
        keep = ~mask[j].numpy()
        if j == 2:
            keep = np.repeat(keep[..., None], 4, -1)
        path = ds[f"x_{j}"].values
        assert np.array_equal(path[:, keep], np.broadcast_to(x_T[j].numpy()[keep], path[:, keep].shape))
        assert not np.array_equal(path[-1][~keep], x_T[j].numpy()[~keep])
    assert ds.attrs["masked"] == 1


def test_self_conditioning_passes_the_previous_prediction():
    seen = []

    def predictor(x, t, prev):
        seen.append(None if prev is None else prev.clone())
        return x + 1.0

    proc = P.BrownianMotion()
    x_T = proc.sample_forward(torch.zeros(3, 2), 1.0, gen(29))
    ds = P.sample_backward(
        proc, predictor, x_T, P.time_grid("linear", 0.1, 1.0, 5), seed=1, self_condition=True, save_every=1
    )
    assert seen[0] is None and len(seen) == 5
    for k in range(1, 5):
        assert torch.equal(seen[k], torch.from_numpy(ds["x0_hat"].values[k - 1]))
    assert ds.attrs["self_condition"] == 1


def test_streaming_out_writes_a_readable_trajectory(tmp_path):
    proc = P.Joint(P.OrnsteinUhlenbeck(), P.UniformDiscrete(1.0, 10))
    x_T = proc.sample_equilibrium(((4, 1, 3, 3), (4,)), gen(30))
    path = tmp_path / "run.nc"
    ds = P.sample_backward(
        proc,
        lambda x, t: (x[0], torch.zeros(4, 10)),
        x_T,
        P.time_grid("log", 0.01, 1.0, 6),
        seed=3,
        save_every=2,
        out=path,
    )
    assert path.exists() and not (tmp_path / "run.nc.partial").exists()
    back = sdegen.open_trajectory(path)
    assert back.attrs["complete"] == 1 and back.attrs["nfe"] == 6
    for v in ("x_0", "x_1", "x0_hat_0", "x0_hat_1"):
        assert np.array_equal(back[v].values, ds[v].values)
    assert back["x_1"].attrs["kind"] == "category" and back["x_0"].attrs["kind"] == "euclidean"
    assert back["x0_hat_1"].dims == ("time", "sample", "x_1_category")


def test_sample_backward_bad_input():
    proc = P.OrnsteinUhlenbeck()
    x = torch.zeros(3, 2)
    f = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="strictly increasing"):
        P.sample_backward(proc, f, x, [0.1, 0.3, 0.2])
    with pytest.raises(ValueError, match="positive"):
        P.sample_backward(proc, f, x, [0.0, 0.3])
    with pytest.raises(ValueError, match="mask must have the state's shape"):
        P.sample_backward(proc, f, x, [0.1, 0.3], mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        P.sample_backward(proc, f, x, [0.1, 0.3], mask=torch.ones(3, 2))
    with pytest.raises(ValueError, match="same shape"):
        P.sample_backward(proc, lambda x, t: x[:, :1], x, [0.1, 0.3])
    with pytest.raises(ValueError, match="tuple of 2"):
        P.sample_backward(P.Joint(proc, proc), f, x, [0.1, 0.3])
    with pytest.raises(ValueError, match="save_every"):
        P.sample_backward(proc, f, x, [0.1, 0.3], save_every=0)
    with pytest.raises(ValueError, match="unknown time grid"):
        P.time_grid("cosine", 0.1, 1.0, 5)
    with pytest.raises(ValueError, match="unit quaternions"):
        P.sample_backward(
            P.RotationBrownian(), lambda x, t: 2 * x, P.RotationBrownian().sample_equilibrium((2,)), [0.1, 0.3]
        )
    with pytest.raises(ValueError, match=r"\(0, 1.0\]"):
        P.sample_backward(sdegen.VPSDE(), f, x, [0.1, 1.5])


# -- the circle's tangent-mean loss and the training helper ----------------------------------------------


def test_circle_tangent_loss_and_two_point_oracle():
    proc, n = P.WrappedBrownian(rate=1.0), 2000
    x0 = torch.tensor([0.5, 3.0])
    # Small t: the expected lifted displacement is the short arc; the loss vanishes at x0_hat = x0.
    xt = torch.tensor([0.45, -3.1])
    assert torch.allclose(proc.expected_displacement(x0, xt, 1e-3), P.wrap(x0 - xt).double(), atol=1e-12)
    assert proc.loss(x0, x0, 1e-3, x_t=xt).abs().max() < 1e-10
    # Large t, x_t antipodal to x0: windings balance, the target displacement is ~0.
    assert proc.expected_displacement(torch.tensor([0.0]), torch.tensor([-math.pi]), 50.0).abs().item() < 1e-6

    points, weights = torch.tensor([0.0, 2.0], dtype=torch.float64), torch.tensor([0.3, 0.7], dtype=torch.float64)

    def oracle(w):
        def predictor(x, t):  # wrap(x_t + E[Y0 − Y_t | x_t]) for a two-point target
            xs = x.double()[:, None].expand(-1, 2)
            tt = t.double()[:, None].expand(-1, 2)
            like = torch.stack([wrapped_normal_density(xs[:, j], points[j], tt[:, j]) for j in range(2)], 1)
            post = w * like / (w * like).sum(1, keepdim=True)
            disp = torch.stack(
                [proc.expected_displacement(points[j].expand(len(x)), x.double(), t) for j in range(2)], 1
            )
            return P.wrap(x.double() + (post * disp).sum(1)).to(x.dtype)

        return predictor

    x_T = proc.sample_equilibrium((n,), gen(40))
    times = P.time_grid("log", 1e-3, 12.0, 100)
    final = P.sample_backward(proc, oracle(weights), x_T, times, seed=41)["x"].values[-1]
    frac = (np.abs(final - 2.0) < 1.0).mean()
    assert abs(frac - 0.7) < K * math.sqrt(0.21 / n), frac
    # Negative control: an oracle with the wrong weights (0.5, 0.5) is detected.
    bad = P.sample_backward(proc, oracle(torch.tensor([0.5, 0.5], dtype=torch.float64)), x_T, times, seed=41)
    assert abs((np.abs(bad["x"].values[-1] - 2.0) < 1.0).mean() - 0.7) > 2 * K * math.sqrt(0.21 / n)


def test_x0_prediction_loss_with_self_conditioning_and_masks():
    from sdegen.processes.training import log_uniform_times, x0_prediction_loss

    t = log_uniform_times(20_000, 1e-3, 10.0, gen(42))
    logs = torch.log(t)
    assert t.min() >= 1e-3 and t.max() <= 10.0
    assert abs(logs.mean().item() - 0.5 * (math.log(1e-3) + math.log(10.0))) < K * logs.std().item() / math.sqrt(20_000)

    proc = P.Joint(P.OrnsteinUhlenbeck(), P.UniformDiscrete(1.0, 3))
    seen = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x, t, previous=None):
            seen.append((x, previous))
            return (self.w * x[0] + 100.0 * (~mask[0]), torch.zeros(len(t), 2, 3) + self.w)

    x0 = (torch.randn(8, 4, generator=gen(43)), torch.randint(0, 3, (8, 2), generator=gen(44)))
    mask = (torch.rand(8, 4, generator=gen(45)) < 0.5, torch.ones(8, 2, dtype=torch.bool))
    model = Model()
    loss = x0_prediction_loss(proc, model, x0, t_min=1e-3, t_max=5.0, generator=gen(46), self_condition=True, mask=mask)
    loss.backward()
    assert torch.isfinite(loss) and model.w.grad is not None
    assert seen[0][1] is None and isinstance(seen[1][1], tuple)  # first pass without, second with an estimate
    x_t = seen[1][0][0]
    assert torch.equal(x_t[~mask[0]], x0[0][~mask[0]])  # unmasked elements are given clean
    # The +100 error on the unmasked elements does not enter the loss.
    assert loss.item() < 50
    zeroed = (seen[1][1][1] == 0).all(dim=(1, 2))
    assert 0 < zeroed.sum() < 8  # about half of the samples see zeros instead of their first estimate
