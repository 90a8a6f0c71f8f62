"""The torchsde family: reverse-time SDE solves with torchsde's own stepping methods.

The reverse SDE dx = [f(t)x − g(t)²·score] dt + g(t) dw̄ is integrated by `torchsde.sdeint` on
`sde.reverse(score)`, i.e. in the flipped time s = T − t on flattened (batch, d) state. Its noise is
additive (g depends on t only), so Itô and Stratonovich forms coincide and Stratonovich methods (`heun`,
`midpoint`, `reversible_heun`) solve the same equation. The strong orders quoted in the registry are
torchsde's for additive noise.

Fixed steps: one `sdeint` call per grid step (ts = [s_k, s_{k+1}], dt hint 2h so torchsde takes exactly
one step; a single call over the whole grid would insert sliver steps where accumulated float time misses
a grid point). torchsde evaluates the drift once per call to check shapes and the SRK tableau re-evaluates
stages: `_MemoSDE` answers the first with zeros and returns a stored drift for a repeated (s, y), so neither
costs a score evaluation.
The Brownian motion (`brownian=`):
* "grid" (default for fixed steps): `GridBrownian`, per-sample streams, so sample i is the same whatever
  the batch size; it answers grid-interval queries only.
* "interval" (default for adaptive steps): one `torchsde.BrownianInterval(t0, t1, size, dt=h, entropy)` for
  the batch, the fast torchsde way.
* "tree": a torchsde Brownian interval with a halfway tree, so the same seed gives the same Brownian path at
  every step count 2^k (what strong-convergence studies need).
Adaptive steps (`adaptive=True`, torchsde's step doubling with `rtol`, `atol`, `dt_min`) integrate one
saved segment per call.
"""

from __future__ import annotations

import warnings

import torch
import torchsde

from sdegen._checks import check_positive
from sdegen.samplers._noise import NOISE, FloatTimeBrownian, GridBrownian, derive_seed

SDE_OPTIONS = {"adaptive": False, "rtol": 1e-3, "atol": 1e-3, "dt_min": 1e-5, "brownian": None}
BROWNIAN_KINDS = ("grid", "interval", "tree")
# Reversible Heun carries a second state z beside y. Its parasitic mode e = y − z obeys e_{n+1} ≈ −(1 − J·h)·e_n
# for drift Jacobian J, so |e| grows like exp(∫|J| dt) whatever the step size: ≈ e⁹ on the VE reverse SDE
# (∫ dσ²/(s² + σ²) from σ = 50 down to 0.01), which biases mixture samples far beyond sampling error at any
# step count (within-mode std z ≈ +340 at 200 and 1000 steps, seen). With fixed steps, `resync_every` = m
# resets z to y every m steps (one extra, counted score evaluation each), bounding the growth to that over m
# steps; 10 removes the bias on the VE and VP mixture tests at 200 steps. `resync_every=0` is torchsde's
# reversible Heun unchanged (algebraically reversible, as its adjoint needs). Adaptive runs never resync.
RESYNC_EVERY = 10


class _MemoSDE(torch.nn.Module):
    """Delegate f and g to a torchsde SDE, reusing the drift for a repeated (time, state) pair.

    `sdeint` first calls f once only to check its output shape (`check_contract`); after `expect_check()`
    that call is answered with zeros of the right shape instead of a score evaluation.
    """

    def __init__(self, sde, size: int = 4):
        super().__init__()
        self.inner = sde
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        self._cache: list[tuple[float, torch.Tensor, torch.Tensor]] = []
        self._size = size
        self._check_pending = False

    def expect_check(self) -> None:
        self._check_pending = True

    def f(self, s, y):
        if self._check_pending:
            self._check_pending = False
            return torch.zeros_like(y)
        key = float(s)
        for ks, ky, out in self._cache:
            if ks == key and (ky is y or torch.equal(ky, y)):
                return out
        out = self.inner.f(s, y)
        self._cache = [*self._cache[-(self._size - 1) :], (key, y, out)]
        return out

    def g(self, s, y):
        return self.inner.g(s, y)


def _brownian(run, kind: str, s_grid: list[float], size):
    """The Brownian motion for `kind` ("grid", "interval" or "tree"); see the module docstring."""
    if kind == "grid":
        return GridBrownian(s_grid, run.seed, size, run.dtype, run.device)
    common = {
        "t0": s_grid[0], "t1": s_grid[-1], "size": size, "dtype": run.dtype, "device": run.device,
        "entropy": derive_seed(run.seed, NOISE, 0) % (2**63),
        # Always with space-time Lévy area (SRK needs it): the Brownian path then does not depend on the method.
        "levy_area_approximation": "space-time",
    }  # fmt: skip
    h = s_grid[1] - s_grid[0]
    if kind == "interval":
        return FloatTimeBrownian(torchsde.BrownianInterval(dt=h, **common))
    # Halfway tree: splits only at midpoints, so W at a dyadic point of [0, T − t_min] does not depend on the
    # query pattern; times are resolved to tol (torchsde rounds them to ⌈−log10 tol⌉ digits).
    return FloatTimeBrownian(torchsde.BrownianInterval(tol=min(1e-6, 1e-3 * h), halfway_tree=True, **common))


