"""Fast probability-flow ODE solvers for 10–30 evaluations: DPM-Solver++(2M), EDM's Heun sampler, UniPC.

All use the data prediction x0_hat(x, t) = (x + sigma(t)²·score)/alpha(t) and work for every SDE here
(VE: alpha = 1). Write σ̃ = sigma/alpha (noise-to-signal ratio) and λ = log(alpha/sigma) = −log σ̃.

* dpmpp_2m (Lu et al. 2022, "DPM-Solver++", Alg. 2): the exact solution of the PF ODE in λ is
  x_{k+1} = (sigma_{k+1}/sigma_k)·x_k + alpha_{k+1}·∫ e^{−λ}·x0_hat dλ; with x0_hat extrapolated linearly in
  λ from the last two evaluations (multistep, one NFE per step),
  x_{k+1} = (sigma_{k+1}/sigma_k)·x_k − alpha_{k+1}·(e^{−h} − 1)·D,  h = λ_{k+1} − λ_k,
  D = (1 + 1/(2r))·x0_k − 1/(2r)·x0_{k−1},  r = h_{k−1}/h  (D = x0_k on the first step).
  Its grid (`grids.by_schedule`) is uniform in λ by default (`schedule="logsnr"`), or "time" / "karras".
* edm_heun (Karras et al. 2022, Alg. 1): in y = x/alpha the PF ODE is dy/dσ̃ = (y − x0_hat)/σ̃ (their
  eq. 4 with s = 1, σ = σ̃); Heun's 2nd-order method on the Karras steps σ̃_i (`grids.karras`, eq. 5,
  ρ = 7; `sigma_min` ends the ladder early) mapped to SDE time. Two NFE per step except the last, the step
  to σ̃(t_min) ≈ 0, which is Euler as in Alg. 1 (σ_N = 0 there): 2N − 1 NFE. Its trapezoidal correction
  would multiply the change of x0_hat across the step by σ̃_{N−1}/(2σ̃_N) (~100 on a 5-step ladder) and
  made few-step runs diverge; one Euler step keeps the global order 2.
* unipc (Zhao et al. 2023, "UniPC", arXiv:2302.04867, the variant B(h) = e^{−h} − 1, "bh2"), data
  prediction, multistep, order 2: the predictor UniP-2 is the step above,
  x̃_{k+1} = (sigma_{k+1}/sigma_k)·x_k − alpha_{k+1}·B·(x0_k + ½·D1),  D1 = (x0_{k−1} − x0_k)/r_k,
  r_k = (λ_{k−1} − λ_k)/h < 0; the corrector UniC evaluates x0_hat at x̃_{k+1} (the next step's evaluation,
  so one NFE per step) and replaces ½·D1 by ρ_1·D1 + ρ_2·(x0(x̃_{k+1}) − x0_k) with ρ solving the order
  conditions [[1, 1], [r_k, 1]]·ρ = (g_1, g_2) (`_unic_weights`; for uniform steps and small h,
  ρ → (1/12, 5/12), the 3-point Adams–Moulton rule). UniC raises the order by one
  (their Thm. 3.3): order 3. The first step uses UniP-1/UniC-1 (ρ = ½); the last state (t_min) has no
  evaluation after it and stays uncorrected. The corrected states are not where x0_hat was evaluated, so
  the callback gets x0_hat = None for them.

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
        if k == len(ts) - 2:  # the step to σ̃(t_min) ≈ 0 stays an Euler step (Alg. 1, line 9)
            x = x_euler
            break
        x0_euler = tweedie(x_euler, score(x_euler, batch_time(ts[k + 1], x)), alpha[k + 1], sigma[k + 1])
        d_next = (y_euler - x0_euler) / r_next  # slope at the Euler point (line 10)
        x = alpha[k + 1] * (y + (r_next - r) * 0.5 * (d + d_next))  # trapezoidal correction (line 11)
    return x


def _unic_weights(h: float, r: float | None) -> tuple[float, float]:
    """UniC weights (ρ_1 on D1, ρ_2 on x0(x̃_{k+1}) − x0_k) for B(h) = e^{−h} − 1 (bh2), data prediction.

    UniC's order conditions (Zhao et al. 2023) in data-prediction form, hh = −h: Σ_i ρ_i·r_i^{n−1}
    = n!·ψ_n/B with ψ_1 = (e^{hh} − 1)/hh − 1 and ψ_{n+1} = ψ_n/hh − 1/(n+1)!, r = (r_k, 1).
    """
    hh, b = -h, math.expm1(-h)
    psi1 = b / hh - 1
    psi2 = psi1 / hh - 0.5
    g1, g2 = psi1 / b, 2 * psi2 / b
    if r is None:  # UniC-1 on the first step
        return 0.0, 0.5
    rho1 = (g1 - g2) / (1 - r)  # [[1, 1], [r, 1]]·ρ = (g1, g2)
    return rho1, g1 - rho1


def unipc(sde, score, x, ts, *, callback):
    """UniPC (Zhao et al. 2023, arXiv:2302.04867), bh2, data prediction: UniP-2 + UniC, 1 NFE per step."""
    alpha, sigma = coefficients(sde, ts)
    lam = [math.log(a / s) for a, s in zip(alpha, sigma, strict=True)]
    steps = len(ts) - 1
    x0 = tweedie(x, score(x, batch_time(ts[0], x)), alpha[0], sigma[0])
    callback(0, x, x0)
    x0_prev = None
    for k in range(steps):
        h = lam[k + 1] - lam[k]
        b = math.expm1(-h)  # B(h), bh2
        base = (sigma[k + 1] / sigma[k]) * x - alpha[k + 1] * b * x0  # the first-order (DDIM) step
        r = None if x0_prev is None else (lam[k - 1] - lam[k]) / h
        d1 = None if r is None else (x0_prev - x0) / r
        x_pred = base if d1 is None else base - alpha[k + 1] * b * 0.5 * d1  # UniP-2 (UniP-1 first)
        if k + 1 == steps:
            return x_pred  # no evaluation at t_min: the last state stays uncorrected
        x0_next = tweedie(x_pred, score(x_pred, batch_time(ts[k + 1], x)), alpha[k + 1], sigma[k + 1])
        rho1, rho2 = _unic_weights(h, r)
        corr = rho2 * (x0_next - x0) if d1 is None else rho1 * d1 + rho2 * (x0_next - x0)
        x = base - alpha[k + 1] * b * corr  # UniC
        callback(k + 1, x, None)
        x0_prev, x0 = x0, x0_next
    return x
