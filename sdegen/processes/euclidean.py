"""Gaussian processes on R^d: Ornstein–Uhlenbeck and Brownian motion, with exact forward and bridge laws.

Both are linear: x_t | x0 ~ N(μ + a(t)(x0 − μ), v(t)·I) with

* OrnsteinUhlenbeck dx = θ(μ − x) dt + σ dw: a(t) = e^{−θt}, v(t) = σ²(1 − e^{−2θt})/(2θ);
* BrownianMotion dx = √rate dw: μ = 0, a(t) = 1, v(t) = rate·t.

The bridge x_s | x0, x_t (s < t) is Gaussian. With y = x − μ, y_t | y_s ~ N(b·y_s, w), b = a(t − s),
w = v(t − s), and v(t) = b²·v(s) + w, conditioning gives

    E[y_s | y0, y_t] = a(s)·y0 + (b·v(s)/v(t))·(y_t − a(t)·y0),   Var = v(s)·w/v(t),

which stays finite at s = 0 (the bridge is pinned at x0) and tends to x_t as s → t.
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
    randn,
    view,
)


class _LinearGaussian(AbstractProcess):
    """Shared forward/bridge sampling of the linear Gaussian processes; subclasses give a(t), v(t), μ."""

    kind = "euclidean"
    mean: float = 0.0

    def _scale(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _variance(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mean_scale(self, t: Time, batch: int = 1) -> torch.Tensor:
        """a(t), float64 (batch,): E[x_t | x0] = μ + a(t)(x0 − μ)."""
        return self._scale(per_sample_time(t, batch))

    def marginal_std(self, t: Time, batch: int = 1) -> torch.Tensor:
        """√v(t), float64 (batch,), the std of x_t | x0."""
        return self._variance(per_sample_time(t, batch)).sqrt()

    def check_state(self, x, name: str = "x") -> None:
        check_float_state(x, name)

    def sample_forward(self, x0: torch.Tensor, t: Time, generator: Generator = None) -> torch.Tensor:
        """x_t = μ + a(t)(x0 − μ) + √v(t)·z.

        Args:
            x0: (batch, *shape) float.
            t: float or (batch,) tensor, t >= 0.
            generator: a torch.Generator or one per sample.

        Returns:
            x_t, shaped like x0.
        """
        self.check_state(x0, "x0")
        tt = per_sample_time(t, x0.shape[0])
        z = randn(x0.shape, generator, x0.dtype, x0.device)
        a, std = view(self._scale(tt), x0), view(self._variance(tt).sqrt(), x0)
        return self.mean + a * (x0 - self.mean) + std * z

    def bridge_moments(self, x0: torch.Tensor, x_t: torch.Tensor, s: Time, t: Time):
        """Mean (shaped like x_t) and std ((batch,) float64) of x_s | x0, x_t; see the module docstring."""
        ss, tt = bridge_times(s, t, x_t.shape[0])
        v_s, v_t, w = self._variance(ss), self._variance(tt), self._variance(tt - ss)
        gain = self._scale(tt - ss) * v_s / v_t
        y0, yt = x0 - self.mean, x_t - self.mean
        mean = self.mean + view(self._scale(ss), x0) * y0 + view(gain, x0) * (yt - view(self._scale(tt), x0) * y0)
        return mean, (v_s * w / v_t).clamp_min(0).sqrt()

    def sample_bridge(self, x0, x_t, s: Time, t: Time, generator: Generator = None) -> torch.Tensor:
        """A draw of x_s | x0, x_t (exact Gaussian bridge), shaped like x_t; needs 0 <= s < t."""
        self.check_state(x0, "x0")
        self.check_state(x_t, "x_t")
        check_same_shape(x0, x_t, "x0 and x_t")
        mean, std = self.bridge_moments(x0, x_t, s, t)
        return mean + view(std, x_t) * randn(x_t.shape, generator, x_t.dtype, x_t.device)

    def loss(self, prediction: torch.Tensor, x0: torch.Tensor, t: Time, *, x_t=None, mask=None) -> torch.Tensor:
        """Mean squared error of the x0 prediction over the data dims, shape (batch,)."""
        check_same_shape(prediction, x0, "prediction and x0")
        return masked_mean((prediction - x0) ** 2, mask)


class OrnsteinUhlenbeck(_LinearGaussian):
    """dx = reversion·(mean − x) dt + volatility dw, stationary law N(mean, volatility²/(2·reversion)).

    Args:
        mean: the long-run mean μ.
        volatility: σ > 0.
        reversion: θ > 0, the rate of mean reversion.
    """

    name = "ou"

    def __init__(self, mean: float = 0.0, volatility: float = 1.0, reversion: float = 0.5):
        self.mean = float(mean)
        if not math.isfinite(self.mean):
            raise ValueError(f"mean must be finite, got {mean!r}")
        self.volatility = check_rate(volatility)
        self.reversion = check_rate(reversion)

    def params(self) -> dict[str, float]:
        return {"mean": self.mean, "volatility": self.volatility, "reversion": self.reversion}

    def _scale(self, t):
        return torch.exp(-self.reversion * t)

    def _variance(self, t):
        # σ²(1 − e^{−2θt})/(2θ), written with expm1 to keep digits at small t.
        return self.volatility**2 * -torch.expm1(-2 * self.reversion * t) / (2 * self.reversion)

    @property
    def stationary_std(self) -> float:
        return self.volatility / math.sqrt(2 * self.reversion)

    def sample_equilibrium(self, shape, generator: Generator = None, dtype=torch.float32, device=None):
        """A draw of N(mean, volatility²/(2·reversion)) of the full shape (batch, *data_shape)."""
        return self.mean + self.stationary_std * randn(tuple(shape), generator, dtype, device)

    def as_torchsde(self) -> _TorchsdeOU:
        """The OU SDE as a torchsde system (Itô, diagonal noise) on state (batch, d)."""
        return _TorchsdeOU(self.mean, self.volatility, self.reversion)


class _TorchsdeOU(torch.nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, mean: float, volatility: float, reversion: float):
        super().__init__()
        self.mean, self.volatility, self.reversion = mean, volatility, reversion

    def f(self, t, y):
        return self.reversion * (self.mean - y)

    def g(self, t, y):
        return torch.full_like(y, self.volatility)


class BrownianMotion(_LinearGaussian):
    """dx = √rate dw on R^d: x_t | x0 ~ N(x0, rate·t·I).

    Brownian motion has no stationary law; `sample_equilibrium` raises (start the reverse chain from a
    draw of `sample_forward` of a reference point, or use OrnsteinUhlenbeck).
    """

    name = "brownian"

    def __init__(self, rate: float = 1.0):
        self.rate = check_rate(rate)

    def params(self) -> dict[str, float]:
        return {"rate": self.rate}

    def _scale(self, t):
        return torch.ones_like(t)

    def _variance(self, t):
        return self.rate * t

    def sample_equilibrium(self, shape, generator: Generator = None, **kwargs):
        raise ValueError(
            "BrownianMotion on R^d has no stationary law to sample; draw x_T with sample_forward from a "
            "reference state, or use OrnsteinUhlenbeck"
        )
