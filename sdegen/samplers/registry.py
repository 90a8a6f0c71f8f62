"""The solver registry: a literal dict from name to `SolverInfo` (function, grid and declared properties).

The declared properties are what the tests check: `stochastic`, the global `strong_order` and `weak_order`
(for the reverse SDE here, whose noise is additive; for deterministic solvers, the ODE order; None where the
notion does not apply, e.g. a Langevin corrector changes the path), and `evals_per_step`, the score
evaluations per step with the default options (None: adaptive), plus `extra_evals` made once per run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from sdegen.samplers import ddpm, fast_ode, ode, pc, sde_solvers
from sdegen.samplers._run import karras_grid, schedule_grid, uniform_grid


def _uniform(sde, steps: int, t_min: float, options: Mapping) -> torch.Tensor:
    return uniform_grid(sde, steps, t_min)


def _ode_grid(sde, steps: int, t_min: float, options: Mapping) -> torch.Tensor:
    return uniform_grid(sde, ode.ode_steps(steps, t_min, sde.T, options["step_size"]), t_min)


def _dpm_grid(sde, steps: int, t_min: float, options: Mapping) -> torch.Tensor:
    return schedule_grid(sde, steps, t_min, options["schedule"], options["rho"])


def _karras(sde, steps: int, t_min: float, options: Mapping) -> torch.Tensor:
    return karras_grid(sde, steps, t_min, options["rho"])


@dataclass(frozen=True)
class SolverInfo:
    """One registry entry.

    Attributes:
        fn: the sampler, fn(run, x, **options) -> x.
        family: "torchsde", "pc", "ode", "ddpm" or "fast_ode".
        stochastic: whether it injects noise (with default options).
        strong_order, weak_order: declared global orders (see the module docstring).
        evals_per_step: score evaluations per step with default options; None when adaptive.
        extra_evals: evaluations made once per run on top (reversible Heun's initial drift).
        options: accepted keyword options and their defaults.
        grid: grid(sde, steps, t_min, options) -> (N + 1,) float64 times from T to t_min.
        vp_only: defined for VPSDE / SubVPSDE only.
    """

    fn: Callable
    family: str
    stochastic: bool
    strong_order: float | None
    weak_order: float | None
    evals_per_step: int | None
    extra_evals: int = 0
    options: Mapping[str, object] = field(default_factory=dict)
    grid: Callable = _uniform
    vp_only: bool = False


_SDE = MappingProxyType(sde_solvers.SDE_OPTIONS)

SOLVERS: Mapping[str, SolverInfo] = MappingProxyType(
    {
        "euler": SolverInfo(sde_solvers.euler, "torchsde", True, 1.0, 1.0, 1, options=_SDE),
        "milstein": SolverInfo(sde_solvers.milstein, "torchsde", True, 1.0, 1.0, 1, options=_SDE),
        "srk": SolverInfo(sde_solvers.srk, "torchsde", True, 1.5, 1.5, 3, options=_SDE),
        "heun": SolverInfo(sde_solvers.heun, "torchsde", True, 1.0, 1.0, 2, options=_SDE),
        "midpoint": SolverInfo(sde_solvers.midpoint, "torchsde", True, 1.0, 1.0, 2, options=_SDE),
        "reversible_heun": SolverInfo(sde_solvers.reversible_heun, "torchsde", True, 1.0, 1.0, 1, 1, options=_SDE),
        "pc": SolverInfo(pc.pc, "pc", True, None, 1.0, 2, options=MappingProxyType(pc.PC_OPTIONS)),
        "ode": SolverInfo(ode.ode, "ode", False, 5.0, 5.0, None, options=MappingProxyType(ode.ODE_OPTIONS), grid=_ode_grid),
        "ancestral": SolverInfo(
            ddpm.ancestral, "ddpm", True, None, 1.0, 1, options=MappingProxyType(ddpm.ANCESTRAL_OPTIONS), vp_only=True
        ),
        "ddim": SolverInfo(ddpm.ddim, "ddpm", False, 1.0, 1.0, 1, options=MappingProxyType(ddpm.DDIM_OPTIONS), vp_only=True),
        "dpmpp_2m": SolverInfo(
            fast_ode.dpmpp_2m, "fast_ode", False, 2.0, 2.0, 1, options=MappingProxyType(fast_ode.DPM_OPTIONS), grid=_dpm_grid
        ),
        "edm_heun": SolverInfo(
            fast_ode.edm_heun, "fast_ode", False, 2.0, 2.0, 2, options=MappingProxyType(fast_ode.EDM_OPTIONS), grid=_karras
        ),
    }
)


def solvers() -> list[str]:
    """The names `sdegen.sample` accepts as `solver`."""
    return list(SOLVERS)
