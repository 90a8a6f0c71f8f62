"""Recording a sampler's path: the score tap (NFE and Tweedie read-out) and the trajectory recorder.

`ScoreTap` sits directly around the user's score: every real evaluation passes through it, so its `nfe`
is the honest count. When the recorder wants E[x0 | x_k] for a saved state x_k, it asks the tap to watch
for the next evaluation at exactly that state (all samplers here evaluate the score at x_k first thing in
step k); Tweedie's formula x0_hat = (x_k + sigma_k²·score)/alpha_k (Efron 2011; Song et al. 2021, eq. 48
in spirit) then costs no extra evaluation. A saved state whose score is never evaluated (the last one, or
states of solvers that evaluate elsewhere, e.g. reversible Heun) is resolved by one extra evaluation,
counted in `nfe` and separately in `nfe_extra`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm


class ScoreTap:
    """Count calls to score(x, t) and hand the output at one watched state to a listener."""

    def __init__(self, score: Callable):
        self.score = score
        self.nfe = 0
        self._watch: torch.Tensor | None = None
        self._listener: Callable | None = None

    def watch(self, x: torch.Tensor | None, listener: Callable | None = None) -> None:
        """Call listener(s) with the score of the next evaluation at a state equal to x (None: stop)."""
        self._watch, self._listener = x, listener

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        s = self.score(x, t)
        w = self._watch
        if w is not None and x.shape == w.shape and x.dtype == w.dtype and torch.equal(x, w):
            listener = self._listener
            self.watch(None)
            listener(s)
        return s


class Recorder:
    """Keep the saved states (and their x0_hat) and pass each finished record to `emit`.

    Args:
        run_ts: the float64 grid (steps + 1,).
        alpha, sigma: python-float coefficients on the grid.
        save_idx: grid indices to keep, increasing, ending at the last index.
        tap: the run's ScoreTap.
        score: checked score for extra evaluations.
        save_x0_hat: whether to record x0_hat.
        emit: emit(k, x, x0_hat) with numpy arrays (x0_hat None when not recorded), called in order.
        progress: show a tqdm bar over the steps.
    """

    def __init__(self, run_ts, alpha, sigma, save_idx, tap: ScoreTap, score, save_x0_hat: bool, emit, progress: bool):
        self.ts, self.alpha, self.sigma = run_ts, alpha, sigma
        self.save = set(save_idx)
        self.tap, self.score = tap, score
        self.save_x0_hat = save_x0_hat
        self.emit = emit
        self.nfe_extra = 0
        self._pending: tuple[int, torch.Tensor] | None = None
        self._bar = tqdm(total=len(run_ts) - 1, disable=not progress, desc="sampling", leave=False)
        self._k = 0

    def __call__(self, k: int, x: torch.Tensor) -> None:
        """The sampler's callback: x is the state at grid index k."""
        if k > self._k:
            self._bar.update(k - self._k)
            self._k = k
        if self._pending is not None:
            self._resolve()  # its score was not evaluated at the start of the following step
        if k not in self.save:
            return
        if not self.save_x0_hat:
            self.emit(k, _numpy(x), None)
            return
        self._pending = (k, x)
        self.tap.watch(x, self._on_score)

    def _tweedie(self, k: int, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return (x + self.sigma[k] ** 2 * s) / self.alpha[k]

    def _on_score(self, s: torch.Tensor) -> None:
        k, x = self._pending
        self._pending = None
        self.emit(k, _numpy(x), _numpy(self._tweedie(k, x, s)))

    def extra_denoise(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_k] by one extra, counted, score evaluation."""
        self.nfe_extra += 1
        t = torch.full((x.shape[0],), float(self.ts[k]), dtype=x.dtype, device=x.device)
        return self._tweedie(k, x, self.score(x, t))

    def _resolve(self) -> None:
        k, x = self._pending
        self.tap.watch(None)
        self._pending = None
        self.emit(k, _numpy(x), _numpy(self.extra_denoise(k, x)))

    def finish(self, x: torch.Tensor, denoise: bool) -> torch.Tensor:
        """Record the final state x (at t_min); with denoise, replace it by E[x0 | x] first. Returns it."""
        last = len(self.ts) - 1
        if self._pending is not None:
            self._resolve()
        self._bar.update(last - self._k)
        self._bar.close()
        if denoise:
            x = self.extra_denoise(last, x)
            self.emit(last, _numpy(x), _numpy(x) if self.save_x0_hat else None)
        elif self.save_x0_hat:
            self.emit(last, _numpy(x), _numpy(self.extra_denoise(last, x)))
        else:
            self.emit(last, _numpy(x), None)
        return x

    def close(self) -> None:
        self.tap.watch(None)
        self._bar.close()


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).numpy().copy()
