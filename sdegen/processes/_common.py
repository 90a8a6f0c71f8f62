"""Shared helpers of the bridge processes: time arguments, per-sample random draws, state checks.

Randomness: every sampling method takes `generator`: None (torch's default stream), one `torch.Generator`,
a sequence of generators with one per sample (row i of every draw comes from generator i alone), or a
`PerSampleStream` (the buffered per-sample streams `sample_backward` uses, so that sample i does not depend
on the batch size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class PerSampleStream:
    """Independent random streams, one per sample, drawn in lock-step by the whole batch.

    Sample i owns two generators (normal and uniform draws) seeded by `derive_seed(seed, stream, i)` and
    `derive_seed(seed, stream + 1, i)`. Each generator fills a buffer of `BLOCK` float64 draws at a time (or
    one draw's worth when a draw is larger), a length that depends on the draw sizes only, never on the batch
    size, so sample i's k-th draw is the same in any batch.

    Args:
        seed: the run seed.
        stream: the stream identifier (its successor is used for the uniform draws).
        batch: the number of samples.
    """

    BLOCK = 256

    def __init__(self, seed: int, stream: int, batch: int):
        from sdegen.samplers._noise import derive_seed

        self.batch = batch
        self._gens = {
            kind: [torch.Generator().manual_seed(derive_seed(seed, stream + j, i)) for i in range(batch)]
            for j, kind in enumerate(("normal", "uniform"))
        }
        self._buffers = {kind: torch.empty(batch, 0, dtype=torch.float64) for kind in self._gens}

    def draw(self, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The next draws of `shape` (batch first), float64, from each sample's own stream."""
        if shape[0] != self.batch:
            raise ValueError(f"a per-sample stream of {self.batch} samples was asked for a batch of {shape[0]}")
        d = math.prod(shape[1:])
        buf = self._buffers[kind]
        if buf.shape[1] < d:
            fn = torch.randn if kind == "normal" else torch.rand
            size = max(d, self.BLOCK)
            fresh = torch.stack([fn(size, generator=g, dtype=torch.float64) for g in self._gens[kind]])
            buf = torch.cat((buf, fresh), 1)
        self._buffers[kind] = buf[:, d:]
        return buf[:, :d].reshape(shape)


Generator = torch.Generator | Sequence[torch.Generator] | PerSampleStream | None
Time = float | torch.Tensor


def _draw(fn, shape: tuple[int, ...], generator: Generator, dtype: torch.dtype, device) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return fn(shape, generator=generator, dtype=dtype).to(device)
    if isinstance(generator, PerSampleStream):
        kind = "normal" if fn is torch.randn else "uniform"
        return generator.draw(kind, shape).to(dtype=dtype, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} per-sample generators for a batch of {shape[0]}")
    # Draw in float64 per sample so that the stream of sample i does not depend on the dtype or batch size.
    rows = [fn((1, *shape[1:]), generator=g, dtype=torch.float64) for g in generator]
    return torch.cat(rows).to(dtype=dtype, device=device)


def randn(shape, generator: Generator = None, dtype=torch.float64, device=None) -> torch.Tensor:
    """Standard normal draws of `shape` (batch first), one row per generator when given a sequence."""
    return _draw(torch.randn, tuple(shape), generator, dtype, device)


def rand(shape, generator: Generator = None, dtype=torch.float64, device=None) -> torch.Tensor:
    """Uniform [0, 1) draws of `shape` (batch first), one row per generator when given a sequence."""
    return _draw(torch.rand, tuple(shape), generator, dtype, device)


def per_sample_time(t: Time, batch: int, name: str = "t") -> torch.Tensor:
    """A float64 tensor of shape (batch,) from a float, 0-d or (batch,) tensor; times must be >= 0 and finite."""
    if isinstance(t, torch.Tensor):
        tt = t.detach().to(dtype=torch.float64, device="cpu")
        if tt.ndim == 0:
            tt = tt.expand(batch)
        elif tt.shape != (batch,):
            raise ValueError(f"{name} must be a float or a tensor of shape ({batch},), got shape {tuple(t.shape)}")
    else:
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise TypeError(f"{name} must be a float or a tensor, got {type(t).__name__}")
        tt = torch.full((batch,), float(t), dtype=torch.float64)
    if not torch.isfinite(tt).all() or (tt < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got values in [{tt.min().item()}, {tt.max().item()}]")
    return tt


def bridge_times(s: Time, t: Time, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) as float64 (batch,) tensors, checked 0 <= s < t."""
    ss, tt = per_sample_time(s, batch, "s"), per_sample_time(t, batch, "t")
    if (ss >= tt).any():
        raise ValueError(f"a bridge needs s < t, got s={_show(s)} and t={_show(t)}")
    return ss, tt


def _show(v: Time) -> str:
    if isinstance(v, torch.Tensor) and v.numel() > 1:
        return f"tensor in [{v.min().item():.6g}, {v.max().item():.6g}]"
    return f"{float(v):.6g}"


def view(v: torch.Tensor, x: torch.Tensor, trailing: int = 0) -> torch.Tensor:
    """Reshape a (batch,) tensor to broadcast against x (batch, *shape), on x's device and float dtype."""
    dtype = x.dtype if x.is_floating_point() else torch.float64
    return v.to(dtype=dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1 - trailing)))


def check_float_state(x: torch.Tensor, name: str = "x", trailing: tuple[int, ...] = ()) -> None:
    """Raise unless x is a finite floating tensor (batch, *shape, *trailing)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.ndim < 1 + len(trailing) or (trailing and tuple(x.shape[-len(trailing) :]) != trailing):
        want = ", ".join(["batch", "*shape", *map(str, trailing)])
        raise ValueError(f"{name} must have shape ({want}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def mean_over_batch_dims(v: torch.Tensor) -> torch.Tensor:
    """Mean of v (batch, ...) over everything but the batch dimension, shape (batch,)."""
    return v.reshape(v.shape[0], -1).mean(1) if v.ndim > 1 else v


def masked_mean(v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean of v (batch, ...) over the elements where mask is True (all when mask is None).

    A mask with one trailing dim more than v (e.g. per quaternion component) is reduced by its first entry.
    Samples without any diffused element get 0.
    """
    if mask is None:
        return mean_over_batch_dims(v)
    mask = torch.as_tensor(mask, device=v.device)
    if mask.ndim == v.ndim + 1:
        mask = mask[..., 0]
    if mask.shape != v.shape:
        raise ValueError(f"the loss mask must have shape {tuple(v.shape)}, got {tuple(mask.shape)}")
    m = mask.to(v.dtype).reshape(v.shape[0], -1)
    return (v.reshape(v.shape[0], -1) * m).sum(1) / m.sum(1).clamp_min(1.0)


def check_rate(rate: float) -> float:
    r = float(rate)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
    return r
