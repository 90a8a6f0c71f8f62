"""Imputation (inpainting): sample x0 given known entries y = M·x0, with M a 0/1 mask (1 = known).

Three methods, all on the SDE's own marginals x_t | x0 ~ N(alpha(t)·x0, sigma(t)²I):

* replacement (Song et al. 2021, App. I.2, score_sde's inpainter): the known entries are held at a draw of
  their forward marginal N(alpha·y, sigma²) while the network fills in the rest. Here this is a *score*:
  `replacement_score` returns the network's score on unknown entries and −(x − alpha·y)/sigma², the exact score
  of a point mass at y, on known ones. Every solver then moves the known entries along a forward path of y in
  law (Tweedie's x0_hat of a known entry is y exactly) and the network always sees them filled in; because it
  is just a score it works for every solver family (torchsde, pc, ddpm, fast ODE/SDE, adaptive ode).
  score_sde redraws fresh noise for the known entries at each step; here they follow one consistent path.
  Replacement is biased for correlated data: the unknown entries never feel ∇ log p(y | x_t), only the score
  evaluated beside a noisy y (Lugmayr et al. 2022; Chung et al. 2022).
* RePaint resampling (Lugmayr et al. 2022, Alg. 1), `repaint`: after every `jump` steps down the grid, jump
  back up with the exact forward transition x_{t_k} = a·x_{t_{k+j}} + √(sigma_k² − a²·sigma_{k+j}²)·z,
  a = alpha_k/alpha_{k+j}, and redo them, `resample` times in all, which lets the unknown entries harmonise
  with the known ones (cost: `resample`× the NFE).
* reconstruction guidance (`reconstruction_guidance`, the ΠGDM gradient of Song et al. 2023 with an isotropic
  posterior, DPS of Chung et al. 2023 up to the step size): score + w·∇ₓ log N(y; M·x0_hat(x, t), r_t²I) with
  r_t² = σ_d²·sigma²/(sigma² + alpha²σ_d²), the variance of x0 | x_t for data of per-entry variance σ_d². It
  needs a vector–Jacobian product through the network per evaluation. For Gaussian data the exact conditional
  score is known (`sdegen.analytic.CorrelatedGaussian.conditional`); pass it with impute="given".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sdegen._checks import SEED_LIMIT, Time, as_time, batch_view, check_int
from sdegen.grids import coefficients
from sdegen.samplers._noise import derive_seed, noise_stream
from sdegen.score import alpha_sigma

IMPUTE_METHODS = ("replace", "guidance", "given")
# Solvers that can be restarted on a piece of their grid without losing state: the single-step ones.
# Multistep solvers (dpmpp_2m, unipc, dpmpp_2m_sde, dpmpp_3m_sde) keep earlier evaluations, reversible Heun
# a second state, `ode` an adaptive step size, and `edm_sde` scales its churn by the number of steps.
RESAMPLE_SOLVERS = ("euler", "milstein", "srk", "heun", "midpoint", "pc", "ancestral", "ddim", "edm_heun")
_RESAMPLE_STREAM = 11  # stream id of the per-pass seeds (samplers._noise uses 1..3)


@dataclass(frozen=True)
class Known:
    """Known entries of the samples: `values` where `mask` is 1.

    Args:
        values: (batch, *data_shape) or (*data_shape) (the same for every sample); entries where mask is 0
            are ignored (set them to anything finite).
        mask: the same shape, or one that broadcasts against values; bool, or any dtype holding only 0 and 1.
    """

    values: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self):
        values = torch.as_tensor(self.values)
        if not values.dtype.is_floating_point:
            values = values.double()
        mask = torch.as_tensor(self.mask)
        if mask.dtype.is_complex:
            raise ValueError(f"mask must be bool or hold only 0 and 1, got dtype {mask.dtype}")
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                bad = mask[(mask != 0) & (mask != 1)].unique()[:5].tolist()
                raise ValueError(f"mask must be bool or hold only 0 and 1 (1 = known), got values {bad} ({mask.dtype})")
            mask = mask != 0
        try:
            shape = torch.broadcast_shapes(values.shape, mask.shape)
        except RuntimeError:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not fit values shape {tuple(values.shape)}"
            ) from None
        if not bool(torch.isfinite(values.expand(shape)[mask.expand(shape)]).all()):
            raise ValueError("known values must be finite where the mask is 1")
        object.__setattr__(self, "values", values.expand(shape).clone())
        object.__setattr__(self, "mask", mask.expand(shape).clone())

    def for_batch(self, shape: tuple[int, ...], dtype=torch.float32, device=None) -> "Known":
        """The condition expanded to a run's (batch, *data_shape), checked: a clear error for another shape."""
        shape = tuple(shape)
        own = tuple(self.values.shape)
        if own != shape[1:] and own != shape and not (len(own) == len(shape) and own[0] == 1 and own[1:] == shape[1:]):
            raise ValueError(f"the condition has shape {own}; the samples have shape {shape} (data shape {shape[1:]})")
        values = self.values.to(dtype=dtype, device=device)
        mask = self.mask.to(device=device)
        if own != shape:
            values, mask = values.expand(shape).clone(), mask.expand(shape).clone()
        return Known(values, mask)

    def check_range(self, data_range) -> None:
        """Refuse known values outside the data range (lo, hi); a string range (unspecified) is not checked."""
        if not isinstance(data_range, tuple | list) or len(data_range) != 2:
            return
        lo, hi = float(data_range[0]), float(data_range[1])
        known = self.values[self.mask]
        outside = int(((known < lo) | (known > hi)).sum())
        if outside:
            raise ValueError(f"{outside} known value(s) lie outside the data range [{lo}, {hi}]")

    def block(self, start: int, stop: int) -> "Known":
        """The samples start..stop−1 (a rank's block of a split run)."""
        return Known(self.values[start:stop], self.mask[start:stop])


