"""The solver registry: a literal dict from name to `SolverInfo` (function, grid and declared properties).

The declared properties are what the tests check: `stochastic`, the global `strong_order` and `weak_order`
(for the reverse SDE here, whose noise is additive; for deterministic solvers, the ODE order, for `ode` that
of its default method dopri5; None where the notion does not apply, e.g. a Langevin corrector changes the
path), and `evals_per_step`, the score evaluations per step with the default options (None: adaptive), plus
`extra_evals` made once per run.

Reversible Heun (Kidger et al. 2021) is built for exact reversibility, not for dissipative equations: its
second state z drifts from y by e_{n+1} ≈ −(1 − J·h)·e_n (J the drift Jacobian), an undamped mode that grows
like exp(∫|J| dt) whatever the step size. The reverse SDE contracts strongly (∫|J| dt ≈ 9 for VE), so it
blows up below ~100 steps (variance ×40 at 25 steps on VP) and on multimodal data it is biased even with
fine steps (VE mixture: samples pulled towards the centre at 2000 steps). Use it for reversibility studies.
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
        extra_evals: evaluations made once per run on top (reversible Heun's initial drift; it also makes one
            per `resync_every` steps).
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


def _opts(defaults: dict) -> Mapping[str, object]:
    return MappingProxyType(dict(defaults))


_SDE = _opts(sde_solvers.SDE_OPTIONS)
_TORCHSDE = {"family": "torchsde", "stochastic": True, "options": _SDE}

# Orders for the reverse SDE here (additive noise): Euler–Maruyama and Milstein coincide (strong 1, weak 1);
# Heun and midpoint reach weak order 2 for additive noise (their ½ΔW·h term matches the weak-2 Taylor scheme's
# ∫∫dW ds in the first two moments); SRK is SRID2 (strong 1.5; torchsde quotes weak 1.5).
SOLVERS: Mapping[str, SolverInfo] = MappingProxyType(
    {
        "euler": SolverInfo(sde_solvers.euler, strong_order=1.0, weak_order=1.0, evals_per_step=1, **_TORCHSDE),
        "milstein": SolverInfo(sde_solvers.milstein, strong_order=1.0, weak_order=1.0, evals_per_step=1, **_TORCHSDE),
        "srk": SolverInfo(sde_solvers.srk, strong_order=1.5, weak_order=1.5, evals_per_step=3, **_TORCHSDE),
        "heun": SolverInfo(sde_solvers.heun, strong_order=1.0, weak_order=2.0, evals_per_step=2, **_TORCHSDE),
        "midpoint": SolverInfo(sde_solvers.midpoint, strong_order=1.0, weak_order=2.0, evals_per_step=2, **_TORCHSDE),
        "reversible_heun": SolverInfo(
            sde_solvers.reversible_heun, family="torchsde", stochastic=True, strong_order=1.0, weak_order=1.0,
            evals_per_step=1, extra_evals=1,
            options=_opts({**sde_solvers.SDE_OPTIONS, "resync_every": sde_solvers.RESYNC_EVERY}),
        ),
        "pc": SolverInfo(
            pc.pc, family="pc", stochastic=True, strong_order=None, weak_order=1.0, evals_per_step=2,
            options=_opts(pc.PC_OPTIONS),
        ),
        "ode": SolverInfo(
            ode.ode, family="ode", stochastic=False, strong_order=5.0, weak_order=5.0, evals_per_step=None,
            options=_opts(ode.ODE_OPTIONS), grid=_ode_grid,
        ),
        "ancestral": SolverInfo(
            ddpm.ancestral, family="ddpm", stochastic=True, strong_order=None, weak_order=1.0, evals_per_step=1,
            options=_opts(ddpm.ANCESTRAL_OPTIONS), vp_only=True,
        ),
        "ddim": SolverInfo(
            ddpm.ddim, family="ddpm", stochastic=False, strong_order=1.0, weak_order=1.0, evals_per_step=1,
            options=_opts(ddpm.DDIM_OPTIONS), vp_only=True,
        ),
        "dpmpp_2m": SolverInfo(
            fast_ode.dpmpp_2m, family="fast_ode", stochastic=False, strong_order=2.0, weak_order=2.0, evals_per_step=1,
            options=_opts(fast_ode.DPM_OPTIONS), grid=_dpm_grid,
        ),
        "edm_heun": SolverInfo(
            fast_ode.edm_heun, family="fast_ode", stochastic=False, strong_order=2.0, weak_order=2.0, evals_per_step=2,
            options=_opts(fast_ode.EDM_OPTIONS), grid=_karras,
        ),
    }
)  # fmt: skip


def solvers() -> list[str]:
    """The names `sdegen.sample` accepts as `solver`."""
    return list(SOLVERS)
