"""diffusers' schedulers driving an sdegen score: the map between a continuous SDE and a discrete schedule.

diffusers (an optional extra: `pip install -e .[peers]`) trains and samples on a discrete schedule of
N = `num_train_timesteps` levels: timestep i ∈ {0, …, N − 1} has ᾱ_i = Π_{j≤i}(1 − β_j), the model input
x = √ᾱ_i·x0 + √(1 − ᾱ_i)·ε (its "VP scaling") and the model predicts ε. Its k-diffusion-style schedulers
(Euler, Heun, DPM-Solver SDE) carry the state in "VE scaling" x/√ᾱ with the noise level
σ_i = √((1 − ᾱ_i)/ᾱ_i) and divide by √(σ² + 1) before calling the model (`scale_model_input`); levels between
the training ones (Karras sigmas, midpoints) are given to the model as a fractional timestep found by linear
interpolation of log σ over i (`_sigma_to_t`).

Every sdegen SDE has x_t = alpha(t)·x0 + sigma(t)·ε, so the noise-to-signal ratio σ̃(t) = sigma/alpha is the
common currency (Kingma et al. 2021: samplers see the SDE through σ̃ only):

* Schedule. Timestep i is SDE time t_i = (i + 1)/N (so i = 0 is t = 1/N = 10⁻³, sdegen's default t_min, and
  i = N − 1 is T = 1), and ᾱ_i = 1/(1 + σ̃(t_i)²), given to diffusers as
  `trained_betas` β_i = 1 − ᾱ_i/ᾱ_{i−1} (ᾱ_{−1} = 1): for the VP SDE ᾱ_i = alpha(t_i)² exactly (not
  `VPSDE.discrete_betas`, which matches alpha² only as N → ∞). diffusers accumulates ᾱ in float32 (relative
  error ~10⁻⁵).
* Timestep → time. A (fractional) timestep τ has log σ̃ = the linear interpolation over i of log σ̃(t_i),
  the exact inverse of diffusers' `_sigma_to_t`, and t = `sde.time_of_half_log_nsr(log σ̃)` (closed form);
  an integer τ = i gives t_i to round-off.
* Model output. In VP scaling x_vp = (x0 + σ̃·ε)/√(1 + σ̃²); sdegen's state at t is
  x = alpha(t)·√(1 + σ̃²)·x_vp (= x_vp for the VP SDE, where alpha² + sigma² = 1), and the noise prediction
  is the same ε in both: ε̂ = −sigma(t)·score(x, t) (`EpsilonAdapter`).

`sample_diffusers` runs one of `SCHEDULERS` with a given number of score evaluations and returns the path as
a trajectory Dataset like `sdegen.sample`, states mapped to the SDE's scaling. Its last state is diffusers'
final one, at σ = 0 (time 0, no noise left), where sdegen's solvers stop at t_min.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import torch
import xarray as xr

from sdegen._checks import check_int, resolve_seed
from sdegen.samplers._noise import prior_sample
from sdegen.score_guard import GuardedScore
from sdegen.sdes import AbstractSDE
from sdegen.trajectory import make_trajectory

NUM_TRAIN_TIMESTEPS = 1000

# name -> (diffusers class, config overrides, evaluations per step). "trailing" spacing (Lin et al. 2023)
# gives integer timesteps from N − 1 (= T) down, where diffusers' default for DDIM starts below T.
SCHEDULERS: dict[str, tuple[str, dict, int]] = {
    "dpmsolver++": ("DPMSolverMultistepScheduler", {}, 1),
    "unipc": ("UniPCMultistepScheduler", {}, 1),
    "ddim": ("DDIMScheduler", {"timestep_spacing": "trailing", "set_alpha_to_one": True, "clip_sample": False}, 1),
    "euler": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, 1),
    "heun": ("HeunDiscreteScheduler", {"timestep_spacing": "trailing"}, 2),
    "dpmsolver_sde": ("DPMSolverSDEScheduler", {"timestep_spacing": "trailing"}, 2),
}
KARRAS = ("dpmsolver++", "unipc", "euler", "heun", "dpmsolver_sde")  # those with `use_karras_sigmas`


def _diffusers():
    try:
        return importlib.import_module("diffusers")
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("sdegen.peers needs diffusers: pip install -e .[peers]") from e


def train_times(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """t_i = (i + 1)/N for i = 0..N − 1, float64 (N,)."""
    n = check_int(num_train_timesteps, "num_train_timesteps", 2)
    return torch.arange(1, n + 1, dtype=torch.float64) / n


def log_noise_ratios(sde: AbstractSDE, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """log σ̃(t_i) on the training timesteps, float64 (N,), increasing."""
    t = train_times(num_train_timesteps)
    return torch.log(sde.marginal_std(t) / sde.mean_scale(t))


def alphas_cumprod(sde: AbstractSDE, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """ᾱ_i = 1/(1 + σ̃(t_i)²), float64 (N,) (alpha(t_i)² for the VP SDE)."""
    return torch.sigmoid(-2 * log_noise_ratios(sde, num_train_timesteps))


def trained_betas(sde: AbstractSDE, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """β_i = 1 − ᾱ_i/ᾱ_{i−1} (ᾱ_{−1} = 1), float64 (N,): diffusers' `trained_betas` for this SDE."""
    abar = alphas_cumprod(sde, num_train_timesteps)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return (1 - abar / prev).numpy()


