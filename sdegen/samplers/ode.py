"""The probability-flow ODE solved by torchdiffeq (Song et al. 2021, eq. 13; Chen et al. 2018).

dx/dt = f(t)·x − ½·g(t)²·score(x, t) is integrated from T down to t_min by `torchdiffeq.odeint` with any
of its explicit methods. Fixed-grid methods step exactly on the run's uniform grid (`steps` intervals, or
⌈(T − t_min)/step_size⌉ of them when `step_size` is given: `ode_grid`), one `odeint` call per saved
segment so that each saved state is written as soon as it is computed. Adaptive methods make one `odeint`
call over all saved times: the step-size controller runs undisturbed from T to t_min (no restart, no extra
evaluation per saved state) and the saved states in between come from the method's dense output, so the
final sample does not depend on `save_every`; they are recorded (and streamed to `out=`) when the solve
ends. `step_t = [t_min]` makes the last step land on t_min (torchdiffeq otherwise steps past the end and
interpolates back, evaluating the score below t_min), and an explicit `first_step` (0.5% of T − t_min)
replaces torchdiffeq's initial-step heuristic, which probes f at an unbounded distance.

torchdiffeq integrates `ProbabilityFlowODE` directly: every torchdiffeq method evaluates the function first
at the start of an `odeint` call, and the flow keeps the score of that evaluation (`first_score`), which
gives Tweedie's x0_hat of the start state; any time torchdiffeq asks for outside [t_min, T] (clamped by
the flow) is counted in the attribute `clamped_evals`.
Shared solver signature as in `fast_ode`, plus `saved` (the saved grid indices) and `diagnostics`.
"""

from __future__ import annotations

import torch
from torchdiffeq import odeint

from sdegen._checks import check_positive
from sdegen.grids import coefficients, uniform
from sdegen.reverse import ADAPTIVE_METHODS, FIXED_METHODS
from sdegen.score import tweedie

FIRST_STEP = 0.005  # adaptive methods start with a step of this fraction of T − t_min


def ode_grid(sde, steps: int, t_min: float, *, step_size: float | None = None) -> torch.Tensor:
    """The uniform grid with `steps` intervals, or ⌈(T − t_min)/step_size⌉ of them when step_size is given."""
    if step_size is not None:
        h = check_positive(step_size, "step_size")
        steps = max(1, int(-(-(sde.T - t_min) // h)))
    return uniform(sde, steps, t_min)


def check_method(method: str) -> None:
    if method not in ADAPTIVE_METHODS + FIXED_METHODS:
        raise ValueError(
            f"unknown torchdiffeq method {method!r}; known: adaptive {list(ADAPTIVE_METHODS)}, "
            f"fixed-grid {list(FIXED_METHODS)}"
        )


def ode(sde, score, x, ts, *, callback, saved, diagnostics, method: str = "dopri5", rtol: float = 1e-5,
        atol: float = 1e-5):  # fmt: skip
    """Probability-flow ODE (Song et al. 2021, eq. 13) with a torchdiffeq method (Chen et al. 2018)."""
    check_method(method)
    rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
    alpha, sigma = coefficients(sde, ts)
    flow = sde.probability_flow(score, t_min=float(ts[-1]))
    if method in ADAPTIVE_METHODS:
        opts = {"step_t": ts[-1:], "first_step": FIRST_STEP * float(ts[0] - ts[-1])}
        path = odeint(flow, x, ts[list(saved)], method=method, rtol=rtol, atol=atol, options=opts)
        callback(saved[0], x, tweedie(x, flow.first_score, alpha[0], sigma[0]))
        for k, x_k in zip(saved[1:-1], path[1:-1], strict=True):
            callback(k, x_k, None)  # inside the solve: no evaluation at exactly this state
        x = path[-1]
    else:
        for a, b in zip(saved[:-1], saved[1:], strict=True):
            flow.restart()
            x_next = odeint(flow, x, ts[a : b + 1], method=method)[-1]
            callback(a, x, tweedie(x, flow.first_score, alpha[a], sigma[a]))
            x = x_next
    diagnostics["clamped_evals"] = flow.clamped
    return x