def replacement_score(score: Callable, sde, known: Known) -> Callable:
    """score(x, t) with the known entries' score replaced by −(x − alpha(t)·y)/sigma(t)² (module docstring)."""

    def replaced(x: torch.Tensor, t: Time) -> torch.Tensor:
        s = score(x, t)
        alpha, sigma = alpha_sigma(sde, as_time(t, x, sde.T), x)
        alpha, sigma = batch_view(alpha, x), batch_view(sigma, x)
        point = -(x - alpha * known.values.to(x.dtype)) / sigma**2  # the score of a point mass at y
        return torch.where(known.mask, point, s)

    replaced.labels = getattr(score, "labels", None)
    return replaced


def reconstruction_guidance(score: Callable, sde, known: Known, *, weight: float = 1.0, sigma_data: float = 0.5):
    """score(x, t) + w·∇ₓ log N(y; M·x0_hat(x, t), r_t²I), r_t² = σ_d²·sigma²/(sigma² + alpha²σ_d²) (module docstring).

    One score evaluation and one vector–Jacobian product per call (counted in the callable's `vjps`).
    """
    if not (math.isfinite(weight) and weight >= 0) or not (math.isfinite(sigma_data) and sigma_data > 0):
        raise ValueError(f"need a finite weight >= 0 and sigma_data > 0, got {weight}, {sigma_data}")

    def guided(x: torch.Tensor, t: Time) -> torch.Tensor:
        tt = as_time(t, x, sde.T)
        alpha, sigma = alpha_sigma(sde, tt, x)
        alpha, sigma = batch_view(alpha, x), batch_view(sigma, x)
        with torch.enable_grad():  # samplers run under no_grad
            xg = x.detach().requires_grad_(True)
            s = score(xg, tt)
            x0 = (xg + sigma**2 * s) / alpha  # Tweedie
            r2 = sigma_data**2 * sigma**2 / (sigma**2 + alpha**2 * sigma_data**2)
            resid = torch.where(known.mask, known.values.to(x.dtype) - x0, torch.zeros_like(x0))
            log_lik = -(resid**2 / (2 * r2)).sum()
            (grad,) = torch.autograd.grad(log_lik, xg)
        guided.vjps += 1
        return (s + weight * grad).detach()

    guided.vjps = 0
    guided.labels = getattr(score, "labels", None)
    return guided


def repaint(solve: Callable, sde, x: torch.Tensor, ts, *, callback, seed: int, resample: int, jump: int):
    """RePaint's schedule (Lugmayr et al. 2022, Alg. 1) around a solver restarted on pieces of its grid.

    Args:
        solve: solve(x, ts_piece, callback, seed) → the state at ts_piece[-1], one run of the solver.
        x: the state at ts[0]; ts: the run's decreasing float64 grid.
        callback: the run's recorder; it sees only the last pass over each piece, with global grid indices.
        seed: the run seed; each pass of each piece runs with its own seed derived from it, and the jumps
            back draw from per-sample streams, so sample i still depends on (seed, i) only.
        resample: passes over each piece (1: plain sampling); jump: grid steps per piece.
    """
    resample, jump = check_int(resample, "resample", 1), check_int(jump, "jump", 1)
    alpha, sigma = coefficients(sde, ts)
    steps = len(ts) - 1
    jumps = noise_stream(derive_seed(seed, _RESAMPLE_STREAM, 0) % SEED_LIMIT, x)
    k, piece = 0, 0
    while k < steps:
        j = min(jump, steps - k)
        for r in range(resample):
            last = r == resample - 1

            def report(i, xi, x0, _k=k, _last=last):
                if _last:
                    callback(_k + i, xi, x0)

            end = solve(x, ts[k : k + j + 1], report, derive_seed(seed, _RESAMPLE_STREAM + 1 + r, piece) % SEED_LIMIT)
            if last:
                x = end
            else:  # back up to t_k with the exact forward transition (the known entries are re-noised too)
                a = alpha[k] / alpha[k + j]
                x = a * end + math.sqrt(max(sigma[k] ** 2 - a**2 * sigma[k + j] ** 2, 0.0)) * jumps.randn()
        k, piece = k + j, piece + 1
    return x


def mask_from_name(name: str, data_shape: tuple[int, ...]) -> np.ndarray:
    """A (*data_shape) 0/1 mask of an image, 1 = known: "top"/"bottom"/"left"/"right" half known, or "center"
    (everything known but the central square of half the height and width)."""
    if len(data_shape) != 3:
        raise ValueError(f"named masks are for images (C, H, W), got data shape {data_shape}")
    _, h, w = data_shape
    m = np.zeros(data_shape, dtype=np.uint8)
    if name == "top":
        m[:, : h // 2] = 1
    elif name == "bottom":
        m[:, h // 2 :] = 1
    elif name == "left":
        m[:, :, : w // 2] = 1
    elif name == "right":
        m[:, :, w // 2 :] = 1
    elif name == "center":
        m[:] = 1
        m[:, h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = 0
    else:
        raise ValueError(f"unknown mask {name!r}; known: top, bottom, left, right, center, or a .npy file")
    return m
