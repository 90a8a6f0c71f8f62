"""The solver registry: a literal dict from name to `SolverInfo` (function, grid and declared properties).

A solver is a plain function fn(sde, score, x, ts, *, callback, [seed], [saved], [diagnostics], **options)
(see `fast_ode` for the shape) and names the grid function it runs on, grid(sde, steps, t_min, **options)
(`sdegen.grids`). The options a solver accepts, and their defaults, are the keyword parameters with
defaults of those two signatures, read from them (`SolverInfo.options`): declared once, nowhere else.

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

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType

from sdegen import grids
from sdegen.samplers import ddpm, fast_ode, fast_sde, ode, pc, sde_solvers

# Arguments `sdegen.sample` supplies to a solver that declares them (not user options).
RUN_ARGUMENTS = ("callback", "seed", "saved", "diagnostics")


def _keyword_defaults(fn: Callable) -> dict[str, object]:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and name not in RUN_ARGUMENTS
    }


@dataclass(frozen=True)
class SolverInfo:
    """One registry entry.

    Attributes:
        fn: the sampler (see the module docstring).
        family: "torchsde", "pc", "ode", "ddpm", "fast_ode" or "fast_sde".
        stochastic: whether it injects noise (with default options).
        strong_order, weak_order: declared global orders (see the module docstring).
        evals_per_step: score evaluations per step with default options; None when adaptive.
        extra_evals: evaluations made (> 0) or saved (< 0) once per run on top of evals_per_step × steps:
            reversible Heun's initial drift (+1; it also makes one per `resync_every` steps), EDM's Euler last
            step (−1).
        grid: grid(sde, steps, t_min, **grid options) -> (N + 1,) float64 times from T to t_min.
        vp_only: defined for the VP family only (`AbstractSDE.vp_family`).
    """

    fn: Callable
    family: str
    stochastic: bool
    strong_order: float | None
    weak_order: float | None
    evals_per_step: int | None
    extra_evals: int = 0
    grid: Callable = grids.uniform
    vp_only: bool = False

    @cached_property
    def grid_options(self) -> Mapping[str, object]:
        """The grid function's options and defaults."""
        return MappingProxyType(_keyword_defaults(self.grid))

    @cached_property
    def options(self) -> Mapping[str, object]:
        """Every option the solver accepts (its own and its grid's) with its default."""
        return MappingProxyType({**_keyword_defaults(self.fn), **self.grid_options})

    @cached_property
    def run_arguments(self) -> tuple[str, ...]:
        """Which of `RUN_ARGUMENTS` the solver takes besides `callback`."""
        params = inspect.signature(self.fn).parameters
        return tuple(name for name in RUN_ARGUMENTS[1:] if name in params)


_TORCHSDE = {"family": "torchsde", "stochastic": True}

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
            sde_solvers.reversible_heun, strong_order=1.0, weak_order=1.0, evals_per_step=1, extra_evals=1,
            **_TORCHSDE,
        ),
        "pc": SolverInfo(pc.pc, family="pc", stochastic=True, strong_order=None, weak_order=1.0, evals_per_step=2),
        "ode": SolverInfo(
            ode.ode, family="ode", stochastic=False, strong_order=5.0, weak_order=5.0, evals_per_step=None,
            grid=ode.ode_grid,
        ),
        "ancestral": SolverInfo(
            ddpm.ancestral, family="ddpm", stochastic=True, strong_order=None, weak_order=1.0, evals_per_step=1,
            vp_only=True,
        ),
        "ddim": SolverInfo(
            ddpm.ddim, family="ddpm", stochastic=False, strong_order=1.0, weak_order=1.0, evals_per_step=1,
            vp_only=True,
        ),
        "dpmpp_2m": SolverInfo(
            fast_ode.dpmpp_2m, family="fast_ode", stochastic=False, strong_order=2.0, weak_order=2.0, evals_per_step=1,
            grid=grids.by_schedule,
        ),
        "edm_heun": SolverInfo(
            fast_ode.edm_heun, family="fast_ode", stochastic=False, strong_order=2.0, weak_order=2.0, evals_per_step=2,
            extra_evals=-1, grid=grids.karras,
        ),
        "unipc": SolverInfo(
            fast_ode.unipc, family="fast_ode", stochastic=False, strong_order=3.0, weak_order=3.0, evals_per_step=1,
            grid=grids.by_schedule,
        ),
        # The stochastic fast solvers (`fast_sde`): the fast-ODE data-prediction form plus noise. Their noise
        # is drawn per step (no Brownian path shared across step counts), so no strong order; weak orders are
        # those of the variance on the linear Gaussian case (2M and 3M SDE alike: the noise caps 3M at 2; EDM's
        # once γ = s_churn/N is below its cap √2 − 1), tests/test_fast_solvers.py.
        "dpmpp_2m_sde": SolverInfo(
            fast_sde.dpmpp_2m_sde, family="fast_sde", stochastic=True, strong_order=None, weak_order=2.0,
            evals_per_step=1, grid=grids.by_schedule,
        ),
        "dpmpp_3m_sde": SolverInfo(
            fast_sde.dpmpp_3m_sde, family="fast_sde", stochastic=True, strong_order=None, weak_order=2.0,
            evals_per_step=1, grid=grids.by_schedule,
        ),
        "edm_sde": SolverInfo(
            fast_sde.edm_sde, family="fast_sde", stochastic=True, strong_order=None, weak_order=2.0, evals_per_step=2,
            extra_evals=-1, grid=grids.karras,
        ),
    }
)  # fmt: skip


def solvers() -> list[str]:
    """The names `sdegen.sample` accepts as `solver`."""
    return list(SOLVERS)
