"""Fast stochastic solvers for 10–50 evaluations: DPM-Solver++(2M/3M) SDE and EDM's stochastic sampler.

All three use the data prediction x0_hat(x, t) = (x + sigma(t)²·score)/alpha(t) and work for every SDE
here (VE: alpha = 1). Write σ̃ = sigma/alpha, λ = log(alpha/sigma) = −log σ̃ and h = λ_{k+1} − λ_k > 0.

* dpmpp_2m_sde, dpmpp_3m_sde (Lu et al. 2022, "DPM-Solver++", arXiv:2211.01095, its SDE solvers; the η
  family of k-diffusion's `sample_dpmpp_2m_sde`/`_3m_sde`). For η ≥ 0 the reverse SDE family
  dx = [f − (1 + η²)/2·g²·s] dt + η·g dw̄ (η = 0 the PF ODE, η = 1 the reverse SDE), written in λ with the
  data prediction, has the exact variation-of-constants solution over one step, ĥ = (1 + η)·h:
      x_{k+1} = (sigma_{k+1}/sigma_k)·e^{−ηh}·x_k + alpha_{k+1}·∫_0^h (1+η)e^{−(1+η)(h−v)} x0_hat(λ_k+v) dv
                + sigma_{k+1}·√(1 − e^{−2ηh})·z.
  With x0_hat(λ_k + v) ≈ D + v·D' + v²/2·D'' (a polynomial through the last two or three evaluations, in λ)
  the integral is e1·D + e2·(h·D') + e3·(h²·D'') with
      e1 = 1 − e^{−ĥ},   e2 = 1 − e1/ĥ,   e3 = 1/2 − e2/ĥ
  (∫ c·e^{−c(h−v)}·v^n/n! dv = h^n·ĥ·φ_{n+1}(ĥ), φ the exponential-integrator φ-functions). The 2M solver
  uses the midpoint form 0.5·e1 in place of e2 (as DPM-Solver++(2M), to which it reduces exactly at η = 0);
  the 3M solver uses e2 and e3 exactly (its first two steps are of order 1 and 2; k-diffusion's and
  diffusers' 3M step weight h²·D'' by e3/2, which shows order 2 at η = 0, this one order 3). With η = 1 a
  first-order step is DDPM's posterior step with x0 replaced by x0_hat. One NFE per step.
* edm_sde (Karras et al. 2022, "Elucidating…", Alg. 2): in y = x/alpha and σ̃, first "churn": raise the
  noise level to σ̂ = (1 + γ)·σ̃_k, γ = min(s_churn/N, √2 − 1) for σ̃_k ∈ [s_tmin, s_tmax] (else 0), by adding
  fresh noise, ŷ = y + s_noise·√(σ̂² − σ̃_k²)·z (exact in law when s_noise = 1), then one Heun step of the PF
  ODE dy/dσ̃ = (y − x0_hat)/σ̃ from σ̂ down to σ̃_{k+1}. σ̂ is capped at σ̃(T) so that the score is never asked
  outside [t_min, T]. Two NFE per step on the Karras grid (`grids.karras`), except the last step, to
  σ̃(t_min) ≈ 0, which is Euler as in Alg. 2 (see `fast_ode.edm_heun`): 2N − 1 NFE.

Orders (declared in the registry): the noise here is drawn per step, not from one Brownian path, so a strong
order does not apply; the weak orders are those measured on the linear Gaussian case (tests/test_fast_solvers.py).
Shared solver signature as in `fast_ode`, plus `seed` for the per-sample noise streams (`_noise.noise_stream`).
"""

from __future__ import annotations

import math

import torch

from sdegen._checks import batch_time, check_nonnegative
from sdegen.grids import coefficients
from sdegen.samplers._noise import noise_stream
from sdegen.score import tweedie


def _exp_weights(h: float, eta: float) -> tuple[float, float, float]:
    """(e1, e2, e3) of the module docstring for the step h and noise fraction η."""
    hh = (1 + eta) * h
    e1 = -math.expm1(-hh)
    e2 = 1 - e1 / hh
    return e1, e2, 0.5 - e2 / hh