def time_of_timestep(sde: AbstractSDE, timestep, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """SDE time of diffusers timesteps τ ∈ [0, N − 1] (any shape, fractional allowed), float64.

    log σ̃ is interpolated linearly in τ between the training levels (the inverse of diffusers'
    `_sigma_to_t`), then inverted in closed form; integer τ = i gives (i + 1)/N.
    """
    tau = torch.as_tensor(timestep, dtype=torch.float64).cpu()
    n = num_train_timesteps
    if not ((tau >= 0) & (tau <= n - 1)).all():
        raise ValueError(f"diffusers timesteps must lie in [0, {n - 1}], got {tau.min().item()}..{tau.max().item()}")
    log_ratio = log_noise_ratios(sde, n)
    lo = tau.floor().clamp(max=n - 2).long()
    w = tau - lo
    t = sde.time_of_half_log_nsr(torch.lerp(log_ratio[lo], log_ratio[lo + 1], w))
    grid = train_times(n)  # integer timesteps (w = 0, or w = 1 at τ = N − 1) land on t_i exactly
    return torch.where(w == 0, grid[lo], torch.where(w == 1, grid[lo + 1], t))


class EpsilonAdapter:
    """A diffusers-style model eps(x_vp, timestep) from an sdegen score: ε̂ = −sigma(t)·score(x, t).

    Args:
        sde: the SDE the score belongs to.
        score: score(x, t), x: (batch, *data_shape) in the SDE's scaling, t: (batch,).
        num_train_timesteps: N of the discrete schedule.

    The score is called at x = alpha(t)·√(1 + σ̃²)·x_vp, t = `time_of_timestep(τ)`; see the module docstring.
    """

    def __init__(self, sde: AbstractSDE, score: Callable, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS):
        self.sde, self.score, self.num_train_timesteps = sde, score, num_train_timesteps

    def state_scale(self, t: float) -> float:
        """alpha(t)·√(1 + σ̃(t)²) = √(alpha² + sigma²): x = scale·x_vp."""
        tt = torch.tensor([t], dtype=torch.float64)
        return float(torch.hypot(self.sde.mean_scale(tt), self.sde.marginal_std(tt)))

    def __call__(self, x_vp: torch.Tensor, timestep) -> torch.Tensor:
        t = float(time_of_timestep(self.sde, torch.as_tensor(timestep).reshape(-1)[0], self.num_train_timesteps))
        x = self.state_scale(t) * x_vp
        sigma = float(self.sde.marginal_std(torch.tensor([t], dtype=torch.float64)))
        return -sigma * self.score(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))


