"""Input checks and broadcasting helpers shared by the whole package.

Every public entry point validates its inputs here so that bad input raises an error that names
the problem instead of producing a silently wrong answer.
"""

from __future__ import annotations

import json
import math
import numbers
import secrets

import torch

Time = float | torch.Tensor


def batch_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample tensor of shape (batch,) so it broadcasts against x: (batch, *shape)."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def batch_time(t: float, x: torch.Tensor) -> torch.Tensor:
    """The time t as a (batch,) tensor in x's dtype and device (what a score is called with)."""
    return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)


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
    if x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); it needs at least one sample")
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
    """Raise ValueError unless value is a finite number > 0 (a string such as "abc" is named, not parsed)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | torch.Tensor):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_nonnegative(value: float, name: str) -> float:
    """Raise ValueError unless value is a finite number >= 0 (bools and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int, refusing bools, floats and strings, and values outside [minimum, maximum].

    The one integer validator of every entry point (API, CLI, config).

    Raises:
        ValueError: naming `name`, the allowed range and the value given.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer{_range(minimum, maximum)}, got {value!r}")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise ValueError(f"{name} must be an integer{_range(minimum, maximum)}, got {value!r}")
    return v


def _range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    return f" <= {maximum}" if maximum is not None else ""


# -- seeds ------------------------------------------------------------------------------------------------------
SEED_LIMIT = 2**63  # torch.Generator.manual_seed folds larger seeds (2**64 gives the samples of seed 0)


def check_seed(seed, name: str = "seed") -> int:
    """An integer seed with 0 <= seed < 2**63, else a ValueError naming `name`."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"{name} must be an integer with 0 <= {name} < 2**63, got {seed!r}")
    return int(seed)


def resolve_seed(seed: int | torch.Generator | None) -> int:
    """The integer seed of a run: an int as given (checked), one drawn from a generator, or fresh entropy (None).

    The result is what a run records (e.g. the `seed` attribute), so that it can be repeated.
    """
    if seed is None:
        return secrets.randbits(62)
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**62, (), generator=seed))
    return check_seed(seed)


def make_generator(seed: int | torch.Generator | None, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator from an int seed (checked), a generator (returned as is) or None (fresh entropy).

    The global RNG is never touched.
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int, a torch.Generator or None, got {type(seed).__name__}")
    return torch.Generator(device).manual_seed(resolve_seed(seed))


# -- KEY=VALUE --------------------------------------------------------------------------------------------------
def parse_key_value(text: str, what: str = "option") -> tuple[str, object]:
    """Split "KEY=VALUE"; the value is read as JSON when it parses (numbers, true/false, null, lists), else kept
    as the string. The one parser of the CLI's `--option`/`--set` and the config's overrides.

    Raises:
        ValueError: no "=" or an empty key, naming the text.
    """
    if not isinstance(text, str) or "=" not in text or not text.split("=", 1)[0].strip():
        raise ValueError(f"{what} {text!r} is not of the form KEY=VALUE")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


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
