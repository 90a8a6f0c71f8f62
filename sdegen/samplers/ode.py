"""The probability-flow ODE solved by torchdiffeq (Song et al. 2021, eq. 13; Chen et al. 2018).

dx/dt = f(t)·x − ½·g(t)²·score(x, t) is integrated from T down to t_min by `torchdiffeq.odeint` with any
of its explicit methods. Fixed-grid methods step exactly on the run's uniform grid (`steps` intervals, or
⌈(T − t_min)/step_size⌉ of them when `step_size` is given). Adaptive methods integrate one saved segment
per call, with `step_t` at the segment end so that no step crosses it (torchdiffeq otherwise steps past
the end and interpolates back, evaluating the score below t_min), and an explicit `first_step` (5% of the
first segment, then the last accepted step size) because torchdiffeq's initial-step heuristic probes f at
an unbounded distance. Every time torchdiffeq asks for is checked against [t_min, T];
any outside it (clamped by `ProbabilityFlowODE`) is counted in the attribute `clamped_evals`.
"""

from __future__ import annotations

import torch
from torchdiffeq import odeint

from sdegen._checks import check_positive

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")
ODE_OPTIONS = {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "step_size": None}

_SLACK = 1e-9


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


class _AdaptiveGuardedFlow(_GuardedFlow):
    """Also remember the accepted step sizes (torchdiffeq calls this hook for adaptive solvers only)."""

    accepted: list[float]

    def callback_accept_step(self, t0, y0, dt):
        self.accepted.append(abs(float(dt)))


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
    adaptive = method in ADAPTIVE_METHODS
    guard = (_AdaptiveGuardedFlow if adaptive else _GuardedFlow)(flow, run.t_min, run.sde.T)
    ts = run.ts
    first_step = None
    for a, b in run.segments():
        run.callback(a, x)
        if adaptive:
            guard.accepted = []
            length = float(ts[a] - ts[b])
            # torchdiffeq's own initial-step guess probes f at t0 + h0 with h0 unbounded (seen: t = −2.2), so
            # start every segment from a given step: 5% of the first segment, then the last accepted step.
            opts = {"step_t": ts[b : b + 1], "first_step": min(first_step or 0.05 * length, length)}
            x = odeint(guard, x, ts[[a, b]], method=method, rtol=rtol, atol=atol, options=opts)[-1]
            # The last accepted step was cut short at the segment end; the one before is the controller's.
            first_step = max(guard.accepted[-2:]) if guard.accepted else None
        else:
            x = odeint(guard, x, ts[a : b + 1], method=method)[-1]
    run.diagnostics["clamped_evals"] = guard.outside
    return x
