"""The one wrapper around a user's score: output check, time-range guard and NFE count.

Every run (`sdegen.sample`, `sdegen.log_likelihood`, `encode`/`decode`) wraps the score it is given once,
in a `GuardedScore`, before anything else sees it; the torchsde/torchdiffeq adapters and the solvers take
that object as given and never wrap it again, so there is one NFE count and one time guard per run.
`AbstractSDE.reverse` and `AbstractSDE.probability_flow` are entry points too: they guard a plain callable
and take a `GuardedScore` as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sdegen._checks import check_score_output

# Solvers compute times as T − s in float32/64; allow this much round-off (relative to max(1, T)) at the ends.
TIME_SLACK = 1e-7


class GuardedScore:
    """score(x, t) that checks its output, refuses t outside [t_min, T] and counts evaluations.

    Args:
        score: the user's callable score(x, t) → tensor shaped like x; x: (batch, *data_shape), t: (batch,).
        t_min, T: the time range in which the score may be evaluated.

    Attributes:
        nfe: the number of real evaluations of `score` so far.
    """

    def __init__(self, score: Callable, t_min: float, T: float):
        if not callable(score):
            raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
        self.score = score
        self.t_min, self.T = float(t_min), float(T)
        self.nfe = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lo, hi = float(t.min()), float(t.max())
        slack = TIME_SLACK * max(1.0, self.T)
        if lo < self.t_min - slack or hi > self.T + slack:
            raise RuntimeError(
                f"score evaluated at t in [{lo:.6g}, {hi:.6g}], outside [t_min={self.t_min}, T={self.T}]"
            )
        self.nfe += 1
        return check_score_output(self.score(x, t), x)

    def __repr__(self) -> str:
        return f"GuardedScore({self.score!r}, t_min={self.t_min}, T={self.T}, nfe={self.nfe})"


def guard(score: Callable, t_min: float, T: float) -> GuardedScore:
    """`score` itself if it is already a GuardedScore, else a new GuardedScore(score, t_min, T)."""
    return score if isinstance(score, GuardedScore) else GuardedScore(score, t_min, T)
