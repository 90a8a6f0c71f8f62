"""Time grids for samplers, all in forward SDE time from T down to t_min (float64, both ends exact).

* `uniform`: uniform in t;
* `logsnr`: uniform in log-SNR λ = log(alpha/sigma) (Lu et al. 2022, DPM-Solver, Sec. 3.3);
* `karras`: Karras et al. 2022 (eq. 5), σ̃_i = (σ̃max^{1/ρ} + i/N·(σ̃min^{1/ρ} − σ̃max^{1/ρ}))^ρ in the
  noise-to-signal ratio σ̃(t) = sigma(t)/alpha(t), mapped back to t by bisection (σ̃ increases with t for
  every SDE here);
* `by_schedule`: one of the three by name ("time", "logsnr", "karras").

A grid function takes (sde, steps, t_min) and its own keyword options; a solver names its grid function in
the registry, and `sdegen.sample` passes it the options its signature declares. `coefficients` gives the
per-step alpha_k and sigma_k as python floats for the solvers' step loops.
"""

from __future__ import annotations

import math

import torch


def coefficients(sde, ts: torch.Tensor) -> tuple[list[float], list[float]]:
    """(alpha_k, sigma_k) on the grid as python floats (float64): no tensor overhead inside step loops."""
    return sde.mean_scale(ts).tolist(), sde.marginal_std(ts).tolist()


def noise_ratio(sde, t: torch.Tensor) -> torch.Tensor:
    """σ̃(t) = sigma(t)/alpha(t) for a float64 tensor of times, shape like t."""
    return sde.marginal_std(t) / sde.mean_scale(t)


def time_of_noise_ratio(sde, ratio: torch.Tensor, t_min: float) -> torch.Tensor:
    """Invert σ̃(t) = ratio on [t_min, T] by 64 bisection steps (float64, vectorised); shape like ratio."""
    lo = torch.full_like(ratio, t_min, dtype=torch.float64)
    hi = torch.full_like(ratio, sde.T, dtype=torch.float64)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        above = noise_ratio(sde, mid) > ratio
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    return 0.5 * (lo + hi)


def uniform(sde, steps: int, t_min: float) -> torch.Tensor:
    """t_k = T − k(T − t_min)/N, k = 0..N."""
    ts = sde.T - (sde.T - t_min) * torch.arange(steps + 1, dtype=torch.float64) / steps
    ts[0], ts[-1] = sde.T, t_min
    return ts


def _from_ratios(sde, ratios: torch.Tensor, t_min: float) -> torch.Tensor:
    ts = time_of_noise_ratio(sde, ratios, t_min)
    ts[0], ts[-1] = sde.T, t_min
    if not (ts[1:] < ts[:-1]).all():
        raise ValueError("the time grid is not strictly decreasing; use fewer steps or a larger t_min")
    return ts


def karras(sde, steps: int, t_min: float, *, rho: float = 7.0, sigma_min: float | None = None) -> torch.Tensor:
    """Karras et al. 2022 eq. 5 steps in σ̃ = sigma/alpha (ρ = 7), mapped to SDE time.

    By default the ρ-ladder runs from σ̃(T) to σ̃(t_min). With `sigma_min` (a noise-to-signal ratio in data
    units, σ̃(t_min) < sigma_min < σ̃(T)) it runs from σ̃(T) to sigma_min over steps − 1 intervals, and the
    last step jumps from sigma_min to t_min: EDM's σ_min followed by its final step to σ = 0 (Alg. 1), with
    σ̃(t_min) in place of 0. Few-step samplers need it: the ladder to σ̃(t_min) ≈ 1e-3 spends its last steps
    where the data is already resolved, leaving too few at the σ̃ ~ 0.1–10 that shape a sample.
    """
    if not (isinstance(rho, int | float) and math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
    top, bottom = noise_ratio(sde, torch.tensor([sde.T, t_min], dtype=torch.float64)).tolist()
    floor, intervals = bottom, steps
    if sigma_min is not None:
        if not (isinstance(sigma_min, int | float) and bottom < sigma_min < top):
            raise ValueError(
                f"sigma_min must be a number between σ̃(t_min) = {bottom:.3g} and σ̃(T) = {top:.3g}, got {sigma_min!r}"
            )
        if steps < 2:
            raise ValueError(f"sigma_min needs at least 2 steps (the ladder and the last step), got {steps}")
        floor, intervals = sigma_min, steps - 1
    i = torch.arange(intervals + 1, dtype=torch.float64) / intervals
    ratios = (top ** (1 / rho) + i * (floor ** (1 / rho) - top ** (1 / rho))) ** rho
    if sigma_min is not None:  # the last step, sigma_min -> σ̃(t_min)
        ratios = torch.cat([ratios, torch.tensor([bottom], dtype=torch.float64)])
    return _from_ratios(sde, ratios, t_min)


def logsnr(sde, steps: int, t_min: float) -> torch.Tensor:
    """Steps uniform in λ = −log σ̃ (DPM-Solver's "logSNR" schedule), mapped to SDE time."""
    ends = noise_ratio(sde, torch.tensor([sde.T, t_min], dtype=torch.float64)).log()
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    return _from_ratios(sde, torch.exp(ends[0] + i * (ends[1] - ends[0])), t_min)


SCHEDULES = ("time", "logsnr", "karras")


def by_schedule(sde, steps: int, t_min: float, *, schedule: str = "logsnr", rho: float = 7.0) -> torch.Tensor:
    """A grid by name: "time" (uniform in t), "logsnr" or "karras" (with `rho`)."""
    if schedule == "time":
        return uniform(sde, steps, t_min)
    if schedule == "logsnr":
        return logsnr(sde, steps, t_min)
    if schedule == "karras":
        return karras(sde, steps, t_min, rho=rho)
    raise ValueError(f"unknown schedule {schedule!r}; known: {sorted(SCHEDULES)}")
