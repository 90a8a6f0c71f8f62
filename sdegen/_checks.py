"""Input checks and broadcasting helpers shared by the whole package.

Every public entry point validates its inputs here so that bad input raises an error that names
the problem instead of producing a silently wrong answer.
"""

from __future__ import annotations

import math

import torch

Time = float | torch.Tensor


def batch_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample tensor of shape (batch,) so it broadcasts against x: (batch, *shape)."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Raise ValueError if x holds NaN or infinity."""
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def check_batched(x: torch.Tensor, name: str = "x") -> None:
    """Raise if x is not a floating tensor of shape (batch, *data_shape) with batch >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (batch, *data_shape) with at least 2 dimensions, got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def as_time(t: Time, x: torch.Tensor, T: float, name: str = "t") -> torch.Tensor:
    """Turn a float or a tensor of times into a tensor of shape (batch,) matching x's dtype and device.

    Args:
        t: a float, a 0-d tensor, or a tensor of shape (batch,).
        x: the state (batch, *data_shape); its batch size, dtype and device are used.
        T: the end of the time interval; t must lie in [0, T].

    Raises:
        ValueError: t is not finite, lies outside [0, T], or has the wrong shape.
    """
    batch = x.shape[0]
    if isinstance(t, torch.Tensor):
        tt = t.to(device=x.device, dtype=x.dtype)
        if tt.ndim == 0:
            tt = tt.expand(batch)
        elif tt.shape != (batch,):
            raise ValueError(f"{name} must be a float or a tensor of shape ({batch},), got {tuple(t.shape)}")
    else:
        tf = float(t)
        if not math.isfinite(tf) or not 0.0 <= tf <= T:
            raise ValueError(f"{name}={tf} lies outside the time interval [0, {T}]")
        return torch.full((batch,), tf, dtype=x.dtype, device=x.device)
    if not torch.isfinite(tt).all():
        raise ValueError(f"{name} contains non-finite values")
    lo, hi = tt.min().item(), tt.max().item()
    # Allow float32 round-off at the ends (t = T computed as T - s in float32).
    tol = 1e-6 * T
    if lo < -tol or hi > T + tol:
        raise ValueError(f"{name} must lie in [0, {T}], got values in [{lo:.6g}, {hi:.6g}]")
    return tt.clamp(0.0, T)


def check_positive(value: float, name: str) -> float:
    """Raise ValueError unless value is a finite number > 0."""
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return v


def check_score_output(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Check a score function's output: a finite tensor shaped like its input x."""
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"score must return a torch.Tensor, got {type(s).__name__}")
    if s.shape != x.shape:
        raise ValueError(f"score returned shape {tuple(s.shape)} but its input x has shape {tuple(x.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError("score returned non-finite values (NaN or inf)")
    return s


def check_data_range(data_range) -> tuple[float, float]:
    """(lo, hi) as floats, finite with lo < hi; a ValueError naming data_range otherwise."""
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a pair (lo, hi) of numbers, got {data_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range must be finite with lo < hi, got {data_range!r}")
    return lo, hi
