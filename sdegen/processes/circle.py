"""Brownian motion on the circle: angles in [−π, π), variance rate·t, exact and approximate bridges.

Wrapped Brownian motion is real Brownian motion x_t = x0 + √(rate·t)·z projected by wrap(x) =
(x + π) mod 2π − π. Its transition density is the wrapped normal

    p_t(x_t | x0) = Σ_k φ(d + 2πk; rate·t),   d = wrap(x_t − x0),

with φ(·; v) the N(0, v) density. The exact bridge x_s | x0, x_t (s < t) lifts the end point to the real
line: the winding k is drawn with probability ∝ φ(d + 2πk; rate·t), then x_s is the real Brownian bridge
from x0 to x0 + d + 2πk, N(x0 + (s/t)(d + 2πk), rate·s(t − s)/t), wrapped. Windings |k| <= K with
2πK >= 5.5·√(rate·t) + 2π keep the truncated mass below 1e-6 (the first dropped term is below e^{−15}
times the largest kept one, and the terms decay faster than geometrically).

`WrappedInterpolatedBrownian` keeps the same forward law but bridges along the shortest arc only (k = 0):
cheaper, exact when rate·t is small against π², otherwise approximate (it misses paths that wind).
"""

from __future__ import annotations

import math

import torch

from sdegen.processes._base import AbstractProcess
from sdegen.processes._common import (
    Generator,
    Time,
    bridge_times,
    check_float_state,
    check_rate,
    check_same_shape,
    masked_mean,
    per_sample_time,
    rand,
    randn,
    view,
)

TWO_PI = 2 * math.pi


def wrap(x: torch.Tensor) -> torch.Tensor:
    """Wrap angles into [−π, π)."""
    y = torch.remainder(x + math.pi, TWO_PI) - math.pi
    # remainder can round up to 2π in float32; keep the interval half-open.
    return torch.where(y >= math.pi, y - TWO_PI, y)


def num_windings(max_variance: float) -> int:
    """K such that windings |k| <= K hold all but < 1e-6 of the wrapped-normal mass (module docstring)."""
    return int(math.ceil(5.5 * math.sqrt(max(max_variance, 0.0)) / TWO_PI)) + 1


def wrapped_normal_density(x: torch.Tensor, mean: torch.Tensor | float, variance: torch.Tensor | float):
    """The wrapped-normal density at angles x (float64), truncated as in the module docstring."""
    x = torch.as_tensor(x, dtype=torch.float64)
    var = torch.as_tensor(variance, dtype=torch.float64)
    d = wrap(x - torch.as_tensor(mean, dtype=torch.float64))
    big = num_windings(float(var.max()))
    k = torch.arange(-big, big + 1, dtype=torch.float64)
    u = d.unsqueeze(-1) + TWO_PI * k
    v = var.unsqueeze(-1) if var.ndim else var
    return (torch.exp(-0.5 * u * u / v) / torch.sqrt(TWO_PI * v)).sum(-1)