def _sdeint(run, x, method: str, sde_type: str, options: dict, method_options: dict | None = None, resync_every=0):
    """Integrate the reverse SDE with a torchsde method from run.ts[0] = T down to t_min.

    resync_every > 0 restarts the solver state (`extra_solver_state`) every that many fixed steps.
    """
    adaptive = bool(options["adaptive"])
    kind = options["brownian"] or ("interval" if adaptive else "grid")
    if kind not in BROWNIAN_KINDS:
        raise ValueError(f"brownian must be one of {list(BROWNIAN_KINDS)}, got {kind!r}")
    if adaptive and kind == "grid":
        raise ValueError("adaptive=True needs brownian='interval' or 'tree' (adaptive steps query off the grid)")
    rtol, atol = check_positive(options["rtol"], "rtol"), check_positive(options["atol"], "atol")
    dt_min = check_positive(options["dt_min"], "dt_min")
    rev = _MemoSDE(run.sde.reverse(run.raw_score, data_shape=run.data_shape, sde_type=sde_type, t_min=run.t_min))
    s_grid = (run.sde.T - run.ts).tolist()  # flipped time s = T − t, increasing
    s_grid[0] = 0.0
    s_ts = torch.tensor(s_grid, dtype=torch.float64)
    y = x.reshape(x.shape[0], -1)  # (batch, d)
    bm = _brownian(run, kind, s_grid, tuple(y.shape))
    extra = None
    if not adaptive:
        for k in range(run.steps):
            run.callback(k, y.reshape(x.shape))
            if resync_every and k and k % resync_every == 0:
                extra = None  # torchsde re-initialises its solver state from y at s_k (one evaluation)
            h = s_grid[k + 1] - s_grid[k]
            rev.expect_check()
            ys, extra = torchsde.sdeint(
                rev, y, s_ts[k : k + 2], bm=bm, method=method, dt=2 * h, options=method_options,
                extra=True, extra_solver_state=extra,
            )  # fmt: skip
            y = ys[-1]
        return y.reshape(x.shape)
    for a, b in run.segments():
        run.callback(a, y.reshape(x.shape))
        rev.expect_check()
        with warnings.catch_warnings():
            # torchsde warns about adaptive Euler with "non-additive" noise because the SDE declares diagonal
            # noise (the only cheap layout); g here depends on t only, so the noise is additive.
            warnings.filterwarnings("ignore", message="Numerical solution is not guaranteed to converge")
            ys, extra = torchsde.sdeint(
                rev, y, s_ts[[a, b]], bm=bm, method=method, dt=s_grid[1] - s_grid[0], adaptive=True, rtol=rtol,
                atol=atol, dt_min=dt_min, options=method_options, extra=True, extra_solver_state=extra,
            )  # fmt: skip
        y = ys[-1]
    return y.reshape(x.shape)


def euler(run, x, **options):
    """Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. 6; Kloeden & Platen 1992, Sec. 10.2)."""
    return _sdeint(run, x, "euler", "ito", options)


def milstein(run, x, **options):
    """Derivative-free Milstein (Kloeden & Platen 1992, Sec. 11.1); equals Euler–Maruyama for additive noise."""
    # g does not depend on x, so the derivative-free correction (g(y') − g(y))·(ΔW² − h)/(2√h) is exactly zero.
    return _sdeint(run, x, "milstein", "ito", options, {"grad_free": True})


def srk(run, x, **options):
    """Stochastic Runge–Kutta, Rößler 2010 (SIAM J. Numer. Anal. 48) SRID2 tableau, strong order 1.5."""
    return _sdeint(run, x, "srk", "ito", options)


def heun(run, x, **options):
    """Stochastic Heun method on the Stratonovich form (Rümelin 1982, SIAM J. Numer. Anal. 19)."""
    return _sdeint(run, x, "heun", "stratonovich", options)


def midpoint(run, x, **options):
    """Stochastic midpoint rule on the Stratonovich form (Burrage, Burrage & Tian 2004, Proc. R. Soc. A 460)."""
    return _sdeint(run, x, "midpoint", "stratonovich", options)


def reversible_heun(run, x, *, resync_every: int = RESYNC_EVERY, **options):
    """Reversible Heun (Kidger et al. 2021, Alg. 1), its second state resynchronised every `resync_every` steps."""
    if isinstance(resync_every, bool) or not isinstance(resync_every, int) or resync_every < 0:
        raise ValueError(f"resync_every must be an int >= 0 (0: never), got {resync_every!r}")
    return _sdeint(run, x, "reversible_heun", "stratonovich", options, resync_every=resync_every)
