"""The probability-flow ODE solved by torchdiffeq (Song et al. 2021, eq. 13; Chen et al. 2018).

dx/dt = f(t)·x − ½·g(t)²·score(x, t) is integrated from T down to t_min by `torchdiffeq.odeint` with any
of its explicit methods. Fixed-grid methods step exactly on the run's uniform grid (`steps` intervals, or
⌈(T − t_min)/step_size⌉ of them when `step_size` is given), one `odeint` call per saved segment so that
each saved state is written as soon as it is computed. Adaptive methods make one `odeint` call over all
saved times: the step-size controller runs undisturbed from T to t_min (no restart, no extra evaluation
per saved state) and the saved states in between come from the method's dense output, so the final
sample does not depend on `save_every`; they are recorded (and streamed to `out=`) when the solve ends.
`step_t = [t_min]` makes the last step land on t_min (torchdiffeq otherwise steps past the end and
interpolates back, evaluating the score below t_min), and an explicit `first_step` (0.5% of T − t_min)
replaces torchdiffeq's initial-step heuristic, which probes f at an unbounded distance. Every time
torchdiffeq asks for is checked against [t_min, T]; any outside it (clamped by `ProbabilityFlowODE`) is
counted in the attribute `clamped_evals`.
"""

from __future__ import annotations

import torch
from torchdiffeq import odeint

from sdegen._checks import check_positive

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")
ODE_OPTIONS = {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "step_size": None}

_SLACK = 1e-9
FIRST_STEP = 0.005  # adaptive methods start with a step of this fraction of T − t_min


class _GuardedFlow(torch.nn.Module):
    """Count ODE evaluations requested outside [t_min, T] before the PF ODE clamps them."""

    def __init__(self, flow, t_min: float, T: float):
        super().__init__()
        self.flow, self.t_min, self.T = flow, t_min, T
        self.outside = 0

    def forward(self, t, x):
        tf = float(t)
        if tf < self.t_min - _SLACK or tf > self.T + _SLACK:
            self.outside += 1
        return self.flow(t, x)


def ode_steps(steps: int, t_min: float, T: float, step_size) -> int:
    """Number of grid intervals: `steps`, or ⌈(T − t_min)/step_size⌉ when step_size is given."""
    if step_size is None:
        return steps
    h = check_positive(step_size, "step_size")
    return max(1, int(-(-(T - t_min) // h)))


def check_method(method: str) -> None:
    if method not in ADAPTIVE_METHODS + FIXED_METHODS:
        raise ValueError(
            f"unknown torchdiffeq method {method!r}; known: adaptive {list(ADAPTIVE_METHODS)}, "
            f"fixed-grid {list(FIXED_METHODS)}"
        )


def ode(run, x, *, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, step_size=None):
    """Probability-flow ODE (Song et al. 2021, eq. 13) with a torchdiffeq method (Chen et al. 2018)."""
    check_method(method)
    rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
    flow = run.sde.probability_flow(run.raw_score, t_min=run.t_min)
    guard = _GuardedFlow(flow, run.t_min, run.sde.T)
    ts = run.ts
    if method in ADAPTIVE_METHODS:
        saved = list(run.save_idx)
        run.callback(saved[0], x)  # before the solve: its first evaluation is at (x, T)
        opts = {"step_t": ts[-1:], "first_step": FIRST_STEP * float(ts[0] - ts[-1])}
        path = odeint(guard, x, ts[saved], method=method, rtol=rtol, atol=atol, options=opts)
        for k, x_k in zip(saved[1:-1], path[1:-1], strict=True):
            run.callback(k, x_k)
        x = path[-1]
    else:
        for a, b in run.segments():
            run.callback(a, x)
            x = odeint(guard, x, ts[a : b + 1], method=method)[-1]
    run.diagnostics["clamped_evals"] = guard.outside
    return x
