"""Fast probability-flow ODE solvers for 10–30 evaluations: DPM-Solver++(2M) and EDM's Heun sampler.

Both use the data prediction x0_hat(x, t) = (x + sigma(t)²·score)/alpha(t) and work for every SDE here
(VE: alpha = 1). Write σ̃ = sigma/alpha (noise-to-signal ratio) and λ = log(alpha/sigma) = −log σ̃.

* dpmpp_2m (Lu et al. 2022, "DPM-Solver++", Alg. 2): the exact solution of the PF ODE in λ is
  x_{k+1} = (sigma_{k+1}/sigma_k)·x_k + alpha_{k+1}·∫ e^{−λ}·x0_hat dλ; with x0_hat extrapolated linearly in
  λ from the last two evaluations (multistep, one NFE per step),
  x_{k+1} = (sigma_{k+1}/sigma_k)·x_k − alpha_{k+1}·(e^{−h} − 1)·D,  h = λ_{k+1} − λ_k,
  D = (1 + 1/(2r))·x0_k − 1/(2r)·x0_{k−1},  r = h_{k−1}/h  (D = x0_k on the first step).
  Its grid (`grids.by_schedule`) is uniform in λ by default (`schedule="logsnr"`), or "time" / "karras".
* edm_heun (Karras et al. 2022, Alg. 1): in y = x/alpha the PF ODE is dy/dσ̃ = (y − x0_hat)/σ̃ (their
  eq. 4 with s = 1, σ = σ̃); Heun's 2nd-order method on the Karras steps σ̃_i (`grids.karras`, eq. 5,
  ρ = 7) mapped to SDE time. Two NFE per step (the last step ends at σ̃(t_min) > 0, so it keeps its
  correction).

Shared solver signature: fn(sde, score, x, ts, *, callback) with the guarded score, the state x at
ts[0] = T and the decreasing float64 grid ts; callback(k, x_k, x0_hat_k) after each evaluation at x_k.
"""

from __future__ import annotations

import math

from sdegen._checks import batch_time
from sdegen.grids import coefficients
from sdegen.score import tweedie


def dpmpp_2m(sde, score, x, ts, *, callback):
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, Alg. 2), data prediction, multistep in λ."""
    alpha, sigma = coefficients(sde, ts)
    lam = [math.log(a / s) for a, s in zip(alpha, sigma, strict=True)]
    x0_prev, h_prev = None, None
    for k in range(len(ts) - 1):
        x0 = tweedie(x, score(x, batch_time(ts[k], x)), alpha[k], sigma[k])
        callback(k, x, x0)
        h = lam[k + 1] - lam[k]
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (sigma[k + 1] / sigma[k]) * x - alpha[k + 1] * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


def edm_heun(sde, score, x, ts, *, callback):
    """EDM deterministic sampler (Karras et al. 2022, Alg. 1): Heun on dy/dσ̃ = (y − x0_hat)/σ̃, ρ = 7 steps."""
    alpha, sigma = coefficients(sde, ts)
    ratio = [s / a for a, s in zip(alpha, sigma, strict=True)]
    for k in range(len(ts) - 1):
        r, r_next = ratio[k], ratio[k + 1]
        y = x / alpha[k]
        x0 = tweedie(x, score(x, batch_time(ts[k], x)), alpha[k], sigma[k])
        callback(k, x, x0)
        d = (y - x0) / r  # dy/dσ̃ at σ̃_k (Alg. 1, line 7)
        y_euler = y + (r_next - r) * d  # Euler step (line 8)
        x_euler = alpha[k + 1] * y_euler
        x0_euler = tweedie(x_euler, score(x_euler, batch_time(ts[k + 1], x)), alpha[k + 1], sigma[k + 1])
        d_next = (y_euler - x0_euler) / r_next  # slope at the Euler point (line 10)
        x = alpha[k + 1] * (y + (r_next - r) * 0.5 * (d + d_next))  # trapezoidal correction (line 11)
    return x
