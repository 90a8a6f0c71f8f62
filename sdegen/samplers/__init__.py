"""Samplers: `sample` drives any solver in the `SOLVERS` registry and records the path.

Families (one module each): torchsde reverse-SDE methods (`sde_solvers`), predictor–corrector (`pc`),
torchdiffeq probability-flow ODE (`ode`), DDPM/DDIM for the VP family (`ddpm`), fast PF-ODE solvers
(`fast_ode`) and their stochastic variants (`fast_sde`). Every sampler is a plain function
fn(sde, score, x, ts, *, callback, ...) (see `registry`).
"""

from sdegen.samplers._noise import sample_offset
from sdegen.samplers.api import sample
from sdegen.samplers.registry import SOLVERS, SolverInfo, solvers

__all__ = ["SOLVERS", "SolverInfo", "sample", "sample_offset", "solvers"]
