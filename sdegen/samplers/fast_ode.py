"""Fast probability-flow ODE solvers for 10–30 evaluations: DPM-Solver++(2M) and EDM's Heun sampler.

Both use the data prediction x0_hat(x, t) = (x + sigma(t)²·score)/alpha(t) and work for every SDE here
(VE: alpha = 1). Write σ̃ = sigma/alpha (noise-to-signal ratio) and λ = log(alpha/sigma) = −log σ̃.

* dpmpp_2m (Lu et al. 2022, "DPM-Solver++", Alg. 2): the exact solution of the PF ODE in λ is
  x_{k+1} = (sigma_{k+1}/sigma_k)·x_k + alpha_{k+1}·∫ e^{−λ}·x0_hat dλ; with x0_hat extrapolated linearly in
  λ from the last two evaluations (multistep, one NFE per step),
  x_{k+1} = (sigma_{k+1}/sigma_k)·x_k − alpha_{k+1}·(e^{−h} − 1)·D,  h = λ_{k+1} − λ_k,
  D = (1 + 1/(2r))·x0_k − 1/(2r)·x0_{k−1},  r = h_{k−1}/h  (D = x0_k on the first step).
  The grid is uniform in λ by default (`schedule="logsnr"`), or "time" / "karras".
* edm_heun (Karras et al. 2022, Alg. 1): in y = x/alpha the PF ODE is dy/dσ̃ = (y − x0_hat)/σ̃ (their
  eq. 4 with s = 1, σ = σ̃); Heun's 2nd-order method on the Karras steps σ̃_i (eq. 5, ρ = 7) mapped to SDE
  time. Two NFE per step (the last step ends at σ̃(t_min) > 0, so it keeps its correction).
"""

from __future__ import annotations

import math

DPM_OPTIONS = {"schedule": "logsnr", "rho": 7.0}
EDM_OPTIONS = {"rho": 7.0}


def dpmpp_2m(run, x, *, schedule: str = "logsnr", rho: float = 7.0):
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, Alg. 2), data prediction, multistep in λ."""
    lam = [math.log(a / s) for a, s in zip(run.alpha, run.sigma, strict=True)]
    x0_prev, h_prev = None, None
    for k in range(run.steps):
        run.callback(k, x)
        x0, _ = run.denoise(x, k)
        h = lam[k + 1] - lam[k]
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (run.sigma[k + 1] / run.sigma[k]) * x - run.alpha[k + 1] * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


def edm_heun(run, x, *, rho: float = 7.0):
    """EDM deterministic sampler (Karras et al. 2022, Alg. 1): Heun on dy/dσ̃ = (y − x0_hat)/σ̃, ρ = 7 steps."""
    ratio = [s / a for a, s in zip(run.alpha, run.sigma, strict=True)]
    for k in range(run.steps):
        run.callback(k, x)
        r, r_next = ratio[k], ratio[k + 1]
        y = x / run.alpha[k]
        d = (y - run.denoise(x, k)[0]) / r  # dy/dσ̃ at σ̃_k (Alg. 1, line 7)
        y_euler = y + (r_next - r) * d  # Euler step (line 8)
        x_euler = run.alpha[k + 1] * y_euler
        d_next = (y_euler - run.denoise(x_euler, k + 1)[0]) / r_next  # slope at the Euler point (line 10)
        x = run.alpha[k + 1] * (y + (r_next - r) * 0.5 * (d + d_next))  # trapezoidal correction (line 11)
    return x