class _CircleBrownian(AbstractProcess):
    kind = "angle"

    def __init__(self, rate: float = 1.0):
        self.rate = check_rate(rate)

    def params(self) -> dict[str, float]:
        return {"rate": self.rate}

    def check_state(self, x, name: str = "x") -> None:
        check_float_state(x, name)
        if ((x < -math.pi) | (x >= math.pi)).any():
            raise ValueError(f"{name} must hold angles in [-pi, pi); wrap them with sdegen.processes.circle.wrap")

    def sample_forward(self, x0: torch.Tensor, t: Time, generator: Generator = None) -> torch.Tensor:
        """x_t = wrap(x0 + √(rate·t)·z), shaped like x0 (angles (batch, *shape) in [−π, π))."""
        self.check_state(x0, "x0")
        tt = per_sample_time(t, x0.shape[0])
        z = randn(x0.shape, generator, x0.dtype, x0.device)
        return wrap(x0 + view((self.rate * tt).sqrt(), x0) * z)

    def sample_equilibrium(self, shape, generator: Generator = None, dtype=torch.float32, device=None):
        """Uniform angles on [−π, π) of shape (batch, *data_shape)."""
        return wrap(TWO_PI * rand(tuple(shape), generator, dtype, device) - math.pi)

    def expected_displacement(self, x0: torch.Tensor, x_t: torch.Tensor, t: Time) -> torch.Tensor:
        """E[D | x0, x_t], float64: the mean lifted displacement D = Y0 − Y_t from x_t to x0 on the real line.

        Y_t = Y0 + √(rate·t)·z, so D = −(d + 2πk) with d = wrap(x_t − x0) and P(k | x0, x_t) ∝ φ(d + 2πk; rate·t).
        """
        tt = per_sample_time(t, x0.shape[0])
        d = wrap(x_t.double().cpu() - x0.double().cpu())
        var = (self.rate * view(tt, d)).expand_as(d)
        big = num_windings(float(var.max()))
        k = torch.arange(-big, big + 1, dtype=torch.float64)
        u = d.unsqueeze(-1) + TWO_PI * k
        w = torch.softmax(-0.5 * u * u / var.unsqueeze(-1), -1)
        return -(w * u).sum(-1)

    def loss(self, prediction: torch.Tensor, x0: torch.Tensor, t: Time, *, x_t=None, mask=None) -> torch.Tensor:
        """The x0-prediction loss on the circle, averaged over the data dims, shape (batch,).

        With x_t (what training passes): (wrap(prediction − x_t) − E[D | x0, x_t])², the squared error of the
        predicted displacement from x_t against the expected lifted displacement (`expected_displacement`).
        Its minimiser is x_t + E[Y0 − Y_t | x_t], the posterior mean in the tangent line at x_t: the point
        prediction for which the bridge chain matches the reverse SDE as the steps shrink (a circular mean
        does not; docs/processes.md). Without x_t: 2(1 − cos(prediction − x0)) (circular-mean minimiser).
        """
        check_same_shape(prediction, x0, "prediction and x0")
        if x_t is None:
            return masked_mean(2 * (1 - torch.cos(prediction - x0)), mask)
        check_same_shape(x_t, x0, "x_t and x0")
        target = self.expected_displacement(x0, x_t, t).to(dtype=prediction.dtype, device=prediction.device)
        return masked_mean((wrap(prediction - x_t) - target) ** 2, mask)

    def _winding(self, d: torch.Tensor, var: torch.Tensor, generator: Generator) -> torch.Tensor:
        """Draw the winding k of the lifted end point d + 2πk, P(k) ∝ φ(d + 2πk; var); float64 like d."""
        big = num_windings(float(var.max()))
        k = torch.arange(-big, big + 1, dtype=torch.float64)
        u = d.unsqueeze(-1) + TWO_PI * k
        logw = -0.5 * u * u / var.unsqueeze(-1)
        cdf = torch.softmax(logw, -1).cumsum(-1)
        draw = rand(d.shape, generator, torch.float64).unsqueeze(-1)
        index = (cdf < draw).sum(-1).clamp_max(2 * big)
        return k[index]

    def _bridge(self, x0, x_t, s, t, generator, exact: bool) -> torch.Tensor:
        self.check_state(x0, "x0")
        self.check_state(x_t, "x_t")
        check_same_shape(x0, x_t, "x0 and x_t")
        ss, tt = bridge_times(s, t, x_t.shape[0])
        x0d, xtd = x0.double().cpu(), x_t.double().cpu()
        d = wrap(xtd - x0d)
        if exact:
            var_t = (self.rate * view(tt, x0d)).expand_as(d)
            d = d + TWO_PI * self._winding(d, var_t, generator)
        frac, std = view(ss / tt, x0d), view((self.rate * ss * (tt - ss) / tt).sqrt(), x0d)
        z = randn(x_t.shape, generator, torch.float64)
        return wrap(x0d + frac * d + std * z).to(dtype=x_t.dtype, device=x_t.device)


class WrappedBrownian(_CircleBrownian):
    """Brownian motion on the circle with variance rate·t and the exact winding-mixture bridge.

    Args:
        rate: the diffusion rate (x_t − x0 has variance rate·t before wrapping).
    """

    name = "wrapped_brownian"

    def sample_bridge(self, x0, x_t, s: Time, t: Time, generator: Generator = None) -> torch.Tensor:
        """An exact draw of x_s | x0, x_t (mixture over windings; module docstring), needs 0 <= s < t."""
        return self._bridge(x0, x_t, s, t, generator, exact=True)


class WrappedInterpolatedBrownian(_CircleBrownian):
    """Brownian motion on the circle with an approximate bridge along the shortest arc (no windings).

    The bridge is N(x0 + (s/t)·wrap(x_t − x0), rate·s(t − s)/t) wrapped: pinned at both ends and on the
    circle, but not the exact bridge once rate·t is comparable with π² (use `WrappedBrownian` then).
    """

    name = "wrapped_interpolated_brownian"

    def sample_bridge(self, x0, x_t, s: Time, t: Time, generator: Generator = None) -> torch.Tensor:
        """An approximate draw of x_s | x0, x_t (shortest-arc Brownian bridge), needs 0 <= s < t."""
        return self._bridge(x0, x_t, s, t, generator, exact=False)
