"""Per-sample random streams: the same seed gives sample i the same noise whatever the batch size.

Every sample i of a run with seed s owns independent `torch.Generator` streams, seeded by a splitmix64 hash
of (s, stream, i). A stream is consumed in lock-step by the whole batch, one standard-normal draw of the
data shape per call, so sample i's k-th draw depends on (s, stream, i, k) only. Draws are made in float64
and cast to the state dtype, so a float32 and a float64 run of the same seed follow the same path.

A run split over processes (`sdegen.shards`) gives each process a contiguous block of the global sample
indices: `sample_offset(start)` shifts the index of every stream created inside it, so local sample j draws
from the streams of global sample start + j, and the union of the blocks is the single-process run.

Generating one small tensor per sample per step would cost a Python call per sample per step; instead each
generator fills a block of several draws at once (the block length depends on the data size d only, never
on the batch size, so the streams stay batch-invariant).

`GridBrownian` turns two such streams into a torchsde Brownian motion on a fixed time grid: the increment
W(s_{k+1}) − W(s_k) = √h_k·z_k and, for the stochastic Runge–Kutta method, the space-time Lévy area
H_k = √(h_k/12)·z'_k (independent of the increment; torchsde's U = h(H + W/2)). Queries off the grid raise
instead of returning silently wrong noise.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch
from torchsde import BaseBrownian

_MASK64 = (1 << 64) - 1
# A refill draws min(_BLOCK_FLOATS // d, _MAX_BLOCK) draws per sample (at least one): few generator calls per
# step for images (5 draws of 784 floats per call) and at most batch × 32 KiB of float64 for any data size.
_BLOCK_FLOATS = 4096
_MAX_BLOCK = 64

# Stream identifiers: independent streams of the same sample.
PRIOR, NOISE, LEVY = 1, 2, 3


def _splitmix64(z: int) -> int:
    """One round of the splitmix64 mixer (Steele et al. 2014): a bijective 64-bit hash."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(seed: int, stream: int, index: int) -> int:
    """A 64-bit generator seed for (run seed, stream id, sample index)."""
    return _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ stream) ^ index)


# The global index of local sample 0 of the streams created now (see `sample_offset`).
_OFFSET: contextvars.ContextVar[int] = contextvars.ContextVar("sdegen_sample_offset", default=0)


@contextlib.contextmanager
def sample_offset(start: int) -> Iterator[None]:
    """Within the block, per-sample streams of local sample j are those of sample start + j of the enclosing
    block (offsets add up: a batch of a split run inside a caller's own offset keeps its global index)."""
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"sample offset must be an integer >= 0, got {start!r}")
    token = _OFFSET.set(_OFFSET.get() + start)
    try:
        yield
    finally:
        _OFFSET.reset(token)


def current_offset() -> int:
    """The global index of local sample 0 (0 outside `sample_offset`)."""
    return _OFFSET.get()


def _generators(seed: int, stream: int, batch: int) -> list[torch.Generator]:
    start = _OFFSET.get()
    return [torch.Generator().manual_seed(derive_seed(seed, stream, start + i)) for i in range(batch)]


