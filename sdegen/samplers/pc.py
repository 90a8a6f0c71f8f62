"""Predictor–corrector sampling (Song et al. 2021, Sec. 4.2, Algorithms 1–3).

Each step from t_k down to t_{k+1} (h = t_k − t_{k+1} > 0) first *predicts* with one step of a reverse-SDE
solver, then *corrects* with `corrector_steps` Langevin MCMC steps that target p_{t_{k+1}}:

* predictor "euler" (Euler–Maruyama): x ← x − [f(t_k)x − g(t_k)²·s(x, t_k)]·h + g(t_k)√h·z;
* predictor "reverse_diffusion" (Song et al. 2021, App. E): with the exact forward transition
  x_{t_k} = a·x_{t_{k+1}} + G·z, a = alpha_k/alpha_{k+1}, G² = sigma_k² − a²·sigma_{k+1}²,
  x ← x − (a − 1)x + G²·s(x, t_k) + G·z (for VE: G² = sigma_k² − sigma_{k+1}²; for VP: G² = β_i);
* corrector (Alg. 2/3): ε = 2·r·(snr·‖z‖/‖s‖)², x ← x + ε·s(x, t_{k+1}) + √(2ε)·z, with r = 1 for VE and
  r = (alpha_k/alpha_{k+1})² = 1 − β_i for the VP family. ‖z‖ and ‖s‖ are batch means of the per-sample
  norms, as in score_sde: per-sample norms make ε explode in low dimension wherever s ≈ 0. So a pc sample
  depends on its batch (only through ε; its noise stream is still per-sample).

Predictor first, then corrector, as in the paper; `corrector_steps=0` is a plain predictor sampler and
costs no extra evaluations. NFE = steps·(1 + corrector_steps). Shared solver signature as in `fast_ode`,
plus `seed` for the per-sample noise stream.
"""

from __future__ import annotations

import math

import torch

from sdegen._checks import batch_time, check_int, check_positive
from sdegen.grids import coefficients
from sdegen.samplers._noise import noise_stream
from sdegen.samplers.ddpm import transition
from sdegen.score import tweedie

PREDICTORS = ("euler", "reverse_diffusion")


def _mean_norm(v: torch.Tensor) -> torch.Tensor:
    """Batch mean of the per-sample Euclidean norms (score_sde's LangevinCorrector)."""
    return v.reshape(v.shape[0], -1).norm(dim=1).mean()


def pc(sde, score, x, ts, *, callback, seed, predictor: str = "euler", snr: float = 0.16, corrector_steps: int = 1):
    """Predictor–corrector sampler (Song et al. 2021, Alg. 1; VE: Alg. 2, VP: Alg. 3), Langevin corrector."""
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; known: {list(PREDICTORS)}")
    snr = check_positive(snr, "snr")
    corrector_steps = check_int(corrector_steps, "corrector_steps", 0)
    alpha, sigma = coefficients(sde, ts)
    noise, ts = noise_stream(seed, x), ts.tolist()
    for k in range(len(ts) - 1):
        t = batch_time(ts[k], x)
        h = ts[k] - ts[k + 1]
        s = score(x, t)
        callback(k, x, tweedie(x, s, alpha[k], sigma[k]))
        z = noise.randn()
        if predictor == "euler":
            g = float(sde.diffusion(ts[k]))
            x = x - (sde.drift(x, t) - g**2 * s) * h + g * math.sqrt(h) * z
        else:
            a, g2 = transition(alpha, sigma, k)
            x = x - (a - 1.0) * x + g2 * s + math.sqrt(g2) * z
        r = (alpha[k] / alpha[k + 1]) ** 2
        t_next = batch_time(ts[k + 1], x)
        for _ in range(corrector_steps):
            s = score(x, t_next)
            z = noise.randn()
            # Step size from the target signal-to-noise ratio ‖ε·s‖/‖√(2ε)·z‖ = snr (Song et al. 2021, Alg. 2).
            eps = 2 * r * (snr * _mean_norm(z) / _mean_norm(s).clamp_min(1e-30)) ** 2
            x = x + eps * s + torch.sqrt(2 * eps) * z
    return x