def make_scheduler(
    name: str,
    sde: AbstractSDE,
    *,
    karras: bool = False,
    seed: int = 0,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
):
    """A diffusers scheduler of `SCHEDULERS` on this SDE's schedule (ε-prediction), Karras sigmas optional.

    DPMSolverSDEScheduler's noise comes from one torchsde Brownian tree over the whole batch, seeded by `seed`
    (its samples depend on the batch; a tree per sample, which diffusers allows, costs ~100× more).

    Raises:
        ValueError: unknown name (the message lists the known ones) or Karras sigmas where unsupported.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown diffusers scheduler {name!r}; choose one of {list(SCHEDULERS)}")
    if karras and name not in KARRAS:
        raise ValueError(f"scheduler {name!r} has no Karras sigmas; those that do: {list(KARRAS)}")
    cls_name, overrides, _ = SCHEDULERS[name]
    cls = getattr(_diffusers(), cls_name)
    config = {
        "num_train_timesteps": num_train_timesteps,
        "trained_betas": trained_betas(sde, num_train_timesteps).tolist(),
        "prediction_type": "epsilon",
        **overrides,
    }
    if karras:
        config["use_karras_sigmas"] = True
    if name == "dpmsolver_sde":
        config["noise_sampler_seed"] = seed
    return cls(**config)


def steps_for_nfe(name: str, nfe: int) -> int:
    """Scheduler steps whose model calls fit in `nfe`: nfe for 1-eval schedulers; (nfe + 1) // 2 for the
    2-eval ones (Heun, DPM-Solver SDE), whose last step to σ = 0 is a single Euler evaluation (2·steps − 1)."""
    nfe = check_int(nfe, "nfe", 1)
    per_step = SCHEDULERS[name][2]
    return nfe if per_step == 1 else max(1, (nfe + 1) // 2)


def sample_diffusers(
    sde: AbstractSDE,
    score: Callable,
    shape: tuple[int, ...],
    scheduler: str = "dpmsolver++",
    nfe: int = 20,
    seed: int | None = 0,
    *,
    karras: bool = False,
    labels=None,
    dtype: torch.dtype = torch.float32,
    device=None,
    score_source: str | None = None,
    data_range="unspecified",
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
) -> xr.Dataset:
    """Sample with a diffusers scheduler driven by an sdegen score; the path as a trajectory Dataset.

    Args:
        sde: the forward SDE of the score.
        score: score(x, t) -> tensor shaped like x; x: (batch, *data_shape), t: (batch,).
        shape: (batch, *data_shape).
        scheduler: a name from `SCHEDULERS`.
        nfe: the budget of score evaluations (`steps_for_nfe`); the count made is in attrs["nfe"].
        seed: per-sample starting noise as `sdegen.sample` draws it (sample i depends on (seed, i) only, except
            for DPMSolverSDE's Brownian tree, see `make_scheduler`).

    Other arguments:
        karras: Karras et al. (2022) sigmas (`KARRAS` schedulers).
        labels: (batch,) labels stored as the `label` coordinate.
        dtype, device: of the state.
        score_source, data_range: stored in the attributes.

    Returns:
        Dataset with the state at every grid level the scheduler visits (time from T down) and its final
        state at σ = 0 (time 0), in the SDE's scaling; attrs as `sdegen.sample` plus `scheduler`, `karras`.
    """
    seed = resolve_seed(seed)
    steps = steps_for_nfe(scheduler, nfe)
    device = torch.device("cpu") if device is None else torch.device(device)
    sched = make_scheduler(scheduler, sde, karras=karras, seed=seed, num_train_timesteps=num_train_timesteps)
    sched.set_timesteps(steps, device=device)
    guarded = GuardedScore(score, 1 / num_train_timesteps, sde.T)  # timesteps map into [1/N, T]
    model = EpsilonAdapter(sde, guarded, num_train_timesteps)
    # Standard-normal start, the same per-sample draws as sdegen's prior (divided by its std).
    z = prior_sample(sde, seed, tuple(shape), dtype, device) / sde.prior_std
    x = z * sched.init_noise_sigma
    times, states = [], []
    with torch.no_grad():
        for tau in sched.timesteps:
            x_in = sched.scale_model_input(x, tau)
            if getattr(sched, "state_in_first_order", True):  # a grid level, not a 2nd-order stage
                t = float(time_of_timestep(sde, tau.cpu(), num_train_timesteps))
                times.append(t)
                states.append((model.state_scale(t) * x_in).cpu().float().numpy())
            x = sched.step(model(x_in, tau), tau, x).prev_sample
    times.append(0.0)
    states.append(x.cpu().float().numpy())
    tt = torch.tensor(times, dtype=torch.float64)
    cls_name = SCHEDULERS[scheduler][0]
    attrs = {
        "sdegen_version": _version(), **sde.attrs(), "solver": f"diffusers:{scheduler}", "scheduler": cls_name,
        "karras": int(karras), "steps": steps, "nfe": guarded.nfe, "nfe_extra": 0, "seed": seed, "t_min": 0.0,
        "T": sde.T, "score_source": score_source or type(score).__qualname__, "data_range": _range_attr(data_range),
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "diffusers_version": _diffusers().__version__,
        "num_train_timesteps": num_train_timesteps, "complete": 1,
    }  # fmt: skip
    return make_trajectory(
        np.stack(states), tt.numpy(), sde.marginal_std(tt).numpy(), sde.mean_scale(tt).numpy(),
        labels=None if labels is None else np.asarray(labels), attrs=attrs,
    )  # fmt: skip


def _range_attr(data_range) -> str:
    return data_range if isinstance(data_range, str) else json.dumps([float(v) for v in data_range])


def _version() -> str:
    from sdegen import __version__

    return __version__


__all__ = [
    "KARRAS", "NUM_TRAIN_TIMESTEPS", "SCHEDULERS", "EpsilonAdapter", "alphas_cumprod", "log_noise_ratios",
    "make_scheduler", "sample_diffusers", "steps_for_nfe", "time_of_timestep", "train_times", "trained_betas",
]  # fmt: skip