def prior_sample(sde, seed: int, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """x_T ~ N(0, prior_std² I) with sample i drawn from its own generator; shape (batch, *data_shape)."""
    batch, data_shape = shape[0], tuple(shape[1:])
    generators = _generators(seed, PRIOR, batch)
    rows = [sde.prior_sample((1, *data_shape), generator=g, dtype=torch.float64) for g in generators]
    return torch.cat(rows).to(dtype=dtype, device=device)


class PerSampleNoise:
    """Standard-normal draws of shape (batch, *data_shape), one independent stream per sample.

    Args:
        seed: the run seed.
        stream: stream identifier (`NOISE` or `LEVY`).
        shape: (batch, *data_shape).
        dtype, device: of the returned draws.
    """

    def __init__(self, seed: int, stream: int, shape: tuple[int, ...], dtype: torch.dtype, device=None):
        self.shape = tuple(shape)
        self.dtype, self.device = dtype, device
        self._d = math.prod(self.shape[1:])
        self._block = max(1, min(_BLOCK_FLOATS // self._d, _MAX_BLOCK))
        self._generators = _generators(seed, stream, self.shape[0])
        self._buffer: torch.Tensor | None = None
        self._pos = 0
        self.draws = 0

    def randn(self) -> torch.Tensor:
        """The next draw, shape (batch, *data_shape)."""
        if self._buffer is None or self._pos == self._block:
            # (block, batch, d): row k of the block is the k-th draw of every sample.
            blocks = [torch.randn(self._block, self._d, generator=g, dtype=torch.float64) for g in self._generators]
            self._buffer = torch.stack(blocks, dim=1).to(dtype=self.dtype, device=self.device)
            self._pos = 0
        out = self._buffer[self._pos].reshape(self.shape)
        self._pos += 1
        self.draws += 1
        return out


def noise_stream(seed: int, x: torch.Tensor) -> PerSampleNoise:
    """A fresh per-sample standard-normal stream (`NOISE`) shaped, typed and placed like the state x."""
    return PerSampleNoise(seed, NOISE, tuple(x.shape), x.dtype, x.device)


class GridBrownian(BaseBrownian):
    """A per-sample Brownian motion on a fixed increasing time grid, queried one grid interval at a time.

    Args:
        grid: increasing times s_0 < … < s_N (python floats); queries must be (s_k, s_{k+1}).
        seed: the run seed.
        size: (batch, d), the flat state shape torchsde uses.
        dtype, device: of the increments.
    """

    def __init__(self, grid: list[float], seed: int, size: tuple[int, int], dtype: torch.dtype, device=None):
        self._grid = [float(s) for s in grid]
        self._index = {s: k for k, s in enumerate(self._grid[:-1])}
        self._size, self._dtype = tuple(size), dtype
        self._device = torch.device("cpu") if device is None else torch.device(device)
        self._w_noise = PerSampleNoise(seed, NOISE, self._size, dtype, device)
        self._h_noise = PerSampleNoise(seed, LEVY, self._size, dtype, device)
        self._w: dict[int, torch.Tensor] = {}
        self._h: dict[int, torch.Tensor] = {}

    def _draw(self, cache: dict, noise: PerSampleNoise, k: int, var: float) -> torch.Tensor:
        if k not in cache:
            if noise.draws != k:
                raise RuntimeError(f"GridBrownian: interval {k} queried out of order (next is {noise.draws})")
            cache.clear()  # intervals are visited in order; keep only the current one
            cache[k] = math.sqrt(var) * noise.randn()
        return cache[k]

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None or return_A:
            raise ValueError("GridBrownian answers interval queries bm(ta, tb) (optionally return_U) only")
        ta, tb = float(ta), float(tb)
        k = self._index.get(ta)
        if k is None or tb != self._grid[k + 1]:
            raise ValueError(
                f"GridBrownian queried on [{ta!r}, {tb!r}], which is not an interval of its time grid; "
                "adaptive stepping needs brownian='interval'"
            )
        h = tb - ta
        # W and H come from separate streams, so W is the same whether or not a method asks for H.
        w = self._draw(self._w, self._w_noise, k, h)
        if not return_U:
            return w
        # U = ∫ (W_s − W_ta) ds = h·(H + W/2) with H ~ N(0, h/12) independent of W (space-time Lévy area).
        hh = self._draw(self._h, self._h_noise, k, h / 12)
        return w, h * (hh + 0.5 * w)

    def __repr__(self):
        return f"GridBrownian(intervals={len(self._grid) - 1}, size={self._size}, dtype={self._dtype})"

    @property
    def dtype(self):
        return self._dtype

    @property
    def device(self):
        return self._device

    @property
    def shape(self):
        return torch.Size(self._size)

    @property
    def levy_area_approximation(self):
        return "space-time"


class FloatTimeBrownian(BaseBrownian):
    """Wrap a torchsde BrownianInterval so that queries use python floats (tensor times are ~10× slower)."""

    def __init__(self, bm):
        self._bm = bm

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        return self._bm(float(ta), None if tb is None else float(tb), return_U=return_U, return_A=return_A)

    def __repr__(self):
        return f"FloatTimeBrownian({self._bm!r})"

    @property
    def dtype(self):
        return self._bm.dtype

    @property
    def device(self):
        return self._bm.device

    @property
    def shape(self):
        return self._bm.shape

    @property
    def levy_area_approximation(self):
        return self._bm.levy_area_approximation
