"""Parametrisations: exact conversions to the score for every SDE, preconditioning, guidance."""

import itertools
import math

import pytest
import torch
from _oracle import oracle_model

from sdegen._checks import batch_view
from sdegen.analytic import Gaussian, GaussianMixture
from sdegen.score import KINDS, Parametrisation, ScoreModel, clip_denoised, convert, input_fourier_features
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
    """Records its inputs and predicts zeros for the first `out_channels` input channels (default: all)."""

    def __init__(self, out_channels=None):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x, t, y=None):
        self.x, self.t = x, t
        return torch.zeros_like(x[:, : self.out_channels])


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


def test_input_fourier_features_give_the_position_inside_an_8_bit_bin():
    # Level k dequantised to (k + u)/256: at f = 256 the phase is 2π·u, at f = 128 it is π·(k + u).
    k = torch.tensor([0.0, 1.0, 200.0, 255.0], dtype=torch.float64)
    u = torch.tensor([0.25, 0.5, 0.75, 0.1], dtype=torch.float64)
    x = ((k + u) / 256).reshape(1, 4, 1)  # (batch 1, 4 channels, 1)
    alpha = torch.full((1, 1, 1), 0.5, dtype=torch.float64)
    f = input_fourier_features(alpha * x, alpha, torch.zeros_like(alpha), (256.0, 128.0))  # no noise: no damping
    assert f.shape == (1, 16, 1)
    want_phase = torch.cat([2 * math.pi * u, math.pi * (k + u)])
    torch.testing.assert_close(f[0, :8, 0], torch.sin(want_phase), atol=1e-12, rtol=0)
    torch.testing.assert_close(f[0, 8:, 0], torch.cos(want_phase), atol=1e-12, rtol=0)


def test_damped_input_fourier_features_are_their_mean_given_the_data():
    # damp·sin(2πf·x0) = E[sin(2πf·x/alpha) | x0]: Monte Carlo over the noise, tolerance from the sample size.
    g = torch.Generator().manual_seed(5)
    n, f, ratio = 200_000, 64.0, 0.004  # sigma/alpha = a quarter of a period: damp = exp(-π²/8) ≈ 0.29
    x0 = torch.tensor([0.1, 0.37], dtype=torch.float64)
    alpha, sigma = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.8 * ratio, dtype=torch.float64)
    clean = input_fourier_features(alpha * x0.reshape(1, 2), alpha.reshape(1, 1), sigma.reshape(1, 1), (f,))
    xt = alpha * x0 + sigma * torch.randn(n, 2, generator=g, dtype=torch.float64)
    raw = input_fourier_features(xt, alpha.expand(n, 1), torch.zeros(n, 1, dtype=torch.float64), (f,))
    damp = math.exp(-2 * math.pi**2 * (f * ratio) ** 2)
    phase = 2 * math.pi * f * x0
    torch.testing.assert_close(clean[0], damp * torch.cat([torch.sin(phase), torch.cos(phase)]))
    torch.testing.assert_close(raw.mean(0), clean[0], atol=5 / math.sqrt(n), rtol=0)
    # Far above a period of noise the features vanish (and with them their roughness in x).
    far = input_fourier_features(xt[:4], alpha.expand(4, 1), (alpha * 0.05).expand(4, 1), (f,))
    assert far.abs().max() < 1e-30


def test_input_frequencies_add_feature_channels_to_the_net_input():
    net = _Recorder(out_channels=2)
    sd, freqs = 0.3, (64.0, 256.0)
    model = ScoreModel(net, SubVPSDE(), Parametrisation("v", precondition=True, sigma_data=sd, input_frequencies=freqs))
    x = torch.rand(3, 2, 5, 5, dtype=torch.float64)
    out = model(x, 0.01)
    assert net.x.shape == (3, 2 * (1 + 2 * len(freqs)), 5, 5)
    alpha, sigma = SubVPSDE().mean_scale(0.01, x)[0], SubVPSDE().marginal_std(0.01, x)[0]
    c = torch.sqrt(alpha**2 * sd**2 + sigma**2)
    torch.testing.assert_close(net.x[:, :2], x / c)
    f = torch.tensor(freqs, dtype=torch.float64).repeat_interleave(2).reshape(1, 4, 1, 1)
    damp = torch.exp(-2 * math.pi**2 * (f * sigma / alpha) ** 2)
    phase = 2 * math.pi * f * torch.cat([x, x], dim=1) / alpha
    torch.testing.assert_close(net.x[:, 2:], torch.cat([damp * torch.sin(phase), damp * torch.cos(phase)], dim=1))
    assert out.shape == x.shape


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
    with pytest.raises(ValueError, match="input_frequencies"):
        Parametrisation(input_frequencies=(256.0, -1.0))
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


