"""Denoising score-matching losses, each an estimate of E_t λ(t)·E‖s_θ(x_t, t) − ∇ log p_0t(x_t | x0)‖².

With x_t = alpha·x0 + sigma·ε, ∇ log p_0t(x_t | x0) = −ε/sigma (Vincent 2011), so for every weighting

    λ(t)·‖s_θ + ε/sigma‖² = (λ(t)/sigma²)·‖ε_θ − ε‖²,   ε_θ = −sigma·s_θ.

Losses (all per sample, averaged over the data dimensions; returned with shape (batch,)):

=============  =======================================  ===============================================
name           per-sample value                          t ~
=============  =======================================  ===============================================
"dsm"          sigma²·‖s_θ + ε/sigma‖²  (λ = sigma²)     U[t_min, 1]   (Song et al. 2021, eq. 7)
"eps_mse"      ‖ε_θ − ε‖²  (the same number as "dsm")    U[t_min, 1]   (Ho et al. 2020)
"x0_mse"       ‖x0_θ − x0‖²                              U[t_min, 1]
"v_mse"        ‖v_θ − v‖²  (v as in `sdegen.score`)      U[t_min, 1]   (Salimans & Ho 2022)
"likelihood"   ½·Z·‖sigma·s_θ + ε‖²  (λ = g², IS)         q(t) ∝ g²/sigma²
=============  =======================================  ===============================================

Likelihood weighting (Song, Durkan, Murray & Ermon 2021, "Maximum likelihood training of score-based
diffusion models", Thm. 1): with λ = g², ½∫ g²·E‖s_θ − ∇ log p_0t‖² dt bounds the KL up to constants.
Its integrand g²/sigma²·‖ε_θ − ε‖² varies by orders of magnitude in t, so t is importance-sampled from
q(t) ∝ g(t)²/sigma(t)², which leaves the constant weight g²/(sigma²·q) = Z. For a linear SDE the
marginal variance obeys d(sigma²)/dt = 2f·sigma² + g² and d(ln alpha)/dt = f, hence

    g²/sigma² = d/dt ln(sigma²/alpha²) = 2·dρ/dt,    ρ(t) = ln(sigma(t)/alpha(t)),

so q is *uniform in ρ* (half the negative log-SNR) and Z = 2(ρ(1) − ρ(t_min)). Sampling t = ρ⁻¹(ρ_min + u·(ρ_max −
ρ_min)) needs ρ⁻¹ in closed form, which each SDE answers (`AbstractSDE.time_of_half_log_nsr`;
softplus(z) = ln(1 + eᶻ), B = ∫β):

* VP:      sigma²/alpha² = e^B − 1                 ⇒ B = softplus(2ρ)
* sub-VP:  sigma/alpha = 2·sinh(B/2)                ⇒ B = 2·asinh(e^ρ/2)
* VE:      sigma² = σmin²(r^{2t} − 1), r = σmax/σmin  ⇒ t = softplus(2ρ − 2 ln σmin)/(2 ln r)
* PowerVE: sigma² = (σ^{2t} − 1)/(2 ln σ)            ⇒ t = softplus(2ρ + ln(2 ln σ))/(2 ln σ)

and for the β-linear SDEs t = 2B/(βmin + √(βmin² + 2(βmax − βmin)B)) (the root of B(t) = B).

Every loss takes (model, sde, x0) and keyword options; randomness comes from `generator`, or from
explicit `u` (batch,) uniforms for t and `noise` shaped like x0 (the training loop draws them for the
whole global batch so that data-parallel runs match single-process ones).

Self-conditioning (Chen, Zhang & Hinton 2022, Alg. 1): for a model with `parametrisation.self_condition`,
`self_cond` (batch,) bool says which samples see the model's own x0 estimate, from a first pass without
gradient at the same (x_t, t); the others see zeros (the training loop draws it with probability ½). The
loss is that of the second pass; None means zeros for all.
"""

from __future__ import annotations

import math

import torch
from torch.nn.parallel import DistributedDataParallel

from sdegen._checks import batch_view, check_batched
from sdegen.score import ScoreModel, alpha_sigma, v_norm
from sdegen.sdes import AbstractSDE


