"""Exactness of the bridge processes' forward laws and bridges, and their input checks.

Statistical checks use fixed seeds and sample-size tolerances: moments within K = 4 standard errors,
histograms by Pearson's chi-square with p > 1e-3 (a correct sampler fails by chance with probability 1e-3
per check; the seeds are fixed so the outcome is fixed). Each family keeps a deliberately wrong variant
(negative control) that the same check must reject with p < 1e-6.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from sdegen import processes as P
from sdegen.processes import circle, rotation

K = 4.0
N = 20_000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def chi2_p(samples: np.ndarray, edges: np.ndarray, probs: np.ndarray) -> float:
    """Pearson chi-square p-value of binned samples against absolute bin probabilities; the mass outside the
    edges is one more bin, and bins with < 5 expected draws are merged into their neighbour."""
    samples = np.asarray(samples)
    counts = np.histogram(samples, edges)[0].astype(float)
    counts = np.append(counts, len(samples) - counts.sum())
    probs = np.append(probs, max(1.0 - probs.sum(), 0.0))
    expected = probs * len(samples)
    obs, exp, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(counts, expected, strict=True):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 5:
            obs.append(acc_o)
            exp.append(acc_e)
            acc_o, acc_e = 0.0, 0.0
    obs[-1] += acc_o
    exp[-1] += acc_e
    exp = np.array(exp) * sum(obs) / sum(exp)  # remove the quadrature round-off of the probabilities
    return float(stats.chisquare(obs, exp).pvalue)


def discrete_p(draws: np.ndarray, probs: np.ndarray) -> float:
    counts = np.bincount(draws, minlength=len(probs))[: len(probs)].astype(float)
    keep = probs > 0
    assert counts[~keep].sum() == 0, "draws in a state of zero probability"
    if keep.sum() == 1:
        return 1.0  # a point mass: every draw is in its state
    return float(stats.chisquare(counts[keep], probs[keep] / probs[keep].sum() * len(draws)).pvalue)


def assert_moments(x: torch.Tensor, mean: float, var: float) -> None:
    x = x.double().flatten()
    n = x.numel()
    z_mean = (x.mean().item() - mean) / math.sqrt(var / n)
    z_var = (x.var().item() - var) / (var * math.sqrt(2 / (n - 1)))
    assert abs(z_mean) < K and abs(z_var) < K, f"z(mean)={z_mean:+.2f}, z(var)={z_var:+.2f}"


# -- Euclidean ------------------------------------------------------------------------------------------


def test_ou_and_brownian_forward_moments():
    ou = P.OrnsteinUhlenbeck(mean=1.0, volatility=0.8, reversion=0.7)
    x0 = torch.full((N, 1), -2.0, dtype=torch.float64)
    t = 0.6
    a = math.exp(-0.7 * t)
    assert_moments(ou.sample_forward(x0, t, gen(1)), 1.0 + a * (-3.0), 0.64 * (1 - a * a) / 1.4)
    bm = P.BrownianMotion(rate=2.5)
    assert_moments(bm.sample_forward(x0, t, gen(2)), -2.0, 2.5 * t)
    # Per-sample times: half the batch at t, half at 2t.
    tt = torch.tensor([t, 2 * t]).repeat(N // 2)
    xt = bm.sample_forward(x0, tt, gen(3))
    assert_moments(xt[1::2], -2.0, 2.5 * 2 * t)
    assert_moments(ou.sample_equilibrium((N, 1), gen(4)), 1.0, 0.64 / 1.4)


def _gaussian_bridge_reference(a_s, v_s, b, w, y0, yt):
    """The bridge from the product of densities: precision 1/v_s + b²/w, mean var·(a_s y0/v_s + b y_t/w)."""
    var = 1 / (1 / v_s + b * b / w)
    return var * (a_s * y0 / v_s + b * yt / w), var


@pytest.mark.parametrize("name", ["ou", "brownian"])
def test_gaussian_bridge_matches_closed_form(name):
    proc = P.OrnsteinUhlenbeck(0.5, 1.2, 0.9) if name == "ou" else P.BrownianMotion(1.7)
    s, t, y0, yt = 0.3, 0.8, -1.0, 2.0
    x0 = torch.full((N, 1), y0, dtype=torch.float64)
    xt = torch.full((N, 1), yt, dtype=torch.float64)
    if name == "ou":
        th, sig, mu = 0.9, 1.2, 0.5
        v = lambda u: sig**2 * (1 - math.exp(-2 * th * u)) / (2 * th)  # noqa: E731
        mean, var = _gaussian_bridge_reference(
            math.exp(-th * s), v(s), math.exp(-th * (t - s)), v(t - s), y0 - mu, yt - mu
        )
        mean += mu
    else:
        mean, var = _gaussian_bridge_reference(1.0, 1.7 * s, 1.0, 1.7 * (t - s), y0, yt)
    assert_moments(proc.sample_bridge(x0, xt, s, t, gen(5)), mean, var)
    # Pinned ends: s = 0 gives x0 exactly.
    assert torch.equal(proc.sample_bridge(x0[:5], xt[:5], 0.0, t, gen(6)), x0[:5])


def test_gaussian_bridge_negative_control():
    """A bridge that forgets the mean reversion (a Brownian bridge used for OU) is rejected."""
    ou, bm = P.OrnsteinUhlenbeck(0.0, 1.0, 2.0), P.BrownianMotion(1.0)
    x0 = torch.full((N, 1), -1.0, dtype=torch.float64)
    xt = torch.full((N, 1), 2.0, dtype=torch.float64)
    m, v = ou.bridge_moments(x0[:1], xt[:1], 0.5, 1.0)
    with pytest.raises(AssertionError):
        assert_moments(bm.sample_bridge(x0, xt, 0.5, 1.0, gen(7)), m.item(), v.item() ** 2)


def test_ou_as_torchsde_matches_the_exact_marginal():
    import torchsde

    ou = P.OrnsteinUhlenbeck(mean=1.0, volatility=0.5, reversion=1.5)
    n = 2000
    y0 = torch.full((n, 1), -1.0, dtype=torch.float64)
    ts = torch.linspace(0, 1, 2, dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, 1.0, (n, 1), dtype=torch.float64, entropy=3)
    ys = torchsde.sdeint(ou.as_torchsde(), y0, ts, bm=bm, method="euler", dt=2e-3)
    a = math.exp(-1.5)
    assert_moments(ys[-1], 1.0 - 2.0 * a, 0.25 * (1 - a * a) / 3.0)


# -- circle ---------------------------------------------------------------------------------------------


def test_circle_forward_circular_moments_and_range():
    proc = P.WrappedBrownian(rate=1.3)
    x0 = torch.full((N,), 2.5, dtype=torch.float64)
    for t in (0.2, 2.0):
        xt = proc.sample_forward(x0, t, gen(8))
        assert xt.min() >= -math.pi and xt.max() < math.pi
        decay = math.exp(-1.3 * t / 2)
        for f, exact in ((torch.cos, decay * math.cos(2.5)), (torch.sin, decay * math.sin(2.5))):
            v = f(xt)
            assert abs(v.mean().item() - exact) < K * v.std().item() / math.sqrt(N)
    eq = proc.sample_equilibrium((N,), gen(9), dtype=torch.float64)
    assert chi2_p(eq.numpy(), np.linspace(-math.pi, math.pi, 41), np.full(40, 1 / 40)) > 1e-3


def _circle_bridge_probs(rate, x0, xt, s, t, edges):
    grid = torch.linspace(-math.pi, math.pi, 40_001, dtype=torch.float64)[:-1] + math.pi / 40_000
    dens = circle.wrapped_normal_density(grid, x0, rate * s) * circle.wrapped_normal_density(xt, grid, rate * (t - s))
    return np.histogram(grid.numpy(), edges, weights=dens.numpy())[0] / dens.sum().item()


def test_wrapped_brownian_bridge_is_exact_and_interpolated_one_is_not():
    rate, s, t, a0, at = 1.0, 2.0, 6.0, 2.8, -2.9  # rate·t = 6: windings matter
    x0 = torch.full((N,), a0, dtype=torch.float64)
    xt = torch.full((N,), at, dtype=torch.float64)
    edges = np.linspace(-math.pi, math.pi, 41)
    probs = _circle_bridge_probs(rate, a0, at, s, t, edges)
    exact = P.WrappedBrownian(rate).sample_bridge(x0, xt, s, t, gen(10))
    assert exact.min() >= -math.pi and exact.max() < math.pi
    assert chi2_p(exact.numpy(), edges, probs) > 1e-3
    approx = P.WrappedInterpolatedBrownian(rate).sample_bridge(x0, xt, s, t, gen(10))
    assert chi2_p(approx.numpy(), edges, probs) < 1e-6  # negative control
    # At small rate·t the approximation is close to exact: x0 and x_t close, no winding mass.
    near = P.WrappedInterpolatedBrownian(rate).sample_bridge(x0, x0 + 0.1, 0.01, 0.02, gen(11))
    probs = _circle_bridge_probs(rate, a0, a0 + 0.1, 0.01, 0.02, np.linspace(2.6, 3.1, 41))
    assert chi2_p(near.numpy(), np.linspace(2.6, 3.1, 41), probs) > 1e-3


def test_winding_truncation_below_1e6():
    for var in (0.01, 1.0, 10.0, 100.0):
        k = circle.num_windings(var)
        d = torch.linspace(-math.pi, math.pi, 101, dtype=torch.float64)
        ks = torch.arange(-k - 30, k + 31, dtype=torch.float64)
        full = torch.exp(-0.5 * (d[:, None] + 2 * math.pi * ks) ** 2 / var).sum(1)
        kept = torch.exp(-0.5 * (d[:, None] + 2 * math.pi * ks[30:-30]) ** 2 / var).sum(1)
        assert ((full - kept) / full).max() < 1e-6


# -- rotations ------------------------------------------------------------------------------------------


def test_quaternion_conventions_and_round_trip():
    q = rotation.from_axis_angle(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), torch.tensor(math.pi / 2))
    m = P.quaternion_to_matrix(q)
    assert torch.allclose(
        m @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0, 1.0, 0], dtype=torch.float64)
    )
    proc = P.RotationBrownian()
    a, b = (
        proc.sample_equilibrium((500,), gen(12), dtype=torch.float64),
        proc.sample_equilibrium((500,), gen(13), dtype=torch.float64),
    )
    assert (a[:, 0] >= 0).all()
    ma, mb = P.quaternion_to_matrix(a), P.quaternion_to_matrix(b)
    assert torch.allclose(P.quaternion_to_matrix(rotation.multiply(a, b)), ma @ mb, atol=1e-12)
    assert torch.allclose(P.matrix_to_quaternion(ma), a, atol=1e-10)
    # Near-π rotations keep the round trip (Shepperd's pivot).
    c = rotation.canonical(
        rotation.from_axis_angle(torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64), torch.tensor(math.pi - 1e-7))
    )
    assert torch.allclose(
        P.quaternion_to_matrix(P.matrix_to_quaternion(P.quaternion_to_matrix(c))), P.quaternion_to_matrix(c), atol=1e-9
    )


def test_igso3_density_integrates_to_one_and_tends_to_haar():
    w = torch.linspace(0, math.pi, 20_001, dtype=torch.float64)
    for var in (1e-3, 0.1, 2.0):
        assert abs(torch.trapezoid(rotation.igso3_angle_density(w, var), w).item() - 1) < 1e-4
    for var in (0.3, 0.9, 1.5):  # the l-series and its Poisson-summed form agree
        assert torch.allclose(rotation._series_density(w, var), rotation._poisson_density(w, var), atol=1e-10)
    haar = (1 - torch.cos(w)) / math.pi
    assert (rotation.igso3_angle_density(w, 30.0) - haar).abs().max() < 1e-6


def _angles(q0, qt):
    return rotation.geodesic_distance(q0, qt).numpy()


@pytest.mark.parametrize("var", [0.02, 0.5, 3.0])
def test_rotation_forward_angle_follows_igso3(var):
    proc = P.RotationBrownian(rate=2.0)
    q0 = proc.sample_equilibrium((N,), gen(14), dtype=torch.float64)
    qt = proc.sample_forward(q0, var / 2.0, gen(15))
    assert ((qt.norm(dim=-1) - 1).abs() < 1e-5).all() and (qt[:, 0] >= 0).all()
    m = P.quaternion_to_matrix(qt)
    assert torch.allclose(m.transpose(-1, -2) @ m, torch.eye(3, dtype=torch.float64).expand(N, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(m), torch.ones(N, dtype=torch.float64), atol=1e-5)
    angles = _angles(q0, qt)
    edges = np.linspace(0, min(math.pi, 8 * math.sqrt(var)), 41)
    fine = torch.linspace(0, float(edges[-1]), 40_001, dtype=torch.float64)
    step = float(fine[1] - fine[0])
    dens = rotation.igso3_angle_density(fine, var).numpy() * step
    probs = np.histogram(fine.numpy(), edges, weights=dens)[0]
    assert chi2_p(angles, edges, probs) > 1e-3
    # Negative control: the density of 1.3 times the variance is rejected.
    wrong = np.histogram(fine.numpy(), edges, weights=rotation.igso3_angle_density(fine, 1.3 * var).numpy() * step)[0]
    assert chi2_p(angles, edges, wrong) < 1e-6
    # The axis is uniform: the rotation vector's mean is zero.
    axes = rotation.log_map(rotation.multiply(rotation.conjugate(q0), qt))
    se = axes.std(0) / math.sqrt(N)
    assert (axes.mean(0).abs() < K * se).all()


def test_rotation_small_variance_limit():
    proc = P.RotationBrownian(rate=1.0)
    q0 = proc.sample_equilibrium((N,), gen(16), dtype=torch.float64)
    angles = _angles(q0, proc.sample_forward(q0, 4e-6, gen(17))) / 2e-3  # ω/ε ~ chi with 3 dof
    assert stats.kstest(angles, stats.chi(3).cdf).pvalue > 1e-3


def test_rotation_bridge_pinned_and_on_manifold():
    proc = P.RotationBrownian(rate=1.5)
    q0 = proc.sample_equilibrium((200,), gen(18), dtype=torch.float64)
    qt = proc.sample_forward(q0, 0.7, gen(19))
    assert torch.allclose(proc.sample_bridge(q0, qt, 0.0, 0.7, gen(20)), rotation.canonical(q0), atol=1e-12)
    end = proc.sample_bridge(q0, qt, 0.7 * (1 - 1e-12), 0.7, gen(21))
    assert rotation.geodesic_distance(end, qt).max() < 1e-4
    mid = proc.sample_bridge(q0, qt, torch.full((200,), 0.35), 0.7, gen(22))
    assert ((mid.norm(dim=-1) - 1).abs() < 1e-5).all() and (mid[:, 0] >= 0).all()
    # The bridge midpoint lies between the ends on average: closer to both than they are to each other.
    d0, dt, d = (rotation.geodesic_distance(a, b).mean() for a, b in ((mid, q0), (mid, qt), (q0, qt)))
    assert d0 < d and dt < d


# -- discrete -------------------------------------------------------------------------------------------

PROBS = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)


def _procs():
    return [P.UniformDiscrete(1.3, 4), P.IndependentDiscrete(0.8, PROBS), P.MaskedDiscrete(1.1, 4)]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_discrete_forward_frequencies_match_transition_matrix(index):
    proc = _procs()[index]
    t = 0.7
    matrix = proc.transition_matrix(t).numpy()
    assert np.allclose(matrix.sum(1), 1)
    for start in range(4):
        draws = proc.sample_forward(torch.full((N // 4,), start), t, gen(30 + start)).numpy()
        assert discrete_p(draws, matrix[start]) > 1e-3
        # Negative control: the matrix at 1.5·t is rejected.
        assert discrete_p(draws, proc.transition_matrix(1.5 * t).numpy()[start]) < 1e-6


def test_discrete_matrix_closed_forms():
    t, r = 0.4, 0.8
    e = math.exp(-r * t)
    assert np.allclose(
        P.IndependentDiscrete(r, PROBS).transition_matrix(t), e * np.eye(4) + (1 - e) * PROBS.numpy()[None]
    )
    masked = P.MaskedDiscrete(r, 3).transition_matrix(t).numpy()
    assert np.allclose(masked[:3, :3], e * np.eye(3)) and np.allclose(masked[:3, 3], 1 - e) and masked[3, 3] == 1
    # Chapman–Kolmogorov: P(s)P(t) = P(s + t).
    for proc in _procs():
        assert torch.allclose(proc.transition_matrix(0.3) @ proc.transition_matrix(0.5), proc.transition_matrix(0.8))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_discrete_bridge_matches_exact_posterior(index):
    proc = _procs()[index]
    s, t = 0.4, 1.0
    ps, pts = proc.transition_matrix(s).numpy(), proc.transition_matrix(t - s).numpy()
    n = N // 2
    cases = [(0, 3), (2, 2)] if index < 2 else [(1, 4), (2, 2)]
    for a, b in cases:
        exact = ps[a] * pts[:, b]
        draws = proc.sample_bridge(torch.full((n,), a), torch.full((n,), b), s, t, gen(40 + a)).numpy()
        assert discrete_p(draws, exact) > 1e-3
        if index < 2:  # negative control: ignoring the end point x_t (forward law only) is rejected
            assert discrete_p(draws, ps[a]) < 1e-6


def test_discrete_reverse_step_is_the_mixture_over_predicted_x0():
    proc = P.IndependentDiscrete(1.0, PROBS)
    s, t = 0.3, 0.9
    logits = torch.log(torch.tensor([0.5, 0.1, 0.1, 0.3]))
    n = N // 2
    xt = torch.full((n,), 1)
    draws = proc.reverse_step(logits.expand(n, 4), xt, s, t, gen(50)).numpy()
    ps, pts, pt = (proc.transition_matrix(u).numpy() for u in (s, t - s, t))
    w = torch.softmax(logits, 0).numpy()
    mixture = sum(w[i] * ps[i] * pts[:, 1] / pt[i, 1] for i in range(4))
    assert discrete_p(draws, mixture) > 1e-3
    product = w * pts[:, 1]  # negative control: prediction × likelihood, not the mixture
    assert discrete_p(draws, product) < 1e-6


# -- bad input ------------------------------------------------------------------------------------------


def test_bad_input_errors():
    ou, circ, rot = P.OrnsteinUhlenbeck(), P.WrappedBrownian(), P.RotationBrownian()
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="same shape"):
        ou.sample_bridge(x, torch.zeros(3, 3), 0.1, 0.2)
    with pytest.raises(ValueError, match="s < t"):
        ou.sample_bridge(x, x, 0.2, 0.2)
    with pytest.raises(ValueError, match="s < t"):
        P.UniformDiscrete(1.0, 3).sample_bridge(
            torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), 0.5, 0.1
        )
    with pytest.raises(ValueError, match=r"\[-pi, pi\)"):
        circ.sample_forward(torch.full((3,), 4.0), 0.1)
    with pytest.raises(ValueError, match="unit quaternions"):
        rot.sample_forward(torch.ones(3, 4), 0.1)
    with pytest.raises(ValueError, match=r"\(batch, \*shape, 4\)"):
        rot.sample_forward(torch.ones(3, 3), 0.1)
    with pytest.raises(ValueError, match="non-negative"):
        P.IndependentDiscrete(1.0, [0.5, 0.7, -0.2])
    with pytest.raises(ValueError, match="sum to one"):
        P.IndependentDiscrete(1.0, [0.5, 0.4])
    with pytest.raises(ValueError, match=r"categories in \[0, 3\)"):
        P.UniformDiscrete(1.0, 3).sample_forward(torch.tensor([0, 3]), 0.1)
    with pytest.raises(TypeError, match="torch.long"):
        P.UniformDiscrete(1.0, 3).sample_forward(torch.tensor([0.0, 1.0]), 0.1)
    with pytest.raises(ValueError, match="logits must have shape"):
        P.UniformDiscrete(1.0, 3).reverse_step(torch.zeros(2, 4), torch.tensor([0, 1]), 0.1, 0.2)
    with pytest.raises(ValueError, match="shape \\(3,\\)"):
        ou.sample_forward(x, torch.ones(2))
    with pytest.raises(ValueError, match="rate"):
        P.WrappedBrownian(rate=-1.0)
    with pytest.raises(ValueError, match="rotations"):
        P.matrix_to_quaternion(2 * torch.eye(3))
    with pytest.raises(ValueError, match="no stationary law"):
        P.BrownianMotion().sample_equilibrium((2, 3))