# -- clip_denoised --------------------------------------------------------------------------------------
def _box_score(sde, lo, hi):
    """Exact score of x_t = alpha·x0 + sigma·ε for x0 uniform on [lo, hi] per coordinate (float64).

    p_t(x) ∝ Φ(a) − Φ(b), a = (x − alpha·lo)/sigma, b = (x − alpha·hi)/sigma, so the score is
    (φ(a) − φ(b)) / (sigma·(Φ(a) − Φ(b))); its denoiser lies in [lo, hi] by construction.
    """
    normal = torch.distributions.Normal(0.0, 1.0)

    def score(x, t):
        tt = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        alpha, sigma = batch_view(sde.mean_scale(tt), x), batch_view(sde.marginal_std(tt), x)
        a, b = (x - alpha * lo) / sigma, (x - alpha * hi) / sigma
        pdf = normal.log_prob(a).exp() - normal.log_prob(b).exp()
        return pdf / (sigma * (normal.cdf(a) - normal.cdf(b)))

    return score


def _x0_score(sde, x0):
    """The score whose denoiser is exactly the given x0 (any values, in range or not)."""

    def score(x, t):
        tt = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        return (batch_view(sde.mean_scale(tt), x) * x0 - x) / batch_view(sde.marginal_std(tt), x) ** 2

    return score


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_clip_denoised_leaves_the_exact_score_of_bounded_data_alone(sde):
    g = torch.Generator().manual_seed(0)
    t = 0.05 + 0.9 * torch.rand(256, generator=g, dtype=torch.float64)
    x0 = torch.rand(256, 3, generator=g, dtype=torch.float64)
    x = sde.perturb(x0, t, generator=g)
    exact = _box_score(sde, 0.0, 1.0)
    torch.testing.assert_close(clip_denoised(exact, sde, (0.0, 1.0))(x, t), exact(x, t), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_clip_denoised_projects_the_denoiser_onto_the_range(sde):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    inside = 0.2 + 0.6 * torch.rand(64, 4, generator=g, dtype=torch.float64)
    wild = 3 * torch.randn(64, 4, generator=g, dtype=torch.float64)  # mostly outside [-1, 1]
    for t in (0.01, 0.3, torch.full((64,), 0.7, dtype=torch.float64)):
        s_in = _x0_score(sde, inside)
        assert torch.equal(clip_denoised(s_in, sde, (-1.0, 1.0))(x, t), s_in(x, t))  # bit for bit in range
        got = clip_denoised(_x0_score(sde, wild), sde, (-1.0, 1.0))(x, t)
        torch.testing.assert_close(got, _x0_score(sde, wild.clamp(-1.0, 1.0))(x, t), rtol=1e-9, atol=1e-9)


def test_clip_denoised_passes_gradients_for_the_divergence():
    sde = SubVPSDE()
    x = torch.full((2, 3), 0.5, dtype=torch.float64, requires_grad=True)
    # d(score)/dx = -1/sigma² where x0 is clamped (constant), the wrapped score's own slope elsewhere
    score = clip_denoised(lambda x, t: torch.full_like(x, 5.0), sde, (0.0, 1.0))  # x0_hat = (x + 5·sigma²)/alpha
    (grad,) = torch.autograd.grad(score(x, 0.5).sum(), x)
    sigma = float(sde.marginal_std(0.5)[0])
    assert 0.5 + 5 * sigma**2 > float(sde.mean_scale(0.5)[0])  # so x0_hat > 1: clamped, constant in x
    torch.testing.assert_close(grad, torch.full_like(grad, -1 / sigma**2))


@pytest.mark.parametrize("data_range", [(1.0, 0.0), (0.0, float("inf")), (float("nan"), 1.0)])
def test_clip_denoised_rejects_a_bad_range(data_range):
    with pytest.raises(ValueError, match="data_range"):
        clip_denoised(lambda x, t: x, VPSDE(), data_range)
