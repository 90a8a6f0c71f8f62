"""Brownian motion on SO(3), on unit quaternions: IGSO(3) marginals and a geodesic bridge.

Conventions: a rotation is a unit quaternion q = (w, x, y, z), scalar first, Hamilton product, so
(cos(a/2), sin(a/2)·n) rotates by the angle a about the unit axis n; q and −q are the same rotation and
states are kept sign-canonical (w >= 0). State tensors have shape (batch, *shape, 4).

Forward: R_t = R0·ΔR with ΔR ~ IGSO(3)(ε²), ε² = rate·t: a uniform axis and a rotation angle ω ∈ [0, π]
with density (Nikolayev & Savyolova 1997; Leach et al. 2022)

    f(ω) = (1 − cos ω)/π · Σ_l (2l+1) e^{−l(l+1)ε²/2} sin((l+½)ω)/sin(ω/2)
         = (2 sin(ω/2)/π) · Σ_l (2l+1) e^{−l(l+1)ε²/2} sin((l+½)ω).

The angle is drawn exactly by inverting its CDF, tabulated by the trapezoid rule on 1025 points of
[0, min(π, 12ε)] (beyond 12ε the mass is below 1e-20). The density is summed as written for ε² >= 1 and,
for ε² < 1 where that series needs many terms, in its Poisson-summed form (exact, a handful of terms):

    f(ω) = (2 sin(ω/2)/π)·e^{ε²/8}·√(2π)·ε^{−3}·Σ_k (−1)^k (ω − 2πk)·e^{−(ω − 2πk)²/(2ε²)},

whose k = 0 term is the small-time limit |log ΔR| ~ |N(0, ε²I₃)|.

Bridge (a documented approximation, not the exact SO(3) Brownian bridge): the geodesic interpolation
R0·exp((s/t)·log(R0ᵀR_t)) times IGSO(3) noise with the Brownian-bridge variance ε² = rate·s(t − s)/t. It
stays on SO(3), is pinned at both ends (zero variance at s = 0 and s = t) and follows the shortest geodesic;
it ignores paths that wrap around the group, which matter only once rate·t is of order π².
"""

from __future__ import annotations

import math

import torch

from sdegen.processes._base import AbstractProcess
from sdegen.processes._common import (
    Generator,
    Time,
    bridge_times,
    check_float_state,
    check_rate,
    check_same_shape,
    masked_mean,
    per_sample_time,
    rand,
    randn,
)

UNIT_TOLERANCE = 1e-4  # |‖q‖ − 1| allowed for input quaternions (float32 round-off is ~1e-7)
_GRID = 1025


