"""Exact log-likelihood through the PF ODE, bits/dim and encode/decode, checked against closed forms.

Oracles (sdegen.analytic): for Gaussian data the PF ODE is an affine map per coordinate, so the model
density "prior at T pushed through the PF ODE" is `Gaussian.model_log_prob`; for a mixture the true
marginal log p_t is exact, and log p_{t_min}(x) = log p_T(z) + ∫div v, so the likelihood (which uses the
prior instead of p_T) differs from log p_{t_min}(x) by exactly prior_logp(z) − log p_T(z).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torchdiffeq

import sdegen
from sdegen.analytic import Gaussian, gaussian_mixture_2d
from sdegen.dequantization import bits_per_dim, default_t_min, to_levels
from sdegen.likelihood import decode, encode, log_likelihood

T_MIN = 1e-5
# Stated tolerance (nats) of the low-dimensional exact-divergence checks at rtol = atol = 1e-6 in float64.
# Measured errors are ≤ 2.2e-5 (VE, the hardest); 1e-4 leaves a 5× margin.
TOL = 1e-4
SDES = [sdegen.VPSDE(), sdegen.SubVPSDE(), sdegen.VESDE(), sdegen.PowerVESDE()]


def _gaussian3() -> Gaussian:
    return Gaussian(torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.5, 1.5, 0.1]))


def _x(g, n: int, seed: int = 0) -> torch.Tensor:
    return g.sample(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _amplification(g, sde) -> float:
    """max_i v_T,i / v_tmin,i: how much the PF map t_min → T stretches a coordinate (10 for VP, 500 for VE).

    An error made near t_min grows by this factor on its way to T, so latent errors are stated relative to it.
    """
    _, v0 = g._v(sde, T_MIN)
    _, v1 = g._v(sde, sde.T)
    return float((v1 / v0).max())


def _gaussian_error(sde, score, g, x, **kw) -> float:
    result = log_likelihood(sde, score, x, divergence="exact", rtol=1e-6, atol=1e-6, **kw)
    return float((result.logp - g.model_log_prob(sde, x, T_MIN)).abs().max())


def _check_gaussian(sde, score, g, x) -> None:
    err = _gaussian_error(sde, score, g, x)
    assert err < TOL, f"{sde}: |logp − model_log_prob| = {err:.3g} nats ≥ {TOL}"


# (a) Gaussian data, exact divergence and score: the model's exact log-density -----------------------------
@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_exact_divergence_matches_gaussian_model_density(sde):
    g = _gaussian3()
    x = _x(g, 8)
    result = log_likelihood(sde, g.score_fn(sde), x, divergence="exact", rtol=1e-6, atol=1e-6)
    assert float((result.logp - g.model_log_prob(sde, x, T_MIN)).abs().max()) < TOL
    torch.testing.assert_close(result.logp, result.prior_logp + result.delta_logp, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.prior_logp, sde.prior_logp(result.z), rtol=0, atol=0)
    # z is the exact PF-ODE latent, up to the solver error amplified by the flow (see `_amplification`).
    z_exact = g.flow_map(sde, x, T_MIN, sde.T)
    assert float((result.z - z_exact).abs().max()) < 5e-5 * _amplification(g, sde)
    # Δ log p is the closed form Σ_i log(v_T,i / v_tmin,i) for every sample.
    _, v0 = g._v(sde, T_MIN)
    _, v1 = g._v(sde, sde.T)
    torch.testing.assert_close(result.delta_logp, torch.log(v1 / v0).sum().expand(8), rtol=0, atol=TOL)
    assert result.logp_stderr is None and result.logp_probes.shape == (1, 8)
    assert result.nfe % 6 == 2  # dopri5: 6 evaluations per attempted step + 2 at the start


@pytest.mark.parametrize("sde", [sdegen.VPSDE(), sdegen.VESDE()], ids=lambda s: s.name)
def test_float32_at_default_tolerances(sde):
    """The everyday setting (float32 state, rtol = atol = 1e-5): measured errors 2.5e-5 (VP), 1.2e-4 (VE) nats."""
    g = _gaussian3()
    x = _x(g, 8).float()
    result = log_likelihood(sde, g.score_fn(sde), x, divergence="exact")
    assert result.logp.dtype == torch.float32 and result.z.dtype == torch.float32
    assert float((result.logp.double() - g.model_log_prob(sde, x.double(), T_MIN)).abs().max()) < 1e-3


def test_nfe_counts_real_score_calls():
    g, sde = _gaussian3(), sdegen.VPSDE()
    calls = []
    base = g.score_fn(sde)

    def score(x, t):
        calls.append(1)
        return base(x, t)

    result = log_likelihood(sde, score, _x(g, 4), probes=3, seed=0)
    assert result.nfe == len(calls) > 0  # K probes share each score evaluation


# (b) 784 dimensions, Hutchinson -------------------------------------------------------------------------
def _gaussian784():
    gen = torch.Generator().manual_seed(1)
    dim = 784
    mean = 2 * torch.rand(dim, generator=gen, dtype=torch.float64) - 1
    std = 0.2 + 1.3 * torch.rand(dim, generator=gen, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    return Gaussian(mean, std), rotation


def test_hutchinson_rademacher_exact_on_diagonal_jacobian_784():
    g, _ = _gaussian784()
    sde = sdegen.VPSDE()
    x = _x(g, 8, seed=2)
    result = log_likelihood(sde, g.score_fn(sde), x, probes=4, seed=0)  # defaults: Rademacher, rtol=atol=1e-5
    # Diagonal Jacobian: εᵀJε = tr J for ε ∈ {±1}^D, so the probes agree and only the solver error is left.
    # The solver carries logp per dimension, so its error is bounded per dimension by the tolerance:
    # measured 3.7e-3 nats on |logp| ≈ 890, i.e. 4.7e-6 nats per dimension < atol = 1e-5.
    assert float(result.logp_stderr.max()) < 1e-9
    dim = x.shape[1]
    assert float((result.logp - g.model_log_prob(sde, x, T_MIN)).abs().max()) / dim < 1e-5


def _hutchinson_784(probe: str, batch: int, k: int = 16):
    """Rotated Gaussian: non-diagonal Jacobian, so both probe kinds have variance; it is known exactly.

    With x' = R x the score is R s(Rᵀx'), the density is unchanged (|det R| = 1) and the integrated Jacobian
    is A = R diag(a) Rᵀ, a_i = log(v_T,i / v_tmin,i). One probe's estimate εᵀAε has variance
    2·Σ_{i≠j} A_ij² (Rademacher) or 2·Σ_ij A_ij² (Gaussian). Returns (result, exact logp, exact variance).
    """
    g, rot = _gaussian784()
    sde = sdegen.VPSDE()
    base = g.score_fn(sde)

    def score(xr, t):
        return base(xr @ rot, t) @ rot.T

    xr = _x(g, batch, seed=3) @ rot.T
    exact = g.model_log_prob(sde, xr @ rot, T_MIN)
    result = log_likelihood(sde, score, xr, probes=k, probe=probe, seed=0)
    _, v0 = g._v(sde, T_MIN)
    _, v1 = g._v(sde, sde.T)
    big_a = rot @ torch.diag(torch.log(v1 / v0)) @ rot.T
    var_one = 2 * (big_a**2).sum()
    if probe == "rademacher":
        var_one = var_one - 2 * (torch.diagonal(big_a) ** 2).sum()
    return result, exact, var_one


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_stderr_is_honest_784(probe):
    batch, k = 16, 16
    result, exact, var_one = _hutchinson_784(probe, batch, k)
    # The precise check: the pooled sample variance over probes (240 degrees of freedom, relative std ≈ 0.09)
    # matches the exact variance (measured ratios 1.15 Rademacher, 1.11 Gaussian), and stderr² = variance/K,
    # so a stderr off by any constant factor (a missing √K, say) fails here.
    ratio = float(result.logp_probes.var(0, correction=1).mean() / var_one)
    assert 0.7 < ratio < 1.35, ratio
    torch.testing.assert_close(result.logp_stderr**2 * k, result.logp_probes.var(0, correction=1))
    # A looser end-to-end check: error/stderr is t-distributed with 15 dof (E z² = 1.15; measured mean z² 0.50
    # and 0.89, max |z| 1.3 and 1.7); the solver error (~1e-3 nats) is negligible next to the stderr (~5 nats).
    z = (result.logp - exact) / result.logp_stderr
    assert 0.35 < float((z**2).mean()) < 2.5 and float(z.abs().max()) < 5


@pytest.mark.slow
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_stderr_is_honest_784_large_batch(probe):
    """As above with 64 samples: 960 degrees of freedom (relative std ≈ 0.046), so tighter bounds."""
    result, exact, var_one = _hutchinson_784(probe, 64)
    ratio = float(result.logp_probes.var(0, correction=1).mean() / var_one)
    assert 0.85 < ratio < 1.18, ratio
    z = (result.logp - exact) / result.logp_stderr
    assert 0.6 < float((z**2).mean()) < 1.9 and float(z.abs().max()) < 5.5


# (c) Gaussian mixture: the true density up to the exact prior mismatch ---------------------------------------
@pytest.mark.parametrize("sde", [sdegen.VPSDE(0.1, 2.0), sdegen.PowerVESDE()], ids=["vp-short", "powerve"])
def test_mixture_equals_true_density_up_to_prior_mismatch(sde):
    mix = gaussian_mixture_2d()
    x = mix.sample(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = log_likelihood(sde, mix.score_fn(sde), x, divergence="exact", rtol=1e-6, atol=1e-6)
    mismatch = sde.prior_logp(result.z) - mix.marginal_log_prob(sde, result.z, sde.T)
    error = result.logp - mix.marginal_log_prob(sde, x, T_MIN) - mismatch
    assert float(error.abs().max()) < 1e-3
    if sde.name == "vp":
        # β_max = 2 leaves p_T far from N(0, I): the mismatch is large, so the identity is not vacuous.
        assert float(mismatch.abs().max()) > 0.5


# (d) encode → decode ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_encode_decode_round_trip(sde):
    g = _gaussian3()
    x = _x(g, 8)
    score = g.score_fn(sde)
    z = encode(sde, score, x, rtol=1e-6, atol=1e-6)
    # Measured: 3.5e-6 (VP), 1.4e-4 (sub-VP), 1.6e-3 (VE), 1.1e-3 (PowerVE) against amplifications 10–500.
    assert float((z - g.flow_map(sde, x, T_MIN, sde.T)).abs().max()) < 5e-5 * _amplification(g, sde)
    back = decode(sde, score, z, rtol=1e-6, atol=1e-6)
    # Decoding contracts by the same factor, so the z error above comes back as ≤ 5e-5 (measured ≤ 1.5e-5).
    assert float((back - x).abs().max()) < 5e-5
    assert float((back - g.flow_map(sde, z, sde.T, T_MIN)).abs().max()) < 5e-5


# (e) negative controls: the checks above catch a wrong PF ODE -----------------------------------------------------
@pytest.mark.parametrize("factor", [1.1, 2.0], ids=["score-10%-off", "missing-half"])
def test_wrong_score_fails_the_likelihood_check(factor):
    """A 10% wrong score, or 2× the score (= the PF ODE without its ½), misses by far more than TOL."""
    g, sde = _gaussian3(), sdegen.VPSDE()
    x = _x(g, 8)
    base = g.score_fn(sde)

    def wrong(xx, t):
        return factor * base(xx, t)

    assert _gaussian_error(sde, wrong, g, x) > 100 * TOL
    with pytest.raises(AssertionError):
        _check_gaussian(sde, wrong, g, x)
    _check_gaussian(sde, base, g, x)  # the same check passes with the right score


# (f) bits/dim ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data_range, offset", [((0.0, 1.0), 8.0), ((-1.0, 1.0), 7.0)])
def test_bits_per_dim_offset_matches_hand_calculation(data_range, offset):
    lo, hi = data_range
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 1, 2, 2), generator=gen, dtype=torch.uint8)
    noise = torch.rand((2, 5, 1, 2, 2), generator=gen, dtype=torch.float64)
    g = Gaussian(torch.full((1, 2, 2), (lo + hi) / 2, dtype=torch.float64), torch.full((1, 2, 2), (hi - lo) / 3))
    sde = sdegen.VPSDE()
    kw = {"divergence": "exact", "rtol": 1e-6, "atol": 1e-6}
    result = bits_per_dim(
        sde,
        g.score_fn(sde),
        images,
        data_range=data_range,
        dequant_draws=2,
        dequant_noise=noise,
        dtype=torch.float64,
        **kw,
    )
    assert result.offset == offset
    # By hand: y = lo + (hi − lo)(k + u)/256, bpd = −log q(y)/(D ln 2) + 8 − log2(hi − lo), D = 4.
    y = lo + (hi - lo) * (images.double()[None] + noise) / 256
    t_min = default_t_min(sde, data_range)
    assert result.t_min == t_min
    hand = torch.stack([-g.model_log_prob(sde, y[m], t_min) / (4 * math.log(2)) + offset for m in range(2)])
    torch.testing.assert_close(result.bpd_draws, hand, rtol=0, atol=TOL)
    torch.testing.assert_close(result.bpd, hand.mean(0), rtol=0, atol=TOL)
    assert math.isclose(result.mean, float(hand.mean()), abs_tol=TOL) and result.bpd_probe_stderr is None
    # The same images given as floats on the data range's 8-bit grid give the same answer.
    as_float = lo + (hi - lo) * images.double() / 255
    again = bits_per_dim(
        sde, g.score_fn(sde), as_float, data_range=data_range, dequant_draws=2, dequant_noise=noise, **kw
    )
    torch.testing.assert_close(again.bpd, result.bpd, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sde", [sdegen.VPSDE(), sdegen.SubVPSDE(), sdegen.VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_default_t_min_puts_the_noise_at_a_quarter_bin(sde, data_range):
    t = torch.tensor(default_t_min(sde, data_range), dtype=torch.float64)
    ratio = sde.marginal_std(t) / sde.mean_scale(t)
    assert 0 < float(t) < 0.1
    assert math.isclose(float(ratio), (data_range[1] - data_range[0]) / 1024, rel_tol=1e-9)


@pytest.mark.parametrize("bins", [0.125, 1.0])
def test_default_t_min_at_other_bin_fractions(bins):
    sde = sdegen.SubVPSDE()
    t = torch.tensor(default_t_min(sde, (-1.0, 1.0), bins=bins), dtype=torch.float64)
    assert math.isclose(float(sde.marginal_std(t) / sde.mean_scale(t)), bins * 2 / 256, rel_tol=1e-9)


@pytest.mark.parametrize("bins", [0.0, -1.0, float("nan")])
def test_default_t_min_rejects_bad_bins(bins):
    with pytest.raises(ValueError, match="bins"):
        default_t_min(sdegen.VPSDE(), bins=bins)


def test_bits_per_dim_honours_an_explicit_t_min():
    g = Gaussian(torch.full((3,), 0.5, dtype=torch.float64), torch.full((3,), 0.2, dtype=torch.float64))
    sde = sdegen.SubVPSDE()
    images = torch.randint(0, 256, (4, 3), generator=torch.Generator().manual_seed(1))
    noise = torch.rand((1, 4, 3), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kw = {"divergence": "exact", "rtol": 1e-7, "atol": 1e-7, "dequant_noise": noise, "dtype": torch.float64}
    for t_min in (1e-5, 1e-2):
        result = bits_per_dim(sde, g.score_fn(sde), images, t_min=t_min, **kw)
        y = (images.double() + noise[0]) / 256
        hand = -g.model_log_prob(sde, y, t_min) / (3 * math.log(2)) + 8
        assert result.t_min == t_min
        torch.testing.assert_close(result.bpd, hand, rtol=0, atol=1e-4)


def test_bits_per_dim_probe_stderr_and_nfe():
    g = Gaussian(torch.full((6,), 0.5, dtype=torch.float64), torch.full((6,), 0.2, dtype=torch.float64))
    sde = sdegen.VPSDE()
    images = torch.randint(0, 256, (4, 6), generator=torch.Generator().manual_seed(1))
    result = bits_per_dim(
        sde, g.score_fn(sde), images, dequant_draws=2, seed=0, probes=4, probe="gaussian", dtype=torch.float64
    )
    # Two draws, each stderr σ_m/(D ln 2) on its bpd: the mean's is √(σ_1² + σ_2²)/2/(D ln 2).
    assert result.bpd_probe_stderr.shape == (4,) and bool((result.bpd_probe_stderr > 0).all())
    assert result.nfe > 0 and result.nfe % 6 == 4  # two dopri5 solves, each 6·steps + 2
    assert result.bpd_draws.shape == (2, 4) and math.isfinite(result.stderr)


# (g) bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"divergence": "trace"}, "unknown divergence"),
        ({"probe": "sphere"}, "unknown probe"),
        ({"method": "euler"}, "unknown method"),
        ({"rtol": 0.0}, "rtol"),
        ({"atol": -1e-5}, "atol"),
        ({"t_min": 0.0}, "t_min"),
        ({"t_min": 1.0}, "t_min"),
        ({"probes": 0}, "probes"),
        ({"divergence": "exact", "probes": 2}, "exact divergence takes no probes"),
    ],
)
def test_bad_options_raise(kwargs, match):
    g, sde = _gaussian3(), sdegen.VPSDE()
    with pytest.raises(ValueError, match=match):
        log_likelihood(sde, g.score_fn(sde), _x(g, 2), **kwargs)


def test_bad_x_and_score_raise():
    g, sde = _gaussian3(), sdegen.VPSDE()
    score, x = g.score_fn(sde), _x(g, 2)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="non-finite"):
            log_likelihood(sde, score, x.clone().index_fill_(1, torch.tensor([1]), bad))
    with pytest.raises(ValueError, match="shape"):
        log_likelihood(sde, score, x[0])
    with pytest.raises(ValueError, match="data shape"):  # the score refuses (batch, 2) against 3-dim data
        log_likelihood(sde, score, x[:, :2])
    with pytest.raises(TypeError, match="floating"):
        encode(sde, score, x.long())
    with pytest.raises(ValueError, match="not differentiable"):
        log_likelihood(sde, lambda xx, t: score(xx, t).detach(), x)
    with pytest.raises(TypeError, match="seed"):
        log_likelihood(sde, score, x, seed=1.5)
    with pytest.raises(TypeError, match="sde"):
        log_likelihood("vp", score, x)
    with pytest.raises(ValueError, match="rtol"):
        decode(sde, score, x, rtol=-1.0)


def test_bad_images_raise():
    g = Gaussian(torch.zeros(4), torch.ones(4))
    sde = sdegen.VPSDE()
    score = g.score_fn(sde)
    with pytest.raises(ValueError, match="levels 0..255"):
        bits_per_dim(sde, score, torch.tensor([[0, 12, 256, 3]]))
    with pytest.raises(ValueError, match="outside the declared data_range"):
        bits_per_dim(sde, score, torch.tensor([[0.0, 0.5, 1.2, 0.1]]))
    with pytest.raises(ValueError, match="outside the declared data_range"):
        to_levels(torch.tensor([[-0.5, 0.0, 0.5, 1.0]]), (0.0, 1.0))  # [−1, 1] data declared as [0, 1]
    with pytest.raises(ValueError, match="8-bit grid"):
        bits_per_dim(sde, score, torch.tensor([[0.0, 0.5001, 1.0, 0.1]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        bits_per_dim(sde, score, torch.tensor([[0.0, float("nan"), 1.0, 0.1]]))
    with pytest.raises(ValueError, match="shape"):
        bits_per_dim(sde, score, torch.tensor([1, 2, 3], dtype=torch.uint8))
    with pytest.raises(ValueError, match="data_range"):
        bits_per_dim(sde, score, torch.zeros(1, 4, dtype=torch.uint8), data_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="dequant_draws"):
        bits_per_dim(sde, score, torch.zeros(1, 4, dtype=torch.uint8), dequant_draws=0)
    with pytest.raises(ValueError, match="dequant_noise"):
        bits_per_dim(sde, score, torch.zeros(1, 4, dtype=torch.uint8), dequant_noise=torch.rand(1, 2, 4))
    with pytest.raises(TypeError, match="unexpected keyword"):  # unknown options are not swallowed
        bits_per_dim(sde, score, torch.zeros(1, 4, dtype=torch.uint8), tolerance=1e-3)


# (h) the score is never evaluated outside [t_min, T] ----------------------------------------------------------------
def test_score_never_evaluated_outside_time_interval():
    g, sde = _gaussian3(), sdegen.VESDE()  # VE: the fastest-moving flow, the largest steps at the end
    base = g.score_fn(sde)
    seen: list[tuple[float, float]] = []

    def score(x, t):
        seen.append((float(t.min()), float(t.max())))
        return base(x, t)

    t_min = 1e-3
    x = _x(g, 4)
    log_likelihood(sde, score, x, t_min=t_min, probes=2, seed=0)
    z = encode(sde, score, x, t_min=t_min)
    decode(sde, score, z, t_min=t_min)
    assert len(seen) > 50
    assert min(lo for lo, _ in seen) >= t_min and max(hi for _, hi in seen) <= sde.T


def test_plain_torchdiffeq_does_evaluate_beyond_the_end():
    """Negative control for the test above: without step_t and clamping dopri5 probes past both ends."""
    seen: list[float] = []

    def func(t, x):
        seen.append(float(t))
        return -x * (1 + t)

    x0 = torch.ones(2, 3, dtype=torch.float64)
    torchdiffeq.odeint(func, x0, torch.tensor([T_MIN, 1.0], dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert max(seen) > 1.0
    seen.clear()
    torchdiffeq.odeint(func, x0, torch.tensor([1.0, 1e-3], dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert min(seen) < 1e-3


# (i) seeds ----------------------------------------------------------------------------------------------------------
def test_seed_reproducibility():
    g, sde = _gaussian3(), sdegen.VPSDE()
    score, x = g.score_fn(sde), _x(g, 4)
    kw = {"probes": 3, "probe": "gaussian", "rtol": 1e-4, "atol": 1e-4}
    a = log_likelihood(sde, score, x, seed=7, **kw)
    b = log_likelihood(sde, score, x, seed=7, **kw)
    c = log_likelihood(sde, score, x, seed=torch.Generator().manual_seed(7), **kw)
    d = log_likelihood(sde, score, x, seed=8, **kw)
    assert torch.equal(a.logp_probes, b.logp_probes) and torch.equal(a.logp_probes, c.logp_probes)
    assert not torch.equal(a.logp_probes, d.logp_probes)
    images = torch.randint(0, 256, (3, 3), generator=torch.Generator().manual_seed(0))
    bpd = [bits_per_dim(sde, score, images, seed=s, dtype=torch.float64, rtol=1e-4, atol=1e-4).bpd for s in (1, 1, 2)]
    assert torch.equal(bpd[0], bpd[1]) and not torch.equal(bpd[0], bpd[2])


def test_public_names():
    for name in ("log_likelihood", "bits_per_dim", "encode", "decode", "LikelihoodResult", "BitsPerDimResult"):
        assert name in sdegen.__all__ and hasattr(sdegen, name)


# The study script's core, run on the analytic Gaussian ----------------------------------------------------------------
def _study():
    path = Path(__file__).resolve().parents[1] / "studies" / "likelihood_mnist.py"
    spec = importlib.util.spec_from_file_location("likelihood_mnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_study_core_on_gaussian(tmp_path):
    study = _study()
    shape = (1, 3, 3)
    g = Gaussian(torch.full(shape, 0.5, dtype=torch.float64), torch.full(shape, 0.25, dtype=torch.float64))
    sde = sdegen.VPSDE()
    images = torch.randint(0, 256, (5, *shape), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    opts = {"divergence": "hutchinson", "probes": 3, "probe": "gaussian", "rtol": 1e-4, "atol": 1e-4, "t_min": T_MIN}
    ds = study.evaluate(
        sde,
        g.score_fn(sde),
        images,
        data_range=(0.0, 1.0),
        batch_size=2,
        dequant_draws=1,
        seed=0,
        dtype=torch.float64,
        **opts,
    )
    assert ds.sizes["image"] == 5 and ds.sizes["batch"] == 3
    # Same generator stream as one bits_per_dim call per batch of the same size.
    gen = torch.Generator().manual_seed(0)
    ref = torch.cat(
        [
            bits_per_dim(sde, g.score_fn(sde), images[i : i + 2], seed=gen, dtype=torch.float64, **opts).bpd
            for i in range(0, 5, 2)
        ]
    )
    torch.testing.assert_close(torch.from_numpy(ds["bpd"].values), ref)
    assert int(ds["nfe"].sum()) == ds.attrs["nfe_total"] > 0
    table = study.write_results(ds, tmp_path, "gaussian")
    assert (tmp_path / "likelihood_mnist.nc").exists() and "bits/dim" in table
