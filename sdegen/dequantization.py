"""Bits per dimension of 8-bit images under a continuous model, by uniform dequantisation.

An image k ∈ {0, …, 255}^D is a discrete object; a density model p_y on the data range [lo, hi]^D is
turned into a discrete model by integrating over the cube of each k. With the uniform dequantisation

    x = (k + u) / 256 ∈ [0, 1)^D,  u ~ U[0, 1)^D,    y = lo + (hi − lo)·x  (the model's data range),

Jensen's inequality gives the variational bound (Theis et al. 2016; Ho et al. 2019, "Flow++", eq. 2)

    log P(k) ≥ E_u[ log p_y(y) ] + D·log(hi − lo) − D·log 256,

where D·log(hi − lo) is the log-Jacobian of x ↦ y and D·log 256 that of k + u ↦ x. In bits per dimension:

    bpd = −( E_u[log p_y(y)]/D + ln(hi − lo) ) / ln 2 + 8,

an upper bound on −log2 P(k)/D. The constant offset 8 − log2(hi − lo) is 8 for data scaled to [0, 1]
and 7 for [−1, 1]. log p_y comes from `sdegen.log_likelihood` (the probability-flow ODE), in nats.

The model density is p_{t_min}, the PF-ODE marginal at t_min, and any t_min gives a valid bound. By
default t_min is where the noise-to-signal ratio sigma(t)/alpha(t) equals a quarter of an 8-bit bin,
(hi − lo)/1024: the level of Song et al. 2021's VP setting (t = 1e-5, sigma ≈ 1e-3 on [0, 1]), made
independent of the SDE. Much below it the ODE only resolves the flat dequantisation noise (sub-VP at
t = 1e-5 has sigma ≈ 1e-6, and needs twice the NFE for no better bound); much above it the blur costs
bits (seen on MNIST validation digits: 3.10 bpd at t = 1e-5, 2.99 at a quarter bin, 4.08 at a full bin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sdegen._checks import check_batched, check_data_range
from sdegen.grids import time_of_noise_ratio
from sdegen.likelihood import log_likelihood, make_generator
from sdegen.samplers._noise import derive_seed
from sdegen.sdes import AbstractSDE

LEVELS = 256  # 8-bit images: k ∈ {0, …, 255}
T_MIN_BINS = 0.25  # default t_min: sigma(t)/alpha(t) = this many 8-bit bins (module docstring)
# A float image must sit on the 8-bit grid lo + (hi − lo)·k/255 to this many grid steps.
_GRID_TOL = 1e-3


@dataclass(frozen=True)
class BitsPerDimResult:
    """Result of `bits_per_dim`.

    Attributes:
        bpd: (batch,) bits/dim per image, averaged over the dequantisation draws.
        bpd_draws: (draws, batch) bits/dim of each dequantisation draw.
        logp: (draws, batch) log p_y of the dequantised images in the model's data range, nats.
        bpd_probe_stderr: (batch,) standard error of `bpd` from the Hutchinson probes (the probe
            spread, propagated through the mean over draws), or None with one probe or the exact
            divergence.
        nfe: total score evaluations over all draws.
        offset: the constant 8 − log2(hi − lo) in bpd = −logp/(D ln 2) + offset.
    """

    bpd: torch.Tensor
    bpd_draws: torch.Tensor
    logp: torch.Tensor
    bpd_probe_stderr: torch.Tensor | None
    nfe: int
    offset: float
    t_min: float

    @property
    def mean(self) -> float:
        """Mean bits/dim over the images."""
        return float(self.bpd.mean())

    @property
    def stderr(self) -> float:
        """Standard error of `mean` over the images (std/√batch; nan for one image)."""
        n = self.bpd.shape[0]
        return float(self.bpd.std(correction=1) / math.sqrt(n)) if n > 1 else math.nan


def bits_per_dim(
    sde: AbstractSDE,
    score,
    images: torch.Tensor,
    *,
    data_range: tuple[float, float] = (0.0, 1.0),
    dequant_draws: int = 1,
    seed: int | torch.Generator | None = None,
    dequant_noise: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    t_min: float | None = None,
    indices=None,
    **likelihood_kwargs,
) -> BitsPerDimResult:
    """Bits/dim of 8-bit images: uniform dequantisation plus the probability-flow log-likelihood.

    bpd = −(log p_y(y)/D + ln(hi − lo))/ln 2 + 8 with y = lo + (hi − lo)(k + u)/256 (module docstring):
    the offset is 8 for data_range (0, 1) and 7 for (−1, 1).

    Args:
        sde: the forward SDE of the model.
        score: the model's score(x, t) on data scaled to `data_range`.
        images: (batch, *data_shape), either an integer tensor (e.g. uint8) of levels 0..255, or a
            floating tensor already scaled to `data_range` and on its 8-bit grid lo + (hi − lo)·k/255.
        data_range: (lo, hi), the scaling the model was trained on.
        dequant_draws: M ≥ 1 independent dequantisation draws u, averaged.
        seed: int or torch.Generator for the dequantisation noise and the Hutchinson probes.
        t_min: the time of the model density p_{t_min}; default `default_t_min(sde, data_range)`, where
            sigma/alpha is a quarter of an 8-bit bin (module docstring).
        indices: (batch,) global indices of the images (e.g. test-set numbers): image j's dequantisation
            noise and probes are then drawn from (seed, indices[j]) alone (an int seed is required), so its
            bits/dim do not depend on which other images share its batch's noise or on how a test set is split
            over processes (the adaptive ODE solve is still one per batch); None: noise drawn for the batch.
        **likelihood_kwargs: passed to `sdegen.log_likelihood` (divergence, probes, probe, rtol, atol,
            method).

    Other arguments:
        dequant_noise: (M, batch, *data_shape) values in [0, 1) to use as u instead of drawing them.
        dtype: floating dtype of the computation; default: that of float images, else torch's default.

    Returns:
        BitsPerDimResult with bpd (batch,), its mean, per-draw values, probe stderr and total NFE.

    Raises:
        TypeError / ValueError: images not (batch, *data_shape), non-finite, levels outside 0..255,
            float images outside `data_range` or off its 8-bit grid, a bad data_range, dequant_draws or
            dequant_noise, or an unknown keyword argument.
    """
    lo, hi = check_data_range(data_range)
    levels = to_levels(images, (lo, hi))
    dtype = dtype or (images.dtype if images.is_floating_point() else torch.get_default_dtype())
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    t_min = default_t_min(sde, (lo, hi)) if t_min is None else t_min
    generator = make_generator(seed)
    noise = _check_noise(dequant_noise, dequant_draws, levels.shape)
    if indices is not None and noise is None:
        noise = per_image_noise(seed, indices, dequant_draws, levels.shape)
    dim = levels[0].numel()
    logps, variances, nfe = [], [], 0
    for m in range(noise.shape[0] if noise is not None else dequant_draws):
        u = noise[m] if noise is not None else torch.rand(levels.shape, generator=generator, dtype=torch.float64)
        # y = lo + (hi − lo)(k + u)/256, formed in float64 on the images' device, then cast.
        u = u.to(device=levels.device, dtype=torch.float64)
        y = (lo + (hi - lo) * (levels.double() + u) / LEVELS).to(dtype)
        if indices is None:
            probe_seed, per_item = int(torch.randint(0, 2**62, (), generator=generator)), {}
        else:  # draw m of image j: probes from (derive_seed(seed, DRAW_STREAM, m), j); seed checked above
            probe_seed, per_item = derive_seed(seed, DRAW_STREAM, m), {"indices": indices}
        result = log_likelihood(sde, score, y, seed=probe_seed, t_min=t_min, **per_item, **likelihood_kwargs)
        logps.append(result.logp)
        variances.append(None if result.logp_stderr is None else result.logp_stderr**2)
        nfe += result.nfe
    logp = torch.stack(logps)
    offset = math.log2(LEVELS) - math.log2(hi - lo)
    # bpd = −(logp/D + ln(hi − lo))/ln 2 + log2(256): per draw, then averaged over draws.
    bpd_draws = -(logp / dim + math.log(hi - lo)) / math.log(2) + math.log2(LEVELS)
    probe_stderr = None
    if variances[0] is not None:
        probe_stderr = torch.stack(variances).sum(0).sqrt() / len(variances) / (dim * math.log(2))
    return BitsPerDimResult(
        bpd=bpd_draws.mean(0),
        bpd_draws=bpd_draws,
        logp=logp,
        bpd_probe_stderr=probe_stderr,
        nfe=nfe,
        offset=offset,
        t_min=float(t_min),
    )


DEQUANT_STREAM = 6  # stream id of per-image dequantisation noise (see sdegen.likelihood.PROBE_STREAM)
DRAW_STREAM = 7  # stream id of the probe seed of dequantisation draw m (per-image probes)


def _generator(seed: int, stream: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, stream, index))


def per_image_noise(seed, indices, draws: int, shape) -> torch.Tensor:
    """(draws, batch, *data_shape) uniform [0, 1) dequantisation noise, image j's from (seed, indices[j]).

    Raises:
        TypeError / ValueError: seed not an int, indices not one integer per image.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"per-image noise (indices=...) needs an int seed, got {type(seed).__name__}")
    idx = [int(i) for i in indices]
    if len(idx) != shape[0]:
        raise ValueError(f"indices must hold one index per image ({shape[0]}), got {len(idx)}")
    rows = [
        torch.rand((draws, 1, *shape[1:]), generator=_generator(seed, DEQUANT_STREAM, i), dtype=torch.float64)
        for i in idx
    ]
    return torch.cat(rows, dim=1)