def canonical(q: torch.Tensor) -> torch.Tensor:
    """Normalise quaternions (..., 4) and flip signs so that w >= 0."""
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def multiply(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Hamilton product p ⊗ q of quaternions (..., 4), scalar first (the rotation R_p·R_q)."""
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return torch.stack(
        (
            pw * qw - px * qx - py * qy - pz * qz,
            pw * qx + px * qw + py * qz - pz * qy,
            pw * qy - px * qz + py * qw + pz * qx,
            pw * qz + px * qy - py * qx + pz * qw,
        ),
        -1,
    )


def conjugate(q: torch.Tensor) -> torch.Tensor:
    """The inverse rotation of unit quaternions (..., 4)."""
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)


def from_axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Quaternions (..., 4) of rotations by angle (...) about unit axes (..., 3)."""
    half = 0.5 * angle.unsqueeze(-1)
    return torch.cat((torch.cos(half), torch.sin(half) * axis), -1)


def log_map(q: torch.Tensor) -> torch.Tensor:
    """Rotation vectors ω·n (..., 3) of quaternions (..., 4), with angle ω ∈ [0, π] (the shortest geodesic)."""
    q = canonical(q)
    v = q[..., 1:]
    sin_half = v.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    # ω/sin(ω/2) → 2 as ω → 0.
    scale = torch.where(sin_half > 1e-12, angle / sin_half.clamp_min(1e-12), torch.full_like(angle, 2.0))
    return scale * v


def exp_map(rotvec: torch.Tensor) -> torch.Tensor:
    """Quaternions (..., 4) of rotation vectors (..., 3)."""
    angle = rotvec.norm(dim=-1)
    axis = rotvec / angle.clamp_min(1e-300).unsqueeze(-1)
    return from_axis_angle(axis, angle)


def geodesic_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The rotation angle of p⁻¹q in [0, π], for quaternions (..., 4)."""
    dot = (p * q).sum(-1).abs().clamp_max(1.0)
    return 2 * torch.acos(dot)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of unit quaternions (..., 4) (scalar first, Hamilton)."""
    w, x, y, z = canonical(q).unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def matrix_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """Sign-canonical unit quaternions (..., 4) of rotation matrices (..., 3, 3).

    Uses the largest of 1 + trace and 1 ± 2m_ii − trace for the pivot (Shepperd 1978), so it is stable
    for every rotation, including angles near π.

    Raises:
        ValueError: m is not (..., 3, 3) or not a rotation (RᵀR = I and det 1 to 1e-4).
    """
    if not isinstance(m, torch.Tensor) or m.ndim < 2 or tuple(m.shape[-2:]) != (3, 3):
        raise ValueError(f"rotation matrices must have shape (..., 3, 3), got {tuple(getattr(m, 'shape', ()))}")
    eye = torch.eye(3, dtype=m.dtype, device=m.device)
    if (m.transpose(-1, -2) @ m - eye).abs().amax() > 1e-4 or (torch.linalg.det(m) - 1).abs().amax() > 1e-4:
        raise ValueError("matrices are not rotations (need R^T R = I and det R = 1 to 1e-4)")
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    candidates = torch.stack(
        (
            torch.stack(
                (
                    1 + m00 + m11 + m22,
                    m[..., 2, 1] - m[..., 1, 2],
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] - m[..., 0, 1],
                ),
                -1,
            ),
            torch.stack(
                (
                    m[..., 2, 1] - m[..., 1, 2],
                    1 + m00 - m11 - m22,
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                ),
                -1,
            ),
            torch.stack(
                (
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 0, 1] + m[..., 1, 0],
                    1 - m00 + m11 - m22,
                    m[..., 1, 2] + m[..., 2, 1],
                ),
                -1,
            ),
            torch.stack(
                (
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    1 - m00 - m11 + m22,
                ),
                -1,
            ),
        ),
        -2,
    )  # (..., 4, 4): row i is 4·q_i·q
    pivot = torch.stack((1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), -1)
    best = pivot.argmax(-1, keepdim=True)
    q = torch.gather(candidates, -2, best.unsqueeze(-1).expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    return canonical(q)


def _series_density(omega: torch.Tensor, variance) -> torch.Tensor:
    """The l-series of the angle density, terms up to e^{−L(L+1)ε²/2} < 1e-14 (few terms for ε² >= 1).

    omega (..., G) and variance a float or a tensor broadcasting against omega[..., :1].
    """
    var = torch.as_tensor(variance, dtype=torch.float64)
    top = int(math.ceil(math.sqrt(2 * 14 * math.log(10) / var.min().item()))) + 2
    ell = torch.arange(top + 1, dtype=torch.float64)
    weights = (2 * ell + 1) * torch.exp(-ell * (ell + 1) * var.unsqueeze(-1) / 2)
    series = (weights * torch.sin((ell + 0.5) * omega.unsqueeze(-1))).sum(-1)
    return 2 * torch.sin(omega / 2) / math.pi * series


def _poisson_density(omega: torch.Tensor, variance) -> torch.Tensor:
    """The same density after Poisson summation over l + ½ (few terms for ε² < 1):
    f(ω) = (2 sin(ω/2)/π)·e^{ε²/8}·√(2π)·ε^{−3}·Σ_k (−1)^k (ω − 2πk) e^{−(ω − 2πk)²/(2ε²)}."""
    var = torch.as_tensor(variance, dtype=torch.float64)
    # For ε² < 1 and ω ∈ [0, π] the terms |k| >= 2 are below e^{−(3π)²/2} < 1e-19 relative: k ∈ {−1, 0, 1}.
    big = 1 if var.max().item() < 1 else int(math.ceil(7 * math.sqrt(var.max().item()) / (2 * math.pi))) + 1
    k = torch.arange(-big, big + 1, dtype=torch.float64)
    u = omega.unsqueeze(-1) - 2 * math.pi * k
    terms = (1 - 2 * (k.abs() % 2)) * u * torch.exp(-0.5 * u * u / var.unsqueeze(-1))
    scale = torch.exp(var / 8) * math.sqrt(2 * math.pi) / var**1.5
    return 2 * torch.sin(omega / 2) / math.pi * scale * terms.sum(-1)


def igso3_angle_density(omega: torch.Tensor, variance: float) -> torch.Tensor:
    """The IGSO(3)(ε² = variance) density of the rotation angle ω ∈ [0, π] (module docstring), float64.

    Evaluated by the l-series for ε² >= 1 and by its Poisson-summed form for ε² < 1; both are exact up to
    truncation below 1e-14 and agree where both converge (tested).
    """
    omega = torch.as_tensor(omega, dtype=torch.float64)
    if variance <= 0:
        raise ValueError(f"variance must be > 0, got {variance}")
    dens = _series_density(omega, variance) if variance >= 1 else _poisson_density(omega, variance)
    return dens.clamp_min(0.0)


def _sample_angles(variance: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws of the IGSO(3) angle for variances (n,) > 0 and uniforms (n,), float64.

    One CDF is tabulated per distinct variance (trapezoid rule on 1025 points of [0, min(π, 12ε)]). The
    tables are stacked into one sorted array by shifting table r by 2r, so a single searchsorted inverts all.
    """
    levels, row = torch.unique(variance, return_inverse=True)
    top = torch.clamp(12 * levels.sqrt(), max=math.pi)
    grid = torch.linspace(0.0, 1.0, _GRID, dtype=torch.float64) * top[:, None]  # (r, G)
    dens = torch.empty_like(grid)
    big = levels >= 1
    if big.any():
        dens[big] = _series_density(grid[big], levels[big, None])
    if (~big).any():
        dens[~big] = _poisson_density(grid[~big], levels[~big, None])
    dens = dens.clamp_min(0.0)
    cdf = torch.cat(
        (torch.zeros(len(levels), 1, dtype=torch.float64), (0.5 * (dens[:, 1:] + dens[:, :-1])).cumsum(1)), 1
    )
    cdf = cdf / cdf[:, -1:]
    shift = 2.0 * torch.arange(len(levels), dtype=torch.float64)
    flat = (cdf + shift[:, None]).reshape(-1)
    idx = torch.searchsorted(flat, u.clamp(0, 1) + shift[row]) - row * _GRID
    idx = idx.clamp(1, _GRID - 1)
    c0, c1 = cdf[row, idx - 1], cdf[row, idx]
    g0, g1 = grid[row, idx - 1], grid[row, idx]
    # Linear interpolation of the inverse of the piecewise-linear CDF.
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-300)).clamp(0, 1)
    return g0 + frac * (g1 - g0)


def sample_igso3(variance: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Quaternions (batch, *shape, 4) of IGSO(3) draws with per-element variance ε² (batch, *shape), float64.

    Per sample, the uniform for the angle is drawn first and the three normals for the axis second; a zero
    variance gives the identity.
    """
    variance = variance.double()
    u = rand(variance.shape, generator, torch.float64)
    axis = randn((*variance.shape, 3), generator, torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    flat_var, flat_u = variance.reshape(-1), u.reshape(-1)
    flat_angle = torch.zeros_like(flat_var)
    positive = flat_var > 0
    if positive.any():
        flat_angle[positive] = _sample_angles(flat_var[positive], flat_u[positive])
    return canonical(from_axis_angle(axis, flat_angle.reshape(variance.shape)))


class RotationBrownian(AbstractProcess):
    """Brownian motion on SO(3) with IGSO(3)(rate·t) increments, on unit quaternions (batch, *shape, 4).

    Args:
        rate: ε² per unit time (R0ᵀR_t ~ IGSO(3) with ε² = rate·t; small-time log R0ᵀR_t ≈ N(0, rate·t·I₃)).
    """

    name = "rotation_brownian"
    kind = "quaternion"

    def __init__(self, rate: float = 1.0):
        self.rate = check_rate(rate)

    def params(self) -> dict[str, float]:
        return {"rate": self.rate}

    def check_state(self, x, name: str = "x") -> None:
        check_float_state(x, name, trailing=(4,))
        if x.ndim < 2:
            raise ValueError(f"{name} must have shape (batch, *shape, 4), got {tuple(x.shape)}")
        err = (x.norm(dim=-1) - 1).abs().max().item()
        if err > UNIT_TOLERANCE:
            raise ValueError(f"{name} must hold unit quaternions (| |q| - 1 | <= {UNIT_TOLERANCE}), found {err:.3g}")

    def _variance(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (self.rate * t).reshape(-1, *([1] * (x.ndim - 2))).expand(x.shape[:-1])

    def sample_forward(self, x0: torch.Tensor, t: Time, generator: Generator = None) -> torch.Tensor:
        """x_t = x0 ⊗ ΔR, ΔR ~ IGSO(3)(rate·t) drawn exactly (module docstring); (batch, *shape, 4)."""
        self.check_state(x0, "x0")
        tt = per_sample_time(t, x0.shape[0])
        noise = sample_igso3(self._variance(tt, x0), generator)
        return canonical(multiply(x0.double().cpu(), noise)).to(dtype=x0.dtype, device=x0.device)

    def sample_bridge(self, x0, x_t, s: Time, t: Time, generator: Generator = None) -> torch.Tensor:
        """Geodesic interpolation plus IGSO(3) noise of Brownian-bridge variance (an approximation; module
        docstring), pinned at x0 (s = 0) and x_t (s → t); needs 0 <= s < t."""
        self.check_state(x0, "x0")
        self.check_state(x_t, "x_t")
        check_same_shape(x0, x_t, "x0 and x_t")
        ss, tt = bridge_times(s, t, x_t.shape[0])
        q0, qt = x0.double().cpu(), x_t.double().cpu()
        frac = (ss / tt).reshape(-1, *([1] * (x0.ndim - 1)))
        centre = multiply(q0, exp_map(frac * log_map(multiply(conjugate(q0), qt))))
        noise = sample_igso3(self._variance(ss * (tt - ss) / tt, x0), generator)
        return canonical(multiply(centre, noise)).to(dtype=x_t.dtype, device=x_t.device)

    def sample_equilibrium(self, shape, generator: Generator = None, dtype=torch.float32, device=None):
        """Haar-uniform rotations: normalised N(0, I₄) draws, shape (*shape, 4) for a batch shape `shape`."""
        q = randn((*tuple(shape), 4), generator, torch.float64)
        return canonical(q).to(dtype=dtype, device=device)

    def loss(self, prediction: torch.Tensor, x0: torch.Tensor, t: Time, *, x_t=None, mask=None) -> torch.Tensor:
        """1 − ⟨q̂, q0⟩² = sin²(ω/2) of the angle ω between the (normalised) prediction and x0, shape (batch,)."""
        check_same_shape(prediction, x0, "prediction and x0")
        q = prediction / prediction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return masked_mean(1 - (q * x0).sum(-1) ** 2, mask)
