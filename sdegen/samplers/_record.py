"""Recording a sampler's path: the callback every solver calls, and the final record.

A solver calls `callback(k, x_k, x0_hat_k)` once per grid state it visits (k increasing from 0 at t = T),
after evaluating the score there, with Tweedie's E[x0 | x_k] from that evaluation, or None when it did not
evaluate at x_k (reversible Heun between resyncs, saved states inside an adaptive ODE solve). The recorder
keeps the saved states and passes each to `emit`; a saved state that needs an x0_hat the solver did not
provide costs one extra evaluation, counted in `nfe_extra` (and, like every evaluation, in the run's NFE).
The last state (t_min) is recorded by `finish`, which also applies `denoise`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from sdegen._checks import batch_time
from sdegen.score import tweedie


class Recorder:
    """The solver callback: keep saved states (and their x0_hat) and emit them in order.

    Args:
        score: the run's guarded score, for extra evaluations.
        ts: the float64 grid (steps + 1,).
        alpha, sigma: python-float coefficients on the grid.
        save_idx: grid indices to keep, increasing, ending at the last index.
        save_x0_hat: whether to record x0_hat.
        emit: emit(k, x, x0_hat) with numpy arrays (x0_hat None when not recorded), called in order.
        progress: show a tqdm bar over the steps.
    """

    def __init__(self, score: Callable, ts, alpha, sigma, save_idx, save_x0_hat: bool, emit, progress: bool):
        self.score, self.ts, self.alpha, self.sigma = score, ts, alpha, sigma
        self.save = set(save_idx)
        self.save_x0_hat = save_x0_hat
        self.emit = emit
        self.nfe_extra = 0
        self._bar = tqdm(total=len(ts) - 1, disable=not progress, desc="sampling", leave=False)
        self._k = 0

    def __call__(self, k: int, x: torch.Tensor, x0_hat: torch.Tensor | None = None) -> None:
        if k > self._k:
            self._bar.update(k - self._k)
            self._k = k
        if k not in self.save:
            return
        if self.save_x0_hat and x0_hat is None:
            x0_hat = self.extra_denoise(k, x)
        self.emit(k, _numpy(x), _numpy(x0_hat) if self.save_x0_hat else None)

    def extra_denoise(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_k] by one extra, counted, score evaluation."""
        self.nfe_extra += 1
        return tweedie(x, self.score(x, batch_time(self.ts[k], x)), self.alpha[k], self.sigma[k])

    def finish(self, x: torch.Tensor, denoise: bool) -> torch.Tensor:
        """Record the final state x (at t_min); with denoise, replace it by E[x0 | x] first. Returns it."""
        last = len(self.ts) - 1
        self._bar.update(last - self._k)
        self._bar.close()
        self._k = last
        if denoise:
            x = self.extra_denoise(last, x)
            self.emit(last, _numpy(x), _numpy(x) if self.save_x0_hat else None)
        else:
            self(last, x)
        return x

    def close(self) -> None:
        self._bar.close()


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).numpy().copy()