def default_t_min(sde: AbstractSDE, data_range: tuple[float, float] = (0.0, 1.0), bins: float = T_MIN_BINS) -> float:
    """The time where sigma(t)/alpha(t) = bins·(hi − lo)/256: by default a quarter of an 8-bit bin (float64).

    A model trained further down in t can be scored lower (`sdegen likelihood --t-min-bins`).
    """
    lo, hi = check_data_range(data_range)
    if not (math.isfinite(bins) and bins > 0):
        raise ValueError(f"bins must be a finite number > 0, got {bins}")
    ratio = torch.tensor([bins * (hi - lo) / LEVELS], dtype=torch.float64)
    return float(time_of_noise_ratio(sde, ratio, t_min=0.0)[0])


def to_levels(images: torch.Tensor, data_range: tuple[float, float]) -> torch.Tensor:
    """Integer levels k (int64, 0..255) of 8-bit images given as integers or as floats in data_range.

    Raises:
        TypeError / ValueError: see `bits_per_dim`.
    """
    lo, hi = check_data_range(data_range)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim < 2 or images.shape[0] < 1:
        raise ValueError(f"images must have shape (batch, *data_shape), got {tuple(images.shape)}")
    if images.dtype == torch.bool or images.is_complex():
        raise TypeError(f"images must be integer levels or real floats, got {images.dtype}")
    if not images.is_floating_point():
        k = images.long()
        if k.min() < 0 or k.max() > LEVELS - 1:
            raise ValueError(f"integer images must hold levels 0..255, got [{int(k.min())}, {int(k.max())}]")
        return k
    check_batched(images, "images")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf")
    if images.min() < lo or images.max() > hi:
        raise ValueError(
            f"images lie in [{float(images.min()):.6g}, {float(images.max()):.6g}], outside the declared "
            f"data_range [{lo}, {hi}]"
        )
    steps = (images.double() - lo) / (hi - lo) * (LEVELS - 1)
    k = steps.round()
    off = float((steps - k).abs().max())
    if off > _GRID_TOL:
        raise ValueError(
            f"float images must lie on the 8-bit grid lo + (hi - lo)*k/255 of data_range [{lo}, {hi}]; "
            f"found a value {off:.3g} grid steps off (already dequantised? pass the 8-bit images)"
        )
    return k.long()


def _check_noise(noise, draws, shape) -> torch.Tensor | None:
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"dequant_draws must be an integer >= 1, got {draws!r}")
    if noise is None:
        return None
    if not isinstance(noise, torch.Tensor) or noise.shape != (draws, *shape):
        got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"dequant_noise must have shape (dequant_draws={draws}, *images.shape), got {got}")
    if not torch.isfinite(noise).all() or noise.min() < 0 or noise.max() >= 1:
        raise ValueError("dequant_noise must lie in [0, 1)")
    return noise
