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
The Brownian motion is `GridBrownian` (per-sample streams: sample i is the same whatever the batch size)
unless `brownian="interval"` (one `torchsde.BrownianInterval` for the batch, entropy from the seed: the
same Brownian path at every step size, needed for adaptive stepping and for convergence studies).
Adaptive steps (`adaptive=True`, torchsde's step doubling with `rtol`, `atol`, `dt_min`) integrate one
saved segment per call.
"""

from __future__ import annotations

import torch
import torchsde

from sdegen._checks import check_positive
from sdegen.samplers._noise import NOISE, FloatTimeBrownian, GridBrownian, derive_seed

SDE_OPTIONS = {"adaptive": False, "rtol": 1e-3, "atol": 1e-3, "dt_min": 1e-5, "brownian": None}


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


def _brownian(run, method: str, kind: str, s_grid: list[float], size):
    if kind == "grid":
        return GridBrownian(s_grid, run.seed, size, run.dtype, run.device)
    levy = "space-time" if method == "srk" else "none"
    bm = torchsde.BrownianInterval(
        t0=s_grid[0], t1=s_grid[-1], size=size, dtype=run.dtype, device=run.device,
        entropy=derive_seed(run.seed, NOISE, 0) % (2**63), dt=s_grid[1] - s_grid[0], levy_area_approximation=levy,
    )  # fmt: skip
    return FloatTimeBrownian(bm)


def _sdeint(run, x, method: str, sde_type: str, options: dict, method_options: dict | None = None):
    """Integrate the reverse SDE with a torchsde method from run.ts[0] = T down to t_min."""
    adaptive = bool(options["adaptive"])
    kind = options["brownian"] or ("interval" if adaptive else "grid")
    if kind not in ("grid", "interval"):
        raise ValueError(f"brownian must be 'grid' or 'interval', got {kind!r}")
    if adaptive and kind == "grid":
        raise ValueError("adaptive=True needs brownian='interval' (adaptive steps query the Brownian motion off-grid)")
    rtol, atol = check_positive(options["rtol"], "rtol"), check_positive(options["atol"], "atol")
    dt_min = check_positive(options["dt_min"], "dt_min")
    rev = _MemoSDE(run.sde.reverse(run.raw_score, data_shape=run.data_shape, sde_type=sde_type, t_min=run.t_min))
    s_grid = (run.sde.T - run.ts).tolist()  # flipped time s = T − t, increasing
    s_grid[0] = 0.0
    s_ts = torch.tensor(s_grid, dtype=torch.float64)
    y = x.reshape(x.shape[0], -1)  # (batch, d)
    bm = _brownian(run, method, kind, s_grid, tuple(y.shape))
    extra = None
    if not adaptive:
        for k in range(run.steps):
            run.callback(k, y.reshape(x.shape))
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
    """Derivative-free Milstein (Kloeden & Platen 1992, eq. 11.1.5); equals Euler–Maruyama for additive noise."""
    # g does not depend on x, so the derivative-free correction (g(y') − g(y))·(ΔW² − h)/(2√h) is exactly zero.
    return _sdeint(run, x, "milstein", "ito", options, {"grad_free": True})


def srk(run, x, **options):
    """Stochastic Runge–Kutta SRID2 of Rößler 2010 (SIAM J. Numer. Anal. 48, Table 5.2), strong order 1.5."""
    return _sdeint(run, x, "srk", "ito", options)


def heun(run, x, **options):
    """Stochastic Heun on the Stratonovich form (Kloeden & Platen 1992, eq. 15.5.6 family; Rümelin 1982)."""
    return _sdeint(run, x, "heun", "stratonovich", options)


def midpoint(run, x, **options):
    """Stochastic midpoint method on the Stratonovich form (Burrage, Burrage & Tian 2004, Sec. 4)."""
    return _sdeint(run, x, "midpoint", "stratonovich", options)


def reversible_heun(run, x, **options):
    """Reversible Heun (Kidger et al. 2021, "Efficient and accurate gradients for neural SDEs", Alg. 1)."""
    return _sdeint(run, x, "reversible_heun", "stratonovich", options)
