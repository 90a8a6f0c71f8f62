"""The process protocol shared by every forward process (bridge diffusions and the Gaussian SDEs).

A process knows four things about its forward (noising) dynamics on its state space:

* `sample_forward(x0, t)`: a draw of x_t | x0;
* `sample_bridge(x0, x_t, s, t)`: a draw of x_s | x0, x_t for 0 <= s < t (the endpoint-conditioned bridge);
* `sample_equilibrium(shape)`: a draw of the stationary law (the start of the reverse chain);
* `loss(prediction, x0, t)`: the natural per-sample loss of an x0 prediction.

The reverse chain (`sample_backward`) predicts x0 from x_t and steps to x_s by `reverse_step`, which for
point predictions is the bridge between the prediction and x_t and for categorical states the mixture of
bridges over the predicted distribution of x0. `sdegen.VPSDE` and friends implement the same four methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from sdegen.processes._common import Generator, Time


class AbstractProcess(ABC):
    """A forward process with a forward sampler, an exact or documented bridge and an equilibrium law.

    Attributes:
        name: short identifier stored in trajectory attrs (`sde`).
        kind: the state kind: "euclidean", "angle", "quaternion" or "category" (trajectory attrs).
    """

    name: str = "abstract"
    kind: str = "euclidean"

    @abstractmethod
    def sample_forward(self, x0, t: Time, generator: Generator = None):
        """A draw of x_t | x0, shaped like x0; t a float or a (batch,) tensor."""

    @abstractmethod
    def sample_bridge(self, x0, x_t, s: Time, t: Time, generator: Generator = None):
        """A draw of x_s | x0, x_t for s < t, shaped like x_t."""

    @abstractmethod
    def sample_equilibrium(self, shape, generator: Generator = None, **kwargs):
        """A draw of the stationary law with batch shape `shape` (batch, *data_shape)."""

    @abstractmethod
    def loss(self, prediction, x0, t: Time, *, x_t=None, mask=None) -> torch.Tensor:
        """The per-sample loss of an x0 prediction, shape (batch,).

        `x_t`, the noisy state the prediction was made from, is used by losses whose target depends on it (the
        circle's); with a bool `mask` shaped like the state the mean runs over the diffused (True) elements.
        """

    @abstractmethod
    def params(self) -> dict[str, float]:
        """The constructor parameters (flat, netCDF-safe)."""

    @abstractmethod
    def check_state(self, x, name: str = "x") -> None:
        """Raise a clear error unless x is a valid batch of states."""

    def reverse_step(self, prediction, x_t, s: Time, t: Time, generator: Generator = None):
        """One step of the reverse chain: x_s from the x0 prediction and x_t (the bridge by default)."""
        return self.sample_bridge(prediction, x_t, s, t, generator=generator)

    def attrs(self) -> dict[str, float | str]:
        """Flat trajectory attributes: {"sde": name, "sde_<param>": value, "kind": kind}."""
        return {"sde": self.name, "kind": self.kind, **{f"sde_{k}": v for k, v in self.params().items()}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