def half_log_nsr(sde: AbstractSDE, t: torch.Tensor) -> torch.Tensor:
    """ρ(t) = ln(sigma(t)/alpha(t)) in float64, shape (batch,) (minus half the log signal-to-noise ratio)."""
    alpha, sigma = alpha_sigma(sde, t, t.double())
    return torch.log(sigma / alpha)


def likelihood_normaliser(sde: AbstractSDE, t_min: float) -> float:
    """Z = ∫_{t_min}^1 g²/sigma² dt = 2(ρ(1) − ρ(t_min))."""
    rho = half_log_nsr(sde, torch.tensor([t_min, sde.T], dtype=torch.float64))
    return float(2 * (rho[1] - rho[0]))


def likelihood_time_density(sde: AbstractSDE, t: torch.Tensor, t_min: float) -> torch.Tensor:
    """The importance density q(t) = g(t)²/(sigma(t)²·Z) on [t_min, 1], float64 of t's shape."""
    t = t.double()
    return sde.diffusion(t) ** 2 / sde.marginal_std(t) ** 2 / likelihood_normaliser(sde, t_min)


def likelihood_time(sde: AbstractSDE, u: torch.Tensor, t_min: float) -> torch.Tensor:
    """Map uniforms u ∈ [0, 1) (batch,) to t ~ q(t) ∝ g²/sigma² on [t_min, 1] by the inverse CDF (float64)."""
    rho = half_log_nsr(sde, torch.tensor([t_min, sde.T], dtype=torch.float64, device=u.device))
    t = sde.time_of_half_log_nsr(rho[0] + u.double() * (rho[1] - rho[0]))
    return t.clamp(t_min, sde.T)


def uniform_time(sde: AbstractSDE, u: torch.Tensor, t_min: float) -> torch.Tensor:
    """t = t_min + (T − t_min)·u, float64."""
    return t_min + (sde.T - t_min) * u.double()


# EDM's training noise levels (Karras et al. 2022, Table 1): ln σ̃ ~ N(P_mean, P_std²), σ̃ = sigma/alpha.
EDM_P_MEAN, EDM_P_STD = -1.2, 1.2


def lognormal_time(sde: AbstractSDE, u: torch.Tensor, t_min: float) -> torch.Tensor:
    """Map uniforms u (batch,) to t with ln(sigma/alpha) ~ N(EDM_P_MEAN, EDM_P_STD²) by the inverse CDF, clamped to
    [t_min, T] (float64); the SDE inverts ρ = ln(sigma/alpha) itself (`time_of_half_log_nsr`)."""
    rho = EDM_P_MEAN + EDM_P_STD * math.sqrt(2.0) * torch.erfinv(2 * u.double() - 1)
    return sde.time_of_half_log_nsr(rho).clamp(t_min, sde.T)


def _draw(sde, x0, generator, t_min, u, noise, time_map):
    check_batched(x0, "x0")
    if not 0.0 <= t_min < sde.T:
        raise ValueError(f"t_min must lie in [0, {sde.T}), got {t_min}")
    if u is None:
        u = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    if u.shape != (x0.shape[0],) or noise.shape != x0.shape:
        raise ValueError(f"u must have shape ({x0.shape[0]},) and noise {tuple(x0.shape)}")
    t = time_map(sde, u, t_min).to(x0.dtype)
    alpha, sigma = (batch_view(c, x0) for c in alpha_sigma(sde, t, x0))
    return t, noise, alpha * x0 + sigma * noise, alpha, sigma


def _sq_mean(d: torch.Tensor) -> torch.Tensor:
    """Mean of squares over the data dims: (batch, *shape) → (batch,), in float32 or wider."""
    return d.float().pow(2).flatten(1).mean(1)


def dsm_loss(
    model, sde, x0, *, generator=None, t_min=1e-5, labels=None, u=None, noise=None, self_cond=None
) -> torch.Tensor:
    """Denoising score matching with λ = sigma²: sigma²·‖s_θ(x_t, t) + ε/sigma‖², t ~ U[t_min, 1]. (batch,)."""
    t, noise, xt, _, sigma = _draw(sde, x0, generator, t_min, u, noise, uniform_time)
    return _sq_mean(sigma * _predict(model, xt, t, labels, "score", self_cond) + noise)