def _sde_step(x, d, k, alpha, sigma, h, eta, noise):
    """(sigma_{k+1}/sigma_k)·e^{−ηh}·x + alpha_{k+1}·d + sigma_{k+1}·√(1 − e^{−2ηh})·z (z only when η > 0)."""
    x = (sigma[k + 1] / sigma[k]) * math.exp(-eta * h) * x + alpha[k + 1] * d
    if noise is not None:
        x = x + sigma[k + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * noise.randn()
    return x


def dpmpp_2m_sde(sde, score, x, ts, *, callback, seed, eta: float = 1.0):
    """DPM-Solver++(2M) SDE (Lu et al. 2022, arXiv:2211.01095), data prediction, midpoint form, η-scaled noise."""
    eta = check_nonnegative(eta, "eta")
    alpha, sigma = coefficients(sde, ts)
    lam = [math.log(a / s) for a, s in zip(alpha, sigma, strict=True)]
    noise = noise_stream(seed, x) if eta > 0 else None
    x0_prev, h_prev = None, None
    for k in range(len(ts) - 1):
        x0 = tweedie(x, score(x, batch_time(ts[k], x)), alpha[k], sigma[k])
        callback(k, x, x0)
        h = lam[k + 1] - lam[k]
        e1, _, _ = _exp_weights(h, eta)
        d = e1 * x0
        if x0_prev is not None:  # + ½·e1·(h·D'), h·D' ≈ (x0_k − x0_{k−1})/r, r = h_{k−1}/h
            d = d + 0.5 * e1 * (h / h_prev) * (x0 - x0_prev)
        x = _sde_step(x, d, k, alpha, sigma, h, eta, noise)
        x0_prev, h_prev = x0, h
    return x


def dpmpp_3m_sde(sde, score, x, ts, *, callback, seed, eta: float = 1.0):
    """DPM-Solver++(3M) SDE (Lu et al. 2022, arXiv:2211.01095), data prediction, quadratic in λ, η-scaled noise."""
    eta = check_nonnegative(eta, "eta")
    alpha, sigma = coefficients(sde, ts)
    lam = [math.log(a / s) for a, s in zip(alpha, sigma, strict=True)]
    noise = noise_stream(seed, x) if eta > 0 else None
    hist: list[tuple[torch.Tensor, float]] = []  # (x0_hat, step h that followed it), newest first
    for k in range(len(ts) - 1):
        x0 = tweedie(x, score(x, batch_time(ts[k], x)), alpha[k], sigma[k])
        callback(k, x, x0)
        h = lam[k + 1] - lam[k]
        e1, e2, e3 = _exp_weights(h, eta)
        d = e1 * x0
        if hist:
            # Divided differences in units of h: d1_0 ≈ h·D' − h·h_1·D''/2, d1_1 one step further back.
            (x0_1, h_1), *older = hist
            r0 = h_1 / h
            d1_0 = (x0 - x0_1) / r0
            if not older:
                d = d + e2 * d1_0  # linear through two points: h·D' ≈ d1_0
            else:
                x0_2, h_2 = older[0]
                r1 = h_2 / h
                d1_1 = (x0_1 - x0_2) / r1
                dd = (d1_0 - d1_1) / (r0 + r1)  # h²·D''/2
                d = d + e2 * (d1_0 + r0 * dd) + e3 * (2 * dd)  # h·D' = d1_0 + r0·h²D''/2
        x = _sde_step(x, d, k, alpha, sigma, h, eta, noise)
        hist = [(x0, h), *hist[:1]]
    return x


def edm_sde(
    sde,
    score,
    x,
    ts,
    *,
    callback,
    seed,
    s_churn: float = 40.0,
    s_tmin: float = 0.05,
    s_tmax: float = 50.0,
    s_noise: float = 1.0,
):
    """EDM stochastic sampler (Karras et al. 2022, Alg. 2): churn σ̃ up by γ, then a Heun step of the PF ODE."""
    s_churn = check_nonnegative(s_churn, "s_churn")
    s_tmin, s_tmax = check_nonnegative(s_tmin, "s_tmin"), check_nonnegative(s_tmax, "s_tmax")
    if s_tmax < s_tmin:
        raise ValueError(f"s_tmax must be >= s_tmin, got s_tmin={s_tmin!r}, s_tmax={s_tmax!r}")
    s_noise = check_nonnegative(s_noise, "s_noise")
    steps = len(ts) - 1
    alpha, sigma = coefficients(sde, ts)
    ratio = [s / a for a, s in zip(alpha, sigma, strict=True)]
    # Alg. 2 line 4: γ_i, with σ̂ capped at σ̃(T) (the score exists on [t_min, T] only).
    gamma = min(s_churn / steps, math.sqrt(2) - 1)
    churn = [gamma > 0 and s_tmin <= r <= s_tmax for r in ratio[:-1]]
    r_hat = [min(r * (1 + gamma), ratio[0]) if c else r for r, c in zip(ratio[:-1], churn, strict=True)]
    # The time of σ̂ (closed form, `time_of_half_log_nsr`), kept within [t_k, T] against round-off.
    t_hat = sde.time_of_half_log_nsr(torch.tensor(r_hat, dtype=torch.float64).log()).tolist()
    t_hat = [
        min(max(th, float(tk)), sde.T) if c else float(tk) for th, tk, c in zip(t_hat, ts[:-1], churn, strict=True)
    ]
    a_hat, s_hat = coefficients(sde, torch.tensor(t_hat, dtype=torch.float64))
    noise = noise_stream(seed, x) if any(churn) and s_noise > 0 else None
    for k in range(steps):
        r_next, x_k = ratio[k + 1], x
        y = x / alpha[k]
        if churn[k]:
            if noise is not None:  # line 5: ŷ = y + s_noise·√(σ̂² − σ̃²)·z
                y = y + s_noise * math.sqrt(max(r_hat[k] ** 2 - ratio[k] ** 2, 0.0)) * noise.randn()
            x = a_hat[k] * y
        x0 = tweedie(x, score(x, batch_time(t_hat[k], x)), a_hat[k], s_hat[k])
        callback(k, x_k, None if churn[k] else x0)  # a churned step never evaluates at x_k itself
        d = (y - x0) / r_hat[k]  # line 7: dy/dσ̃ at σ̂
        y_euler = y + (r_next - r_hat[k]) * d  # line 8
        x_euler = alpha[k + 1] * y_euler
        if k == steps - 1:  # the step to σ̃(t_min) ≈ 0 stays an Euler step (line 9)
            x = x_euler
            break
        x0_euler = tweedie(x_euler, score(x_euler, batch_time(ts[k + 1], x)), alpha[k + 1], sigma[k + 1])
        d_next = (y_euler - x0_euler) / r_next  # line 10
        x = alpha[k + 1] * (y + (r_next - r_hat[k]) * 0.5 * (d + d_next))  # line 11
    return x
