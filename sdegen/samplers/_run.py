"""The shared call shape of every sampler: a `SamplerRun` context and the time grids.

A sampler is a plain function `fn(run, x, **options) -> x` that integrates from x at t = T (`run.ts[0]`)
down to t_min (`run.ts[-1]`) on the float64 grid `run.ts` (length steps + 1, decreasing), calling
`run.callback(k, x_k)` with the state at grid time t_k before it evaluates the score there (the recorder
reads Tweedie's E[x0 | x_k] from that evaluation) and returning x at t_min.

Grids (all in forward time t, from T down to t_min):
* uniform in t;
* uniform in log-SNR λ = log(alpha/sigma) (Lu et al. 2022, DPM-Solver, Sec. 3.3);
* Karras et al. 2022 (eq. 5): σ̃_i = (σ̃max^{1/ρ} + i/N·(σ̃min^{1/ρ} − σ̃max^{1/ρ}))^ρ in the noise-to-signal
  ratio σ̃(t) = sigma(t)/alpha(t), mapped back to t by bisection (σ̃ increases with t for every SDE here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sdegen.samplers._noise import NOISE, PerSampleNoise


def uniform_grid(sde, steps: int, t_min: float) -> torch.Tensor:
    """t_k = T − k(T − t_min)/N, k = 0..N, float64, with both ends exact."""
    ts = sde.T - (sde.T - t_min) * torch.arange(steps + 1, dtype=torch.float64) / steps
    ts[0], ts[-1] = sde.T, t_min
    return ts


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


def _grid_from_ratios(sde, ratios: torch.Tensor, t_min: float) -> torch.Tensor:
    ts = time_of_noise_ratio(sde, ratios, t_min)
    ts[0], ts[-1] = sde.T, t_min
    if not (ts[1:] < ts[:-1]).all():
        raise ValueError("the time grid is not strictly decreasing; use fewer steps or a larger t_min")
    return ts


def karras_grid(sde, steps: int, t_min: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 eq. 5 steps in σ̃ = sigma/alpha (ρ = 7), mapped to SDE time."""
    if not (isinstance(rho, int | float) and math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
    ends = noise_ratio(sde, torch.tensor([sde.T, t_min], dtype=torch.float64))
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    ratios = (ends[0] ** (1 / rho) + i * (ends[1] ** (1 / rho) - ends[0] ** (1 / rho))) ** rho
    return _grid_from_ratios(sde, ratios, t_min)


def logsnr_grid(sde, steps: int, t_min: float) -> torch.Tensor:
    """Steps uniform in λ = −log σ̃ (DPM-Solver's "logSNR" schedule), mapped to SDE time."""
    ends = noise_ratio(sde, torch.tensor([sde.T, t_min], dtype=torch.float64)).log()
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    return _grid_from_ratios(sde, torch.exp(ends[0] + i * (ends[1] - ends[0])), t_min)


def schedule_grid(sde, steps: int, t_min: float, schedule: str, rho: float = 7.0) -> torch.Tensor:
    """A grid by name: "time" (uniform in t), "logsnr" or "karras"."""
    if schedule == "time":
        return uniform_grid(sde, steps, t_min)
    if schedule == "logsnr":
        return logsnr_grid(sde, steps, t_min)
    if schedule == "karras":
        return karras_grid(sde, steps, t_min, rho)
    raise ValueError(f"unknown schedule {schedule!r}; known: ['karras', 'logsnr', 'time']")


@dataclass
class SamplerRun:
    """Everything a sampler needs besides its state and options.

    Attributes:
        sde: the forward SDE.
        score: checked, counted score(x, t) for the samplers' own loops.
        raw_score: the counted score without checks, for `sde.reverse` / `sde.probability_flow` (which check).
        ts: (steps + 1,) float64 grid from T down to t_min.
        shape: (batch, *data_shape) of the state.
        dtype, device: of the state.
        seed: the run seed (per-sample streams derive from it).
        callback: callback(k, x_k), see the module docstring.
        save_idx: the grid indices the recorder keeps (segment-wise solvers integrate between them).
        diagnostics: solver facts worth storing as attributes (e.g. the ODE's `clamped_evals`).
    """

    sde: object
    score: Callable
    raw_score: Callable
    ts: torch.Tensor
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    seed: int
    callback: Callable[[int, torch.Tensor], None]
    save_idx: tuple[int, ...]
    diagnostics: dict = field(default_factory=dict)
    alpha: list[float] = field(init=False)
    sigma: list[float] = field(init=False)

    def __post_init__(self):
        # Per-step coefficients as python floats (float64): no tensor overhead inside the step loops.
        self.alpha = self.sde.mean_scale(self.ts).tolist()
        self.sigma = self.sde.marginal_std(self.ts).tolist()

    @property
    def steps(self) -> int:
        return len(self.ts) - 1

    @property
    def t_min(self) -> float:
        return float(self.ts[-1])

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def t(self, k: int) -> torch.Tensor:
        """The grid time t_k as a (batch,) tensor in the state dtype."""
        return torch.full((self.shape[0],), float(self.ts[k]), dtype=self.dtype, device=self.device)

    def denoise(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tweedie's E[x0 | x_k] = (x + sigma_k²·score)/alpha_k and the score itself (one NFE)."""
        s = self.score(x, self.t(k))
        return (x + self.sigma[k] ** 2 * s) / self.alpha[k], s

    def noise(self) -> PerSampleNoise:
        """A fresh per-sample standard-normal stream for this run (one per sampler)."""
        return PerSampleNoise(self.seed, NOISE, self.shape, self.dtype, self.device)

    def segments(self) -> list[tuple[int, int]]:
        """Consecutive pairs of saved grid indices: the pieces segment-wise solvers integrate."""
        return list(zip(self.save_idx[:-1], self.save_idx[1:], strict=True))