def eps_mse_loss(
    model, sde, x0, *, generator=None, t_min=1e-5, labels=None, u=None, noise=None, self_cond=None
) -> torch.Tensor:
    """‖ε_θ(x_t, t) − ε‖², t ~ U[t_min, 1] (Ho et al. 2020). (batch,)."""
    t, noise, xt, _, _ = _draw(sde, x0, generator, t_min, u, noise, uniform_time)
    return _sq_mean(_predict(model, xt, t, labels, "eps", self_cond) - noise)


def x0_mse_loss(
    model, sde, x0, *, generator=None, t_min=1e-5, labels=None, u=None, noise=None, self_cond=None
) -> torch.Tensor:
    """‖x0_θ(x_t, t) − x0‖², t ~ U[t_min, 1]. (batch,)."""
    t, noise, xt, _, _ = _draw(sde, x0, generator, t_min, u, noise, uniform_time)
    return _sq_mean(_predict(model, xt, t, labels, "x0", self_cond) - x0)


def v_mse_loss(
    model,
    sde,
    x0,
    *,
    generator=None,
    t_min=1e-5,
    labels=None,
    u=None,
    noise=None,
    time_map=uniform_time,
    self_cond=None,
):
    """‖v_θ(x_t, t) − v‖² with v = (alpha·σ_d·ε − (sigma/σ_d)·x0)/c, t ~ U[t_min, 1]. (batch,)."""
    t, noise, xt, alpha, sigma = _draw(sde, x0, generator, t_min, u, noise, time_map)
    sigma_data = _unwrap(model).parametrisation.sigma_data
    target = (alpha * sigma_data * noise - sigma / sigma_data * x0) / v_norm(alpha, sigma, sigma_data)
    return _sq_mean(_predict(model, xt, t, labels, "v", self_cond) - target)


def edm_loss(
    model, sde, x0, *, generator=None, t_min=1e-5, labels=None, u=None, noise=None, self_cond=None
) -> torch.Tensor:
    """EDM's loss (Karras et al. 2022, eq. 2 with λ(σ̃) = (σ̃² + σ_d²)/(σ̃·σ_d)² and ln σ̃ ~ N(−1.2, 1.2²)). (batch,).

    In x/alpha the EDM-weighted x0 error λ·‖x0_θ − x0‖² equals the v error ‖v_θ − v‖² (both are the error of
    the network output F of EDM's preconditioning), so this is `v_mse_loss` with log-normal noise levels,
    which put the training effort at the noise levels that decide image quality (σ̃ ≈ 0.1–1).
    """
    return v_mse_loss(model, sde, x0, generator=generator, t_min=t_min, labels=labels, u=u, noise=noise,
                      time_map=lognormal_time, self_cond=self_cond)  # fmt: skip


def likelihood_loss(
    model, sde, x0, *, generator=None, t_min=1e-5, labels=None, u=None, noise=None, self_cond=None
) -> torch.Tensor:
    """Likelihood weighting λ = g² with t ~ q ∝ g²/sigma²: ½·Z·‖sigma·s_θ + ε‖² (module docstring). (batch,).

    Its mean times the data dimension estimates ½∫_{t_min}^1 g²·E‖s_θ − ∇ log p_0t‖² dt in nats.
    """
    t, noise, xt, _, sigma = _draw(sde, x0, generator, t_min, u, noise, likelihood_time)
    return (
        0.5
        * likelihood_normaliser(sde, t_min)
        * _sq_mean(sigma * _predict(model, xt, t, labels, "score", self_cond) + noise)
    )


def _predict(model, xt, t, labels, output: str, self_cond: torch.Tensor | None) -> torch.Tensor:
    """The model's `output` at (xt, t, labels); with `self_cond`, x0_prev is the model's own estimate from a first
    pass without gradient (through the unwrapped model) where self_cond is true and zeros elsewhere."""
    if self_cond is None:
        return model(xt, t, labels, output=output)
    with torch.no_grad():
        estimate = _unwrap(model)(xt, t, labels, output="x0")
    x0_prev = torch.where(batch_view(self_cond, xt), estimate, torch.zeros_like(estimate))
    return model(xt, t, labels, output=output, x0_prev=x0_prev)


def _unwrap(model) -> ScoreModel:
    return model.module if isinstance(model, DistributedDataParallel) else model


LOSSES = {
    "dsm": dsm_loss,
    "eps_mse": eps_mse_loss,
    "x0_mse": x0_mse_loss,
    "v_mse": v_mse_loss,
    "edm": edm_loss,
    "likelihood": likelihood_loss,
}
