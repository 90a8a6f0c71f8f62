"""Test helper: sample-size-derived moment checks against an exact Gaussian law.

For n independent draws of a 2-D Gaussian with per-coordinate std s_j (independent coordinates), the
normal-theory standard errors are
    mean_j: s_j/√n,   variance_j: s_j²·√(2/(n − 1)),   covariance_12: s_1·s_2/√n.
A statistic passes when it lies within K standard errors of its exact value. K = 4: a correct sampler fails
one of the five checks by chance with probability < 3·10⁻⁴ (and seeds are fixed, so the outcome is fixed).
"""

from __future__ import annotations

import math

import numpy as np

K = 4.0


def moment_z_scores(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
    """z-scores of the sample mean, variance and covariance of x (n, 2) against N(mean, diag(std²))."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    cov = np.cov(x, rowvar=False)
    return {
        "mean": (x.mean(0) - mean) / (std / math.sqrt(n)),
        "var": (np.diag(cov) - std**2) / (std**2 * math.sqrt(2 / (n - 1))),
        "cov": np.array([cov[0, 1] / (std[0] * std[1] / math.sqrt(n))]),
    }


def moment_failures(x, mean, std, k: float = K) -> list[str]:
    """The checks (e.g. "var[1] z=+7.3") whose |z| exceeds k; empty when the sample matches."""
    out = []
    for name, z in moment_z_scores(x, mean, std).items():
        out += [f"{name}[{j}] z={v:+.1f}" for j, v in enumerate(z) if abs(v) > k]
    return out
