"""Discrete-time samplers of the VP family: DDPM ancestral sampling and DDIM.

Both run on the continuous VP (or sub-VP) SDE's own coefficients on a time grid t_0 = T > … > t_N = t_min:
alpha_k = alpha(t_k) (so ᾱ_k = alpha_k²), sigma_k = sigma(t_k), the noise prediction ε̂ = −sigma_k·score
and the data prediction x0_hat = (x + sigma_k²·score)/alpha_k. For a step t_k → t_{k+1}, `transition`
gives a = alpha_k/alpha_{k+1} (√α_t in Ho et al.'s notation) and s² = sigma_k² − a²·sigma_{k+1}² (the
variance of x_{t_k} | x_{t_{k+1}}; β_t for the VP SDE).

* ancestral (Ho et al. 2020, eq. 7 and Alg. 2): x ← μ̃ + σ̃·z with the posterior mean
  μ̃ = (alpha_{k+1}·s²/sigma_k²)·x0_hat + (a·sigma_{k+1}²/sigma_k²)·x, which for VP is eq. 11's
  (x − β/√(1 − ᾱ)·ε̂)/√α, and σ̃² = sigma_{k+1}²·s²/sigma_k² ("posterior", β̃_t) or s² ("beta", β_t).
* ddim (Song, Meng & Ermon 2021, eq. 12 with σ_t(η) of eq. 16):
  x ← alpha_{k+1}·x0_hat + √(sigma_{k+1}² − c²)·ε̂ + c·z, c = η·√(sigma_{k+1}²·s²/sigma_k²);
  η = 0 is the deterministic DDIM (a first-order solver of the PF ODE), η = 1 equals ancestral sampling
  with the posterior variance.

The last step ends at t_min > 0, so it keeps its noise (use `denoise=True` for E[x0 | x_{t_min}]).
Shared solver signature as in `fast_ode`, plus `seed` for the per-sample noise streams.
"""

from __future__ import annotations

import math

from sdegen._checks import batch_time, check_nonnegative
from sdegen.grids import coefficients
from sdegen.samplers._noise import noise_stream
from sdegen.score import tweedie


def transition(alpha: list[float], sigma: list[float], k: int) -> tuple[float, float]:
    """a = alpha_k/alpha_{k+1} and s² = sigma_k² − a²·sigma_{k+1}², the exact forward step t_{k+1} → t_k:
    x_{t_k} = a·x_{t_{k+1}} + s·z (clipped at 0 against round-off)."""
    a = alpha[k] / alpha[k + 1]
    return a, max(sigma[k] ** 2 - a**2 * sigma[k + 1] ** 2, 0.0)


def ancestral(sde, score, x, ts, *, callback, seed, variance: str = "posterior"):
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2 with the posterior mean of eq. 7)."""
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    alpha, sigma = coefficients(sde, ts)
    noise = noise_stream(seed, x)
    for k in range(len(ts) - 1):
        x0 = tweedie(x, score(x, batch_time(ts[k], x)), alpha[k], sigma[k])
        callback(k, x, x0)
        a, s2 = transition(alpha, sigma, k)
        var_k, var_next = sigma[k] ** 2, sigma[k + 1] ** 2
        mean = (alpha[k + 1] * s2 / var_k) * x0 + (a * var_next / var_k) * x
        std = math.sqrt(var_next * s2 / var_k) if variance == "posterior" else math.sqrt(s2)
        x = mean + std * noise.randn()
    return x


def ddim(sde, score, x, ts, *, callback, seed, eta: float = 0.0):
    """DDIM (Song, Meng & Ermon 2021, eq. 12; σ_t(η) of eq. 16), η = 0 deterministic."""
    eta = check_nonnegative(eta, "eta")
    alpha, sigma = coefficients(sde, ts)
    noise = noise_stream(seed, x) if eta > 0 else None
    for k in range(len(ts) - 1):
        s = score(x, batch_time(ts[k], x))
        x0 = tweedie(x, s, alpha[k], sigma[k])
        callback(k, x, x0)
        eps = -sigma[k] * s  # ε̂ = (x − alpha_k·x0_hat)/sigma_k
        _, s2 = transition(alpha, sigma, k)
        var_next = sigma[k + 1] ** 2
        c = eta * math.sqrt(var_next * s2 / sigma[k] ** 2)
        x = alpha[k + 1] * x0 + math.sqrt(max(var_next - c**2, 0.0)) * eps
        if noise is not None:
            x = x + c * noise.randn()
    return x
