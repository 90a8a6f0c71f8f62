"""`Joint`: a tuple of processes diffusing a tuple of states together, independently given the time.

Every method takes and returns tuples with one entry per component process; the forward laws, bridges and
equilibria factorise over the components, and the loss is the sum of the component losses. A generator (or
per-sample generator list) is shared: components draw from it one after the other, in order.
"""

from __future__ import annotations

import torch

from sdegen.processes._base import AbstractProcess
from sdegen.processes._common import Generator, Time


class Joint(AbstractProcess):
    """Processes diffused jointly over a tuple of states (e.g. an image and its label).

    Args:
        *processes: at least one process (any `AbstractProcess` or Gaussian SDE), not itself a Joint.
    """

    name = "joint"
    kind = "joint"

    def __init__(self, *processes):
        if not processes:
            raise ValueError("Joint needs at least one process")
        for p in processes:
            if isinstance(p, Joint):
                raise TypeError("Joint components must not be Joint themselves; flatten the tuple")
            for method in ("sample_forward", "sample_bridge", "sample_equilibrium", "loss"):
                if not callable(getattr(p, method, None)):
                    raise TypeError(f"Joint component {p!r} does not implement the process protocol ({method})")
        self.processes = tuple(processes)

    def __len__(self) -> int:
        return len(self.processes)

    def params(self) -> dict:
        return {"components": [repr(p) for p in self.processes]}

    def attrs(self) -> dict:
        return {"sde": self.name, "kind": self.kind, "sde_components": [repr(p) for p in self.processes]}

    def _split(self, value, name: str) -> tuple:
        if not isinstance(value, tuple | list) or len(value) != len(self.processes):
            raise ValueError(f"{name} must be a tuple of {len(self.processes)} entries (one per process)")
        return tuple(value)

    def check_state(self, x, name: str = "x") -> None:
        for i, (p, xi) in enumerate(zip(self.processes, self._split(x, name), strict=True)):
            if isinstance(p, AbstractProcess):
                p.check_state(xi, f"{name}[{i}]")
        batches = {xi.shape[0] for xi in x}
        if len(batches) != 1:
            raise ValueError(f"{name} entries must share the batch size, got {sorted(batches)}")

    def sample_forward(self, x0, t: Time, generator: Generator = None) -> tuple:
        """(x_t per component) from (x0 per component)."""
        x0 = self._split(x0, "x0")
        return tuple(p.sample_forward(xi, t, generator=generator) for p, xi in zip(self.processes, x0, strict=True))

    def sample_bridge(self, x0, x_t, s: Time, t: Time, generator: Generator = None) -> tuple:
        """(x_s per component) from the component bridges."""
        pairs = zip(self.processes, self._split(x0, "x0"), self._split(x_t, "x_t"), strict=True)
        return tuple(p.sample_bridge(a, b, s, t, generator=generator) for p, a, b in pairs)

    def reverse_step(self, prediction, x_t, s: Time, t: Time, generator: Generator = None) -> tuple:
        from sdegen.processes.backward import reverse_step

        pairs = zip(self.processes, self._split(prediction, "prediction"), self._split(x_t, "x_t"), strict=True)
        return tuple(reverse_step(p, a, b, s, t, generator) for p, a, b in pairs)

    def sample_equilibrium(self, shape, generator: Generator = None, **kwargs) -> tuple:
        """(equilibrium draw per component); shape is a tuple of per-component shapes."""
        shapes = self._split(shape, "shape")
        return tuple(
            p.sample_equilibrium(tuple(sh), generator=generator) for p, sh in zip(self.processes, shapes, strict=True)
        )

    def loss(self, prediction, x0, t: Time, *, x_t=None, mask=None) -> torch.Tensor:
        """The sum of the component losses, shape (batch,); x_t and mask: None or tuples (entries may be None)."""
        n = len(self.processes)
        masks = (None,) * n if mask is None else self._split(mask, "mask")
        states = (None,) * n if x_t is None else self._split(x_t, "x_t")
        parts = zip(
            self.processes, self._split(prediction, "prediction"), self._split(x0, "x0"), states, masks, strict=True
        )
        return sum(p.loss(a, b, t, x_t=s, mask=m) for p, a, b, s, m in parts)
