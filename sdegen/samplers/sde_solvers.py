"""The torchsde family: reverse-time SDE solves with torchsde's own stepping methods.

The reverse SDE dx = [f(t)x − g(t)²·score] dt + g(t) dw̄ is integrated by `torchsde.sdeint` on
`sde.reverse(score)`, i.e. in the flipped time s = T − t on flattened (batch, d) state. Its noise is
additive (g depends on t only), so Itô and Stratonovich forms coincide and Stratonovich methods (`heun`,
`midpoint`, `reversible_heun`) solve the same equation. The strong orders quoted in the registry are
torchsde's for additive noise.

Fixed steps: one `sdeint` call per grid step (ts = [s_k, s_{k+1}], dt hint 2h so torchsde takes exactly
one step; a single call over the whole grid would insert sliver steps where accumulated float time misses
a grid point). torchsde integrates `ReverseSDE` directly: after `restart()` it answers torchsde's shape
check with zeros and reuses the drift of a repeated (s, y) (SRK), so neither costs a score evaluation, and
it keeps the score of the first real evaluation of each call. Every torchsde method evaluates the drift
first at the start (s_k, y_k) of its step, except reversible Heun, which carries its own second state and
does so only when that state is (re)initialised; so that score gives Tweedie's x0_hat of y_k.
The Brownian motion (`brownian=`):
* "grid" (default for fixed steps): `GridBrownian`, per-sample streams, so sample i is the same whatever
  the batch size; it answers grid-interval queries only.
* "interval" (default for adaptive steps): one `torchsde.BrownianInterval(t0, t1, size, dt=h, entropy)` for
  the batch, the fast torchsde way.
* "tree": a torchsde Brownian interval with a halfway tree, so the same seed gives the same Brownian path at
  every step count 2^k (what strong-convergence studies need).
Adaptive steps (`adaptive=True`, torchsde's step doubling with `rtol`, `atol`, `dt_min`) integrate one
saved segment per call.
Shared solver signature as in `fast_ode`, plus `seed` (Brownian motion) and `saved` (segments).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torchsde

from sdegen._checks import check_int, check_positive
from sdegen.grids import coefficients
from sdegen.samplers._noise import NOISE, FloatTimeBrownian, GridBrownian, derive_seed
from sdegen.score import tweedie

BROWNIAN_KINDS = ("grid", "interval", "tree")
# Reversible Heun carries a second state z beside y. Its parasitic mode e = y − z obeys e_{n+1} ≈ −(1 − J·h)·e_n
# for drift Jacobian J, so |e| grows like exp(∫|J| dt) whatever the step size: ≈ e⁹ on the VE reverse SDE
# (∫ dσ²/(s² + σ²) from σ = 50 down to 0.01), which biases mixture samples far beyond sampling error at any
# step count (within-mode std z ≈ +340 at 200 and 1000 steps, seen). With fixed steps, `resync_every` = m
# resets z to y every m steps (one extra, counted score evaluation each), bounding the growth to that over m
# steps; 10 removes the bias on the VE and VP mixture tests at 200 steps. `resync_every=0` is torchsde's
# reversible Heun unchanged (algebraically reversible, as its adjoint needs). Adaptive runs never resync.
RESYNC_EVERY = 10


def _brownian(kind: str, seed: int, s_grid: list[float], y: torch.Tensor):
    """The Brownian motion for `kind` ("grid", "interval" or "tree") on flat state y; see the module docstring."""
    size = tuple(y.shape)
    if kind == "grid":
        return GridBrownian(s_grid, seed, size, y.dtype, y.device)
    common = {
        "t0": s_grid[0], "t1": s_grid[-1], "size": size, "dtype": y.dtype, "device": y.device,
        "entropy": derive_seed(seed, NOISE, 0) % (2**63),
        # Always with space-time Lévy area (SRK needs it): the Brownian path then does not depend on the method.
        "levy_area_approximation": "space-time",
    }  # fmt: skip
    h = s_grid[1] - s_grid[0]
    if kind == "interval":
        return FloatTimeBrownian(torchsde.BrownianInterval(dt=h, **common))
    # Halfway tree: splits only at midpoints, so W at a dyadic point of [0, T − t_min] does not depend on the
    # query pattern; times are resolved to tol (torchsde rounds them to ⌈−log10 tol⌉ digits).
    return FloatTimeBrownian(torchsde.BrownianInterval(tol=min(1e-6, 1e-3 * h), halfway_tree=True, **common))


def _sdeint(sde, score, x, ts, callback, seed, saved, method, sde_type, *, adaptive, rtol, atol, dt_min, brownian,
            method_options=None, resync_every=0):  # fmt: skip
    """Integrate the reverse SDE with a torchsde method from ts[0] = T down to t_min = ts[-1].

    resync_every > 0 restarts the solver state (`extra_solver_state`) every that many fixed steps.
    """
    adaptive = _check_flag(adaptive, "adaptive")
    kind = brownian or ("interval" if adaptive else "grid")
    if kind not in BROWNIAN_KINDS:
        raise ValueError(f"brownian must be one of {list(BROWNIAN_KINDS)}, got {kind!r}")
    if adaptive and kind == "grid":
        raise ValueError("adaptive=True needs brownian='interval' or 'tree' (adaptive steps query off the grid)")
    rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
    dt_min = check_positive(dt_min, "dt_min")
    alpha, sigma = coefficients(sde, ts)
    t_min = float(ts[-1])
    rev = sde.reverse(score, data_shape=x.shape[1:], sde_type=sde_type, t_min=t_min)
    s_grid = (sde.T - ts).tolist()  # flipped time s = T − t, increasing
    s_grid[0] = 0.0
    s_ts = torch.tensor(s_grid, dtype=torch.float64)
    y = x.reshape(x.shape[0], -1)  # (batch, d)
    bm = _brownian(kind, seed, s_grid, y)
    extra = None

    def report(k: int, y_k: torch.Tensor, at_start: bool) -> None:
        x_k = y_k.reshape(x.shape)
        at_start = at_start and rev.first_score is not None
        callback(k, x_k, tweedie(x_k, rev.first_score, alpha[k], sigma[k]) if at_start else None)

    if not adaptive:
        for k in range(len(ts) - 1):
            if resync_every and k and k % resync_every == 0:
                extra = None  # torchsde re-initialises its solver state from y at s_k (one evaluation)
            at_start = method != "reversible_heun" or extra is None
            h = s_grid[k + 1] - s_grid[k]
            rev.restart()
            ys, extra = torchsde.sdeint(
                rev, y, s_ts[k : k + 2], bm=bm, method=method, dt=2 * h, options=method_options,
                extra=True, extra_solver_state=extra,
            )  # fmt: skip
            report(k, y, at_start)
            y = ys[-1]
        return y.reshape(x.shape)
    for a, b in zip(saved[:-1], saved[1:], strict=True):
        at_start = method != "reversible_heun" or extra is None
        rev.restart()
        with warnings.catch_warnings():
            # torchsde warns about adaptive Euler with "non-additive" noise because the SDE declares diagonal
            # noise (the only cheap layout); g here depends on t only, so the noise is additive.
            warnings.filterwarnings("ignore", message="Numerical solution is not guaranteed to converge")
            ys, extra = torchsde.sdeint(
                rev, y, s_ts[[a, b]], bm=bm, method=method, dt=s_grid[1] - s_grid[0], adaptive=True, rtol=rtol,
                atol=atol, dt_min=dt_min, options=method_options, extra=True, extra_solver_state=extra,
            )  # fmt: skip
        report(a, y, at_start)
        y = ys[-1]
    return y.reshape(x.shape)


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _method(name: str, sde_type: str, doc: str, method_options: dict | None = None):
    """The sampler for torchsde method `name`; all share the torchsde options in one signature."""

    def solve(sde, score, x, ts, *, callback, seed, saved, adaptive: bool = False, rtol: float = 1e-3,
              atol: float = 1e-3, dt_min: float = 1e-5, brownian: str | None = None):  # fmt: skip
        return _sdeint(sde, score, x, ts, callback, seed, saved, name, sde_type, adaptive=adaptive, rtol=rtol,
                       atol=atol, dt_min=dt_min, brownian=brownian, method_options=method_options)  # fmt: skip

    solve.__name__ = solve.__qualname__ = name
    solve.__doc__ = doc
    return solve


euler = _method("euler", "ito", "Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. 6; Kloeden–Platen 10.2).")
# g does not depend on x, so the derivative-free correction (g(y') − g(y))·(ΔW² − h)/(2√h) is exactly zero.
milstein = _method(
    "milstein", "ito", "Derivative-free Milstein (Kloeden & Platen 1992, 11.1); equals Euler–Maruyama here.",
    {"grad_free": True},
)  # fmt: skip
srk = _method("srk", "ito", "Stochastic Runge–Kutta, Rößler 2010 (SIAM J. Numer. Anal. 48) SRID2, strong order 1.5.")
heun = _method("heun", "stratonovich", "Stochastic Heun on the Stratonovich form (Rümelin 1982, SIAM J. Numer. Anal.).")
midpoint = _method(
    "midpoint", "stratonovich", "Stochastic midpoint rule (Burrage, Burrage & Tian 2004, Proc. R. Soc. A)."
)


def reversible_heun(sde, score, x, ts, *, callback, seed, saved, resync_every: int = RESYNC_EVERY,
                    adaptive: bool = False, rtol: float = 1e-3, atol: float = 1e-3, dt_min: float = 1e-5,
                    brownian: str | None = None):  # fmt: skip
    """Reversible Heun (Kidger et al. 2021, Alg. 1), its second state resynchronised every `resync_every` steps."""
    resync_every = check_int(resync_every, "resync_every (0: never)", 0)
    return _sdeint(sde, score, x, ts, callback, seed, saved, "reversible_heun", "stratonovich", adaptive=adaptive,
                   rtol=rtol, atol=atol, dt_min=dt_min, brownian=brownian, resync_every=resync_every)  # fmt: skip
